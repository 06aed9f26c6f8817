//! Identifiers of an X-Road compatible network and the fault codes veksel reports.
//!
//! The grammar is X-Road's (Message Protocol for REST §4.8): every part of an
//! identifier is non-empty, at most [`MAX_PART_LEN`] characters, and uses only
//! `A–Z a–z 0–9 ' ( ) + , - . = ?`. The textual form joins parts with `/`, which is
//! also how the `X-Road-Client` header and the `/r1/...` URL spell them.
//!
//! This crate does no I/O so that every parser here can be fuzzed on its own.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod fault;

pub use fault::{Fault, FaultCode, Origin};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Longest accepted identifier part; X-Road's database columns are 255 wide.
pub const MAX_PART_LEN: usize = 255;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A part of the identifier is empty (for example `GL//123`).
    #[error("{what}: part {index} is empty")]
    EmptyPart {
        /// Kind of identifier being parsed.
        what: &'static str,
        /// Zero-based position of the part.
        index: usize,
    },
    /// A part is longer than [`MAX_PART_LEN`].
    #[error("{what}: part {index} is longer than {MAX_PART_LEN} characters")]
    PartTooLong {
        /// Kind of identifier being parsed.
        what: &'static str,
        /// Zero-based position of the part.
        index: usize,
    },
    /// A part holds a character outside the X-Road identifier alphabet.
    #[error(
        "{what}: part {index} contains the character {ch:?}, which X-Road identifiers do not allow"
    )]
    BadCharacter {
        /// Kind of identifier being parsed.
        what: &'static str,
        /// Zero-based position of the part.
        index: usize,
        /// The offending character.
        ch: char,
    },
    /// A part is `.` or `..`, which URL normalisation would treat as a path step.
    #[error("{what}: part {index} is a dot segment, which is not a valid identifier")]
    DotSegment {
        /// Kind of identifier being parsed.
        what: &'static str,
        /// Zero-based position of the part.
        index: usize,
    },
    /// The identifier has the wrong number of `/`-separated parts.
    #[error("{what}: expected {expected} parts separated by '/', found {found}")]
    WrongPartCount {
        /// Kind of identifier being parsed.
        what: &'static str,
        /// Human readable expectation, e.g. `"3 or 4"`.
        expected: &'static str,
        /// Number of parts found.
        found: usize,
    },
}

/// Checks one identifier part against the X-Road alphabet.
pub fn validate_part(what: &'static str, index: usize, part: &str) -> Result<(), IdError> {
    if part.is_empty() {
        return Err(IdError::EmptyPart { what, index });
    }
    if part.len() > MAX_PART_LEN {
        return Err(IdError::PartTooLong { what, index });
    }
    if let Some(ch) = part.chars().find(|c| !is_identifier_char(*c)) {
        return Err(IdError::BadCharacter { what, index, ch });
    }
    // The alphabet admits '.', so "." and ".." would pass; refusing them keeps an
    // identifier from ever acting as a path step in /r1/ URLs.
    if part == "." || part == ".." {
        return Err(IdError::DotSegment { what, index });
    }
    Ok(())
}

/// True for the characters X-Road allows in identifier parts.
pub fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '=' | '?')
}

fn split_parts<'a>(
    what: &'static str,
    s: &'a str,
    allowed: &[usize],
    expected: &'static str,
) -> Result<Vec<&'a str>, IdError> {
    let parts: Vec<&str> = s.split('/').collect();
    if !allowed.contains(&parts.len()) {
        return Err(IdError::WrongPartCount {
            what,
            expected,
            found: parts.len(),
        });
    }
    for (i, p) in parts.iter().enumerate() {
        validate_part(what, i, p)?;
    }
    Ok(parts)
}

/// A member: `INSTANCE/CLASS/CODE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    instance: String,
    class: String,
    code: String,
}

impl MemberId {
    /// Builds a member id from validated parts.
    pub fn new(instance: &str, class: &str, code: &str) -> Result<Self, IdError> {
        validate_part("member", 0, instance)?;
        validate_part("member", 1, class)?;
        validate_part("member", 2, code)?;
        Ok(Self {
            instance: instance.to_owned(),
            class: class.to_owned(),
            code: code.to_owned(),
        })
    }
    /// The X-Road instance, e.g. `GL`.
    pub fn instance(&self) -> &str {
        &self.instance
    }
    /// The member class, e.g. `GOV`.
    pub fn class(&self) -> &str {
        &self.class
    }
    /// The member code, e.g. a business register number.
    pub fn code(&self) -> &str {
        &self.code
    }
    /// A subsystem of this member.
    pub fn subsystem(&self, code: &str) -> Result<SubsystemId, IdError> {
        validate_part("subsystem", 3, code)?;
        Ok(SubsystemId {
            member: self.clone(),
            code: code.to_owned(),
        })
    }
    /// A gateway (X-Road: security server) owned by this member.
    pub fn gateway(&self, code: &str) -> Result<GatewayId, IdError> {
        validate_part("gateway", 3, code)?;
        Ok(GatewayId {
            owner: self.clone(),
            code: code.to_owned(),
        })
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.instance, self.class, self.code)
    }
}

impl FromStr for MemberId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split_parts("member", s, &[3], "3")?;
        Ok(Self {
            instance: p[0].to_owned(),
            class: p[1].to_owned(),
            code: p[2].to_owned(),
        })
    }
}

/// A subsystem (an information system of a member): `INSTANCE/CLASS/CODE/SUBSYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubsystemId {
    member: MemberId,
    code: String,
}

impl SubsystemId {
    /// The owning member.
    pub fn member(&self) -> &MemberId {
        &self.member
    }
    /// The subsystem code.
    pub fn code(&self) -> &str {
        &self.code
    }
    /// A service of this subsystem.
    pub fn service(&self, code: &str) -> Result<ServiceId, IdError> {
        validate_part("service", 4, code)?;
        Ok(ServiceId {
            subsystem: self.clone(),
            code: code.to_owned(),
        })
    }
}

impl fmt::Display for SubsystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.code)
    }
}

impl FromStr for SubsystemId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split_parts("subsystem", s, &[4], "4")?;
        Ok(Self {
            member: MemberId {
                instance: p[0].to_owned(),
                class: p[1].to_owned(),
                code: p[2].to_owned(),
            },
            code: p[3].to_owned(),
        })
    }
}

/// The party named in `X-Road-Client`: a member or one of its subsystems.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientId {
    /// A member acting without a subsystem.
    Member(MemberId),
    /// A subsystem.
    Subsystem(SubsystemId),
}

impl ClientId {
    /// The member behind the client.
    pub fn member(&self) -> &MemberId {
        match self {
            ClientId::Member(m) => m,
            ClientId::Subsystem(s) => s.member(),
        }
    }
    /// The subsystem, when the client is one.
    pub fn as_subsystem(&self) -> Option<&SubsystemId> {
        match self {
            ClientId::Member(_) => None,
            ClientId::Subsystem(s) => Some(s),
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Member(m) => m.fmt(f),
            ClientId::Subsystem(s) => s.fmt(f),
        }
    }
}

impl FromStr for ClientId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split_parts("client", s, &[3, 4], "3 or 4")?;
        let member = MemberId {
            instance: p[0].to_owned(),
            class: p[1].to_owned(),
            code: p[2].to_owned(),
        };
        Ok(match p.get(3) {
            None => ClientId::Member(member),
            Some(code) => ClientId::Subsystem(SubsystemId {
                member,
                code: (*code).to_owned(),
            }),
        })
    }
}

/// A REST service of a subsystem: `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`.
///
/// X-Road's REST protocol addresses services of subsystems only and carries no
/// service version in the URL, so neither does this type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    subsystem: SubsystemId,
    code: String,
}

impl ServiceId {
    /// The subsystem that provides the service.
    pub fn subsystem(&self) -> &SubsystemId {
        &self.subsystem
    }
    /// The service code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.subsystem, self.code)
    }
}

impl FromStr for ServiceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split_parts("service", s, &[5], "5")?;
        Ok(Self {
            subsystem: SubsystemId {
                member: MemberId {
                    instance: p[0].to_owned(),
                    class: p[1].to_owned(),
                    code: p[2].to_owned(),
                },
                code: p[3].to_owned(),
            },
            code: p[4].to_owned(),
        })
    }
}

/// A gateway (X-Road: security server): `INSTANCE/CLASS/CODE/GATEWAY`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId {
    owner: MemberId,
    code: String,
}

impl GatewayId {
    /// The member that runs the gateway.
    pub fn owner(&self) -> &MemberId {
        &self.owner
    }
    /// The gateway code, unique within its owner.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.code)
    }
}

impl FromStr for GatewayId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split_parts("gateway", s, &[4], "4")?;
        Ok(Self {
            owner: MemberId {
                instance: p[0].to_owned(),
                class: p[1].to_owned(),
                code: p[2].to_owned(),
            },
            code: p[3].to_owned(),
        })
    }
}

/// A global group defined by the authority: `INSTANCE/CODE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GlobalGroupId {
    instance: String,
    code: String,
}

impl GlobalGroupId {
    /// The instance that defines the group.
    pub fn instance(&self) -> &str {
        &self.instance
    }
    /// The group code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl fmt::Display for GlobalGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.code)
    }
}

impl FromStr for GlobalGroupId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split_parts("global group", s, &[2], "2")?;
        Ok(Self {
            instance: p[0].to_owned(),
            code: p[1].to_owned(),
        })
    }
}

macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(
    MemberId,
    SubsystemId,
    ClientId,
    ServiceId,
    GatewayId,
    GlobalGroupId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        let m: MemberId = "GL/GOV/12345678".parse().unwrap();
        assert_eq!(m.to_string(), "GL/GOV/12345678");
        let s: SubsystemId = "GL/GOV/12345678/population".parse().unwrap();
        assert_eq!(s.member(), &m);
        let svc: ServiceId = "GL/GOV/12345678/population/persons".parse().unwrap();
        assert_eq!(svc.subsystem(), &s);
        assert_eq!(svc.code(), "persons");
        let c: ClientId = "GL/GOV/12345678".parse().unwrap();
        assert_eq!(c, ClientId::Member(m.clone()));
        let c: ClientId = "GL/GOV/12345678/population".parse().unwrap();
        assert_eq!(c.as_subsystem(), Some(&s));
        let g: GatewayId = "GL/GOV/12345678/gw1".parse().unwrap();
        assert_eq!(g.owner(), &m);
        let gg: GlobalGroupId = "GL/all-municipalities".parse().unwrap();
        assert_eq!(gg.code(), "all-municipalities");
    }

    #[test]
    fn allows_exactly_the_xroad_alphabet() {
        let ok = "GL/GOV/a'()+,-.=?Z9/sub";
        assert!(ok.parse::<SubsystemId>().is_ok());
        for bad in [
            '_', ' ', ':', ';', '%', '\\', '&', '#', 'æ', '\u{0}', '*', '@',
        ] {
            let s = format!("GL/GOV/12{bad}3");
            let err = s.parse::<MemberId>().unwrap_err();
            assert_eq!(
                err,
                IdError::BadCharacter {
                    what: "member",
                    index: 2,
                    ch: bad
                },
                "{s}"
            );
        }
    }

    #[test]
    fn refuses_wrong_shapes() {
        assert!(matches!(
            "GL/GOV".parse::<MemberId>(),
            Err(IdError::WrongPartCount { found: 2, .. })
        ));
        assert!(matches!(
            "GL/GOV/1/2/3".parse::<ClientId>(),
            Err(IdError::WrongPartCount { found: 5, .. })
        ));
        assert!(matches!(
            "GL//1".parse::<MemberId>(),
            Err(IdError::EmptyPart { index: 1, .. })
        ));
        assert!(matches!(
            "".parse::<GlobalGroupId>(),
            Err(IdError::WrongPartCount { .. })
        ));
        let long = format!("GL/GOV/{}", "a".repeat(MAX_PART_LEN + 1));
        assert!(matches!(
            long.parse::<MemberId>(),
            Err(IdError::PartTooLong { index: 2, .. })
        ));
        assert!(matches!(
            "GL/GOV/../x".parse::<SubsystemId>(),
            Err(IdError::DotSegment { index: 2, .. })
        ));
        assert!("GL/GOV/.../x".parse::<SubsystemId>().is_ok());
    }

    #[test]
    fn serde_round_trips_as_strings() {
        let s: ServiceId = "GL/GOV/1/sub/svc".parse().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"GL/GOV/1/sub/svc\"");
        let back: ServiceId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ServiceId>("\"GL/GOV/1\"").is_err());
    }
}
