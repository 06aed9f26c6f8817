//! The client assertion of OAuth 2.0's JWT-bearer grant (RFC 7523 §2.1) in
//! Maskinporten's shape, and the checks a token service makes of it before it looks
//! anything up: the form and algorithm, the signature with the key the assertion
//! names, the audience, the time window and the requested scopes. Replay of `jti`,
//! whether the key belongs to a member, and whether a scope is registered and granted
//! need the token service's state and are checked there.
//!
//! Stricter than Maskinporten where its users were let down (see
//! `shared/reference/nordic.md` §2): scopes are matched whole, never by prefix, and
//! an assertion may live at most [`MAX_ASSERTION_LIFETIME_SECS`].

use crate::jws::{JwsError, Unverified};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The grant type of the JWT-bearer grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest life of an assertion, `exp − iat`, seconds.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 120;
/// Clock difference tolerated between the client and the token service, seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 10;
/// Longest assertion accepted, bytes (it may carry a certificate chain).
pub const MAX_ASSERTION_LEN: usize = 24 * 1024;
/// Most scopes one grant may ask for.
pub const MAX_SCOPES: usize = 32;
/// Longest scope name.
pub const MAX_SCOPE_LEN: usize = 128;

/// Why an assertion is refused, each with its RFC 6749 §5.2 error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a compact JWS with JSON header and claims, or over the size limit.
    #[error("the assertion is malformed: {0}")]
    Malformed(String),
    /// An algorithm other than ES256 (`none`, HS256, RS256, …).
    #[error("the assertion's algorithm {0:?} is not accepted; only ES256 is")]
    UnsupportedAlgorithm(String),
    /// Neither a `kid` nor an `x5c` chain names the key, or both do.
    #[error("the assertion must name its key by exactly one of kid and x5c")]
    NoKey,
    /// The signature does not verify with the named key.
    #[error("the assertion's signature does not verify")]
    BadSignature,
    /// A claim the grant needs is missing or empty.
    #[error("the assertion has no {0} claim")]
    MissingClaim(&'static str),
    /// `aud` is not this token service.
    #[error("the assertion's audience {got:?} is not this token service ({expected})")]
    WrongAudience {
        /// The token service's issuer identifier.
        expected: String,
        /// What the assertion named.
        got: Vec<String>,
    },
    /// `exp` has passed.
    #[error("the assertion expired at {exp} (now {now})")]
    Expired {
        /// The assertion's `exp`.
        exp: i64,
        /// The token service's time.
        now: i64,
    },
    /// `iat` (or `nbf`) is later than now allows.
    #[error("the assertion is issued in the future ({iat}, now {now})")]
    NotYetValid {
        /// The assertion's `iat` or `nbf`.
        iat: i64,
        /// The token service's time.
        now: i64,
    },
    /// `exp − iat` is over [`MAX_ASSERTION_LIFETIME_SECS`].
    #[error("the assertion lives {0} s; at most {MAX_ASSERTION_LIFETIME_SECS} s are accepted")]
    TooLongLived(i64),
    /// The scope list is empty, too long or not well formed.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
}

impl AssertionError {
    /// The OAuth 2.0 error code of the token endpoint's answer: the assertion is the
    /// grant, so a bad one is `invalid_grant` (RFC 7523 §3.1), a bad scope list
    /// `invalid_scope`.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            Self::InvalidScope(_) => "invalid_scope",
            _ => "invalid_grant",
        }
    }
}

impl From<JwsError> for AssertionError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::UnsupportedAlgorithm(alg) => Self::UnsupportedAlgorithm(alg),
            JwsError::BadSignature | JwsError::BadKey => Self::BadSignature,
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// A one-or-many claim (`aud`, `resource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn values(&self) -> Vec<String> {
        match self {
            Self::One(v) => vec![v.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// The claims of a client assertion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssertionClaims {
    /// The client: the member's or subsystem's identifier.
    #[serde(default)]
    pub iss: String,
    /// Must name the token service.
    pub aud: Option<OneOrMany>,
    /// Issued at, Unix seconds.
    pub iat: Option<i64>,
    /// Not before, Unix seconds.
    pub nbf: Option<i64>,
    /// Expires at, Unix seconds.
    pub exp: Option<i64>,
    /// Unique id; the token service refuses it a second time.
    #[serde(default)]
    pub jti: String,
    /// Space-separated scopes asked for.
    #[serde(default)]
    pub scope: String,
    /// RFC 8707 resource indicators: the audience of the access token.
    pub resource: Option<OneOrMany>,
    /// The member a supplier acts for (Maskinporten's delegation).
    pub consumer_org: Option<String>,
    /// RFC 9396 authorization details, passed on to the access token.
    pub authorization_details: Option<serde_json::Value>,
}

/// Where the verifying key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key registered to the client under this id.
    Kid(String),
    /// A certificate chain, leaf first (DER), to be validated against the network's CAs.
    Chain(Vec<Vec<u8>>),
}

/// An assertion whose form is checked and whose signature is not.
#[derive(Debug, Clone)]
pub struct ParsedAssertion {
    jws: Unverified,
    key: KeyRef,
}

impl ParsedAssertion {
    /// Parses a compact JWS assertion: ES256 only, the key named by `kid` or `x5c`.
    pub fn parse(assertion: &str) -> Result<Self, AssertionError> {
        if assertion.len() > MAX_ASSERTION_LEN {
            return Err(AssertionError::Malformed(format!(
                "longer than {MAX_ASSERTION_LEN} bytes"
            )));
        }
        let jws = Unverified::parse(assertion, None)?;
        let key = match (jws.header.kid.clone(), jws.header.x5c.is_empty()) {
            (Some(kid), true) if !kid.is_empty() => KeyRef::Kid(kid),
            (None, false) => KeyRef::Chain(jws.header.chain_der()?),
            _ => return Err(AssertionError::NoKey),
        };
        Ok(Self { jws, key })
    }

    /// The key the assertion names; the caller resolves it.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    /// The claims before the signature is checked: to find the client's keys only.
    pub fn unverified_claims(&self) -> Result<AssertionClaims, AssertionError> {
        claims(&self.jws.unverified_payload()?)
    }

    /// Verifies the signature with the resolved key (an uncompressed P-256 point)
    /// and checks the claims against the token service `issuer` at `now` (Unix s).
    pub fn verify(
        &self,
        public_key_point: &[u8],
        issuer: &str,
        now: i64,
    ) -> Result<AssertionClaims, AssertionError> {
        let claims = claims(&self.jws.verify(public_key_point)?)?;
        check_claims(&claims, issuer, now)?;
        Ok(claims)
    }
}

fn claims(payload: &[u8]) -> Result<AssertionClaims, AssertionError> {
    serde_json::from_slice(payload)
        .map_err(|e| AssertionError::Malformed(format!("claims are not the expected JSON: {e}")))
}

/// The checks of the claims that need no state.
pub fn check_claims(c: &AssertionClaims, issuer: &str, now: i64) -> Result<(), AssertionError> {
    if c.iss.is_empty() {
        return Err(AssertionError::MissingClaim("iss"));
    }
    if c.jti.is_empty() {
        return Err(AssertionError::MissingClaim("jti"));
    }
    let aud = c
        .aud
        .as_ref()
        .ok_or(AssertionError::MissingClaim("aud"))?
        .values();
    // Exactly the token service: a list that also names others is refused, so an
    // assertion made for one service cannot be spent at another.
    if aud.len() != 1 || aud[0] != issuer {
        return Err(AssertionError::WrongAudience {
            expected: issuer.to_owned(),
            got: aud,
        });
    }
    let iat = c.iat.ok_or(AssertionError::MissingClaim("iat"))?;
    let exp = c.exp.ok_or(AssertionError::MissingClaim("exp"))?;
    for start in [Some(iat), c.nbf].into_iter().flatten() {
        if start > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(AssertionError::NotYetValid { iat: start, now });
        }
    }
    if exp <= now.saturating_sub(MAX_CLOCK_SKEW_SECS) {
        return Err(AssertionError::Expired { exp, now });
    }
    let lifetime = exp.saturating_sub(iat);
    if lifetime > MAX_ASSERTION_LIFETIME_SECS {
        return Err(AssertionError::TooLongLived(lifetime));
    }
    // A grant may name its scopes in the form instead (RFC 7521 §4.1), and a client
    // authenticating for introspection names none: the token service requires them
    // where they are needed; here only their form is checked.
    if !c.scope.is_empty() {
        scopes(&c.scope)?;
    }
    Ok(())
}

/// The scopes of a `scope` claim (RFC 6749 §3.3): distinct names of visible ASCII
/// without `"` or `\`, separated by single spaces.
pub fn scopes(scope: &str) -> Result<Vec<&str>, AssertionError> {
    if scope.is_empty() {
        return Err(AssertionError::InvalidScope("no scope asked for".into()));
    }
    let names: Vec<&str> = scope.split(' ').collect();
    if names.len() > MAX_SCOPES {
        return Err(AssertionError::InvalidScope(format!(
            "more than {MAX_SCOPES} scopes"
        )));
    }
    for (i, name) in names.iter().enumerate() {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_SCOPE_LEN
            && name
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !well_formed {
            return Err(AssertionError::InvalidScope(format!(
                "{name:?} is not a scope name"
            )));
        }
        if names[..i].contains(name) {
            return Err(AssertionError::InvalidScope(format!("{name} asked twice")));
        }
    }
    Ok(names)
}

/// Whether `granted` contains `asked` as a whole name (never by prefix).
pub fn scope_granted(granted: &[&str], asked: &str) -> bool {
    granted.contains(&asked)
}

/// What a client asks the token service for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The client: a member or subsystem identifier, whose member signs.
    pub client: String,
    /// Space-separated scopes.
    pub scope: String,
    /// RFC 8707 resources: the token's audience.
    pub resources: Vec<String>,
    /// The member a supplier acts for.
    pub consumer_org: Option<String>,
}

impl Grant {
    /// A client assertion for this grant, signed with the member's signing key and
    /// carrying its chain, valid for 60 s from `now`.
    pub fn assertion(
        &self,
        signer: &dyn crate::jws::Signer,
        issuer: &str,
        now: i64,
        jti: &str,
    ) -> Result<String, JwsError> {
        let mut claims = serde_json::json!({
            "iss": self.client, "aud": issuer, "iat": now, "exp": now + 60,
            "jti": jti, "scope": self.scope,
        });
        if !self.resources.is_empty() {
            claims["resource"] = if self.resources.len() == 1 {
                self.resources[0].clone().into()
            } else {
                self.resources.clone().into()
            };
        }
        if let Some(org) = &self.consumer_org {
            claims["consumer_org"] = org.clone().into();
        }
        crate::jws::sign_jwt_with_chain(signer, claims.to_string().as_bytes())
    }
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token, a JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The granted scopes.
    pub scope: String,
}

/// JWT `typ` of access tokens (RFC 9068 §2.1): a verifier that checks it cannot be
/// handed an ID token or a client assertion in an access token's place.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Default life of an access token, seconds (Maskinporten's default).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 120;
/// Longest access token a verifier looks at, bytes.
pub const MAX_ACCESS_TOKEN_LEN: usize = 16 * 1024;

/// A public ES256 key as a JSON Web Key (RFC 7517), as published in a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// The point's x coordinate, base64url.
    pub x: String,
    /// The point's y coordinate, base64url.
    pub y: String,
    /// The key's id: its RFC 7638 thumbprint.
    pub kid: String,
    /// Always `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Always `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl Jwk {
    /// The JWK of an uncompressed P-256 point, its `kid` the RFC 7638 thumbprint.
    pub fn es256(point: &[u8]) -> Result<Self, TokenError> {
        if point.len() != 65 || point.first() != Some(&4) {
            return Err(TokenError::Malformed(
                "not an uncompressed P-256 point".into(),
            ));
        }
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..]),
        );
        // RFC 7638 §3.2: the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        Ok(Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x,
            y,
            kid,
            key_use: Some("sig".into()),
            alg: Some("ES256".into()),
        })
    }

    /// The uncompressed point, checked to be a P-256 signing key.
    pub fn point(&self) -> Result<Vec<u8>, TokenError> {
        if self.kty != "EC" || self.crv != "P-256" {
            return Err(TokenError::Malformed(format!(
                "key {} is {} {}, not EC P-256",
                self.kid, self.kty, self.crv
            )));
        }
        let coordinate = |c: &str| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    TokenError::Malformed(format!("key {} has a bad coordinate", self.kid))
                })
        };
        let mut point = vec![4u8];
        point.extend(coordinate(&self.x)?);
        point.extend(coordinate(&self.y)?);
        Ok(point)
    }
}

/// The S256 challenge of a PKCE verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// A JSON Web Key Set (RFC 7517 §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The claims of an access token (RFC 9068 with Maskinporten's `consumer` and
/// `supplier`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The token service.
    pub iss: String,
    /// The client the token was issued to (as `client_id`; RFC 9068 §2.2).
    pub sub: String,
    /// The client: the member or subsystem that signed the grant.
    pub client_id: String,
    /// The member on whose behalf the API is called.
    pub consumer: String,
    /// The member that called for the consumer under a delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// Space-separated granted scopes.
    pub scope: String,
    /// Whom the token is for: the requested resources, else the scopes' owners.
    pub aud: OneOrMany,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Unique id of the token.
    pub jti: String,
    /// RFC 9396 authorization details, as asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
}

impl AccessTokenClaims {
    /// The granted scopes.
    pub fn scopes(&self) -> Vec<&str> {
        self.scope.split(' ').filter(|s| !s.is_empty()).collect()
    }
}

/// Why a token (an access token, or a person's ID token) is refused by the one who
/// checks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS with JSON header and claims, or over the size limit.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// An algorithm other than ES256.
    #[error("the token's algorithm {0:?} is not accepted; only ES256 is")]
    UnsupportedAlgorithm(String),
    /// `typ` is not the one this kind of token has.
    #[error("the token's type is {got:?}, not {expected}")]
    WrongType {
        /// The type this kind of token has.
        expected: &'static str,
        /// The token's `typ`.
        got: Option<String>,
    },
    /// No published key has the token's `kid`.
    #[error("no published key of the token service has id {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Another issuer.
    #[error("the token is issued by {got:?}, not by {expected}")]
    WrongIssuer {
        /// The trusted issuer.
        expected: String,
        /// The token's `iss`.
        got: String,
    },
    /// Issued to someone else.
    #[error("the token is issued to {got:?}, not to {expected}")]
    WrongAudience {
        /// Who presents it.
        expected: String,
        /// The token's `aud`.
        got: String,
    },
    /// A claim the verifier needs is missing or not what the issuer writes.
    #[error("the token's {claim} claim {why}")]
    BadClaim {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// `exp` has passed.
    #[error("the token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `iat` is later than now allows.
    #[error("the token is issued in the future ({iat}, now {now})")]
    NotYetValid {
        /// The token's `iat`.
        iat: i64,
        /// The verifier's time.
        now: i64,
    },
}

impl From<JwsError> for TokenError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::UnsupportedAlgorithm(alg) => Self::UnsupportedAlgorithm(alg),
            JwsError::BadSignature | JwsError::BadKey => Self::BadSignature,
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// The claims every token of the token service carries: its issuer and time window.
pub trait SignedClaims: serde::de::DeserializeOwned {
    /// `iss`.
    fn issuer(&self) -> &str;
    /// `iat`, Unix seconds.
    fn issued_at(&self) -> i64;
    /// `exp`, Unix seconds.
    fn expires_at(&self) -> i64;
}

/// Implements [`SignedClaims`] for claims with `iss`, `iat` and `exp` fields.
macro_rules! signed_claims {
    ($claims:ty) => {
        impl $crate::oauth::SignedClaims for $claims {
            fn issuer(&self) -> &str {
                &self.iss
            }
            fn issued_at(&self) -> i64 {
                self.iat
            }
            fn expires_at(&self) -> i64 {
                self.exp
            }
        }
    };
}
pub(crate) use signed_claims;

signed_claims!(AccessTokenClaims);

/// The kind of token a verifier expects: its `typ` and how long it may be.
#[derive(Debug, Clone, Copy)]
pub struct TokenKind {
    /// The JWT `typ` the issuer writes.
    pub typ: &'static str,
    /// Longest token looked at, bytes.
    pub max_len: usize,
}

/// Access tokens (RFC 9068).
pub const ACCESS_TOKEN: TokenKind = TokenKind {
    typ: ACCESS_TOKEN_TYP,
    max_len: MAX_ACCESS_TOKEN_LEN,
};

/// Checks a token's time window at `now` (with [`MAX_CLOCK_SKEW_SECS`]).
pub fn check_window<C: SignedClaims>(claims: &C, now: i64) -> Result<(), TokenError> {
    if claims.expires_at() <= now.saturating_sub(MAX_CLOCK_SKEW_SECS) {
        return Err(TokenError::Expired {
            exp: claims.expires_at(),
            now,
        });
    }
    if claims.issued_at() > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(TokenError::NotYetValid {
            iat: claims.issued_at(),
            now,
        });
    }
    Ok(())
}

/// Verifies a token of the token service with its published keys: ES256, the
/// kind's `typ` and size, a known `kid`, the signature, the issuer and the time
/// window at `now`. What the token grants is the caller's to check.
pub fn verify_token<C: SignedClaims>(
    token: &str,
    kind: TokenKind,
    keys: &[Jwk],
    issuer: &str,
    now: i64,
) -> Result<C, TokenError> {
    if token.len() > kind.max_len {
        return Err(TokenError::Malformed(format!(
            "longer than {} bytes",
            kind.max_len
        )));
    }
    let jws = Unverified::parse(token, None)?;
    if jws.header.typ.as_deref() != Some(kind.typ) {
        return Err(TokenError::WrongType {
            expected: kind.typ,
            got: jws.header.typ.clone(),
        });
    }
    let key = keys
        .iter()
        .find(|k| Some(&k.kid) == jws.header.kid.as_ref())
        .ok_or_else(|| TokenError::UnknownKey(jws.header.kid.clone()))?;
    let claims: C = serde_json::from_slice(&jws.verify(&key.point()?)?)
        .map_err(|e| TokenError::Malformed(format!("claims are not the expected JSON: {e}")))?;
    if claims.issuer() != issuer {
        return Err(TokenError::WrongIssuer {
            expected: issuer.to_owned(),
            got: claims.issuer().to_owned(),
        });
    }
    check_window(&claims, now)?;
    Ok(claims)
}

/// Verifies an access token with the token service's published keys (see
/// [`verify_token`]). Scope, audience and consumer are the caller's to check.
pub fn verify_access_token(
    token: &str,
    keys: &[Jwk],
    issuer: &str,
    now: i64,
) -> Result<AccessTokenClaims, TokenError> {
    verify_token(token, ACCESS_TOKEN, keys, issuer, now)
}

/// The token service as gateways see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenService {
    /// The issuer identifier (`iss` of its tokens).
    pub issuer: String,
    /// Its signing keys, current and retired ones whose tokens may still be valid.
    pub keys: Vec<Jwk>,
    /// Tokens of these members issued before the instant are revoked.
    #[serde(default)]
    pub revoked: Vec<RevokedTokens>,
    /// Scopes members have delegated to suppliers.
    #[serde(default)]
    pub delegations: Vec<Delegation>,
}

/// Every token of a member issued before an instant is revoked (its signing
/// certificate was revoked, or an officer revoked its tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedTokens {
    /// The member: a token whose client or consumer is of this member is revoked.
    pub member: veksel_id::MemberId,
    /// Tokens issued before this instant, Unix seconds.
    pub issued_before: i64,
}

/// A member (the consumer) lets a supplier get tokens with one of its scopes on
/// its behalf (Maskinporten's delegation through Altinn).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// The scope.
    pub scope: String,
    /// The member that holds the scope and delegates it.
    pub consumer: veksel_id::MemberId,
    /// The member that may act for it.
    pub supplier: veksel_id::MemberId,
}

/// Why a valid access token does not admit this call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// The token lacks the scope the service requires.
    #[error("the access token does not have scope {0}")]
    MissingScope(String),
    /// The audience names neither the service, its subsystem nor its member.
    #[error("the access token is for {got:?}, not for {service}")]
    WrongAudience {
        /// The service called.
        service: String,
        /// The token's audience.
        got: Vec<String>,
    },
    /// The caller is neither the token's consumer nor its supplier.
    #[error("the access token was issued to {client} for {consumer}; {caller} may not use it")]
    WrongConsumer {
        /// The calling member.
        caller: String,
        /// The token's client.
        client: String,
        /// The token's consumer.
        consumer: String,
    },
    /// The consumer no longer delegates the scope to the supplier.
    #[error("{consumer} does not delegate scope {scope} to {supplier}")]
    NoDelegation {
        /// The scope.
        scope: String,
        /// The token's consumer.
        consumer: String,
        /// The token's supplier.
        supplier: String,
    },
    /// The token service revoked the tokens of the consumer or client.
    #[error("the access token is revoked: the tokens of {0} issued until then are")]
    Revoked(String),
}

/// The revocation that covers a token: of its consumer's or its client's member,
/// at or after the token was issued.
pub fn revocation_of<'a>(
    claims: &AccessTokenClaims,
    ts: &'a TokenService,
) -> Option<&'a RevokedTokens> {
    let client_member = claims
        .client_id
        .parse::<veksel_id::ClientId>()
        .ok()
        .map(|c| c.member().to_string());
    ts.revoked.iter().find(|r| {
        let member = r.member.to_string();
        claims.iat <= r.issued_before
            && (member == claims.consumer || Some(&member) == client_member.as_ref())
    })
}

/// Whether a verified access token admits `caller` (the calling member) to
/// `service` (`INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`) that requires `scope`, by the
/// configuration's delegations and revocations.
pub fn authorise(
    claims: &AccessTokenClaims,
    scope: &str,
    service: &veksel_id::ServiceId,
    caller: &veksel_id::MemberId,
    ts: &TokenService,
) -> Result<(), TokenRefusal> {
    if let Some(r) = revocation_of(claims, ts) {
        return Err(TokenRefusal::Revoked(r.member.to_string()));
    }
    let client_member = claims
        .client_id
        .parse::<veksel_id::ClientId>()
        .ok()
        .map(|c| c.member().to_string());
    if !scope_granted(&claims.scopes(), scope) {
        return Err(TokenRefusal::MissingScope(scope.to_owned()));
    }
    let names = [
        service.to_string(),
        service.subsystem().to_string(),
        service.subsystem().member().to_string(),
    ];
    let aud = claims.aud.values();
    if !aud.iter().any(|a| names.contains(a)) {
        return Err(TokenRefusal::WrongAudience {
            service: service.to_string(),
            got: aud,
        });
    }
    let caller_text = caller.to_string();
    let wrong_consumer = || TokenRefusal::WrongConsumer {
        caller: caller_text.clone(),
        client: claims.client_id.clone(),
        consumer: claims.consumer.clone(),
    };
    // The client that got the token must be the one calling with it.
    if client_member.as_deref() != Some(caller_text.as_str()) {
        return Err(wrong_consumer());
    }
    match &claims.supplier {
        None if claims.consumer == caller_text => Ok(()),
        None => Err(wrong_consumer()),
        Some(supplier) if supplier == &caller_text => {
            let delegated = ts.delegations.iter().any(|d| {
                d.scope == scope
                    && d.consumer.to_string() == claims.consumer
                    && &d.supplier.to_string() == supplier
            });
            if delegated {
                Ok(())
            } else {
                Err(TokenRefusal::NoDelegation {
                    scope: scope.to_owned(),
                    consumer: claims.consumer.clone(),
                    supplier: supplier.clone(),
                })
            }
        }
        Some(_) => Err(wrong_consumer()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::{SoftwareSigner, generate_p256_pkcs8};
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const ISSUER: &str = "https://authority.test/token";
    const NOW: i64 = 1_800_000_000;

    fn key() -> (SoftwareSigner, Vec<u8>) {
        let s = SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![]).unwrap();
        let public = s.public_key();
        (s, public)
    }

    fn claims_json() -> serde_json::Value {
        serde_json::json!({
            "iss": "DEV:MUN:30000003",
            "aud": ISSUER,
            "iat": NOW,
            "exp": NOW + 60,
            "jti": "0b5c3e5e-7a61-4c55-9d5e-1c0e4d2c9b01",
            "scope": "dev:population/persons dev:tax/incomes",
        })
    }

    /// A compact JWS with any header, signed by `key` over `header.payload`.
    fn assertion(
        key: &SoftwareSigner,
        header: serde_json::Value,
        claims: serde_json::Value,
    ) -> String {
        use crate::jws::Signer;
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let sig = key.sign(format!("{h}.{p}").as_bytes()).unwrap();
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn es256_kid() -> serde_json::Value {
        serde_json::json!({"alg": "ES256", "kid": "key-1"})
    }

    fn verify(a: &str, public: &[u8]) -> Result<AssertionClaims, AssertionError> {
        ParsedAssertion::parse(a)?.verify(public, ISSUER, NOW)
    }

    #[test]
    fn a_good_assertion_passes_and_names_its_key() {
        let (k, public) = key();
        let a = assertion(&k, es256_kid(), claims_json());
        let parsed = ParsedAssertion::parse(&a).unwrap();
        assert_eq!(parsed.key(), &KeyRef::Kid("key-1".into()));
        let c = parsed.verify(&public, ISSUER, NOW).unwrap();
        assert_eq!(
            scopes(&c.scope).unwrap(),
            ["dev:population/persons", "dev:tax/incomes"]
        );

        // A chain names the key as well; the caller validates it.
        let chain = serde_json::json!({"alg": "ES256", "x5c": [STANDARD.encode(b"leaf")]});
        let parsed = ParsedAssertion::parse(&assertion(&k, chain, claims_json())).unwrap();
        assert_eq!(parsed.key(), &KeyRef::Chain(vec![b"leaf".to_vec()]));
    }

    #[test]
    fn the_wrong_key_and_other_algorithms_are_refused() {
        let (k, public) = key();
        let (_, other_public) = key();
        let a = assertion(&k, es256_kid(), claims_json());
        assert_eq!(verify(&a, &other_public), Err(AssertionError::BadSignature));
        // Claims widened after signing.
        let mut parts: Vec<String> = a.split('.').map(str::to_owned).collect();
        let mut wider = claims_json();
        wider["scope"] = "dev:population/persons dev:population/search".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wider).unwrap());
        assert_eq!(
            verify(&parts.join("."), &public),
            Err(AssertionError::BadSignature)
        );

        // alg none with no signature, and HS256 "signed" with the public key as secret.
        for alg in ["none", "HS256", "RS256"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"key-1"}}"#));
            let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_json()).unwrap());
            let forged = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(b"mac"));
            let e = ParsedAssertion::parse(&forged).unwrap_err();
            assert_eq!(e, AssertionError::UnsupportedAlgorithm(alg.into()));
            assert_eq!(e.oauth_error(), "invalid_grant");
        }
    }

    #[test]
    fn the_key_is_named_exactly_once() {
        let (k, _) = key();
        for header in [
            serde_json::json!({"alg": "ES256"}),
            serde_json::json!({"alg": "ES256", "kid": ""}),
            serde_json::json!({"alg": "ES256", "kid": "k", "x5c": [STANDARD.encode(b"c")]}),
        ] {
            let e = ParsedAssertion::parse(&assertion(&k, header.clone(), claims_json()));
            assert_eq!(e.unwrap_err(), AssertionError::NoKey, "{header}");
        }
        let crit = serde_json::json!({"alg": "ES256", "kid": "k", "crit": ["exp"]});
        let e = ParsedAssertion::parse(&assertion(&k, crit, claims_json())).unwrap_err();
        assert!(matches!(e, AssertionError::Malformed(_)), "{e}");
        let long = "a".repeat(MAX_ASSERTION_LEN + 1);
        assert!(matches!(
            ParsedAssertion::parse(&long),
            Err(AssertionError::Malformed(_))
        ));
    }

    #[test]
    fn each_claim_check_refuses() {
        let (k, public) = key();
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims_json();
            change(&mut c);
            verify(&assertion(&k, es256_kid(), c), &public)
        };
        assert_eq!(
            with(&|c| c["aud"] = "https://elsewhere.test/token".into()).unwrap_err(),
            AssertionError::WrongAudience {
                expected: ISSUER.into(),
                got: vec!["https://elsewhere.test/token".into()],
            }
        );
        assert!(matches!(
            with(&|c| c["aud"] = serde_json::json!([ISSUER, "https://other.test"])),
            Err(AssertionError::WrongAudience { .. })
        ));
        assert!(with(&|c| c["aud"] = serde_json::json!([ISSUER])).is_ok());
        assert_eq!(
            with(&|c| {
                c["iat"] = (NOW - 200).into();
                c["exp"] = (NOW - 100).into();
            })
            .unwrap_err(),
            AssertionError::Expired {
                exp: NOW - 100,
                now: NOW
            }
        );
        assert_eq!(
            with(&|c| c["exp"] = (NOW + 121).into()).unwrap_err(),
            AssertionError::TooLongLived(121)
        );
        assert!(with(&|c| c["exp"] = (NOW + 120).into()).is_ok());
        assert_eq!(
            with(&|c| {
                c["iat"] = (NOW + 11).into();
                c["exp"] = (NOW + 60).into();
            })
            .unwrap_err(),
            AssertionError::NotYetValid {
                iat: NOW + 11,
                now: NOW
            }
        );
        // Within the skew either way.
        assert!(with(&|c| c["iat"] = (NOW + 10).into()).is_ok());
        assert!(
            with(&|c| {
                c["iat"] = (NOW - 100).into();
                c["exp"] = (NOW - 5).into();
            })
            .is_ok()
        );
        assert!(matches!(
            with(&|c| c["nbf"] = (NOW + 30).into()),
            Err(AssertionError::NotYetValid { .. })
        ));
        for claim in ["iss", "jti", "aud", "iat", "exp"] {
            let e = with(&|c| {
                c.as_object_mut().unwrap().remove(claim);
            })
            .unwrap_err();
            assert_eq!(e, AssertionError::MissingClaim(claim));
        }
        let e = with(&|c| c["scope"] = "a  b".into()).unwrap_err();
        assert_eq!(e.oauth_error(), "invalid_scope");
        assert!(
            with(&|c| c["scope"] = "".into()).is_ok(),
            "scopes may come in the form"
        );
        assert!(matches!(
            with(&|c| c["iat"] = "yesterday".into()),
            Err(AssertionError::Malformed(_))
        ));
    }

    #[test]
    fn scopes_are_whole_names() {
        assert!(scopes("a  b").is_err());
        assert!(scopes(" a").is_err());
        assert!(scopes("a a").is_err());
        assert!(scopes("a\"b").is_err());
        assert!(scopes("æ").is_err());
        assert!(scopes(&"x".repeat(MAX_SCOPE_LEN + 1)).is_err());
        let many = (0..=MAX_SCOPES)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(scopes(&many).is_err());
        // Granted "dev:population" does not grant "dev:population/persons", nor the
        // other way round.
        let granted = scopes("dev:population dev:tax/incomes").unwrap();
        assert!(scope_granted(&granted, "dev:population"));
        assert!(!scope_granted(&granted, "dev:population/persons"));
        assert!(!scope_granted(&granted, "dev:tax"));
    }

    fn access_token(
        signer: &SoftwareSigner,
        kid: &str,
        typ: &str,
        claims: serde_json::Value,
    ) -> String {
        crate::jws::sign_jwt(signer, kid, typ, claims.to_string().as_bytes()).unwrap()
    }

    fn token_claims() -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "sub": "DEV/GOV/1/app", "client_id": "DEV/GOV/1/app",
            "consumer": "DEV/GOV/1", "scope": "tax:income tax:debt",
            "aud": "DEV/GOV/2/tax/income", "iat": NOW - 5, "exp": NOW + 115, "jti": "t1"
        })
    }

    #[test]
    fn access_tokens_verify_with_the_published_key_only() {
        let (k, public) = key();
        let jwk = Jwk::es256(&public).unwrap();
        assert_eq!(jwk.point().unwrap(), public);
        assert_eq!(jwk.kid.len(), 43, "a SHA-256 thumbprint, base64url");
        let keys = [jwk.clone()];
        let good = access_token(&k, &jwk.kid, ACCESS_TOKEN_TYP, token_claims());
        let c = verify_access_token(&good, &keys, ISSUER, NOW).unwrap();
        assert_eq!(c.scopes(), ["tax:income", "tax:debt"]);
        assert_eq!(c.aud.values(), ["DEV/GOV/2/tax/income"]);
        assert_eq!(c.supplier, None);

        let (other, other_public) = key();
        let forged = access_token(&other, &jwk.kid, ACCESS_TOKEN_TYP, token_claims());
        assert_eq!(
            verify_access_token(&forged, &keys, ISSUER, NOW).unwrap_err(),
            TokenError::BadSignature
        );
        let other_kid = Jwk::es256(&other_public).unwrap().kid;
        let unknown = access_token(&other, &other_kid, ACCESS_TOKEN_TYP, token_claims());
        assert_eq!(
            verify_access_token(&unknown, &keys, ISSUER, NOW).unwrap_err(),
            TokenError::UnknownKey(Some(other_kid))
        );
        let id_token = access_token(&k, &jwk.kid, "JWT", token_claims());
        assert_eq!(
            verify_access_token(&id_token, &keys, ISSUER, NOW).unwrap_err(),
            TokenError::WrongType {
                expected: ACCESS_TOKEN_TYP,
                got: Some("JWT".into())
            }
        );
        assert!(matches!(
            verify_access_token(&good, &keys, "https://other.test", NOW),
            Err(TokenError::WrongIssuer { .. })
        ));
        assert_eq!(
            verify_access_token(&good, &keys, ISSUER, NOW + 126).unwrap_err(),
            TokenError::Expired {
                exp: NOW + 115,
                now: NOW + 126
            }
        );
        assert!(
            verify_access_token(&good, &keys, ISSUER, NOW + 124).is_ok(),
            "within the skew"
        );
        assert!(matches!(
            verify_access_token(&good, &keys, ISSUER, NOW - 20),
            Err(TokenError::NotYetValid { .. })
        ));
        // alg none and HS256 keyed with the public key (the classic confusion).
        let claims_b64 = URL_SAFE_NO_PAD.encode(token_claims().to_string());
        let none = format!(
            "{}.{claims_b64}.",
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#,
                jwk.kid
            ))
        );
        assert_eq!(
            verify_access_token(&none, &keys, ISSUER, NOW).unwrap_err(),
            TokenError::UnsupportedAlgorithm("none".into())
        );
        let h = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#,
            jwk.kid
        ));
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public),
            format!("{h}.{claims_b64}").as_bytes(),
        );
        let hs = format!("{h}.{claims_b64}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(
            verify_access_token(&hs, &keys, ISSUER, NOW).unwrap_err(),
            TokenError::UnsupportedAlgorithm("HS256".into())
        );
        assert!(matches!(
            verify_access_token(&"a".repeat(MAX_ACCESS_TOKEN_LEN + 1), &keys, ISSUER, NOW),
            Err(TokenError::Malformed(_))
        ));
        let bad_point = Jwk {
            x: "AAAA".into(),
            ..jwk
        };
        assert!(matches!(bad_point.point(), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn authorise_checks_scope_audience_consumer_delegation_and_revocation() {
        let service: veksel_id::ServiceId = "DEV/GOV/2/tax/income".parse().unwrap();
        let mun: veksel_id::MemberId = "DEV/MUN/3".parse().unwrap();
        let pop: veksel_id::MemberId = "DEV/GOV/1".parse().unwrap();
        let mut ts = TokenService {
            issuer: ISSUER.into(),
            keys: vec![],
            revoked: vec![],
            delegations: vec![],
        };
        let claims = |client: &str, consumer: &str, supplier: Option<&str>, aud: &str| {
            let mut c: AccessTokenClaims = serde_json::from_value(token_claims()).unwrap();
            c.client_id = client.into();
            c.consumer = consumer.into();
            c.supplier = supplier.map(Into::into);
            c.aud = OneOrMany::One(aud.into());
            c.scope = "tax:income".into();
            c
        };
        let own = claims("DEV/MUN/3", "DEV/MUN/3", None, "DEV/GOV/2/tax/income");
        assert_eq!(authorise(&own, "tax:income", &service, &mun, &ts), Ok(()));
        for aud in ["DEV/GOV/2/tax", "DEV/GOV/2"] {
            let c = claims("DEV/MUN/3", "DEV/MUN/3", None, aud);
            assert_eq!(
                authorise(&c, "tax:income", &service, &mun, &ts),
                Ok(()),
                "{aud}"
            );
        }
        assert_eq!(
            authorise(&own, "tax:inc", &service, &mun, &ts),
            Err(TokenRefusal::MissingScope("tax:inc".into()))
        );
        for aud in ["DEV/GOV/2/tax/other", "DEV/GOV/22", "DEV/GOV/2/taxes"] {
            let c = claims("DEV/MUN/3", "DEV/MUN/3", None, aud);
            assert!(matches!(
                authorise(&c, "tax:income", &service, &mun, &ts),
                Err(TokenRefusal::WrongAudience { .. })
            ));
        }
        // Someone else's token.
        assert!(matches!(
            authorise(&own, "tax:income", &service, &pop, &ts),
            Err(TokenRefusal::WrongConsumer { .. })
        ));
        let delegated = claims("DEV/GOV/1", "DEV/MUN/3", Some("DEV/GOV/1"), "DEV/GOV/2");
        assert!(matches!(
            authorise(&delegated, "tax:income", &service, &pop, &ts),
            Err(TokenRefusal::NoDelegation { .. })
        ));
        ts.delegations.push(Delegation {
            scope: "tax:income".into(),
            consumer: mun.clone(),
            supplier: pop.clone(),
        });
        assert_eq!(
            authorise(&delegated, "tax:income", &service, &pop, &ts),
            Ok(())
        );
        // The consumer cannot use its supplier's token, nor a third party.
        assert!(authorise(&delegated, "tax:income", &service, &mun, &ts).is_err());
        ts.revoked.push(RevokedTokens {
            member: mun.clone(),
            issued_before: NOW - 6,
        });
        assert_eq!(
            authorise(&own, "tax:income", &service, &mun, &ts),
            Ok(()),
            "issued after"
        );
        ts.revoked[0].issued_before = NOW - 5;
        assert_eq!(
            authorise(&own, "tax:income", &service, &mun, &ts),
            Err(TokenRefusal::Revoked("DEV/MUN/3".into()))
        );
        assert_eq!(
            authorise(&delegated, "tax:income", &service, &pop, &ts),
            Err(TokenRefusal::Revoked("DEV/MUN/3".into())),
            "a revoked consumer's delegated tokens go too"
        );
    }
}
