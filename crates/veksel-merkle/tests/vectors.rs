//! The public Merkle test vectors, valid and invalid cases alike:
//! C2SP/CCTV `merkle/testdata` (BSD-2-Clause, from the `merkle` branch that C2SP's
//! CCTV module `c2sp.org/CCTV/merkle` points to) and transparency-dev/merkle
//! `testdata/{inclusion,consistency}` (Apache-2.0), copied unchanged under
//! `testdata/` with their licences.
//!
//! Inclusion vectors go through the typed API (a hash that is not 32 bytes is refused
//! while decoding); consistency vectors through `verify_consistency_bytes`, which
//! takes hashes as they arrive, so that every vector is answered by veksel's code.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use std::path::{Path, PathBuf};
use veksel_merkle::{
    Hash, leaf_hash, root, verify_consistency, verify_consistency_bytes, verify_inclusion,
};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn hash(v: &Value) -> Option<Hash> {
    STANDARD
        .decode(v.as_str()?)
        .ok()
        .and_then(|b| b.try_into().ok())
}

fn hashes(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

fn uint(v: &Value) -> u64 {
    v.as_u64().expect("sizes and indices are unsigned integers")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("testdata directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
}

/// Runs every vector of one transparency-dev directory; returns (valid, invalid) counts.
fn transparency_dev(kind: &str, check: impl Fn(&Value) -> bool) -> (usize, usize) {
    let base = testdata().join("transparency-dev");
    let mut all = Vec::new();
    files(&base.join(kind), &mut all);
    let (mut valid, mut invalid) = (0, 0);
    for path in all {
        let name = path
            .strip_prefix(&base)
            .expect("under base")
            .to_string_lossy()
            .into_owned();
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let accepted = check(&v);
        assert_eq!(accepted, !want_err, "{name}: {}", v["desc"]);
        if want_err {
            invalid += 1;
        } else {
            valid += 1;
        }
    }
    (valid, invalid)
}

#[test]
fn transparency_dev_inclusion() {
    let (valid, invalid) = transparency_dev("inclusion", |v| {
        let (Some(leaf), Some(root), Some(proof)) =
            (hash(&v["leafHash"]), hash(&v["root"]), hashes(&v["proof"]))
        else {
            return false;
        };
        verify_inclusion(
            &leaf,
            uint(&v["leafIdx"]),
            uint(&v["treeSize"]),
            &proof,
            &root,
        )
        .is_ok()
    });
    assert_eq!((valid, invalid), (6, 92));
}

#[test]
fn transparency_dev_consistency() {
    let (valid, invalid) = transparency_dev("consistency", |v| {
        let bytes = |v: &Value| v.as_str().and_then(|s| STANDARD.decode(s).ok());
        let proof: Option<Vec<Vec<u8>>> = match &v["proof"] {
            Value::Null => Some(vec![]),
            Value::Array(items) => items.iter().map(bytes).collect(),
            _ => None,
        };
        let (Some(root1), Some(root2), Some(proof)) =
            (bytes(&v["root1"]), bytes(&v["root2"]), proof)
        else {
            return false;
        };
        verify_consistency_bytes(uint(&v["size1"]), uint(&v["size2"]), &root1, &root2, &proof)
            .is_ok()
    });
    assert_eq!((valid, invalid), (6, 92));
}

#[test]
fn transparency_dev_leaves_make_the_reference_roots() {
    let leaves: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("transparency-dev/leaves.json")).expect("read"),
    )
    .expect("json");
    let hashes: Vec<Hash> = leaves
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).expect("hex")))
        .collect();
    // The happy-path inclusion vectors are over these leaves: their roots must be ours.
    let mut checked = 0;
    let mut all = Vec::new();
    files(&testdata().join("transparency-dev/inclusion"), &mut all);
    for path in all.iter().filter(|p| p.ends_with("happy-path.json")) {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        let size = uint(&v["treeSize"]);
        if size as usize <= hashes.len() {
            assert_eq!(Some(root(&hashes, size).expect("root")), hash(&v["root"]));
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "only {checked} happy paths over the reference leaves"
    );
}

fn cctv(file: &str) -> Vec<Value> {
    serde_json::from_str(
        &std::fs::read_to_string(testdata().join("cctv").join(file)).expect("read"),
    )
    .expect("json")
}

#[test]
fn cctv_tree_heads() {
    let cases = cctv("merkle_tree.json");
    assert_eq!(cases.len(), 16);
    let mut leaves = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let data = c["leaf_data"].as_str().expect("leaf_data").as_bytes();
        assert_eq!(data, [b'a' + i as u8], "leaf {i}");
        let leaf = leaf_hash(data);
        assert_eq!(Some(leaf), hash(&c["leaf_hash"]), "leaf hash {i}");
        leaves.push(leaf);
        assert_eq!(
            Some(root(&leaves, leaves.len() as u64).expect("root")),
            hash(&c["root_hash"]),
            "root of size {}",
            leaves.len()
        );
    }
}

#[test]
fn cctv_inclusion() {
    let check = |c: &Value| {
        let (Some(leaf), Some(root), Some(proof)) = (
            hash(&c["leaf_hash"]),
            hash(&c["root_hash"]),
            hashes(&c["inclusion_path"]),
        ) else {
            return false;
        };
        verify_inclusion(
            &leaf,
            uint(&c["leaf_index"]),
            uint(&c["tree_size"]),
            &proof,
            &root,
        )
        .is_ok()
    };
    let valid = cctv("inclusion-valid.json");
    let invalid = cctv("inclusion-invalid.json");
    assert_eq!((valid.len(), invalid.len()), (4, 4));
    for c in &valid {
        assert!(check(c), "valid case refused: {c}");
    }
    for c in &invalid {
        assert!(!check(c), "invalid case accepted: {c}");
    }
}

#[test]
fn cctv_consistency() {
    let check = |c: &Value| {
        let (Some(old), Some(new), Some(proof)) = (
            hash(&c["old_root"]),
            hash(&c["new_root"]),
            hashes(&c["consistency_path"]),
        ) else {
            return false;
        };
        verify_consistency(
            uint(&c["old_size"]),
            uint(&c["new_size"]),
            &old,
            &new,
            &proof,
        )
        .is_ok()
    };
    let valid = cctv("consistency-valid.json");
    let invalid = cctv("consistency-invalid.json");
    assert_eq!((valid.len(), invalid.len()), (4, 16));
    for c in &valid {
        assert!(check(c), "valid case refused: {c}");
    }
    for c in &invalid {
        assert!(!check(c), "invalid case accepted: {c}");
    }
}
