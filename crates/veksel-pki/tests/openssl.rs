//! `openssl` must accept every certificate and CSR veksel produces.

use std::process::Command;
use time::{Duration, OffsetDateTime};
use veksel_pki::ca::{CertificateAuthority, Profile, make_csr, self_signed_signing_cert};
use veksel_pki::{KeyFile, certs_to_pem};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_verifies_issued_chains_and_csrs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let now = OffsetDateTime::now_utc();
    let ca = CertificateAuthority::create("veksel test CA", now, Duration::days(3650)).unwrap();
    std::fs::write(p("ca.pem"), ca.cert_pem()).unwrap();

    let key = KeyFile::generate().unwrap();
    let csr = make_csr(&key, "gw1").unwrap();
    std::fs::write(p("csr.pem"), &csr).unwrap();
    let (ok, out) = openssl(&["req", "-in", &p("csr.pem"), "-verify", "-noout"]);
    assert!(ok, "openssl req -verify: {out}");

    let gateway = "GL/GOV/12345678/gw1".parse().unwrap();
    let auth = ca
        .issue_from_csr(
            &csr,
            &Profile::GatewayAuth {
                gateway,
                hosts: vec!["127.0.0.1".into(), "gw1.example".into()],
            },
            now,
            Duration::days(365),
        )
        .unwrap();
    std::fs::write(p("auth.pem"), certs_to_pem(&[auth])).unwrap();
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            &p("ca.pem"),
            "-purpose",
            purpose,
            &p("auth.pem"),
        ]);
        assert!(ok && out.contains("OK"), "auth cert as {purpose}: {out}");
    }
    let (_, text) = openssl(&[
        "x509",
        "-in",
        &p("auth.pem"),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        text.contains("serialNumber = GL/GOV/12345678/gw1"),
        "{text}"
    );
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");

    let sign = ca
        .issue_from_csr(
            &csr,
            &Profile::MemberSigning {
                member: "GL/GOV/12345678".parse().unwrap(),
                name: "Naalakkersuisut Ø".into(),
            },
            now,
            Duration::days(365),
        )
        .unwrap();
    std::fs::write(p("sign.pem"), certs_to_pem(&[sign])).unwrap();
    let (ok, out) = openssl(&["verify", "-CAfile", &p("ca.pem"), &p("sign.pem")]);
    assert!(ok && out.contains("OK"), "signing cert: {out}");
    let (_, text) = openssl(&["x509", "-in", &p("sign.pem"), "-noout", "-ext", "keyUsage"]);
    assert!(text.contains("Non Repudiation"), "{text}");

    // A certificate from another CA must be refused, or the check above proves nothing.
    let other = CertificateAuthority::create("other CA", now, Duration::days(10)).unwrap();
    std::fs::write(p("other.pem"), other.cert_pem()).unwrap();
    let (ok, _) = openssl(&["verify", "-CAfile", &p("other.pem"), &p("sign.pem")]);
    assert!(!ok, "openssl accepted a chain to the wrong CA");

    let conf_key = KeyFile::generate().unwrap();
    let conf_cert = self_signed_signing_cert(
        &conf_key,
        "GL configuration signing",
        now,
        Duration::days(3650),
    )
    .unwrap();
    std::fs::write(p("conf.pem"), certs_to_pem(&[conf_cert])).unwrap();
    let (ok, out) = openssl(&["x509", "-in", &p("conf.pem"), "-noout", "-text"]);
    assert!(ok && out.contains("ecdsa-with-SHA256"), "{out}");
}
