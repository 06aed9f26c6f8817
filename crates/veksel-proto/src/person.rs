//! Verified end users: the ID token a person's login gives an information system,
//! checked by the gateways and carried in the signed request descriptor.
//!
//! An information system that logged a person in with the network's OpenID Connect
//! provider passes the ID token it received with its request. The consumer's gateway
//! verifies it (the provider's keys are in the global configuration, so no gateway
//! calls out) and accepts it only from the subsystem it was issued to; the provider's
//! gateway verifies the same token again, so a dishonest consumer gateway cannot name
//! a person nobody logged in. The verified person then stands in the signed
//! descriptor, in both message logs, with the token itself as the identity provider's
//! own evidence. `X-Road-UserId` stays what it always was: a claim nobody checked.

use crate::oauth::{Jwk, OneOrMany, TokenError, TokenKind};
use serde::{Deserialize, Serialize};

/// JWT `typ` of ID tokens the network's provider issues.
pub const ID_TOKEN_TYP: &str = "JWT";
/// Longest ID token a gateway looks at, bytes.
pub const MAX_ID_TOKEN_LEN: usize = 8 * 1024;
/// Longest person identifier accepted from an ID token.
pub const MAX_PERSON_ID_LEN: usize = 64;
/// ID tokens of the network's provider.
pub const ID_TOKEN: TokenKind = TokenKind {
    typ: ID_TOKEN_TYP,
    max_len: MAX_ID_TOKEN_LEN,
};

/// How surely a person was identified (eIDAS levels of assurance, the `acr` values of
/// ID-porten and MitID in their plain names). Ordered: `High` satisfies a requirement
/// of `Substantial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// eIDAS substantial (e.g. MitID app, BankID on mobile).
    Substantial,
    /// eIDAS high.
    High,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 2] = [Level::Substantial, Level::High];

    /// The `acr` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Substantial => "substantial",
            Level::High => "high",
        }
    }

    /// The level an `acr` value names.
    pub fn from_acr(acr: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == acr)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of an ID token of the network's provider (OpenID Connect Core §2, with
/// ID-porten's `pid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// The issuer.
    pub iss: String,
    /// The person, pairwise per relying party.
    pub sub: String,
    /// The relying party: its `client_id`, which for a member's system is the
    /// subsystem's identifier.
    pub aud: OneOrMany,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// When the person logged in, Unix seconds.
    pub auth_time: i64,
    /// The relying party's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The level of assurance.
    pub acr: String,
    /// How the person logged in.
    #[serde(default)]
    pub amr: Vec<String>,
    /// The person's national identity number.
    pub pid: String,
    /// The token's unique id.
    pub jti: String,
}

crate::oauth::signed_claims!(IdTokenClaims);

/// A person the gateways verified, as the signed request descriptor names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedPerson {
    /// The person's national identity number (`pid`).
    pub id: String,
    /// The level of assurance of their login.
    pub level: Level,
    /// The identity provider that vouches for them.
    pub issuer: String,
    /// The ID token itself: the provider's signed statement, which anyone holding
    /// its published keys can check again.
    pub id_token: String,
}

/// Verifies an ID token's signature, type, issuer and time window at `now` with the
/// provider's published keys (see [`crate::oauth::verify_token`]); [`accept`] then
/// checks it for one use.
pub fn verify_id_token(
    token: &str,
    keys: &[Jwk],
    issuer: &str,
    now: i64,
) -> Result<IdTokenClaims, TokenError> {
    crate::oauth::verify_token(token, ID_TOKEN, keys, issuer, now)
}

/// Accepts verified ID-token claims for a request of `client` made at `at` (Unix
/// seconds): the token must have been issued to that client alone, be within its
/// time window then, and name a person and a known level.
pub fn accept(
    claims: &IdTokenClaims,
    token: &str,
    client: &str,
    at: i64,
) -> Result<VerifiedPerson, TokenError> {
    match &claims.aud {
        OneOrMany::One(aud) if aud == client => {}
        aud => {
            return Err(TokenError::WrongAudience {
                expected: client.to_owned(),
                got: aud.values().join(" "),
            });
        }
    }
    crate::oauth::check_window(claims, at)?;
    let level = Level::from_acr(&claims.acr).ok_or_else(|| TokenError::BadClaim {
        claim: "acr",
        why: format!("{:?} is not a level (substantial, high)", claims.acr),
    })?;
    if claims.pid.is_empty()
        || claims.pid.len() > MAX_PERSON_ID_LEN
        || !claims.pid.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(TokenError::BadClaim {
            claim: "pid",
            why: format!("must have 1 to {MAX_PERSON_ID_LEN} visible ASCII characters"),
        });
    }
    Ok(VerifiedPerson {
        id: claims.pid.clone(),
        level,
        issuer: claims.iss.clone(),
        id_token: token.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::{SoftwareSigner, generate_p256_pkcs8, sign_jwt};

    const ISSUER: &str = "https://authority.example";
    const CLIENT: &str = "GL/GOV/1/casework";

    fn key() -> (SoftwareSigner, Jwk) {
        let s = SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![]).unwrap();
        let jwk = Jwk::es256(&s.public_key()).unwrap();
        (s, jwk)
    }

    fn claims(now: i64) -> IdTokenClaims {
        IdTokenClaims {
            iss: ISSUER.into(),
            sub: "pairwise".into(),
            aud: OneOrMany::One(CLIENT.into()),
            iat: now,
            exp: now + 300,
            auth_time: now,
            nonce: None,
            acr: "substantial".into(),
            amr: vec!["test".into()],
            pid: "0101701234".into(),
            jti: "j".into(),
        }
    }

    fn token(pair: &SoftwareSigner, kid: &str, typ: &str, c: &IdTokenClaims) -> String {
        sign_jwt(pair, kid, typ, &serde_json::to_vec(c).unwrap()).unwrap()
    }

    #[test]
    fn a_token_for_the_client_names_the_person_and_level() {
        let (pair, jwk) = key();
        let now = 1_800_000_000;
        let t = token(&pair, &jwk.kid, ID_TOKEN_TYP, &claims(now));
        let c = verify_id_token(&t, std::slice::from_ref(&jwk), ISSUER, now).unwrap();
        let p = accept(&c, &t, CLIENT, now + 5).unwrap();
        assert_eq!((p.id.as_str(), p.level), ("0101701234", Level::Substantial));
        assert_eq!(p.id_token, t);
        assert!(Level::High > Level::Substantial);
    }

    #[test]
    fn each_refusal_is_its_own() {
        let (pair, jwk) = key();
        let (other, other_jwk) = key();
        let keys = std::slice::from_ref(&jwk);
        let now = 1_800_000_000;
        let good = claims(now);
        // Signed by a key the provider never published.
        let t = token(&other, &other_jwk.kid, ID_TOKEN_TYP, &good);
        assert!(matches!(
            verify_id_token(&t, keys, ISSUER, now),
            Err(TokenError::UnknownKey(_))
        ));
        // Signed by another key under the published key's id.
        let t = token(&other, &jwk.kid, ID_TOKEN_TYP, &good);
        assert_eq!(
            verify_id_token(&t, keys, ISSUER, now),
            Err(TokenError::BadSignature)
        );
        // An access token is not an ID token.
        let t = token(&pair, &jwk.kid, crate::oauth::ACCESS_TOKEN_TYP, &good);
        assert!(matches!(
            verify_id_token(&t, keys, ISSUER, now),
            Err(TokenError::WrongType { .. })
        ));
        // Another issuer.
        let t = token(
            &pair,
            &jwk.kid,
            ID_TOKEN_TYP,
            &IdTokenClaims {
                iss: "https://evil.example".into(),
                ..good.clone()
            },
        );
        assert!(matches!(
            verify_id_token(&t, keys, ISSUER, now),
            Err(TokenError::WrongIssuer { .. })
        ));
        // Expired, by the verifier's clock and at a request's time.
        let t = token(&pair, &jwk.kid, ID_TOKEN_TYP, &good);
        assert!(matches!(
            verify_id_token(&t, keys, ISSUER, now + 311),
            Err(TokenError::Expired { .. })
        ));
        let c = verify_id_token(&t, keys, ISSUER, now).unwrap();
        assert!(matches!(
            accept(&c, &t, CLIENT, now + 311),
            Err(TokenError::Expired { .. })
        ));
        // Issued to another relying party, or to several.
        assert!(matches!(
            accept(&c, &t, "GL/GOV/2/other", now),
            Err(TokenError::WrongAudience { .. })
        ));
        let many = IdTokenClaims {
            aud: OneOrMany::Many(vec![CLIENT.into(), "GL/GOV/2/other".into()]),
            ..good.clone()
        };
        assert!(matches!(
            accept(&many, &t, CLIENT, now),
            Err(TokenError::WrongAudience { .. })
        ));
        // A level nobody defined, or no usable person number.
        let low = IdTokenClaims {
            acr: "low".into(),
            ..good.clone()
        };
        assert!(matches!(
            accept(&low, &t, CLIENT, now),
            Err(TokenError::BadClaim { claim: "acr", .. })
        ));
        for pid in ["", "01 01", &"1".repeat(65)] {
            let bad = IdTokenClaims {
                pid: pid.into(),
                ..good.clone()
            };
            assert!(matches!(
                accept(&bad, &t, CLIENT, now),
                Err(TokenError::BadClaim { claim: "pid", .. })
            ));
        }
        // Too long to look at.
        let long = "a".repeat(MAX_ID_TOKEN_LEN + 1);
        assert!(matches!(
            verify_id_token(&long, keys, ISSUER, now),
            Err(TokenError::Malformed(_))
        ));
    }
}
