//! The signed global configuration and the anchor that verifies it.
//!
//! The authority publishes one JSON document, signed as a compact JWS (ES256), with
//! a version and an expiry. Gateways verify it with the configuration-signing key from
//! the anchor they received out of band, and stop exchanging messages once their
//! cached copy has expired rather than guess.

use crate::jws::{self, JwsError, Unverified};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use veksel_id::{ClientId, GatewayId, GlobalGroupId, MemberId, SubsystemId};

/// JWS `cty` of a signed global configuration.
pub const CONF_CTY: &str = "veksel-globalconf+json";
/// Current format version of [`GlobalConf`].
pub const CONF_FORMAT: u32 = 1;
/// Current format version of [`Anchor`].
pub const ANCHOR_FORMAT: u32 = 1;

/// Network-wide settings carried in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How often gateways should poll for a new configuration, seconds.
    pub refresh_interval_secs: u64,
    /// Largest clock difference accepted between gateways, milliseconds.
    pub max_clock_skew_ms: i64,
    /// How long a signed request stays acceptable after it was created, milliseconds.
    pub request_ttl_ms: i64,
    /// Oldest acceptable OCSP response, seconds (X-Road's ocspFreshnessSeconds).
    #[serde(default = "default_ocsp_freshness")]
    pub ocsp_freshness_secs: u64,
}

fn default_ocsp_freshness() -> u64 {
    3600
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            refresh_interval_secs: 30,
            max_clock_skew_ms: 30_000,
            request_ttl_ms: 300_000,
            ocsp_freshness_secs: default_ocsp_freshness(),
        }
    }
}

/// A member class of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberClass {
    /// Code, e.g. `GOV`.
    pub code: String,
    /// Description.
    pub description: String,
}

/// A subsystem as listed in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subsystem {
    /// Subsystem code.
    pub code: String,
    /// Display name.
    pub name: String,
}

/// A member as listed in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Identifier.
    pub id: MemberId,
    /// Legal name.
    pub name: String,
    /// Its subsystems.
    pub subsystems: Vec<Subsystem>,
}

/// A gateway as listed in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Identifier.
    pub id: GatewayId,
    /// `host:port` of its gateway-to-gateway (TLS) listener.
    pub address: String,
    /// Lower-case hex SHA-256 of each registered authentication certificate.
    pub auth_cert_sha256: Vec<String>,
    /// Subsystems it hosts.
    pub clients: Vec<SubsystemId>,
}

/// A certificate authority whose certificates gateways accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedCa {
    /// Display name.
    pub name: String,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its OCSP responder. When set, gateways must staple a fresh OCSP response for
    /// every certificate of this CA they present.
    #[serde(default)]
    pub ocsp_url: Option<String>,
}

/// A time-stamping authority whose tokens gateways accept and use, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedTsa {
    /// Display name.
    pub name: String,
    /// URL taking RFC 3161 requests (`application/timestamp-query`).
    pub url: String,
    /// The TSA's certificate, PEM (it must chain to an approved CA).
    pub cert_pem: String,
}

/// A global group: a named set of clients defined by the authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalGroup {
    /// Identifier.
    pub id: GlobalGroupId,
    /// Description.
    pub description: String,
    /// Members of the group.
    pub members: Vec<ClientId>,
}

/// The global configuration document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConf {
    /// Always [`CONF_FORMAT`].
    pub format: u32,
    /// The instance, e.g. `GL`.
    pub instance: String,
    /// Increases whenever the content (not only the expiry) changes.
    pub version: u64,
    /// When it was signed, Unix milliseconds.
    pub generated_at_ms: i64,
    /// After this instant gateways must not use it, Unix milliseconds.
    pub expires_at_ms: i64,
    /// Network-wide settings.
    pub settings: Settings,
    /// Member classes.
    pub member_classes: Vec<MemberClass>,
    /// Members and their subsystems.
    pub members: Vec<Member>,
    /// Gateways.
    pub gateways: Vec<Gateway>,
    /// Approved certificate authorities.
    pub approved_cas: Vec<ApprovedCa>,
    /// Approved time-stamping authorities, in order of preference.
    #[serde(default)]
    pub approved_tsas: Vec<ApprovedTsa>,
    /// Lower-case hex SHA-256 of revoked certificates that have not yet expired.
    #[serde(default)]
    pub revoked_cert_sha256: Vec<String>,
    /// Global groups.
    pub global_groups: Vec<GlobalGroup>,
    /// The network's token service: what gateways need to check access tokens
    /// without asking the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_service: Option<crate::oauth::TokenService>,
}

/// The trust root a gateway receives out of band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Always [`ANCHOR_FORMAT`].
    pub format: u32,
    /// The instance.
    pub instance: String,
    /// HTTPS URL of the signed global configuration.
    pub conf_url: String,
    /// HTTPS base URL of the authority (enrolment, admin API).
    pub authority_url: String,
    /// Certificate whose key signs the configuration, PEM.
    pub conf_signing_cert_pem: String,
    /// CA certificate that issued the authority's TLS certificate, PEM.
    pub authority_tls_ca_pem: String,
    /// When the anchor was made, Unix milliseconds.
    pub generated_at_ms: i64,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// The JWS is malformed or its signature does not verify.
    #[error("global configuration signature: {0}")]
    Signature(#[from] JwsError),
    /// The payload is not a configuration document.
    #[error("global configuration is malformed: {0}")]
    Malformed(String),
    /// It belongs to another instance.
    #[error("global configuration is for instance {found:?}, the anchor says {expected:?}")]
    WrongInstance {
        /// The anchor's instance.
        expected: String,
        /// The document's instance.
        found: String,
    },
    /// It expired.
    #[error("global configuration version {version} expired at {expires_at_ms} (now {now_ms})")]
    Expired {
        /// Its version.
        version: u64,
        /// Its expiry.
        expires_at_ms: i64,
        /// The time of the check.
        now_ms: i64,
    },
    /// It is older than one already accepted.
    #[error("global configuration version {found} is older than the cached version {cached}")]
    Rollback {
        /// Version already held.
        cached: u64,
        /// Version offered.
        found: u64,
    },
}

impl GlobalConf {
    /// Signs the configuration as a compact JWS.
    pub fn sign(&self, signer: &dyn jws::Signer) -> Result<String, JwsError> {
        let payload = serde_json::to_vec(self).map_err(|e| JwsError::Signer(e.to_string()))?;
        jws::sign_compact(signer, CONF_CTY, false, &payload)
    }

    /// Verifies a signed configuration with the anchor's signing key and instance.
    /// Expiry is checked separately with [`GlobalConf::check_valid_at`] so an expired
    /// copy can still be shown to an operator.
    pub fn verify(jws: &str, signing_key_point: &[u8], instance: &str) -> Result<Self, ConfError> {
        let payload = Unverified::parse(jws, None)?.verify(signing_key_point)?;
        let conf: GlobalConf =
            serde_json::from_slice(&payload).map_err(|e| ConfError::Malformed(e.to_string()))?;
        if conf.format != CONF_FORMAT {
            return Err(ConfError::Malformed(format!(
                "unsupported format {}",
                conf.format
            )));
        }
        if conf.instance != instance {
            return Err(ConfError::WrongInstance {
                expected: instance.to_owned(),
                found: conf.instance,
            });
        }
        Ok(conf)
    }

    /// Refuses an expired configuration.
    pub fn check_valid_at(&self, now_ms: i64) -> Result<(), ConfError> {
        if now_ms >= self.expires_at_ms {
            return Err(ConfError::Expired {
                version: self.version,
                expires_at_ms: self.expires_at_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

/// Look-ups over a [`GlobalConf`], built once per accepted version.
#[derive(Debug, Clone)]
pub struct ConfIndex {
    conf: GlobalConf,
    gateway_by_cert: BTreeMap<String, usize>,
    gateway_by_id: BTreeMap<GatewayId, usize>,
    hosts: BTreeMap<SubsystemId, Vec<usize>>,
    members: BTreeMap<MemberId, usize>,
    subsystems: BTreeSet<SubsystemId>,
    revoked: BTreeSet<String>,
    groups_of: BTreeMap<ClientId, Vec<GlobalGroupId>>,
}

impl ConfIndex {
    /// Indexes a configuration.
    pub fn new(conf: GlobalConf) -> Self {
        let mut gateway_by_cert = BTreeMap::new();
        let mut gateway_by_id = BTreeMap::new();
        let mut hosts: BTreeMap<SubsystemId, Vec<usize>> = BTreeMap::new();
        for (i, g) in conf.gateways.iter().enumerate() {
            for h in &g.auth_cert_sha256 {
                gateway_by_cert.insert(h.to_ascii_lowercase(), i);
            }
            gateway_by_id.insert(g.id.clone(), i);
            for c in &g.clients {
                hosts.entry(c.clone()).or_default().push(i);
            }
        }
        let mut members = BTreeMap::new();
        let mut subsystems = BTreeSet::new();
        for (i, m) in conf.members.iter().enumerate() {
            members.insert(m.id.clone(), i);
            for s in &m.subsystems {
                if let Ok(id) = m.id.subsystem(&s.code) {
                    subsystems.insert(id);
                }
            }
        }
        let mut groups_of: BTreeMap<ClientId, Vec<GlobalGroupId>> = BTreeMap::new();
        for g in &conf.global_groups {
            for m in &g.members {
                groups_of.entry(m.clone()).or_default().push(g.id.clone());
            }
        }
        let revoked = conf
            .revoked_cert_sha256
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Self {
            conf,
            gateway_by_cert,
            gateway_by_id,
            hosts,
            members,
            subsystems,
            revoked,
            groups_of,
        }
    }

    /// True if the certificate with this SHA-256 has been revoked.
    pub fn is_revoked(&self, sha256_hex: &str) -> bool {
        self.revoked.contains(&sha256_hex.to_ascii_lowercase())
    }

    /// The configuration itself.
    pub fn conf(&self) -> &GlobalConf {
        &self.conf
    }

    /// The gateway whose registered authentication certificate has this SHA-256.
    /// A revoked certificate identifies no gateway.
    pub fn gateway_by_cert(&self, sha256_hex: &str) -> Option<&Gateway> {
        if self.is_revoked(sha256_hex) {
            return None;
        }
        self.gateway_by_cert
            .get(&sha256_hex.to_ascii_lowercase())
            .map(|i| &self.conf.gateways[*i])
    }

    /// A gateway by id.
    pub fn gateway(&self, id: &GatewayId) -> Option<&Gateway> {
        self.gateway_by_id.get(id).map(|i| &self.conf.gateways[*i])
    }

    /// Gateways that host a subsystem.
    pub fn gateways_hosting(&self, subsystem: &SubsystemId) -> Vec<&Gateway> {
        self.hosts
            .get(subsystem)
            .map(|v| v.iter().map(|i| &self.conf.gateways[*i]).collect())
            .unwrap_or_default()
    }

    /// A member by id.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.get(id).map(|i| &self.conf.members[*i])
    }

    /// True if the client (member or subsystem) is registered.
    pub fn client_exists(&self, client: &ClientId) -> bool {
        match client {
            ClientId::Member(m) => self.members.contains_key(m),
            ClientId::Subsystem(s) => self.subsystems.contains(s),
        }
    }

    /// Global groups the client belongs to (a subsystem also inherits its member's).
    pub fn global_groups_of(&self, client: &ClientId) -> Vec<GlobalGroupId> {
        let mut out = self.groups_of.get(client).cloned().unwrap_or_default();
        if let ClientId::Subsystem(s) = client
            && let Some(more) = self.groups_of.get(&ClientId::Member(s.member().clone()))
        {
            out.extend(more.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::{SoftwareSigner, generate_p256_pkcs8};

    pub(crate) fn sample() -> GlobalConf {
        GlobalConf {
            format: CONF_FORMAT,
            instance: "GL".into(),
            version: 3,
            generated_at_ms: 1_000,
            expires_at_ms: 601_000,
            settings: Settings::default(),
            member_classes: vec![MemberClass {
                code: "GOV".into(),
                description: "Government".into(),
            }],
            members: vec![Member {
                id: "GL/GOV/1".parse().unwrap(),
                name: "Agency".into(),
                subsystems: vec![Subsystem {
                    code: "pop".into(),
                    name: "Population".into(),
                }],
            }],
            gateways: vec![Gateway {
                id: "GL/GOV/1/gw".parse().unwrap(),
                address: "127.0.0.1:5500".into(),
                auth_cert_sha256: vec!["AB12".into()],
                clients: vec!["GL/GOV/1/pop".parse().unwrap()],
            }],
            approved_cas: vec![],
            approved_tsas: vec![],
            revoked_cert_sha256: vec![],
            global_groups: vec![GlobalGroup {
                id: "GL/all".parse().unwrap(),
                description: "All".into(),
                members: vec!["GL/GOV/1".parse().unwrap()],
            }],
            token_service: None,
        }
    }

    #[test]
    fn sign_verify_and_expiry() {
        let signer = SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![]).unwrap();
        let jws = sample().sign(&signer).unwrap();
        let conf = GlobalConf::verify(&jws, &signer.public_key(), "GL").unwrap();
        assert_eq!(conf, sample());
        assert!(conf.check_valid_at(600_999).is_ok());
        assert!(matches!(
            conf.check_valid_at(601_000),
            Err(ConfError::Expired { .. })
        ));
        assert!(matches!(
            GlobalConf::verify(&jws, &signer.public_key(), "EE"),
            Err(ConfError::WrongInstance { .. })
        ));
        let other = SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![]).unwrap();
        assert!(matches!(
            GlobalConf::verify(&jws, &other.public_key(), "GL"),
            Err(ConfError::Signature(JwsError::BadSignature))
        ));
    }

    #[test]
    fn index_lookups() {
        let idx = ConfIndex::new(sample());
        assert_eq!(
            idx.gateway_by_cert("ab12").unwrap().address,
            "127.0.0.1:5500"
        );
        assert!(idx.gateway_by_cert("ffff").is_none());
        let pop: SubsystemId = "GL/GOV/1/pop".parse().unwrap();
        assert_eq!(idx.gateways_hosting(&pop).len(), 1);
        assert!(idx.client_exists(&ClientId::Subsystem(pop.clone())));
        assert!(!idx.client_exists(&"GL/GOV/1/other".parse().unwrap()));
        assert_eq!(
            idx.global_groups_of(&ClientId::Subsystem(pop)),
            vec!["GL/all".parse::<GlobalGroupId>().unwrap()]
        );
    }
}
