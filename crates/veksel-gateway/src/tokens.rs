//! Access tokens a consumer's gateway gets for its information systems: signed with
//! the client member's signing key (which never leaves the gateway), kept until
//! shortly before they expire, one grant at a time per client, scope and audience.

use crate::confclient::ConfClient;
use crate::{Gateway, KeyStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use veksel_proto::oauth::{Grant, TokenResponse};

/// Largest answer read from the token endpoint.
const MAX_ANSWER: usize = 64 * 1024;
/// Fewest seconds a token must still be valid to be handed out.
const MIN_REMAINING_SECS: i64 = 15;
/// Most grants remembered (distinct client, scope and audience).
const MAX_ENTRIES: usize = 10_000;

/// A token and when it expires, Unix seconds.
type Held = Option<(String, i64)>;

/// Tokens by grant.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<HashMap<Grant, Arc<tokio::sync::Mutex<Held>>>>,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenFetchError {
    /// The gateway holds no signing key of the client's member.
    #[error("this gateway has no signing key of {0}")]
    NoKey(String),
    /// The configuration names no token service.
    #[error("the global configuration names no token service")]
    NoService,
    /// The token service refused, with its OAuth error.
    #[error("the token service refused: {error}: {description}")]
    Refused {
        /// RFC 6749 error code.
        error: String,
        /// Its description.
        description: String,
    },
    /// The token service could not be reached or answered nonsense.
    #[error("the token service could not be asked: {0}")]
    Unreachable(String),
}

impl TokenCache {
    /// A token for `grant`, from memory while it has at least a quarter of its life
    /// (and 15 s) left, otherwise newly granted.
    pub async fn get(&self, gw: &Gateway, grant: &Grant) -> Result<String, TokenFetchError> {
        let slot = {
            let mut entries = self
                .entries
                .lock()
                .map_err(|_| TokenFetchError::Unreachable("token cache poisoned".into()))?;
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(grant) {
                entries.clear();
            }
            entries.entry(grant.clone()).or_default().clone()
        };
        // Callers of one grant wait for one answer instead of each asking.
        let mut held = slot.lock().await;
        let now = i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX);
        if let Some((token, renew_at)) = held.as_ref()
            && now < *renew_at
        {
            return Ok(token.clone());
        }
        let answer = fetch(&gw.conf, &gw.keys.get(), now, grant).await?;
        let life = answer.expires_in.max(0);
        let renew_at = now + (life * 3 / 4).min(life - MIN_REMAINING_SECS);
        *held = Some((answer.access_token.clone(), renew_at));
        Ok(answer.access_token)
    }
}

/// Asks the network's token service for `grant`, signing with the client member's
/// key from `keys` (a running gateway's, or a data directory's for the command line).
pub async fn fetch(
    conf_client: &ConfClient,
    keys: &KeyStore,
    now: i64,
    grant: &Grant,
) -> Result<TokenResponse, TokenFetchError> {
    let assertion = member_assertion(conf_client, keys, grant, now)?;
    let form = format!(
        "grant_type={}&assertion={assertion}",
        veksel_proto::oauth::JWT_BEARER_GRANT.replace(':', "%3A")
    );
    let bytes = post_form(conf_client, form).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenFetchError::Unreachable(format!("not a token answer: {e}")))
}

/// Redeems an authorization code of people's login for `client`, a subsystem whose
/// member's key this gateway holds (`private_key_jwt`); the token endpoint's answer.
pub async fn redeem_code(
    conf_client: &ConfClient,
    keys: &KeyStore,
    client: &veksel_id::SubsystemId,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    now: i64,
) -> Result<serde_json::Value, TokenFetchError> {
    let grant = Grant {
        client: client.to_string(),
        scope: String::new(),
        resources: vec![],
        consumer_org: None,
    };
    let assertion = member_assertion(conf_client, keys, &grant, now)?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", verifier)
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("client_assertion", &assertion)
        .finish();
    let bytes = post_form(conf_client, form).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenFetchError::Unreachable(format!("not a token answer: {e}")))
}

/// A client assertion for `grant`'s client, signed with its member's key, for the
/// token service named in the global configuration.
fn member_assertion(
    conf_client: &ConfClient,
    keys: &KeyStore,
    grant: &Grant,
    now: i64,
) -> Result<String, TokenFetchError> {
    let conf = conf_client.latest().ok_or(TokenFetchError::NoService)?;
    let issuer = conf
        .conf()
        .token_service
        .as_ref()
        .ok_or(TokenFetchError::NoService)?
        .issuer
        .clone();
    let client: veksel_id::ClientId = grant
        .client
        .parse()
        .map_err(|e: veksel_id::IdError| TokenFetchError::NoKey(e.to_string()))?;
    let signer = keys
        .signer(client.member())
        .ok_or_else(|| TokenFetchError::NoKey(client.member().to_string()))?;
    grant
        .assertion(
            signer.as_ref(),
            &issuer,
            now,
            &uuid::Uuid::new_v4().to_string(),
        )
        .map_err(|e| TokenFetchError::Unreachable(format!("signing the assertion: {e}")))
}

/// Posts a form to the token endpoint; the answer's body if it succeeded.
async fn post_form(
    conf_client: &ConfClient,
    form: String,
) -> Result<bytes::Bytes, TokenFetchError> {
    let url = format!("{}/oauth/v1/token", conf_client.anchor().authority_url);
    let resp = conf_client
        .http()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| TokenFetchError::Unreachable(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = crate::confclient::read_limited(resp, MAX_ANSWER)
        .await
        .map_err(|e| TokenFetchError::Unreachable(format!("{url}: {e}")))?;
    if !status.is_success() {
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(TokenFetchError::Refused {
            error: body["error"].as_str().unwrap_or("unknown").to_owned(),
            description: body["error_description"]
                .as_str()
                .unwrap_or(&format!("HTTP {status}"))
                .to_owned(),
        });
    }
    Ok(bytes)
}
