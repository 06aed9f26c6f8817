//! Evidence bundles (`veksel-evidence/1`) as a third party checks them: one exchange
//! with its logged record, its inclusion proof in the message log, the checkpoint and
//! its RFC 3161 time stamp, and the signed global configuration naming the approved
//! CAs. [`verify`] needs only the bundle and the network's anchor; every binary part
//! is standard base64 and every signature a standard format, so the checks can be
//! repeated with other tools (docs/evidence.md).

use crate::log::LeafRecord;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use veksel_merkle::checkpoint::Checkpoint;
use veksel_merkle::{Hash, verify_inclusion};
use veksel_pki::verify::Roots;
use veksel_proto::conf::{Anchor, GlobalConf};

/// Format identifier of a bundle.
pub const FORMAT: &str = "veksel-evidence/1";

/// An evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`FORMAT`].
    pub format: String,
    /// The gateway whose log holds the record.
    pub gateway: String,
    /// The record, exactly as its leaf hash was computed.
    pub record: LeafRecord,
    /// Size of the stamped tree that includes the record.
    pub tree_size: u64,
    /// Its root, base64.
    pub root: String,
    /// Audit path from the record's leaf to the root, base64 hashes.
    pub inclusion_proof: Vec<String>,
    /// The checkpoint text whose SHA-256 the time stamp covers.
    pub checkpoint: String,
    /// RFC 3161 time-stamp token (CMS ContentInfo, DER), base64.
    pub time_stamp_token: String,
    /// The signed global configuration (compact JWS) naming the approved CAs and TSAs.
    pub global_configuration: String,
    /// The chains of the certificates that signed the record, by their leaf's
    /// `x5t#S256` (records logged before chains were kept apart carry theirs in `x5c`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub signing_chains: crate::log::Chains,
}

/// A signed global configuration checked against the network's anchor (its signature,
/// not its validity period: evidence outlives configurations), with its approved CAs.
pub fn network_conf(jws: &str, anchor: &Anchor) -> Result<(GlobalConf, Roots), String> {
    let conf_cert = veksel_pki::certs_from_pem(&anchor.conf_signing_cert_pem)
        .map_err(|e| format!("anchor: {e}"))?;
    let conf_key =
        veksel_pki::CertInfo::parse(conf_cert.first().ok_or("anchor has no certificate")?)
            .map_err(|e| format!("anchor: {e}"))?
            .public_key;
    let conf = GlobalConf::verify(jws, &conf_key, &anchor.instance)
        .map_err(|e| format!("global configuration: {e}"))?;
    let roots = Roots::from_pems(conf.approved_cas.iter().map(|c| c.cert_pem.as_str()))
        .map_err(|e| format!("approved CAs: {e}"))?;
    Ok((conf, roots))
}

/// What a bundle proves, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The exchange's request id.
    pub request_id: String,
    /// Client and service.
    pub client: String,
    /// Service.
    pub service: String,
    /// Response status.
    pub status: i64,
    /// The time the TSA vouches the record existed by, Unix seconds.
    pub existed_by: u64,
    /// Position and log size.
    pub position: u64,
    /// Size of the stamped log.
    pub tree_size: u64,
}

fn unb64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(s)
        .map_err(|_| format!("{what} is not base64"))
}

fn hash32(what: &str, s: &str) -> Result<Hash, String> {
    unb64(what, s)?
        .try_into()
        .map_err(|_| format!("{what} is not a 32-byte hash"))
}

/// Verifies a bundle offline with the network's anchor; every failure says which step
/// failed and why.
pub fn verify(bundle: &Bundle, anchor: &Anchor) -> Result<Proven, String> {
    if bundle.format != FORMAT {
        return Err(format!("unknown bundle format {:?}", bundle.format));
    }
    // 1. The configuration is the network's: signed with the anchor's key.
    let (conf, roots) =
        network_conf(&bundle.global_configuration, anchor).map_err(|e| format!("step 1, {e}"))?;

    // 2. The record is a leaf of the stamped tree.
    let record = &bundle.record;
    let leaf = record.hash();
    let root = hash32("root", &bundle.root)?;
    let proof: Vec<Hash> = bundle
        .inclusion_proof
        .iter()
        .map(|h| hash32("a proof hash", h))
        .collect::<Result<_, _>>()?;
    let position = u64::try_from(record.seq).map_err(|_| "negative position".to_owned())?;
    verify_inclusion(&leaf, position, bundle.tree_size, &proof, &root).map_err(|e| {
        format!("step 2, inclusion proof: the record is not in the log with this root: {e}")
    })?;

    // 3. The checkpoint names this log, size and root, and is time-stamped.
    let cp =
        Checkpoint::parse(&bundle.checkpoint).map_err(|e| format!("step 3, checkpoint: {e}"))?;
    let gateway: veksel_id::GatewayId = bundle
        .gateway
        .parse()
        .map_err(|e| format!("gateway id: {e}"))?;
    if cp.origin != crate::log::origin(&gateway) || cp.size != bundle.tree_size || cp.root != root {
        return Err(
            "step 3, checkpoint: it does not name this gateway's log, size and root".into(),
        );
    }
    let token = unb64("time-stamp token", &bundle.time_stamp_token)?;
    let stamped =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bundle.checkpoint.as_bytes());
    let stamp = veksel_pki::tsa::verify_token(&token, stamped.as_ref(), &roots, &[])
        .map_err(|e| format!("step 3, time stamp: {e}"))?;
    let approved_tsa = conf.approved_tsas.iter().any(|t| {
        veksel_pki::certs_from_pem(&t.cert_pem).is_ok_and(|c| {
            c.iter()
                .any(|c| veksel_pki::sha256_hex(c) == stamp.tsa.sha256)
        })
    });
    if !approved_tsa {
        return Err(
            "step 3, time stamp: signed by a TSA the configuration does not approve".into(),
        );
    }

    // 4. Both signatures verify, by certificates from an approved CA naming the right
    //    members, valid when the record was stamped; the stored fields agree with them.
    crate::log::check_signed_content(record, &bundle.signing_chains)
        .map_err(|e| format!("step 4, signatures: {e}"))?;
    let req: veksel_proto::descriptor::RequestDescriptor =
        serde_json::from_str(&record.request_descriptor).map_err(|e| format!("step 4: {e}"))?;
    let resp: veksel_proto::descriptor::ResponseDescriptor =
        serde_json::from_str(&record.response_descriptor).map_err(|e| format!("step 4: {e}"))?;
    for (what, jws, desc, member) in [
        (
            "request",
            &record.request_signature,
            &record.request_descriptor,
            req.client.member().clone(),
        ),
        (
            "response",
            &record.response_signature,
            &record.response_descriptor,
            resp.service.subsystem().member().clone(),
        ),
    ] {
        let signature = veksel_proto::batch::MessageSignature::parse(jws, desc.as_bytes())
            .map_err(|e| format!("step 4, {what} signature: {e}"))?;
        let chain = crate::log::signer_chain(&signature, &bundle.signing_chains)
            .map_err(|e| format!("step 4, {what} signature: {e}"))?;
        roots
            .verify_member_signing(&chain, &member, stamp.gen_time)
            .map_err(|e| format!("step 4, {what} signing certificate of {member}: {e}"))?;
    }
    if record.created_at / 1000 > i64::try_from(stamp.gen_time).unwrap_or(i64::MAX) + 60 {
        return Err("step 4: the record claims to be younger than its time stamp".into());
    }
    Ok(Proven {
        request_id: record.request_id.clone(),
        client: record.client.clone(),
        service: record.service.clone(),
        status: record.status,
        existed_by: stamp.gen_time,
        position,
        tree_size: bundle.tree_size,
    })
}
