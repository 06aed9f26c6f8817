//! The PKCS#11 path against SoftHSM2: a P-256 key generated in the token (sensitive,
//! not extractable), a CSR signed in the token that openssl accepts, a certificate
//! issued for it, and JWS signatures made in the token that veksel and openssl verify.
//! Needs SoftHSM2 (`apt-get install softhsm2`; `.ci/run` installs it).

use std::path::PathBuf;
use std::process::Command;
use veksel_pki::ca::{CertificateAuthority, Profile};
use veksel_pki::hsm::{Hsm, softhsm};
use veksel_pki::{CertInfo, certs_to_pem};
use veksel_proto::jws::{Signer, Unverified};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

/// Runs in a child process with a fresh token (see [`softhsm`]).
#[test]
fn softhsm_keys_sign_csrs_and_jws_that_openssl_verifies() {
    if std::env::var_os(softhsm::CHILD_ENV).is_some() {
        return in_child();
    }
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm::init_token(tmp.path(), "veksel-test", "11223344", "5678").unwrap();
    if let Err(out) = softhsm::rerun_test(
        &conf,
        tmp.path(),
        "softhsm_keys_sign_csrs_and_jws_that_openssl_verifies",
    ) {
        panic!("{out}");
    }
}

fn in_child() {
    let module = softhsm::module_path();
    let dir = PathBuf::from(std::env::var_os(softhsm::CHILD_ENV).unwrap());
    let dir = dir.as_path();

    // Refusals first: unknown token, wrong PIN.
    let err = Hsm::open(&module, "no such token", "5678")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no token labelled"), "{err}");
    let err = Hsm::open(&module, "veksel-test", "0000")
        .unwrap_err()
        .to_string();
    assert!(err.contains("logging in"), "{err}");

    let hsm = Hsm::open(&module, "veksel-test", "5678").unwrap();
    let key = hsm.generate("signing DEV/GOV/10000001").unwrap();
    assert!(hsm.key_is_protected("signing DEV/GOV/10000001").unwrap());
    assert!(hsm.key("no such key").is_err());

    // The CSR, signed in the token, verifies with openssl.
    let csr = key.csr("10000001").unwrap();
    let csr_path = dir.join("req.pem");
    std::fs::write(&csr_path, &csr).unwrap();
    let out = run(Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr_path));
    assert!(
        out.contains("verify OK") || out.contains("Certificate request self-signature verify OK"),
        "{out}"
    );

    // A certificate for the HSM key; signatures made in the token verify with it.
    let now = time::OffsetDateTime::now_utc();
    let ca = CertificateAuthority::create("test CA", now, time::Duration::days(30)).unwrap();
    let member: veksel_id::MemberId = "DEV/GOV/10000001".parse().unwrap();
    let cert = ca
        .issue_from_csr(
            &csr,
            &Profile::MemberSigning {
                member: member.clone(),
                name: "Population Register Agency".into(),
            },
            now,
            time::Duration::days(30),
        )
        .unwrap();
    let info = CertInfo::parse(&cert).unwrap();
    assert_eq!(info.public_key, key.public_key());
    let roots = veksel_pki::verify::Roots::from_ders(vec![ca.cert_der().to_vec()]).unwrap();
    roots
        .verify_member_signing(
            std::slice::from_ref(&cert),
            &member,
            now.unix_timestamp() as u64,
        )
        .unwrap();
    let signer = key.clone().signer(vec![cert.clone()]);
    let payload = br#"{"typ":"veksel-request/1"}"#;
    let jws =
        veksel_proto::jws::sign_compact(&signer, "veksel-request+json", true, payload).unwrap();
    assert_eq!(
        Unverified::parse(&jws, None)
            .unwrap()
            .verify(&info.public_key)
            .unwrap(),
        payload
    );
    // openssl checks the same signature with the certificate's key.
    let parts: Vec<&str> = jws.split('.').collect();
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    std::fs::write(dir.join("input"), format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(dir.join("sig.der"), veksel_pki::ecdsa_raw_to_der(&raw)).unwrap();
    std::fs::write(dir.join("cert.pem"), certs_to_pem(&[cert])).unwrap();
    let pubkey = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(dir.join("cert.pem")));
    std::fs::write(dir.join("pub.pem"), pubkey).unwrap();
    let out = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("pub.pem"))
        .arg("-signature")
        .arg(dir.join("sig.der"))
        .arg(dir.join("input")));
    assert!(out.contains("Verified OK"), "{out}");

    // The key stays in the token: a new session finds it by label.
    drop(signer);
    drop(key);
    drop(hsm);
    let again = Hsm::open(&module, "veksel-test", "5678").unwrap();
    let found = again.key("signing DEV/GOV/10000001").unwrap();
    assert_eq!(found.public_key(), info.public_key.as_slice());
    let sig = found.signer(vec![]).sign(b"again").unwrap();
    assert_eq!(sig.len(), 64);
}
