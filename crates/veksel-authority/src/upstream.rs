//! People's login through an external OpenID Connect provider (ID-porten, MitID
//! through its broker), named by its discovery URL.
//!
//! The authority stays the one provider that relying parties and gateways trust: it
//! is itself a relying party of the external provider (authorization code flow with
//! PKCE and a nonce), verifies the ID token it gets, maps the provider's `acr` values
//! to the network's levels, and issues its own ID token for the person. Relying
//! parties do not change when a network moves from the test login to ID-porten, and
//! gateways keep checking tokens against the keys in the signed global configuration
//! without calling out.
//!
//! The ID token check ([`verify_id_token`]) is free of I/O; [`Upstream`] fetches the
//! discovery document and keys, with size and time limits, and redeems codes.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use veksel_proto::person::{Level, MAX_PERSON_ID_LEN};

/// Where the external provider sends the person back, under the authority's URL.
pub const CALLBACK_PATH: &str = "/oidc/v1/callback";
/// The suffix of a discovery URL (OpenID Connect Discovery §4).
const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";
/// Largest discovery document, key set or token answer read, bytes.
const MAX_DOCUMENT: usize = 256 * 1024;
/// Longest ID token looked at, bytes.
const MAX_ID_TOKEN: usize = 16 * 1024;
/// Time allowed for each call to the provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fetched discovery document and key set are used, seconds.
const DISCOVERY_TTL_SECS: i64 = 3600;
/// Least time between two key fetches for an unknown `kid`, seconds: a flood of
/// tokens with made-up key ids cannot make the authority hammer the provider.
const KEY_REFRESH_SECS: i64 = 60;
/// Clock skew allowed on `exp` and `iat`, seconds.
const SKEW_SECS: i64 = 10;
/// Signature algorithms accepted from a provider: asymmetric only, so a token cannot
/// be made with the client secret, and never `none`.
const ACCEPTED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// An external provider in `authority.json` (`people_login.external`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalProvider {
    /// Shown in errors and logs, e.g. `ID-porten`.
    pub name: String,
    /// `https://…/.well-known/openid-configuration`; the issuer is this URL without
    /// the suffix, and the document must say so.
    pub discovery_url: String,
    /// The authority's `client_id` at the provider.
    pub client_id: String,
    /// A file (mode 0600, relative to the authority's directory) holding the client
    /// secret, sent by HTTP Basic authentication (`client_secret_basic`). Without it
    /// the authority is a public client and PKCE alone binds the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// PEM trust roots for the provider's TLS certificate (relative to the
    /// authority's directory); the system's roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The claim that holds the person's national identity number (`pid` at
    /// ID-porten).
    #[serde(default = "default_person_claim")]
    pub person_claim: String,
    /// The provider's `acr` values and the network level each means, e.g.
    /// `{"idporten-loa-substantial": "substantial", "idporten-loa-high": "high"}`.
    pub levels: BTreeMap<String, Level>,
    /// Scopes asked for besides `openid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

fn default_person_claim() -> String {
    "pid".into()
}

impl ExternalProvider {
    /// Refuses a configuration that could not work or would be unsafe.
    pub fn validate(&self) -> Result<(), String> {
        if !self.discovery_url.starts_with("https://")
            || !self.discovery_url.ends_with(DISCOVERY_SUFFIX)
        {
            return Err(format!(
                "discovery_url must be https and end in {DISCOVERY_SUFFIX}"
            ));
        }
        if self.client_id.is_empty() || self.name.is_empty() || self.person_claim.is_empty() {
            return Err("name, client_id and person_claim must not be empty".into());
        }
        if self.levels.is_empty() {
            return Err("levels must map at least one acr value of the provider".into());
        }
        if self
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' ') || s == "openid")
        {
            return Err("scopes are single words besides openid".into());
        }
        Ok(())
    }

    /// The issuer the discovery document must name.
    pub fn issuer(&self) -> &str {
        self.discovery_url
            .strip_suffix(DISCOVERY_SUFFIX)
            .unwrap_or(&self.discovery_url)
    }

    /// The provider's `acr` values that give `level` or more, space-separated, lowest
    /// level first: `acr_values` is in order of preference, and a person should not
    /// be asked for more than the relying party needs.
    pub fn acr_values(&self, level: Level) -> String {
        let mut values: Vec<(&Level, &String)> = self
            .levels
            .iter()
            .filter(|(_, l)| **l >= level)
            .map(|(acr, l)| (l, acr))
            .collect();
        values.sort();
        values
            .into_iter()
            .map(|(_, acr)| acr.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The fields of a discovery document the authority uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must be the discovery URL without its suffix.
    pub issuer: String,
    /// Where the person is sent.
    pub authorization_endpoint: String,
    /// Where codes are redeemed.
    pub token_endpoint: String,
    /// The provider's keys.
    pub jwks_uri: String,
}

impl Discovery {
    /// Refuses a document for another issuer or with an endpoint that is not https.
    pub fn check(&self, provider: &ExternalProvider) -> Result<(), UpstreamError> {
        if self.issuer != provider.issuer() {
            return Err(UpstreamError::Discovery(format!(
                "the document names issuer {:?}, not {}",
                self.issuer,
                provider.issuer()
            )));
        }
        for (what, url) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("jwks_uri", &self.jwks_uri),
        ] {
            if !url.starts_with("https://") {
                return Err(UpstreamError::Discovery(format!("{what} is not https")));
            }
        }
        Ok(())
    }
}

/// Why a login through the external provider failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The provider could not be reached, or answered with something unusable.
    #[error("the identity provider cannot be used: {0}")]
    Unavailable(String),
    /// The discovery document is not acceptable.
    #[error("the identity provider's discovery document is refused: {0}")]
    Discovery(String),
    /// The provider refused (an `error` at the callback or the token endpoint).
    #[error("the identity provider refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// Its error code.
        error: String,
        /// Its description.
        description: Option<String>,
    },
    /// The ID token is not acceptable.
    #[error("the identity provider's ID token is refused: {0}")]
    IdToken(String),
    /// The person logged in at a level below the one asked for, or one the network
    /// does not know.
    #[error("the person logged in at {got:?}, which does not give {wanted}")]
    Level {
        /// The provider's `acr`.
        got: String,
        /// The level the relying party asked for.
        wanted: Level,
    },
}

impl UpstreamError {
    /// The error code a relying party gets (RFC 6749 §4.1.2.1; OpenID Connect's
    /// `unmet_authentication_requirements` for a level not met).
    pub fn oauth_error(&self) -> &'static str {
        match self {
            UpstreamError::Refused { error, .. } if error == "access_denied" => "access_denied",
            UpstreamError::Refused { error, .. } if error == "login_required" => "login_required",
            UpstreamError::Level { .. } => "unmet_authentication_requirements",
            UpstreamError::Unavailable(_) => "temporarily_unavailable",
            _ => "server_error",
        }
    }
}

/// A person the external provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPerson {
    /// The national identity number.
    pub pid: String,
    /// The network level of the login.
    pub level: Level,
    /// How they logged in, as the provider says (`amr`).
    pub amr: Vec<String>,
    /// When they logged in, Unix seconds.
    pub auth_time: i64,
}

fn bad(why: impl Into<String>) -> UpstreamError {
    UpstreamError::IdToken(why.into())
}

/// Verifies the provider's ID token for a login the authority started: an accepted
/// asymmetric algorithm, a key of the provider's set, the signature, the issuer, the
/// authority as audience (and as `azp` if named), the nonce it sent, the time window
/// at `now`, a level at least `wanted`, and the person's number.
pub fn verify_id_token(
    token: &str,
    keys: &JwkSet,
    provider: &ExternalProvider,
    issuer: &str,
    nonce: &str,
    wanted: Level,
    now: i64,
) -> Result<ExternalPerson, UpstreamError> {
    if token.len() > MAX_ID_TOKEN {
        return Err(bad(format!("longer than {MAX_ID_TOKEN} bytes")));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| bad(format!("header: {e}")))?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(bad(format!("algorithm {:?} is not accepted", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        // A provider with one key may leave the id out.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| bad(format!("no key of the provider has id {:?}", header.kid)))?;
    if let Some(alg) = jwk.common.key_algorithm
        && format!("{alg:?}") != format!("{:?}", header.alg)
    {
        return Err(bad("the key is published for another algorithm"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("the key: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[&provider.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "exp", "iat", "sub"]);
    // The authority's clock decides, not the process's: exp and iat are checked below.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map_err(|e| bad(e.to_string()))?
        .claims;
    let int = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
    let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
    let (Some(exp), Some(iat)) = (int("exp"), int("iat")) else {
        return Err(bad("exp and iat must be numbers"));
    };
    if exp <= now - SKEW_SECS {
        return Err(bad(format!("it expired at {exp} (now {now})")));
    }
    if iat > now + SKEW_SECS {
        return Err(bad(format!(
            "it is issued in the future ({iat}, now {now})"
        )));
    }
    if let Some(azp) = text("azp")
        && azp != provider.client_id
    {
        return Err(bad(format!("it is for another party (azp {azp:?})")));
    }
    // A nonce is compared in constant time: it is what ties the token to this login.
    let same_nonce = text("nonce")
        .is_some_and(|n| subtle::ConstantTimeEq::ct_eq(n.as_bytes(), nonce.as_bytes()).into());
    if !same_nonce {
        return Err(bad("its nonce is not the one this login sent"));
    }
    let acr = text("acr").unwrap_or_default();
    let level = match provider.levels.get(acr) {
        Some(l) if *l >= wanted => *l,
        _ => {
            return Err(UpstreamError::Level {
                got: acr.to_owned(),
                wanted,
            });
        }
    };
    let pid = text(&provider.person_claim)
        .filter(|p| {
            !p.is_empty() && p.len() <= MAX_PERSON_ID_LEN && p.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            bad(format!(
                "its {} claim is missing or not a person number",
                provider.person_claim
            ))
        })?;
    let amr = claims
        .get("amr")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .take(8)
                .map(|s| s.chars().take(64).collect())
                .collect()
        })
        .unwrap_or_default();
    Ok(ExternalPerson {
        pid: pid.to_owned(),
        level,
        amr,
        auth_time: int("auth_time").unwrap_or(iat),
    })
}

/// The discovery document and keys as last fetched.
#[derive(Debug)]
struct Fetched {
    discovery: Discovery,
    keys: JwkSet,
    at: i64,
}

/// The external provider at run time: its HTTP client and what was fetched from it.
#[derive(Debug)]
pub struct Upstream {
    /// The configuration.
    pub provider: ExternalProvider,
    secret: Option<String>,
    http: reqwest::Client,
    fetched: tokio::sync::Mutex<Option<Arc<Fetched>>>,
}

/// What a login needs from the provider's current discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The provider's authorization endpoint.
    pub authorization_endpoint: String,
}

impl Upstream {
    /// Reads the secret and trust roots (from `dir`) and builds the client; nothing
    /// is fetched until the first login.
    pub fn new(provider: ExternalProvider, dir: &Path) -> Result<Self, String> {
        provider.validate()?;
        let secret = match &provider.client_secret_file {
            Some(file) => Some(
                veksel_pki::keys::read_secret_text(&dir.join(file))
                    .map_err(|e| format!("client_secret_file: {e}"))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let roots: Vec<Vec<u8>> = match &provider.ca_file {
            Some(file) => {
                let pem = std::fs::read_to_string(dir.join(file))
                    .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
                veksel_pki::certs_from_pem(&pem).map_err(|e| format!("ca_file: {e}"))?
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                found.certs.into_iter().map(|c| c.to_vec()).collect()
            }
        };
        let tls = veksel_pki::tls::https_client_config(&roots).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            provider,
            secret,
            http,
            fetched: tokio::sync::Mutex::new(None),
        })
    }

    /// The redirect URI registered at the provider for an authority at `issuer`.
    pub fn redirect_uri(issuer: &str) -> String {
        format!("{}{CALLBACK_PATH}", issuer.trim_end_matches('/'))
    }

    /// The provider's discovery document and keys, fetched again after an hour, or
    /// (at most once a minute) when `unknown_kid` is not among the keys.
    async fn fetched(
        &self,
        now: i64,
        unknown_kid: Option<&str>,
    ) -> Result<Arc<Fetched>, UpstreamError> {
        let mut slot = self.fetched.lock().await;
        if let Some(f) = slot.as_ref() {
            let fresh = now - f.at < DISCOVERY_TTL_SECS;
            let needs_key = unknown_kid.is_some_and(|kid| f.keys.find(kid).is_none())
                && now - f.at >= KEY_REFRESH_SECS;
            if fresh && !needs_key {
                return Ok(f.clone());
            }
        }
        let discovery: Discovery =
            serde_json::from_slice(&self.get(&self.provider.discovery_url).await?)
                .map_err(|e| UpstreamError::Discovery(e.to_string()))?;
        discovery.check(&self.provider)?;
        let keys: JwkSet = serde_json::from_slice(&self.get(&discovery.jwks_uri).await?)
            .map_err(|e| UpstreamError::Unavailable(format!("the key set: {e}")))?;
        let f = Arc::new(Fetched {
            discovery,
            keys,
            at: now,
        });
        *slot = Some(f.clone());
        Ok(f)
    }

    /// Where to send a person now.
    pub async fn endpoints(&self, now: i64) -> Result<Endpoints, UpstreamError> {
        let f = self.fetched(now, None).await?;
        Ok(Endpoints {
            authorization_endpoint: f.discovery.authorization_endpoint.clone(),
        })
    }

    /// The provider's authorization URL for a login at `level` or above.
    pub fn authorization_url(
        &self,
        endpoints: &Endpoints,
        issuer: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
        level: Level,
    ) -> String {
        let scope = std::iter::once("openid")
            .chain(self.provider.scopes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.provider.client_id)
            .append_pair("redirect_uri", &Self::redirect_uri(issuer))
            .append_pair("scope", &scope)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("acr_values", &self.provider.acr_values(level))
            .finish();
        let e = &endpoints.authorization_endpoint;
        format!("{e}{}{query}", if e.contains('?') { '&' } else { '?' })
    }

    /// Redeems the provider's code and verifies the ID token it answers with.
    pub async fn redeem(
        &self,
        issuer: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
        wanted: Level,
        now: i64,
    ) -> Result<ExternalPerson, UpstreamError> {
        let f = self.fetched(now, None).await?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &Self::redirect_uri(issuer))
            .append_pair("code_verifier", verifier)
            .append_pair("client_id", &self.provider.client_id)
            .finish();
        let mut req = self
            .http
            .post(&f.discovery.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form);
        if let Some(secret) = &self.secret {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&self.provider.client_id), Some(enc(secret)));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("token endpoint: {e}")))?;
        let status = resp.status();
        let body = read_limited(resp).await?;
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::Unavailable(format!(
                "token endpoint answered {status} with no JSON: {e}"
            ))
        })?;
        if !status.is_success() {
            return Err(refusal(&answer));
        }
        let token = answer
            .get("id_token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad("the token endpoint's answer has no id_token"))?;
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        let f = self.fetched(now, kid.as_deref()).await?;
        verify_id_token(
            token,
            &f.keys,
            &self.provider,
            &f.discovery.issuer,
            nonce,
            wanted,
            now,
        )
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, UpstreamError> {
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                UpstreamError::Unavailable(format!("{url}: {}", veksel_net::error_chain(&e)))
            })?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Unavailable(format!(
                "{url} answered {}",
                resp.status()
            )));
        }
        read_limited(resp).await
    }
}

/// The provider's refusal from an OAuth error answer.
pub fn refusal(answer: &serde_json::Value) -> UpstreamError {
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(|s| s.chars().take(200).collect::<String>())
    };
    UpstreamError::Refused {
        error: field("error").unwrap_or_else(|| "no error code".into()),
        description: field("error_description"),
    }
}

/// Reads an answer's body, refusing one over [`MAX_DOCUMENT`].
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| UpstreamError::Unavailable(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(UpstreamError::Unavailable(format!(
                "an answer is larger than {MAX_DOCUMENT} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example";
    const NONCE: &str = "n0nce-of-this-login";
    const NOW: i64 = 1_800_000_000;

    fn provider() -> ExternalProvider {
        ExternalProvider {
            name: "Test IdP".into(),
            discovery_url: format!("{ISSUER}{DISCOVERY_SUFFIX}"),
            client_id: "veksel-authority".into(),
            client_secret_file: None,
            ca_file: None,
            person_claim: "pid".into(),
            levels: BTreeMap::from([
                ("idporten-loa-substantial".into(), Level::Substantial),
                ("idporten-loa-high".into(), Level::High),
            ]),
            scopes: vec![],
        }
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISSUER, "aud": "veksel-authority", "sub": "s", "iat": NOW, "exp": NOW + 120,
               "nonce": NONCE, "acr": "idporten-loa-substantial", "pid": "05068907693",
               "amr": ["MinID-PIN"], "auth_time": NOW - 3})
    }

    /// An RSA key (as ID-porten and MitID sign), its JWK set, and a signer.
    struct Rsa {
        pair: aws_lc_rs::rsa::KeyPair,
        kid: String,
    }

    impl Rsa {
        fn new(kid: &str) -> Self {
            Self {
                pair: aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
                kid: kid.into(),
            }
        }

        fn jwks(&self) -> JwkSet {
            use aws_lc_rs::signature::KeyPair;
            let public = self.pair.public_key();
            let components: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = public.into();
            serde_json::from_value(
                json!({"keys": [{"kty": "RSA", "kid": self.kid, "alg": "RS256",
                "use": "sig", "n": URL_SAFE_NO_PAD.encode(&components.n),
                "e": URL_SAFE_NO_PAD.encode(&components.e)}]}),
            )
            .unwrap()
        }

        fn sign(&self, header: serde_json::Value, claims: &serde_json::Value) -> String {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let c = URL_SAFE_NO_PAD.encode(claims.to_string());
            let mut sig = vec![0; self.pair.public_modulus_len()];
            self.pair
                .sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    format!("{h}.{c}").as_bytes(),
                    &mut sig,
                )
                .unwrap();
            format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        fn token(&self, claims: &serde_json::Value) -> String {
            self.sign(
                json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
                claims,
            )
        }
    }

    fn verify(token: &str, keys: &JwkSet, wanted: Level) -> Result<ExternalPerson, UpstreamError> {
        verify_id_token(token, keys, &provider(), ISSUER, NONCE, wanted, NOW)
    }

    #[test]
    fn an_rs256_token_of_the_provider_gives_the_person_and_level() {
        let key = Rsa::new("k1");
        let person = verify(&key.token(&claims()), &key.jwks(), Level::Substantial).unwrap();
        assert_eq!(
            person,
            ExternalPerson {
                pid: "05068907693".into(),
                level: Level::Substantial,
                amr: vec!["MinID-PIN".into()],
                auth_time: NOW - 3,
            }
        );
        let mut high = claims();
        high["acr"] = json!("idporten-loa-high");
        let person = verify(&key.token(&high), &key.jwks(), Level::High).unwrap();
        assert_eq!(person.level, Level::High);
    }

    #[test]
    fn each_dishonest_token_is_refused() {
        let key = Rsa::new("k1");
        let keys = key.jwks();
        let changed = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims();
            f(&mut c);
            key.token(&c)
        };
        let cases: Vec<(String, &str)> = vec![
            (Rsa::new("k1").token(&claims()), "InvalidSignature"),
            (Rsa::new("k2").token(&claims()), "no key"),
            (
                changed(&|c| c["iss"] = json!("https://evil.example")),
                "InvalidIssuer",
            ),
            (
                changed(&|c| c["aud"] = json!("someone-else")),
                "InvalidAudience",
            ),
            (changed(&|c| c["azp"] = json!("someone-else")), "azp"),
            (changed(&|c| c["nonce"] = json!("another-login")), "nonce"),
            (
                changed(&|c| {
                    c.as_object_mut().unwrap().remove("nonce");
                }),
                "nonce",
            ),
            (changed(&|c| c["exp"] = json!(NOW - 11)), "expired"),
            (changed(&|c| c["iat"] = json!(NOW + 11)), "future"),
            (changed(&|c| c["pid"] = json!("")), "pid"),
            (
                changed(&|c| {
                    c.as_object_mut().unwrap().remove("pid");
                }),
                "pid",
            ),
            (
                changed(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
                "sub",
            ),
            (
                key.sign(json!({"alg": "none", "kid": "k1"}), &claims()),
                "header",
            ),
            (
                key.sign(json!({"alg": "HS256", "kid": "k1"}), &claims()),
                "not accepted",
            ),
            ("x".repeat(MAX_ID_TOKEN + 1), "longer"),
        ];
        for (token, why) in cases {
            let e = verify(&token, &keys, Level::Substantial).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
            assert_eq!(e.oauth_error(), "server_error");
        }
        // A level below the one asked for, or one the network does not know.
        let e = verify(&key.token(&claims()), &keys, Level::High).unwrap_err();
        assert_eq!(e.oauth_error(), "unmet_authentication_requirements");
        let e = verify(
            &changed(&|c| c["acr"] = json!("idporten-loa-low")),
            &keys,
            Level::Substantial,
        )
        .unwrap_err();
        assert!(matches!(e, UpstreamError::Level { .. }), "{e}");
    }

    #[test]
    fn configuration_and_discovery_are_checked() {
        let p = provider();
        assert_eq!(p.issuer(), ISSUER);
        assert_eq!(
            p.acr_values(Level::Substantial),
            "idporten-loa-substantial idporten-loa-high"
        );
        assert_eq!(p.acr_values(Level::High), "idporten-loa-high");
        assert!(p.validate().is_ok());
        for broken in [
            ExternalProvider {
                discovery_url: "http://idp.example/.well-known/openid-configuration".into(),
                ..p.clone()
            },
            ExternalProvider {
                discovery_url: "https://idp.example/".into(),
                ..p.clone()
            },
            ExternalProvider {
                levels: BTreeMap::new(),
                ..p.clone()
            },
            ExternalProvider {
                client_id: String::new(),
                ..p.clone()
            },
            ExternalProvider {
                scopes: vec!["openid".into()],
                ..p.clone()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
        let doc = |issuer: &str, token: &str| Discovery {
            issuer: issuer.into(),
            authorization_endpoint: format!("{ISSUER}/authorize"),
            token_endpoint: token.into(),
            jwks_uri: format!("{ISSUER}/jwks"),
        };
        assert!(doc(ISSUER, "https://idp.example/token").check(&p).is_ok());
        assert!(matches!(
            doc("https://evil.example", "https://idp.example/token").check(&p),
            Err(UpstreamError::Discovery(_))
        ));
        assert!(matches!(
            doc(ISSUER, "http://idp.example/token").check(&p),
            Err(UpstreamError::Discovery(_))
        ));
        assert_eq!(
            refusal(
                &json!({"error": "access_denied", "error_description": "the person cancelled"})
            )
            .oauth_error(),
            "access_denied"
        );
        assert_eq!(
            UpstreamError::Unavailable("down".into()).oauth_error(),
            "temporarily_unavailable"
        );
    }
}
