//! Management requests: changes to the registry that a member or a gateway asks for
//! and the authority's registration officer approves or declines (or a policy
//! approves), as X-Road's management requests do.
//!
//! A gateway submits a request as a compact JWS with content type
//! [`MANAGEMENT_CTY`], signed with its authentication key, whose payload is a
//! [`GatewayRequest`]. Changes that concern a member's clients also carry the
//! member's consent: a compact JWS with content type [`CONSENT_CTY`] over a
//! [`Consent`], signed with the member's signing key.

use serde::{Deserialize, Serialize};
use veksel_id::{GatewayId, MemberId, SubsystemId};

/// Content type of a gateway's signed management request.
pub const MANAGEMENT_CTY: &str = "veksel-management+json";
/// Content type of a member's consent to a change.
pub const CONSENT_CTY: &str = "veksel-management-consent+json";

/// A change to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Change {
    /// A new member applies to join, with its first gateway.
    MemberApplication {
        /// The member's identifier, e.g. `DK/GOV/12345678`.
        member: MemberId,
        /// Its name.
        name: String,
        /// Its first gateway.
        gateway: GatewayId,
        /// Where the gateway listens for other gateways, `host:port`.
        address: String,
        /// Whom the registration officer contacts to confirm the application.
        contact: String,
    },
    /// A new authentication certificate for a gateway (made by enrolment and
    /// renewal, approved by the enrolment token or the current certificate).
    AuthCertRegistration {
        /// The gateway.
        gateway: GatewayId,
        /// SHA-256 of the certificate, hex.
        cert_sha256: String,
    },
    /// A subsystem is to be hosted by a gateway (created if the member has no such
    /// subsystem yet).
    ClientRegistration {
        /// The gateway.
        gateway: GatewayId,
        /// The subsystem.
        subsystem: SubsystemId,
        /// Its name, for a new subsystem; the code when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A gateway stops hosting a subsystem.
    ClientDeletion {
        /// The gateway.
        gateway: GatewayId,
        /// The subsystem.
        subsystem: SubsystemId,
    },
    /// A hosted subsystem is disabled: it is left out of the global configuration,
    /// so no gateway accepts exchanges for it, until enabled again.
    ClientDisable {
        /// The gateway.
        gateway: GatewayId,
        /// The subsystem.
        subsystem: SubsystemId,
    },
    /// A disabled subsystem is enabled again.
    ClientEnable {
        /// The gateway.
        gateway: GatewayId,
        /// The subsystem.
        subsystem: SubsystemId,
    },
    /// A gateway moves to another address.
    AddressChange {
        /// The gateway.
        gateway: GatewayId,
        /// The new `host:port`.
        address: String,
    },
    /// A gateway leaves the network: its certificates and clients go with it.
    GatewayDeletion {
        /// The gateway.
        gateway: GatewayId,
    },
    /// The gateway's owner registers (or changes) a scope of its API at the token
    /// service: who may get it, and whether they may delegate it.
    ScopeRegistration {
        /// The gateway submitting; its owner owns the scope.
        gateway: GatewayId,
        /// The scope, `prefix:name`; a prefix belongs to the member that used it first.
        scope: String,
        /// What the scope gives access to.
        description: String,
        /// Who may get tokens with it: members, subsystems, global groups.
        consumers: Vec<Grantee>,
        /// Whether a consumer may let a supplier get it on its behalf.
        #[serde(default)]
        delegable: bool,
    },
    /// The owner withdraws a scope; tokens with it are no longer issued.
    ScopeDeletion {
        /// The gateway submitting; its owner owns the scope.
        gateway: GatewayId,
        /// The scope.
        scope: String,
    },
    /// The gateway's owner, a consumer of a delegable scope, lets a supplier get
    /// tokens with it on its behalf (`consumer_org`).
    ScopeDelegation {
        /// The gateway submitting; its owner delegates.
        gateway: GatewayId,
        /// The scope.
        scope: String,
        /// The member that may act for the owner of the gateway.
        supplier: MemberId,
    },
    /// A delegation ends; the supplier's tokens under it stop working.
    ScopeDelegationWithdrawal {
        /// The gateway submitting; its owner had delegated.
        gateway: GatewayId,
        /// The scope.
        scope: String,
        /// The supplier.
        supplier: MemberId,
    },
    /// The gateway's owner registers one of its subsystems as a relying party of
    /// people's login; it authenticates with the member's signing key.
    RelyingPartyRegistration {
        /// The gateway submitting; its owner owns the subsystem.
        gateway: GatewayId,
        /// The subsystem, which is the relying party's `client_id`.
        subsystem: SubsystemId,
        /// Shown on the login page.
        name: String,
        /// Exact redirect URIs.
        redirect_uris: Vec<String>,
    },
    /// The relying party is removed.
    RelyingPartyDeletion {
        /// The gateway submitting; its owner owns the subsystem.
        gateway: GatewayId,
        /// The subsystem.
        subsystem: SubsystemId,
    },
}

/// Who may get a scope: a client (member or subsystem) or every member of a global
/// group, written as their identifiers (`GL/GOV/1`, `GL/GOV/1/app`, `GL/group`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grantee {
    /// A member or one of its subsystems.
    Client(veksel_id::ClientId),
    /// The members and subsystems of a global group.
    Group(veksel_id::GlobalGroupId),
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(c) => c.fmt(f),
            Self::Group(g) => g.fmt(f),
        }
    }
}

impl std::str::FromStr for Grantee {
    type Err = veksel_id::IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A group id has two parts, a client three or four.
        if s.split('/').count() == 2 {
            Ok(Self::Group(s.parse()?))
        } else {
            Ok(Self::Client(s.parse()?))
        }
    }
}

impl Serialize for Grantee {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Grantee {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Most grantees of one scope.
pub const MAX_GRANTEES: usize = 1000;

/// Checks a scope name for registration: one scope (see [`crate::oauth::scopes`])
/// of the form `prefix:name`.
pub fn validate_scope_name(scope: &str) -> Result<(), String> {
    match crate::oauth::scopes(scope) {
        Ok(names) if names.len() == 1 => {}
        _ => return Err(format!("{scope:?} is not one scope name")),
    }
    match scope.split_once(':') {
        Some((prefix, name)) if !prefix.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "the scope {scope:?} must be prefix:name, the prefix being the owner's"
        )),
    }
}

/// Longest name, address or contact in a change.
pub const MAX_TEXT: usize = 255;

impl Change {
    /// The request type, as in the JSON `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MemberApplication { .. } => "member-application",
            Self::AuthCertRegistration { .. } => "auth-cert-registration",
            Self::ClientRegistration { .. } => "client-registration",
            Self::ClientDeletion { .. } => "client-deletion",
            Self::ClientDisable { .. } => "client-disable",
            Self::ClientEnable { .. } => "client-enable",
            Self::AddressChange { .. } => "address-change",
            Self::GatewayDeletion { .. } => "gateway-deletion",
            Self::ScopeRegistration { .. } => "scope-registration",
            Self::ScopeDeletion { .. } => "scope-deletion",
            Self::ScopeDelegation { .. } => "scope-delegation",
            Self::ScopeDelegationWithdrawal { .. } => "scope-delegation-withdrawal",
            Self::RelyingPartyRegistration { .. } => "relying-party-registration",
            Self::RelyingPartyDeletion { .. } => "relying-party-deletion",
        }
    }

    /// Every request type.
    pub const KINDS: [&'static str; 14] = [
        "member-application",
        "auth-cert-registration",
        "client-registration",
        "client-deletion",
        "client-disable",
        "client-enable",
        "address-change",
        "gateway-deletion",
        "scope-registration",
        "scope-deletion",
        "scope-delegation",
        "scope-delegation-withdrawal",
        "relying-party-registration",
        "relying-party-deletion",
    ];

    /// The gateway the change concerns.
    pub fn gateway(&self) -> &GatewayId {
        match self {
            Self::MemberApplication { gateway, .. }
            | Self::AuthCertRegistration { gateway, .. }
            | Self::ClientRegistration { gateway, .. }
            | Self::ClientDeletion { gateway, .. }
            | Self::ClientDisable { gateway, .. }
            | Self::ClientEnable { gateway, .. }
            | Self::AddressChange { gateway, .. }
            | Self::GatewayDeletion { gateway }
            | Self::ScopeRegistration { gateway, .. }
            | Self::ScopeDeletion { gateway, .. }
            | Self::ScopeDelegation { gateway, .. }
            | Self::ScopeDelegationWithdrawal { gateway, .. }
            | Self::RelyingPartyRegistration { gateway, .. }
            | Self::RelyingPartyDeletion { gateway, .. } => gateway,
        }
    }

    /// The member whose signing key must consent: the client's member for changes
    /// to a client, the gateway's owner for changes to the gateway.
    pub fn consenting_member(&self) -> &MemberId {
        match self {
            Self::ClientRegistration { subsystem, .. }
            | Self::ClientDeletion { subsystem, .. }
            | Self::ClientDisable { subsystem, .. }
            | Self::ClientEnable { subsystem, .. } => subsystem.member(),
            Self::MemberApplication { member, .. } => member,
            Self::AuthCertRegistration { gateway, .. }
            | Self::AddressChange { gateway, .. }
            | Self::GatewayDeletion { gateway }
            | Self::ScopeRegistration { gateway, .. }
            | Self::ScopeDeletion { gateway, .. }
            | Self::ScopeDelegation { gateway, .. }
            | Self::ScopeDelegationWithdrawal { gateway, .. }
            | Self::RelyingPartyRegistration { gateway, .. }
            | Self::RelyingPartyDeletion { gateway, .. } => gateway.owner(),
        }
    }

    /// Checks the free-text fields: present, at most [`MAX_TEXT`] characters, no
    /// control characters; an address is `host:port`.
    pub fn validate(&self) -> Result<(), String> {
        let text = |what: &str, v: &str| {
            if v.trim().is_empty()
                || v.chars().count() > MAX_TEXT
                || v.chars().any(char::is_control)
            {
                Err(format!(
                    "{what} must have 1 to {MAX_TEXT} characters and no control characters"
                ))
            } else {
                Ok(())
            }
        };
        let address = |v: &str| {
            text("the address", v)?;
            match v.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty()
                        && !host.contains(['/', ' '])
                        && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Ok(())
                }
                _ => Err(format!("the address {v:?} is not host:port")),
            }
        };
        match self {
            Self::MemberApplication {
                member,
                name,
                gateway,
                address: a,
                contact,
            } => {
                text("the name", name)?;
                text("the contact", contact)?;
                address(a)?;
                if gateway.owner() != member {
                    return Err(format!(
                        "gateway {gateway} does not belong to the applying member {member}"
                    ));
                }
                Ok(())
            }
            Self::ClientRegistration { name, .. } => match name {
                Some(n) => text("the name", n),
                None => Ok(()),
            },
            Self::AddressChange { address: a, .. } => address(a),
            Self::AuthCertRegistration { cert_sha256, .. } => {
                if cert_sha256.len() == 64 && cert_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(())
                } else {
                    Err("cert_sha256 must be 64 hex digits".into())
                }
            }
            Self::ScopeRegistration {
                scope,
                description,
                consumers,
                ..
            } => {
                validate_scope_name(scope)?;
                text("the description", description)?;
                if consumers.len() > MAX_GRANTEES {
                    return Err(format!("at most {MAX_GRANTEES} consumers per scope"));
                }
                Ok(())
            }
            Self::ScopeDeletion { scope, .. } => validate_scope_name(scope),
            Self::ScopeDelegation {
                gateway,
                scope,
                supplier,
            }
            | Self::ScopeDelegationWithdrawal {
                gateway,
                scope,
                supplier,
            } => {
                validate_scope_name(scope)?;
                if supplier == gateway.owner() {
                    return Err(format!("{supplier} cannot delegate to itself"));
                }
                Ok(())
            }
            Self::RelyingPartyRegistration {
                gateway,
                subsystem,
                name,
                redirect_uris,
            } => {
                text("the name", name)?;
                if subsystem.member() != gateway.owner() {
                    return Err(format!(
                        "{subsystem} is not a subsystem of {}, the gateway's owner",
                        gateway.owner()
                    ));
                }
                if redirect_uris.is_empty() || redirect_uris.len() > 10 {
                    return Err("1 to 10 redirect_uris".into());
                }
                Ok(())
            }
            Self::RelyingPartyDeletion { gateway, subsystem } => {
                if subsystem.member() == gateway.owner() {
                    Ok(())
                } else {
                    Err(format!(
                        "{subsystem} is not a subsystem of {}",
                        gateway.owner()
                    ))
                }
            }
            Self::ClientDeletion { .. }
            | Self::ClientDisable { .. }
            | Self::ClientEnable { .. }
            | Self::GatewayDeletion { .. } => Ok(()),
        }
    }
}

/// What a gateway signs to submit a change about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRequest {
    /// The gateway submitting; must be the one the change concerns.
    pub gateway: GatewayId,
    /// When it was made, Unix milliseconds; accepted within 5 minutes.
    pub created_at_ms: i64,
    /// A fresh random value; each is accepted once.
    pub nonce: String,
    /// The change.
    pub change: Change,
    /// The consenting member's compact JWS over a [`Consent`] for the same change
    /// and nonce. Without it the request can only be approved by an officer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
}

/// What a gateway's owner signs, with its signing key, for a new authentication key
/// of its gateway at renewal: the request carries both the gateway's signature (its
/// current authentication key) and the owner's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKeyConsent {
    /// The gateway.
    pub gateway: GatewayId,
    /// The nonce of the renewal request.
    pub nonce: String,
    /// SHA-256 (hex) of the PEM text of the new key's certificate request.
    pub auth_csr_sha256: String,
}

/// What the consenting member signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// The gateway submitting.
    pub gateway: GatewayId,
    /// The nonce of the request it belongs to.
    pub nonce: String,
    /// The change.
    pub change: Change,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayId {
        "DEV/MUN/20000001/gw1".parse().unwrap()
    }

    #[test]
    fn changes_round_trip_with_their_type_tag() {
        let c = Change::ClientRegistration {
            gateway: gw(),
            subsystem: "DEV/MUN/20000001/cases".parse().unwrap(),
            name: None,
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["type"], "client-registration");
        assert_eq!(json["subsystem"], "DEV/MUN/20000001/cases");
        assert_eq!(serde_json::from_value::<Change>(json).unwrap(), c);
        assert_eq!(c.consenting_member().to_string(), "DEV/MUN/20000001");
        for kind in Change::KINDS {
            assert!(
                serde_json::from_value::<Change>(serde_json::json!({"type": kind})).is_err(),
                "{kind} needs its fields"
            );
        }
        assert!(
            serde_json::from_value::<Change>(
                serde_json::json!({"type": "owner-swap", "gateway": "DEV/MUN/20000001/gw1"})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<Change>(
                serde_json::json!({"type": "gateway-deletion", "gateway": "DEV/MUN/../gw1"})
            )
            .is_err()
        );
    }

    #[test]
    fn free_text_and_addresses_are_checked() {
        let app = |address: &str, name: &str, gateway: &str| Change::MemberApplication {
            member: "DEV/MUN/20000001".parse().unwrap(),
            name: name.into(),
            gateway: gateway.parse().unwrap(),
            address: address.into(),
            contact: "it@example.org".into(),
        };
        assert!(
            app("gw.example.org:5500", "Kommune", "DEV/MUN/20000001/gw1")
                .validate()
                .is_ok()
        );
        assert!(
            app("[::1]:5500", "Kommune", "DEV/MUN/20000001/gw1")
                .validate()
                .is_ok()
        );
        for bad in [
            "gw.example.org",
            "gw:0",
            "gw:99999",
            ":5500",
            "a b:1",
            "http://gw:1",
        ] {
            assert!(
                app(bad, "Kommune", "DEV/MUN/20000001/gw1")
                    .validate()
                    .is_err(),
                "{bad}"
            );
        }
        assert!(app("gw:1", "", "DEV/MUN/20000001/gw1").validate().is_err());
        assert!(
            app("gw:1", "a\nb", "DEV/MUN/20000001/gw1")
                .validate()
                .is_err()
        );
        assert!(
            app("gw:1", &"x".repeat(256), "DEV/MUN/20000001/gw1")
                .validate()
                .is_err()
        );
        let err = app("gw:1", "Kommune", "DEV/GOV/10000001/gw1")
            .validate()
            .unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
    }
}
