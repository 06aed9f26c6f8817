//! Certificate renewal and key rotation without downtime, ACME-style: the gateway
//! proves itself with its current key and no operator is involved.
//!
//! When a certificate of the gateway — its authentication certificate or the signing
//! certificate of a member — comes within `cert_renew_before_secs` of expiry, the
//! gateway makes new keys, sends CSRs to the authority's `/renew/v1` in a JWS signed
//! with its current authentication key, and keeps the new keys and certificates aside
//! in `pending/`. It switches once peers will accept them: every new certificate needs
//! a good OCSP response, and a new authentication certificate must be listed for this
//! gateway in the global configuration (the old one stays listed until it expires, so
//! peers with an older configuration and exchanges in flight keep working). The switch
//! moves the files into place under a marker, so a crash in the middle is completed at
//! the next start, and then replaces the keys in memory and in TLS.

use crate::{Gateway, GatewayError, KeyStore, files, signing_stem};
use serde::Serialize;
use std::path::Path;
use veksel_id::MemberId;
use veksel_pki::{CertInfo, KeyFile, certs_from_pem};

/// Directory (in the data directory) of renewed keys and certificates not in use yet.
pub const PENDING_DIR: &str = "pending";
/// Written before pending files are moved into place; its presence at start means a
/// switch was interrupted and is completed.
const ACTIVATING: &str = "ACTIVATING";
/// Media type of the renewal JWS (the authority checks it).
pub const RENEWAL_CTY: &str = "veksel-renewal+json";

/// One of the gateway's certificates and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CertStatus {
    /// `authentication`, or `signing` for a member.
    pub role: String,
    /// The member, for signing certificates.
    pub member: Option<String>,
    /// Hex SHA-256.
    pub sha256: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Seconds until expiry (negative once expired).
    pub expires_in_secs: i64,
}

/// The gateway's certificates in use.
pub fn status(keys: &KeyStore, now_secs: i64) -> Vec<CertStatus> {
    let mut out = Vec::new();
    let mut add = |role: &str, member: Option<String>, der: Option<&Vec<u8>>| {
        if let Some(info) = der.and_then(|d| CertInfo::parse(d).ok()) {
            out.push(CertStatus {
                role: role.to_owned(),
                member,
                sha256: info.sha256,
                not_after: veksel_proto::rfc3339(info.not_after.saturating_mul(1000)),
                expires_in_secs: info.not_after - now_secs,
            });
        }
    };
    add("authentication", None, keys.auth_chain.first());
    for (member, signer) in &keys.signers {
        add(
            "signing",
            Some(member.to_string()),
            signer.cert_chain().first(),
        );
    }
    out
}

/// What a renewal round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Certificates requested from the authority (`authentication` or a member).
    pub requested: Vec<String>,
    /// True if new keys were put in use.
    pub activated: bool,
    /// Why renewed keys are not in use yet.
    pub waiting: Option<String>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One round: request new certificates for those due (all of them with `force`),
/// unless some are already pending, then switch to pending ones once peers will accept
/// them.
pub async fn round(gw: &Gateway, force: bool) -> Result<Outcome, String> {
    let _one_at_a_time = gw.renewal_lock.lock().await;
    let mut outcome = Outcome::default();
    let pending = gw.dir.join(PENDING_DIR);
    if !pending.exists() {
        let keys = gw.keys.get();
        let now = i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX);
        let before = i64::try_from(gw.config.cert_renew_before_secs).unwrap_or(i64::MAX);
        let due = |der: Option<&Vec<u8>>| {
            force
                || der
                    .and_then(|d| CertInfo::parse(d).ok())
                    .is_none_or(|i| i.not_after - now < before)
        };
        let auth_due = due(keys.auth_chain.first());
        let members: Vec<MemberId> = keys
            .signers
            .iter()
            .filter(|(_, s)| due(s.cert_chain().first()))
            .map(|(m, _)| m.clone())
            .collect();
        if !auth_due && members.is_empty() {
            return Ok(outcome);
        }
        request(gw, &keys, auth_due, &members).await?;
        if auth_due {
            outcome.requested.push("authentication".into());
        }
        outcome
            .requested
            .extend(members.iter().map(ToString::to_string));
    }
    activate(gw, &mut outcome).await?;
    Ok(outcome)
}

/// Asks the authority for new certificates and keeps them, with their new keys, in
/// `pending/`.
async fn request(
    gw: &Gateway,
    keys: &KeyStore,
    auth: bool,
    members: &[MemberId],
) -> Result<(), String> {
    let id = &gw.config.id;
    let auth_key = if auth {
        Some(KeyFile::generate().map_err(err)?)
    } else {
        None
    };
    let auth_csr = match &auth_key {
        Some(k) => Some(veksel_pki::ca::make_csr(k, id.code()).map_err(err)?),
        None => None,
    };
    let mut signing = Vec::new();
    let mut signing_keys = Vec::new();
    for m in members {
        let key = crate::signing::NewKey::generate(&gw.config, m).map_err(err)?;
        signing.push(serde_json::json!({
            "member": m.to_string(),
            "csr_pem": key.csr(m.code()).map_err(err)?,
        }));
        signing_keys.push((m.clone(), key));
    }
    let nonce = uuid::Uuid::new_v4().to_string();
    // The owner consents to the new authentication key with its current signing key.
    let owner_consent = match &auth_csr {
        Some(csr) => {
            let owner = keys.signer(id.owner()).ok_or_else(|| {
                format!(
                    "no signing key of the owner {} to consent to a new authentication key",
                    id.owner()
                )
            })?;
            let consent = veksel_proto::management::AuthKeyConsent {
                gateway: id.clone(),
                nonce: nonce.clone(),
                auth_csr_sha256: veksel_pki::sha256_hex(csr.as_bytes()),
            };
            let bytes = serde_json::to_vec(&consent).map_err(err)?;
            Some(
                veksel_proto::jws::sign_compact(
                    owner.key().as_ref(),
                    veksel_proto::management::CONSENT_CTY,
                    true,
                    &bytes,
                )
                .map_err(err)?,
            )
        }
        None => None,
    };
    let payload = serde_json::json!({
        "gateway": id.to_string(),
        "created_at_ms": gw.clock.now_ms(),
        "nonce": nonce,
        "auth_csr_pem": auth_csr,
        "owner_consent": owner_consent,
        "signing": signing,
    });
    let (status, answer) =
        crate::management::post_signed(gw, keys, "/renew/v1", RENEWAL_CTY, &payload).await?;
    if !status.is_success() {
        return Err(format!(
            "the authority refused the renewal (HTTP {status}): {}",
            answer["message"].as_str().unwrap_or("no message")
        ));
    }

    // Everything is written into a scratch directory that appears as `pending/` in
    // one rename, so a half-written renewal is never taken for a whole one.
    let scratch = gw
        .dir
        .join(format!(".{PENDING_DIR}.{}", uuid::Uuid::new_v4().simple()));
    let sdir = scratch.join(files::SIGNING_DIR);
    std::fs::create_dir_all(&sdir).map_err(err)?;
    let write = |path: &Path, text: &str| std::fs::write(path, text).map_err(err);
    if let Some(key) = auth_key {
        let pem = answer["auth"]["cert_pem"]
            .as_str()
            .ok_or("the answer has no authentication certificate")?;
        check_matches(pem, &key.signer(Vec::new()).map_err(err)?.public_key())?;
        key.save(&scratch.join(files::AUTH_KEY)).map_err(err)?;
        write(&scratch.join(files::AUTH_CERT), pem)?;
    }
    let issued = answer["signing"].as_array().cloned().unwrap_or_default();
    for (member, key) in signing_keys {
        let pem = issued
            .iter()
            .find(|c| c["subject"].as_str() == Some(member.to_string().as_str()))
            .and_then(|c| c["cert_pem"].as_str())
            .ok_or_else(|| format!("the answer has no signing certificate for {member}"))?;
        check_matches(pem, &key.public_key().map_err(err)?)?;
        let stem = signing_stem(&member);
        key.save(&sdir, &stem).map_err(err)?;
        write(&sdir.join(format!("{stem}.pem")), pem)?;
    }
    std::fs::rename(&scratch, gw.dir.join(PENDING_DIR)).map_err(err)?;
    tracing::info!(
        authentication = auth,
        members = members.len(),
        "renewed certificates received; switching once peers accept them"
    );
    Ok(())
}

/// The certificate must be for the key (its uncompressed point) it was requested with.
fn check_matches(pem: &str, public_key: &[u8]) -> Result<(), String> {
    let chain = certs_from_pem(pem).map_err(err)?;
    let leaf = chain.first().ok_or("an empty certificate")?;
    let info = CertInfo::parse(leaf).map_err(err)?;
    if info.public_key != public_key {
        return Err("the authority returned a certificate for another key".into());
    }
    Ok(())
}

/// Leaf certificates waiting in `pending/`.
struct PendingLeaves {
    /// The new authentication certificate, if one is pending.
    auth: Option<Vec<u8>>,
    /// Every pending certificate, authentication included.
    all: Vec<Vec<u8>>,
}

fn pending_leaves(dir: &Path) -> Result<PendingLeaves, String> {
    let pending = dir.join(PENDING_DIR);
    let read = |path: &Path| -> Result<Vec<u8>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        certs_from_pem(&text)
            .map_err(err)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: no certificate", path.display()))
    };
    let auth_path = pending.join(files::AUTH_CERT);
    let auth = if auth_path.exists() {
        Some(read(&auth_path)?)
    } else {
        None
    };
    let mut all: Vec<Vec<u8>> = auth.iter().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(pending.join(files::SIGNING_DIR)) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pem") {
                all.push(read(&e.path())?);
            }
        }
    }
    Ok(PendingLeaves { auth, all })
}

/// Switches to the pending keys once peers will accept them.
async fn activate(gw: &Gateway, outcome: &mut Outcome) -> Result<(), String> {
    if !gw.dir.join(PENDING_DIR).exists() {
        return Ok(());
    }
    let PendingLeaves { auth, all } = pending_leaves(&gw.dir)?;
    if let Err(e) = crate::ocsp::fetch_staples(gw, &all, None).await {
        outcome.waiting = Some(format!("no OCSP response for a new certificate yet: {e}"));
        return Ok(());
    }
    if let Some(auth) = &auth {
        let hash = veksel_pki::sha256_hex(auth);
        let listed = |gw: &Gateway| {
            gw.conf.latest().is_some_and(|c| {
                c.index
                    .gateway(&gw.config.id)
                    .is_some_and(|g| g.auth_cert_sha256.contains(&hash))
            })
        };
        if !listed(gw) {
            // The authority publishes at once; fetch rather than wait for the poll.
            let _ = gw.conf.refresh().await;
        }
        if !listed(gw) {
            outcome.waiting = Some(format!(
                "the global configuration does not list the new authentication certificate {hash} yet"
            ));
            return Ok(());
        }
    }
    move_into_place(&gw.dir).map_err(err)?;
    let mut keys = KeyStore::load(&gw.dir).map_err(err)?;
    let old = gw.keys.get();
    let now = i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX);
    keys.previous_auth = old
        .auth_chain
        .iter()
        .take(1)
        .chain(&old.previous_auth)
        .filter(|c| CertInfo::parse(c).is_ok_and(|i| i.not_after > now))
        .filter(|c| keys.auth_chain.first() != Some(*c))
        .cloned()
        .collect();
    gw.ocsp
        .tls_cert()
        .replace(&keys.auth_chain, keys.auth_key.rustls_key())
        .map_err(err)?;
    gw.keys.set(keys);
    // Staples the new authentication certificate's response in TLS too.
    if let Err(e) = crate::ocsp::refresh(gw).await {
        tracing::warn!(error = %e, "OCSP refresh after the key switch failed");
    }
    outcome.activated = true;
    tracing::info!("renewed keys and certificates are in use");
    Ok(())
}

/// Moves pending keys and certificates into place. Safe to repeat: after a crash in
/// the middle it finishes the job.
pub fn move_into_place(dir: &Path) -> Result<(), GatewayError> {
    let pending = dir.join(PENDING_DIR);
    let io = |p: &Path, e: std::io::Error| GatewayError::Config(format!("{}: {e}", p.display()));
    let marker = pending.join(ACTIVATING);
    if !marker.exists() {
        std::fs::write(&marker, b"").map_err(|e| io(&marker, e))?;
        sync_dir(&pending)?;
    }
    for name in [files::AUTH_KEY, files::AUTH_CERT] {
        let from = pending.join(name);
        if from.exists() {
            std::fs::rename(&from, dir.join(name)).map_err(|e| io(&from, e))?;
        }
    }
    let psigning = pending.join(files::SIGNING_DIR);
    if let Ok(entries) = std::fs::read_dir(&psigning) {
        let target = dir.join(files::SIGNING_DIR);
        std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
        for e in entries.flatten() {
            // A key may move between a key file and the HSM (`.key` / `.hsm`); the
            // other kind goes first, so the loader never pairs a stale key with the
            // new certificate, even after a crash here.
            let from = e.path();
            let other = match from.extension().and_then(|x| x.to_str()) {
                Some("key") => Some("hsm"),
                Some("hsm") => Some("key"),
                _ => None,
            };
            if let Some(other) = other {
                let stale = target.join(e.file_name()).with_extension(other);
                match std::fs::remove_file(&stale) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&stale, err));
                    }
                    _ => {}
                }
            }
            std::fs::rename(&from, target.join(e.file_name())).map_err(|err| io(&from, err))?;
        }
        sync_dir(&target)?;
    }
    sync_dir(dir)?;
    std::fs::remove_dir_all(&pending).map_err(|e| io(&pending, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), GatewayError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| GatewayError::Config(format!("{}: {e}", dir.display())))
}

/// At start: completes a switch a crash interrupted, and drops a half-written
/// renewal.
pub fn recover(dir: &Path) -> Result<(), GatewayError> {
    if dir.join(PENDING_DIR).join(ACTIVATING).exists() {
        move_into_place(dir)?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".{PENDING_DIR}."))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// The last renewal error, kept for `/readyz`.
pub type LastError = std::sync::Mutex<Option<String>>;

/// Rounds every `cert_check_interval_secs`, every 10 s while renewed keys wait.
pub async fn renewal_loop(gw: std::sync::Arc<Gateway>) {
    let mut wait = std::time::Duration::from_secs(10);
    loop {
        tokio::time::sleep(wait).await;
        let result = round(&gw, false).await;
        wait = match &result {
            Ok(o) if o.waiting.is_some() => std::time::Duration::from_secs(10),
            _ => std::time::Duration::from_secs(gw.config.cert_check_interval_secs.max(1)),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "certificate renewal failed");
        }
        if let Ok(mut last) = gw.renewal_error.lock() {
            *last = match result {
                Ok(o) => o.waiting,
                Err(e) => Some(e),
            };
        }
    }
}
