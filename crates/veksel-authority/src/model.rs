//! Request and response bodies of the authority's HTTP API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member class.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberClassDto {
    /// Code, e.g. `GOV`.
    pub code: String,
    /// Description.
    pub description: String,
}

/// Body of `PUT /api/v1/member-classes/{code}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberClassBody {
    /// Description.
    pub description: String,
}

/// A subsystem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubsystemDto {
    /// Subsystem code.
    pub code: String,
    /// Display name.
    pub name: String,
}

/// A member with its subsystems.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberDto {
    /// `INSTANCE/CLASS/CODE`.
    pub id: String,
    /// Legal name.
    pub name: String,
    /// Subsystems.
    pub subsystems: Vec<SubsystemDto>,
}

/// Body of `POST /api/v1/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// `INSTANCE/CLASS/CODE`.
    pub id: String,
    /// Legal name.
    pub name: String,
}

/// A gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayDto {
    /// `INSTANCE/CLASS/CODE/GATEWAY`.
    pub id: String,
    /// `host:port` of its gateway-to-gateway listener.
    pub address: String,
    /// Registered authentication certificates (hex SHA-256).
    pub auth_cert_sha256: Vec<String>,
    /// Hosted subsystems.
    pub clients: Vec<String>,
    /// Hosted subsystems that are disabled (not in the global configuration).
    #[serde(default)]
    pub disabled_clients: Vec<String>,
}

/// Body of `POST /api/v1/gateways`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGateway {
    /// `INSTANCE/CLASS/CODE/GATEWAY`.
    pub id: String,
    /// `host:port` of its gateway-to-gateway listener.
    pub address: String,
}

/// Body of `PATCH /api/v1/gateways/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayPatch {
    /// New `host:port`.
    pub address: String,
}

/// A one-time enrolment token for a gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentToken {
    /// The gateway.
    pub gateway: String,
    /// The token; shown once.
    pub token: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

/// A global group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalGroupDto {
    /// `INSTANCE/CODE`.
    pub id: String,
    /// Group code.
    pub code: String,
    /// Description.
    pub description: String,
    /// Members and subsystems in the group.
    pub members: Vec<String>,
}

/// Body of `POST /api/v1/global-groups`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGlobalGroup {
    /// Group code.
    pub code: String,
    /// Description.
    pub description: String,
}

/// Body of `POST /api/v1/members/{id}/subsystems`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubsystem {
    /// Subsystem code.
    pub code: String,
    /// Display name.
    pub name: String,
}

/// Role of an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including token management.
    Admin,
    /// Registry changes and certificate issuing.
    RegistrationOfficer,
    /// Read-only.
    Observer,
}

impl Role {
    /// The role's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::RegistrationOfficer => "registration-officer",
            Role::Observer => "observer",
        }
    }
    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "registration-officer" => Some(Role::RegistrationOfficer),
            "observer" => Some(Role::Observer),
            _ => None,
        }
    }
    /// True if this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        match needed {
            Role::Observer => true,
            Role::RegistrationOfficer => matches!(self, Role::Admin | Role::RegistrationOfficer),
            Role::Admin => self == Role::Admin,
        }
    }
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Role granted.
    pub role: Role,
    /// What the token is for.
    pub description: String,
}

/// An API token as listed (without the secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenDto {
    /// Token id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// What it is for.
    pub description: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// A newly created API token; the secret is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    /// Token id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// The bearer token.
    pub token: String,
}

/// Which kind of certificate to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CertProfile {
    /// A gateway's authentication (TLS) certificate; registered on the gateway.
    GatewayAuth,
    /// A member's signing certificate.
    MemberSigning,
}

/// Body of `POST /api/v1/certificates`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// Kind of certificate.
    pub profile: CertProfile,
    /// Gateway id (for `gateway-auth`) or member id (for `member-signing`).
    pub subject: String,
    /// PKCS#10 request, PEM.
    pub csr_pem: String,
}

/// An issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuedCert {
    /// Subject id.
    pub subject: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Hex SHA-256 of the certificate.
    pub sha256: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
}

/// One signing CSR in an enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningCsr {
    /// Member id.
    pub member: String,
    /// PKCS#10 request, PEM.
    pub csr_pem: String,
}

/// Body of `POST /enrol/v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// CSR for the gateway's authentication key (absent when only signing
    /// certificates for newly hosted members are wanted).
    #[serde(default)]
    pub auth_csr_pem: Option<String>,
    /// CSRs for the signing keys of the members the gateway serves.
    pub signing: Vec<SigningCsr>,
}

/// A CA whose certificates the network trusts besides the authority's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovedCaDto {
    /// Display name, unique.
    pub name: String,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its OCSP responder (`http://` or `https://`). When set, gateways must staple
    /// fresh responses from it for every certificate of this CA they present.
    #[serde(default)]
    pub ocsp_url: Option<String>,
}

/// A time-stamping authority the network uses besides or instead of the authority's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovedTsaDto {
    /// Display name, unique.
    pub name: String,
    /// Where it takes RFC 3161 requests.
    pub url: String,
    /// Its certificate, PEM; it must chain to an approved CA with the timeStamping
    /// extended key usage.
    pub cert_pem: String,
    /// Gateways try TSAs in ascending priority; the authority's own has 100.
    #[serde(default = "default_tsa_priority")]
    pub priority: i64,
}

fn default_tsa_priority() -> i64 {
    50
}

/// Payload of the JWS a gateway posts to `POST /renew/v1`, signed with its current
/// authentication key (the certificate in the JWS header's `x5c`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The gateway renewing.
    pub gateway: String,
    /// When the request was made, Unix milliseconds; accepted within 5 minutes.
    pub created_at_ms: i64,
    /// A fresh random value; each is accepted once.
    pub nonce: String,
    /// CSR for a new authentication key.
    #[serde(default)]
    pub auth_csr_pem: Option<String>,
    /// With `auth_csr_pem`: the owner's consent, a compact JWS (cty
    /// `veksel-management-consent+json`) by the owner's signing key over
    /// `{"gateway","nonce","auth_csr_sha256"}`.
    #[serde(default)]
    pub owner_consent: Option<String>,
    /// CSRs for new signing keys.
    #[serde(default)]
    pub signing: Vec<SigningCsr>,
}

/// Response of `POST /enrol/v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolResponse {
    /// The gateway enrolled.
    pub gateway: String,
    /// Its authentication certificate, if one was requested.
    pub auth: Option<IssuedCert>,
    /// Signing certificates, one per requested member.
    pub signing: Vec<IssuedCert>,
    /// The issuing CA certificate, PEM.
    pub ca_pem: String,
}

/// Summary of the current global configuration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfStatus {
    /// Version.
    pub version: u64,
    /// Signing time, RFC 3339.
    pub generated_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Number of members.
    pub members: usize,
    /// Number of gateways.
    pub gateways: usize,
}

/// A governance event from the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// Time, RFC 3339.
    pub at: String,
    /// Token id (or `enrolment:<gateway>`) that caused it.
    pub actor: String,
    /// What happened, e.g. `member.add`.
    pub action: String,
    /// The identifier it concerns.
    pub subject: String,
    /// Details, JSON.
    pub detail: String,
}

/// An issued certificate as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuedDto {
    /// Serial number, hex.
    pub serial: String,
    /// `gateway-auth` or `member-signing`.
    pub profile: String,
    /// Gateway or member id.
    pub subject: String,
    /// SHA-256 of the certificate, hex.
    pub sha256: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Issue time, RFC 3339.
    pub issued_at: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
}

/// Body of `POST /api/v1/certificates/{serial}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (free text, kept in the audit trail), e.g. `keyCompromise`.
    pub reason: String,
}
