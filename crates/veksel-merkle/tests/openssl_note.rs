//! `openssl` verifies the Ed25519 signatures of veksel's signed notes over the note
//! text, and `sha256sum`-style hashing reproduces the key ID: the format is checked
//! by code that is not veksel's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::process::Command;
use veksel_merkle::checkpoint::{Checkpoint, NoteSigner, sign_note};

#[test]
fn openssl_verifies_checkpoint_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::from_pkcs8(
        "authority.example/ledger",
        &NoteSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    let text = Checkpoint {
        origin: "authority.example/ledger".into(),
        size: 1234,
        root: veksel_merkle::leaf_hash(b"x"),
        extensions: vec![],
    }
    .body();
    let note = sign_note(&text, &[&signer]).unwrap();

    // Take the note apart as an outside verifier would.
    let (body, sigs) = note.rsplit_once("\n\n").unwrap();
    let body = format!("{body}\n");
    assert_eq!(body, text);
    let line = sigs.trim_end_matches('\n');
    let b64 = line.rsplit(' ').next().unwrap();
    let blob = STANDARD.decode(b64).unwrap();
    let (key_id, sig) = blob.split_at(4);
    let vkey = signer.verifier_key();
    let public = &STANDARD
        .decode(vkey.splitn(3, '+').nth(2).unwrap())
        .unwrap()[1..];

    // Key ID = SHA-256(name || 0x0A || 0x01 || key)[:4], computed with openssl.
    let mut id_input = b"authority.example/ledger\n\x01".to_vec();
    id_input.extend_from_slice(public);
    std::fs::write(dir.path().join("id"), &id_input).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .arg(dir.path().join("id"))
        .output()
        .unwrap();
    assert_eq!(&out.stdout[..4], key_id);

    // The signature, with the public key as an SPKI PEM (RFC 8410 prefix).
    let mut spki = hex::decode("302a300506032b6570032100").unwrap();
    spki.extend_from_slice(public);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
    std::fs::write(dir.path().join("text"), &body).unwrap();
    std::fs::write(dir.path().join("sig"), sig).unwrap();
    let verify = |text_file: &str| {
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(dir.path().join("pub.pem"))
            .arg("-in")
            .arg(dir.path().join(text_file))
            .arg("-sigfile")
            .arg(dir.path().join("sig"))
            .output()
            .unwrap()
    };
    let ok = verify("text");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    std::fs::write(dir.path().join("other"), body.replace("1234", "1235")).unwrap();
    assert!(
        !verify("other").status.success(),
        "openssl must reject a changed checkpoint"
    );
}
