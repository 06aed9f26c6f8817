//! Management requests to the authority (see [`veksel_proto::management`]): the
//! gateway signs a change about itself with its authentication key, and with the
//! concerned member's signing key when it holds it (the member's consent), and
//! submits it; the registration officer or the management policy decides.

use crate::{Gateway, KeyStore};
use veksel_proto::management::{CONSENT_CTY, Change, Consent, GatewayRequest, MANAGEMENT_CTY};

/// Signs `payload` with the gateway's authentication key as a compact JWS of content
/// type `cty`, posts it to `path` of the authority, and returns the status and JSON
/// answer.
pub async fn post_signed(
    gw: &Gateway,
    keys: &KeyStore,
    path: &str,
    cty: &str,
    payload: &serde_json::Value,
) -> Result<(reqwest::StatusCode, serde_json::Value), String> {
    let signer = keys
        .auth_key
        .signer(keys.auth_chain.clone())
        .map_err(|e| e.to_string())?;
    let jws = veksel_proto::jws::sign_compact(&signer, cty, true, payload.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let url = format!("{}{path}", gw.conf.anchor().authority_url);
    let resp = gw
        .conf
        .http()
        .post(&url)
        .header("content-type", "application/jose")
        .body(jws)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let answer = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((status, answer))
}

/// Submits a change about this gateway. The change may leave out `gateway`; it is
/// this gateway. Returns the authority's status and answer (the request and its
/// state, or an error body).
pub async fn submit(
    gw: &Gateway,
    mut change: serde_json::Value,
) -> Result<(reqwest::StatusCode, serde_json::Value), SubmitError> {
    if let Some(fields) = change.as_object_mut() {
        fields
            .entry("gateway")
            .or_insert_with(|| gw.id().to_string().into());
    }
    let change: Change =
        serde_json::from_value(change).map_err(|e| SubmitError::Invalid(e.to_string()))?;
    if change.gateway() != gw.id() {
        return Err(SubmitError::Invalid(format!(
            "this gateway is {}; it can only ask for changes to itself",
            gw.id()
        )));
    }
    change.validate().map_err(SubmitError::Invalid)?;
    let keys = gw.keys.get();
    let nonce = uuid::Uuid::new_v4().to_string();
    // The member consents with its signing key when this gateway holds it; without
    // consent only an officer can approve.
    let consent = match keys.signer(change.consenting_member()) {
        Some(signer) => {
            let consent = Consent {
                gateway: gw.id().clone(),
                nonce: nonce.clone(),
                change: change.clone(),
            };
            let bytes =
                serde_json::to_vec(&consent).map_err(|e| SubmitError::Failed(e.to_string()))?;
            Some(
                veksel_proto::jws::sign_compact(signer.as_ref(), CONSENT_CTY, true, &bytes)
                    .map_err(|e| SubmitError::Failed(e.to_string()))?,
            )
        }
        None => None,
    };
    let request = GatewayRequest {
        gateway: gw.id().clone(),
        created_at_ms: gw.clock.now_ms(),
        nonce,
        change,
        consent,
    };
    let payload = serde_json::to_value(&request).map_err(|e| SubmitError::Failed(e.to_string()))?;
    post_signed(gw, &keys, "/manage/v1", MANAGEMENT_CTY, &payload)
        .await
        .map_err(SubmitError::Failed)
}

/// Why a management request was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The change is malformed or not about this gateway.
    #[error("{0}")]
    Invalid(String),
    /// Signing or reaching the authority failed.
    #[error("{0}")]
    Failed(String),
}
