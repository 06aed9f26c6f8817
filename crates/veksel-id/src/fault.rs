//! Fault codes in X-Road's form: `{origin}.{code}`, for example
//! `Server.ClientProxy.OutdatedGlobalConf`.
//!
//! Every failure a gateway reports maps to exactly one [`FaultCode`]; the origin says
//! whose side found it. An information system written against X-Road matches on the
//! same strings, so the codes are X-Road's wherever X-Road has one.

use std::fmt;

/// Where a fault was detected, which is also who is to blame first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The consumer's information system sent something wrong (HTTP 400).
    Client,
    /// The consumer's gateway failed or refused (HTTP 500).
    ClientProxy,
    /// The provider's gateway failed or refused (HTTP 500).
    ServerProxy,
}

impl Origin {
    /// The prefix X-Road uses for this origin.
    pub fn prefix(self) -> &'static str {
        match self {
            Origin::Client => "Client",
            Origin::ClientProxy => "Server.ClientProxy",
            Origin::ServerProxy => "Server.ServerProxy",
        }
    }
}

macro_rules! fault_codes {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The kinds of fault, named as X-Road's `ErrorCodes` name them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FaultCode { $($(#[$doc])* $name,)* }

        impl FaultCode {
            /// The code as it appears after the origin prefix.
            pub fn as_str(self) -> &'static str {
                match self { $(FaultCode::$name => stringify!($name),)* }
            }
            /// Every code, for documentation and tests.
            pub const ALL: &'static [FaultCode] = &[$(FaultCode::$name,)*];
            /// Looks a code up by its name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $(stringify!($name) => Some(FaultCode::$name),)* _ => None }
            }
        }
    };
}

fault_codes! {
    /// The request does not follow the r1 protocol: bad URL, bad header value, bad framing.
    BadRequest,
    /// The URL names a protocol version other than `r1`.
    InvalidProtocolVersion,
    /// A message between gateways is malformed.
    InvalidRequest,
    /// A mandatory header (`X-Road-Client`) is missing.
    MissingHeaderField,
    /// `X-Road-Client` does not name a valid client.
    InvalidClientIdentifier,
    /// `X-Road-Security-Server` does not name a gateway that hosts the service.
    InvalidSecurityServer,
    /// The client or provider is not a member or subsystem the configuration knows here.
    UnknownMember,
    /// The service is not known to the provider.
    UnknownService,
    /// The service exists but is disabled by its provider.
    ServiceDisabled,
    /// The client has no access right to the service or endpoint.
    AccessDenied,
    /// The service requires an access token and the request carries none.
    MissingAccessToken,
    /// The access token is not valid here: forged, expired, revoked, for another
    /// audience, or presented by someone it was not issued to.
    InvalidAccessToken,
    /// The access token is valid but lacks the scope the service requires.
    InsufficientScope,
    /// The person's ID token is not valid here: forged, expired, issued to another
    /// system, or not naming a person at a known level.
    InvalidPersonToken,
    /// The service requires a person verified at a level the request does not bring.
    VerifiedPersonRequired,
    /// The cached global configuration has expired or is missing.
    OutdatedGlobalConf,
    /// The peer gateway could not be reached or the connection broke.
    NetworkError,
    /// A TLS peer (gateway or information system) is not the one registered.
    SslAuthenticationFailed,
    /// A signing certificate is not acceptable: wrong issuer, expired, wrong member.
    IncorrectCertificate,
    /// A signature does not verify.
    InvalidSignatureValue,
    /// The signature is missing.
    MissingSignature,
    /// The body does not match the digest that was signed.
    InvalidBodyDigest,
    /// The request was seen before or is outside its validity window.
    ReplayedMessage,
    /// The response does not belong to the request (request hash or id mismatch).
    InconsistentResponse,
    /// The provider's information system could not be reached, failed or timed out.
    ServiceFailed,
    /// No time-stamping authority has answered for longer than allowed, and the
    /// gateway is configured to fail closed.
    TimestampingFailed,
    /// A configured time limit was exceeded.
    Timeout,
    /// A configured size limit was exceeded.
    TooLarge,
    /// The message log or another store could not be written or read.
    DatabaseError,
    /// Anything else; the message says what.
    InternalError,
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault: origin, code and a human readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.type_string())]
pub struct Fault {
    /// Which side detected it.
    pub origin: Origin,
    /// What went wrong.
    pub code: FaultCode,
    /// Explanation for the operator and the integrating developer; never contains
    /// secrets or another party's data.
    pub message: String,
}

impl Fault {
    /// A fault blamed on the calling information system.
    pub fn client(code: FaultCode, message: impl Into<String>) -> Self {
        Self {
            origin: Origin::Client,
            code,
            message: message.into(),
        }
    }
    /// A fault detected by the consumer's gateway.
    pub fn client_proxy(code: FaultCode, message: impl Into<String>) -> Self {
        Self {
            origin: Origin::ClientProxy,
            code,
            message: message.into(),
        }
    }
    /// A fault detected by the provider's gateway.
    pub fn server_proxy(code: FaultCode, message: impl Into<String>) -> Self {
        Self {
            origin: Origin::ServerProxy,
            code,
            message: message.into(),
        }
    }
    /// The full type string, e.g. `Server.ServerProxy.AccessDenied`.
    pub fn type_string(&self) -> String {
        format!("{}.{}", self.origin.prefix(), self.code.as_str())
    }
    /// The HTTP status X-Road's REST protocol uses: 400 for client faults, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self.origin {
            Origin::Client => 400,
            Origin::ClientProxy | Origin::ServerProxy => 500,
        }
    }
    /// Parses a type string back into origin and code.
    pub fn parse_type(type_string: &str) -> Option<(Origin, FaultCode)> {
        let (origin, code) = if let Some(rest) = type_string.strip_prefix("Server.ClientProxy.") {
            (Origin::ClientProxy, rest)
        } else if let Some(rest) = type_string.strip_prefix("Server.ServerProxy.") {
            (Origin::ServerProxy, rest)
        } else if let Some(rest) = type_string.strip_prefix("Client.") {
            (Origin::Client, rest)
        } else {
            return None;
        };
        Some((origin, FaultCode::from_name(code)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_strings_and_statuses() {
        let f = Fault::client_proxy(FaultCode::OutdatedGlobalConf, "expired");
        assert_eq!(f.type_string(), "Server.ClientProxy.OutdatedGlobalConf");
        assert_eq!(f.http_status(), 500);
        let f = Fault::client(FaultCode::MissingHeaderField, "X-Road-Client");
        assert_eq!(f.type_string(), "Client.MissingHeaderField");
        assert_eq!(f.http_status(), 400);
        assert_eq!(f.to_string(), "Client.MissingHeaderField: X-Road-Client");
    }

    #[test]
    fn every_code_round_trips() {
        for code in FaultCode::ALL {
            for f in [
                Fault::client(*code, ""),
                Fault::client_proxy(*code, ""),
                Fault::server_proxy(*code, ""),
            ] {
                assert_eq!(Fault::parse_type(&f.type_string()), Some((f.origin, *code)));
            }
        }
        assert_eq!(Fault::parse_type("Server.Other.AccessDenied"), None);
        assert_eq!(Fault::parse_type("Client.NoSuchCode"), None);
    }
}
