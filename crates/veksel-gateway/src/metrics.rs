//! Prometheus metrics of a gateway, in a registry of its own (several gateways can
//! run in one process, as in the sandbox and the tests).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the exchange counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    /// `consumer` or `provider`.
    pub side: &'static str,
    /// `ok`, or the fault type.
    pub outcome: String,
}

/// Labels of the latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SideLabels {
    /// `consumer` or `provider`.
    pub side: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Exchanges by side and outcome.
    pub exchanges: Family<ExchangeLabels, Counter>,
    /// Exchange duration by side, seconds.
    pub duration: Family<SideLabels, Histogram>,
    /// Exchanges in progress.
    pub in_flight: Gauge,
    /// Version of the global configuration in use.
    pub conf_version: Gauge,
    /// Expiry of the global configuration in use, Unix seconds.
    pub conf_expires: Gauge,
    /// Records covered by the newest time stamp.
    pub stamped_records: Gauge,
    /// Seconds time-stamping has been failing (0 when it works).
    pub stamping_failing: Gauge,
    /// Seconds until each certificate in use expires.
    pub certificate_expiry: Family<CertLabels, Gauge>,
    /// Ledger alarms raised: inconsistent checkpoints or a rollback seen by this
    /// gateway as a witness.
    pub ledger_alarms: Counter,
    /// `full`-mode exchanges logged without their bodies, by reason (`too_large`,
    /// `capture_memory`).
    pub bodies_not_stored: Family<ReasonLabels, Counter>,
}

/// Labels of counters with a reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// Labels of the certificate-expiry gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `authentication` or `signing`.
    pub role: String,
    /// The member, for signing certificates; empty otherwise.
    pub member: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let exchanges = Family::<ExchangeLabels, Counter>::default();
        let duration = Family::<SideLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        let conf_version = Gauge::default();
        let conf_expires = Gauge::default();
        registry.register(
            "veksel_gateway_exchanges",
            "Exchanges by side and outcome",
            exchanges.clone(),
        );
        registry.register(
            "veksel_gateway_exchange_duration_seconds",
            "Exchange duration",
            duration.clone(),
        );
        registry.register(
            "veksel_gateway_in_flight",
            "Exchanges in progress",
            in_flight.clone(),
        );
        registry.register(
            "veksel_gateway_conf_version",
            "Version of the global configuration in use",
            conf_version.clone(),
        );
        registry.register(
            "veksel_gateway_conf_expires_seconds",
            "Expiry of the global configuration in use, Unix seconds",
            conf_expires.clone(),
        );
        let stamped_records = Gauge::default();
        let stamping_failing = Gauge::default();
        registry.register(
            "veksel_gateway_stamped_records",
            "Records covered by the newest time stamp",
            stamped_records.clone(),
        );
        registry.register(
            "veksel_gateway_stamping_failing_seconds",
            "Seconds time-stamping has been failing, 0 when it works",
            stamping_failing.clone(),
        );
        let certificate_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "veksel_gateway_certificate_expiry_seconds",
            "Seconds until each certificate in use expires",
            certificate_expiry.clone(),
        );
        let ledger_alarms = Counter::default();
        registry.register(
            "veksel_gateway_ledger_alarms",
            "Ledger alarms: inconsistent checkpoints or a rollback seen as a witness",
            ledger_alarms.clone(),
        );
        let bodies_not_stored = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "veksel_gateway_bodies_not_stored",
            "Full-mode exchanges logged without their bodies, by reason",
            bodies_not_stored.clone(),
        );
        Self {
            bodies_not_stored,
            ledger_alarms,
            certificate_expiry,
            stamped_records,
            stamping_failing,
            registry,
            exchanges,
            duration,
            in_flight,
            conf_version,
            conf_expires,
        }
    }

    /// Counts one finished exchange.
    pub fn record(&self, side: &'static str, outcome: Option<&str>, seconds: f64) {
        self.exchanges
            .get_or_create(&ExchangeLabels {
                side,
                outcome: outcome.unwrap_or("ok").to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&SideLabels { side })
            .observe(seconds);
    }

    /// Counts a `full`-mode record whose bodies were not stored, if `reason` says so.
    pub fn body_not_stored(&self, reason: Option<crate::capture::NotStored>) {
        if let Some(reason) = reason {
            self.bodies_not_stored
                .get_or_create(&ReasonLabels {
                    reason: reason.label(),
                })
                .inc();
        }
    }

    /// Renders the OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
