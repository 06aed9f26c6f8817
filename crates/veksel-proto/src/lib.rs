//! veksel's wire formats and protocol rules, free of sockets, databases and clocks:
//! every function takes the time it needs as an argument, so all of it can be tested
//! and fuzzed in isolation.
//!
//! - [`r1`]: the client side of X-Road's Message Protocol for REST.
//! - [`headers`]: X-Road headers and the hop-by-hop filter.
//! - [`descriptor`]: what gateways sign for each request and response.
//! - [`peer`]: the message between gateways: heads, trailers, window, descriptors.
//! - [`jws`]: compact and detached JWS with ES256.
//! - [`conf`]: the signed global configuration and its anchor.
//! - [`access`]: deny-by-default access rights.
//! - [`meta`]: metaservice and error bodies.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod batch;
pub mod conf;
pub mod descriptor;
pub mod headers;
pub mod jws;
pub mod ledger;
pub mod management;
pub mod meta;
pub mod oauth;
pub mod peer;
pub mod person;
pub mod r1;

/// The node's time source. Core code never reads the clock itself; it takes the time
/// from here so tests and fault injection can move it (for example past the expiry of
/// the global configuration) without waiting.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }
    /// Now, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        sys.saturating_add(self.offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
    /// Now, Unix seconds.
    pub fn now_secs(&self) -> u64 {
        u64::try_from(self.now_ms() / 1000).unwrap_or_default()
    }
    /// Now as an `OffsetDateTime`.
    pub fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.now_ms()) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
    /// Moves this clock (and every clone of it) by `ms`.
    pub fn advance(&self, ms: i64) {
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Formats Unix milliseconds as RFC 3339 in UTC, for humans and JSON APIs.
pub fn rfc3339(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ms.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn clock_advances_all_clones() {
        let c = super::Clock::system();
        let d = c.clone();
        let before = d.now_ms();
        c.advance(3_600_000);
        assert!(d.now_ms() >= before + 3_600_000);
    }
}
