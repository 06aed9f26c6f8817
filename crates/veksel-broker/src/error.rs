//! Refusals with data.altinn.no's error codes and its error body
//! (`{"code": 1007, "description": "…"}`), so that a client written for it reads
//! veksel's refusals unchanged.

use serde::Serialize;

/// data.altinn.no's error codes (`Dan.Common.Enums.ErrorCode`), the ones the broker
/// raises. The numbers are the wire format and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "u16")]
pub enum ErrorCode {
    /// 1001: the requestor is not a valid party.
    InvalidRequestor,
    /// 1002: no accreditation with that id (or not the caller's).
    NonExistentAccreditation,
    /// 1003: the accreditation is past its validity.
    ExpiredAccreditation,
    /// 1004: the subject is not a valid party for the dataset.
    InvalidSubject,
    /// 1006: the request for a dataset is malformed (an unknown purpose, say).
    InvalidEvidenceRequest,
    /// 1007: no dataset by that name (in this service context).
    UnknownEvidenceCode,
    /// 1008: the legal basis is missing or of a kind the dataset does not accept.
    InvalidLegalBasis,
    /// 1010: the dataset needs the subject's consent, which is not given.
    RequiresConsent,
    /// 1011: the consent has expired.
    ExpiredConsent,
    /// 1012: the consent was revoked.
    DeletedConsent,
    /// 1013: the broker cannot serve the dataset now.
    ServiceNotAvailable,
    /// 1014: the authorization request is malformed.
    InvalidAuthorizationRequest,
    /// 1015: the broker failed.
    InternalServerError,
    /// 1016: an asynchronous dataset is not ready yet.
    AsyncEvidenceStillWaiting,
    /// 1017: a parameter of the dataset is missing or malformed.
    InvalidEvidenceRequestParameter,
    /// 1018: the requested validity is too long or in the past.
    InvalidValidToDateTime,
    /// 1019: a requirement of the dataset is not met.
    AuthorizationFailed,
    /// 1023: no access token.
    MissingAuthentication,
    /// 1024: the access token is not valid here.
    InvalidAccessToken,
    /// 1027: the `query` expression is not valid.
    InvalidJmesPathExpression,
    /// 3001: the source failed, and may answer if asked again.
    SourceTransient,
    /// 3002: the source refused the request as the broker made it.
    SourcePermanentClient,
    /// 3003: the source failed, or answered something the dataset does not allow.
    SourcePermanentServer,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn number(self) -> u16 {
        match self {
            Self::InvalidRequestor => 1001,
            Self::NonExistentAccreditation => 1002,
            Self::ExpiredAccreditation => 1003,
            Self::InvalidSubject => 1004,
            Self::InvalidEvidenceRequest => 1006,
            Self::UnknownEvidenceCode => 1007,
            Self::InvalidLegalBasis => 1008,
            Self::RequiresConsent => 1010,
            Self::ExpiredConsent => 1011,
            Self::DeletedConsent => 1012,
            Self::ServiceNotAvailable => 1013,
            Self::InvalidAuthorizationRequest => 1014,
            Self::InternalServerError => 1015,
            Self::AsyncEvidenceStillWaiting => 1016,
            Self::InvalidEvidenceRequestParameter => 1017,
            Self::InvalidValidToDateTime => 1018,
            Self::AuthorizationFailed => 1019,
            Self::MissingAuthentication => 1023,
            Self::InvalidAccessToken => 1024,
            Self::InvalidJmesPathExpression => 1027,
            Self::SourceTransient => 3001,
            Self::SourcePermanentClient => 3002,
            Self::SourcePermanentServer => 3003,
        }
    }

    /// The HTTP status data.altinn.no answers the code with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MissingAuthentication | Self::InvalidAccessToken => 401,
            Self::AuthorizationFailed
            | Self::RequiresConsent
            | Self::ExpiredConsent
            | Self::DeletedConsent
            | Self::InvalidLegalBasis
            | Self::InvalidRequestor => 403,
            Self::NonExistentAccreditation | Self::UnknownEvidenceCode => 404,
            Self::ExpiredAccreditation => 410,
            Self::AsyncEvidenceStillWaiting => 202,
            Self::InternalServerError | Self::SourcePermanentServer => 500,
            Self::SourcePermanentClient => 502,
            Self::ServiceNotAvailable | Self::SourceTransient => 503,
            Self::InvalidSubject
            | Self::InvalidEvidenceRequest
            | Self::InvalidAuthorizationRequest
            | Self::InvalidEvidenceRequestParameter
            | Self::InvalidValidToDateTime
            | Self::InvalidJmesPathExpression => 400,
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        c.number()
    }
}

/// A refusal: its code and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {description}", .code.number(), code_name(.code))]
pub struct BrokerError {
    /// The code.
    pub code: ErrorCode,
    /// What was wrong, for the caller (never personal data).
    pub description: String,
}

fn code_name(code: &ErrorCode) -> String {
    format!("{code:?}")
}

impl BrokerError {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// The body data.altinn.no answers a refusal with.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.number(), "description": self.description })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_data_altinn_nos() {
        let e = BrokerError::new(ErrorCode::UnknownEvidenceCode, "no dataset persons-basic");
        assert_eq!(
            e.body(),
            serde_json::json!({"code": 1007, "description": "no dataset persons-basic"})
        );
        assert_eq!(e.code.http_status(), 404);
        assert_eq!(
            serde_json::to_value(ErrorCode::RequiresConsent).ok(),
            Some(1010.into())
        );
        assert!(e.to_string().starts_with("1007 (UnknownEvidenceCode)"));
    }
}
