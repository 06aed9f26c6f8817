//! `veksel broker check-datasets` and `veksel broker verify`: a data owner checks a
//! directory of definitions before the broker reads it; a consumer verifies an
//! answer offline, and the command says which bound field does not hold.

mod common;
use common::veksel;

const DATASET: &str = r#"
name = "person-address"
version = 1
owner = "DEV/GOV/10000001"
description = "Where a person lives"
subject = "person"

[[fields]]
name = "address"
description = "Registered address"
type = "string"

[[sources]]
name = "population"
service = "DEV/GOV/10000001/population/persons"
path = "/{subject}"
map = { address = "/address" }

[[purposes]]
id = "address-check"
description = "Checking where a person lives"
fields = ["address"]
"#;

#[test]
fn a_data_owner_checks_definitions_before_the_broker_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("person-address.toml"), DATASET).unwrap();
    let path = dir.path().to_str().unwrap();
    let (ok, out) = veksel(&["broker", "check-datasets", path]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "person-address v1: 1 fields from 1 sources; purposes: address-check (address)"
        ),
        "{out}"
    );
    std::fs::write(
        dir.path().join("person-address.toml"),
        DATASET.replace("fields = [\"address\"]", "fields = [\"income\"]"),
    )
    .unwrap();
    let (ok, out) = veksel(&["broker", "check-datasets", path]);
    assert!(!ok);
    assert!(
        out.contains("person-address.toml, dataset person-address: purpose address-check names income, which is not a field"),
        "{out}"
    );
}

#[test]
fn a_consumer_verifies_an_answer_offline() {
    use veksel_broker::answer::{AnswerClaims, body_digest, sign, subject_digest};
    let dir = tempfile::tempdir().unwrap();
    let signer = veksel_proto::jws::SoftwareSigner::from_pkcs8(
        &veksel_proto::jws::generate_p256_pkcs8().unwrap(),
        vec![],
    )
    .unwrap();
    let jwk = veksel_proto::oauth::Jwk::es256(&signer.public_key()).unwrap();
    let body = br#"{"address":"Aqqusinersuaq 3, Nuuk"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let jti = "b5e3a1f0-1111-4c2e-8d0f-0123456789ab";
    let claims = AnswerClaims {
        iss: "https://broker.dev.example".into(),
        aud: "DEV/MUN/30000003".into(),
        sub: subject_digest(jti, "01017012345"),
        dataset: "person-address".into(),
        dataset_version: 1,
        purpose: "address-check".into(),
        request: "dh-7".into(),
        iat: now,
        jti: jti.into(),
        body_sha256: body_digest(body),
    };
    let signature = sign(&signer, &jwk.kid, &claims).unwrap();
    let file = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let body_file = file("answer.json", body);
    let jwks = file(
        "jwks.json",
        &serde_json::to_vec(&serde_json::json!({"keys": [jwk]})).unwrap(),
    );
    let sig_file = format!("@{}", file("signature.jwt", signature.as_bytes()));
    let run = |body: &str, sig: &str, subject: &str| {
        veksel(&[
            "broker",
            "verify",
            "--body",
            body,
            "--signature",
            sig,
            "--jwks",
            &jwks,
            "--issuer",
            "https://broker.dev.example",
            "--requestor",
            "DEV/MUN/30000003",
            "--subject",
            subject,
            "--dataset",
            "person-address",
            "--purpose",
            "address-check",
            "--request",
            "dh-7",
        ])
    };
    let (ok, out) = run(&body_file, &signature, "01017012345");
    assert!(ok, "{out}");
    assert!(
        out.contains("ok: person-address v1 for DEV/MUN/30000003 (address-check), request dh-7"),
        "{out}"
    );
    let (ok, out) = run(&body_file, &sig_file, "01017012345");
    assert!(ok, "{out}");
    // Another person's answer, a changed body, a signature cut short.
    let (ok, out) = run(&body_file, &signature, "02028012345");
    assert!(!ok && out.contains("another subject (sub)"), "{out}");
    let changed = file("changed.json", br#"{"address":"Aqqusinersuaq 4, Nuuk"}"#);
    let (ok, out) = run(&changed, &signature, "01017012345");
    assert!(!ok && out.contains("body is not the one signed"), "{out}");
    let (ok, out) = run(&body_file, &signature[..signature.len() - 4], "01017012345");
    assert!(!ok && out.contains("signature"), "{out}");
}
