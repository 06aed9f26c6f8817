//! A client of the network ledger for members, auditors and journalists: it trusts
//! nothing the authority says unless the ledger's key and the witness policy vouch
//! for it. Checkpoints are verified under the policy (the log's signature and the
//! quorum of cosignatures), every tile against the checkpoint, every entry against
//! its tile and its submitter's signature.

use std::collections::BTreeSet;
use std::time::Duration;
use veksel_merkle::checkpoint::Checkpoint;
use veksel_merkle::tiles::{
    TileId, TiledTree, tiles_for_consistency, tiles_for_inclusion, tiles_for_size,
};
use veksel_merkle::witness::WitnessPolicy;
use veksel_merkle::{Hash, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion};
use veksel_proto::conf::Anchor;
use veksel_proto::ledger::{LedgerEntry, peek};

/// A verified checkpoint.
#[derive(Debug, Clone)]
pub struct VerifiedCheckpoint {
    /// The note as served.
    pub note: String,
    /// Its content.
    pub checkpoint: Checkpoint,
    /// The witnesses whose cosignatures verified.
    pub cosigners: BTreeSet<String>,
}

/// One entry with what proves it is in the log.
#[derive(Debug, Clone)]
pub struct ProvenEntry {
    /// Position.
    pub index: u64,
    /// The signed entry (compact JWS).
    pub raw: String,
    /// Its payload.
    pub entry: LedgerEntry,
    /// The certificate's subject serial number (the submitting gateway) or subject.
    pub signer: String,
    /// Inclusion proof in the checkpoint's tree.
    pub proof: Vec<Hash>,
}

/// Where the ledger's files come from: the authority, or a directory in the
/// tlog-tiles layout (a mirror, a static export, a copy on a journalist's disk).
#[derive(Debug, Clone)]
enum Source {
    Http { http: reqwest::Client, base: String },
    Dir(std::path::PathBuf),
}

impl Source {
    /// `rel` is `checkpoint`, `policy` or a path made by [`TileId::path`]: never
    /// outside the directory.
    async fn get(&self, rel: &str) -> Result<Vec<u8>, String> {
        match self {
            Self::Http { http, base } => get(http, &format!("{base}/{rel}")).await,
            Self::Dir(dir) => {
                let path = dir.join(rel);
                let data = tokio::fs::read(&path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if data.len() > 16 * 1024 * 1024 {
                    return Err(format!("{}: larger than 16 MiB", path.display()));
                }
                Ok(data)
            }
        }
    }
}

/// Entry `index` of `tree` with its inclusion proof, verified against `cp`: the
/// leaf hash of its bytes leads by the proof to the checkpoint's root, and the
/// entry's signature verifies with the certificate it carries. `tree` holds the
/// tiles [`tiles_for_inclusion`] names and the entry's bundle.
pub fn prove_entry(tree: &TiledTree, cp: &Checkpoint, index: u64) -> Result<ProvenEntry, String> {
    let raw = tree
        .entry(index)
        .ok_or("the entry bundle lacks the entry")?;
    let proof = inclusion_proof(tree, index, cp.size).map_err(|e| e.to_string())?;
    verify_inclusion(&leaf_hash(raw), index, cp.size, &proof, &cp.root)
        .map_err(|e| format!("entry {index} is not in the checkpoint's tree: {e}"))?;
    let (entry, signer) = check_entry(raw)?;
    Ok(ProvenEntry {
        index,
        raw: String::from_utf8_lossy(raw).into_owned(),
        entry,
        signer,
        proof,
    })
}

/// A connection to one ledger under one policy.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    source: Source,
    /// The policy checkpoints are verified under.
    pub policy: WitnessPolicy,
}

impl LedgerClient {
    /// A client for the ledger of the network whose anchor is given. Without a
    /// policy text, the authority's current policy is used (trust on first use; an
    /// auditor pins a policy file instead).
    pub async fn connect(anchor: &Anchor, policy_text: Option<String>) -> Result<Self, String> {
        let roots =
            veksel_pki::certs_from_pem(&anchor.authority_tls_ca_pem).map_err(|e| e.to_string())?;
        let tls = veksel_pki::tls::https_client_config(&roots).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            // Below the authority's 10 s idle limit (see confclient).
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("{}/ledger/v1", anchor.authority_url.trim_end_matches('/'));
        Self::with_source(Source::Http { http, base }, policy_text).await
    }

    /// A client reading a directory in the tlog-tiles layout (`checkpoint`,
    /// `tile/…`, and `policy` unless a policy text is given).
    pub async fn from_directory(
        dir: &std::path::Path,
        policy_text: Option<String>,
    ) -> Result<Self, String> {
        Self::with_source(Source::Dir(dir.to_owned()), policy_text).await
    }

    async fn with_source(source: Source, policy_text: Option<String>) -> Result<Self, String> {
        let text = match policy_text {
            Some(t) => t,
            None => String::from_utf8(source.get("policy").await?)
                .map_err(|_| "the policy is not UTF-8".to_string())?,
        };
        let policy = WitnessPolicy::parse(&text).map_err(|e| e.to_string())?;
        Ok(Self { source, policy })
    }

    /// Copies the ledger as of the latest checkpoint into `dir` (tlog-tiles layout:
    /// `checkpoint`, every tile and entry bundle), after auditing all of it; a
    /// mirror anyone can serve as static files. Returns the checkpoint.
    pub async fn mirror(&self, dir: &std::path::Path) -> Result<VerifiedCheckpoint, String> {
        let cp = self.checkpoint().await?;
        let ids = tiles_for_size(cp.checkpoint.size, true);
        let mut tree = TiledTree::new(cp.checkpoint.size);
        let mut files = Vec::new();
        for id in ids {
            let data = self.source.get(&id.path()).await?;
            tree.insert(id, &data).map_err(|e| e.to_string())?;
            files.push((id.path(), data));
        }
        tree.audit(&cp.checkpoint.root).map_err(|e| e.to_string())?;
        for (rel, data) in files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let policy_text = self.policy_text();
        std::fs::write(dir.join("policy"), policy_text).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("checkpoint"), &cp.note).map_err(|e| e.to_string())?;
        Ok(cp)
    }

    fn policy_text(&self) -> String {
        self.policy.text().to_owned()
    }

    /// The latest published checkpoint, verified under the policy.
    pub async fn checkpoint(&self) -> Result<VerifiedCheckpoint, String> {
        let note = String::from_utf8(self.source.get("checkpoint").await?)
            .map_err(|_| "the checkpoint is not UTF-8".to_string())?;
        self.verify_note(&note)
    }

    /// Verifies a checkpoint note under the policy.
    pub fn verify_note(&self, note: &str) -> Result<VerifiedCheckpoint, String> {
        let (checkpoint, cosigners) = self.policy.verify(note).map_err(|e| e.to_string())?;
        Ok(VerifiedCheckpoint {
            note: note.to_owned(),
            checkpoint,
            cosigners,
        })
    }

    async fn tiles(&self, size: u64, ids: &[TileId]) -> Result<TiledTree, String> {
        let mut tree = TiledTree::new(size);
        for id in ids {
            let data = self.source.get(&id.path()).await?;
            tree.insert(*id, &data).map_err(|e| e.to_string())?;
        }
        Ok(tree)
    }

    /// Entry `index` with its inclusion proof, verified against `cp`.
    pub async fn entry(&self, cp: &Checkpoint, index: u64) -> Result<ProvenEntry, String> {
        let mut ids = tiles_for_inclusion(index, cp.size).map_err(|e| e.to_string())?;
        let leaf_tile = ids.first().copied().ok_or("no tile for the entry")?;
        ids.push(leaf_tile.entries());
        let tree = self.tiles(cp.size, &ids).await?;
        prove_entry(&tree, cp, index)
    }

    /// Verifies that `new` extends `old` (both verified under the policy).
    pub async fn consistency(
        &self,
        old: &Checkpoint,
        new: &Checkpoint,
    ) -> Result<Vec<Hash>, String> {
        if old.origin != new.origin {
            return Err("the checkpoints are of different logs".into());
        }
        if old.size > new.size {
            return Err("the old checkpoint is larger than the new one".into());
        }
        let proof = if old.size == 0 || old.size == new.size {
            vec![]
        } else {
            let ids = tiles_for_consistency(old.size, new.size).map_err(|e| e.to_string())?;
            let tree = self.tiles(new.size, &ids).await?;
            veksel_merkle::consistency_proof(&tree, old.size, new.size)
                .map_err(|e| e.to_string())?
        };
        verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
            .map_err(|e| format!("the log forked: {e}"))?;
        Ok(proof)
    }

    /// Fetches every tile and entry of `cp`'s tree and checks them all: tiles
    /// against each other and the checkpoint, entries against their leaf hashes,
    /// each entry's payload and signature. Returns the entries.
    pub async fn audit(&self, cp: &Checkpoint) -> Result<Vec<ProvenEntry>, String> {
        self.checked_entries(cp, 0, None).await
    }

    /// Entries `[from, cp.size)` whose subject is `subject` or lies under it
    /// (a member's subsystems and gateways), verified against `cp`.
    pub async fn monitor(
        &self,
        cp: &Checkpoint,
        from: u64,
        subject: &str,
    ) -> Result<Vec<ProvenEntry>, String> {
        self.checked_entries(cp, from, Some(subject)).await
    }

    /// The whole tree of `cp` fetched and audited; entries from `from` on, each
    /// checked, those about `subject` (all without one).
    async fn checked_entries(
        &self,
        cp: &Checkpoint,
        from: u64,
        subject: Option<&str>,
    ) -> Result<Vec<ProvenEntry>, String> {
        let tree = self.tiles(cp.size, &tiles_for_size(cp.size, true)).await?;
        tree.audit(&cp.root).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for index in from..cp.size {
            let raw = tree.entry(index).ok_or("an entry is missing")?;
            let (entry, signer) = check_entry(raw).map_err(|e| format!("entry {index}: {e}"))?;
            let about = entry.subject();
            if subject.is_some_and(|s| about != s && !about.starts_with(&format!("{s}/"))) {
                continue;
            }
            out.push(ProvenEntry {
                index,
                raw: String::from_utf8_lossy(raw).into_owned(),
                entry,
                signer,
                proof: vec![],
            });
        }
        Ok(out)
    }
}

/// Checks an entry's payload and its signature with the certificate it carries;
/// returns the entry and who signed it.
pub fn check_entry(raw: &[u8]) -> Result<(LedgerEntry, String), String> {
    let entry = peek(raw)?;
    let text = std::str::from_utf8(raw).map_err(|_| "entry is not UTF-8".to_string())?;
    let jws = veksel_proto::jws::Unverified::parse(text, None).map_err(|e| e.to_string())?;
    let chain = jws.header.chain_der().map_err(|e| e.to_string())?;
    let cert = chain.first().ok_or("the entry carries no certificate")?;
    let info = veksel_pki::CertInfo::parse(cert).map_err(|e| e.to_string())?;
    jws.verify(&info.public_key)
        .map_err(|_| "the entry's signature does not verify".to_string())?;
    let signer = info
        .subject_serial_number
        .clone()
        .unwrap_or_else(|| info.subject.clone());
    if let LedgerEntry::Anchor { gateway, .. }
    | LedgerEntry::Commitment { gateway, .. }
    | LedgerEntry::GatewayEvent { gateway, .. } = &entry
        && *gateway != signer
    {
        return Err(format!("entry about {gateway} is signed by {signer}"));
    }
    Ok((entry, signer))
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    if body.len() > 16 * 1024 * 1024 {
        return Err(format!("{url}: larger than 16 MiB"));
    }
    Ok(body.to_vec())
}
