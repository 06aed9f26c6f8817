//! `openssl ocsp` accepts veksel's OCSP responses (good, revoked, unknown, with and
//! without nonce), and veksel's verifier checks signature, subject and freshness.

use std::process::Command;
use time::{Duration, OffsetDateTime};
use veksel_pki::ca::{CertificateAuthority, Profile, make_csr};
use veksel_pki::ocsp::{self, Responder, Status};
use veksel_pki::{KeyFile, certs_to_pem};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn issue(ca: &CertificateAuthority, member: &str) -> Vec<u8> {
    let key = KeyFile::generate().unwrap();
    ca.issue_from_csr(
        &make_csr(&key, "m").unwrap(),
        &Profile::MemberSigning {
            member: member.parse().unwrap(),
            name: "M".into(),
        },
        OffsetDateTime::now_utc(),
        Duration::days(30),
    )
    .unwrap()
}

#[test]
fn openssl_accepts_ocsp_responses() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
    let ca = CertificateAuthority::create(
        "veksel test CA",
        OffsetDateTime::now_utc(),
        Duration::days(365),
    )
    .unwrap();
    std::fs::write(p("ca.pem"), ca.cert_pem()).unwrap();
    let good = issue(&ca, "GL/GOV/1");
    let revoked = issue(&ca, "GL/GOV/2");
    std::fs::write(p("good.pem"), certs_to_pem(std::slice::from_ref(&good))).unwrap();
    std::fs::write(
        p("revoked.pem"),
        certs_to_pem(std::slice::from_ref(&revoked)),
    )
    .unwrap();
    let revoked_serial = ocsp::serial_hex(&revoked).unwrap();
    let good_serial = ocsp::serial_hex(&good).unwrap();
    let responder = Responder::new(&ca, 3600).unwrap();
    let lookup = |s: &str| {
        if s == revoked_serial {
            Status::Revoked(now - 100)
        } else if s == good_serial {
            Status::Good
        } else {
            Status::Unknown
        }
    };

    for (cert, expect, nonce) in [
        ("good.pem", "good", true),
        ("revoked.pem", "revoked", false),
    ] {
        let ca_path = p("ca.pem");
        let mut query = vec!["ocsp", "-issuer", &ca_path[..], "-cert"];
        let cert_path = p(cert);
        query.push(&cert_path);
        let req_path = p("req.der");
        query.extend(["-reqout", &req_path[..]]);
        if !nonce {
            query.push("-no_nonce");
        }
        let (ok, out) = openssl(&query);
        assert!(ok, "{out}");
        let resp = responder.respond(&std::fs::read(&req_path).unwrap(), now, lookup);
        std::fs::write(p("resp.der"), &resp).unwrap();
        // With -cert, openssl builds its own request to compare with; -no_nonce keeps
        // it from inventing a nonce. The echo of the real nonce is checked below.
        let (ok, out) = openssl(&[
            "ocsp",
            "-respin",
            &p("resp.der"),
            "-issuer",
            &p("ca.pem"),
            "-cert",
            &cert_path,
            "-CAfile",
            &p("ca.pem"),
            "-no_nonce",
        ]);
        assert!(ok && out.contains("Response verify OK"), "{out}");
        assert!(out.contains(&format!("{cert_path}: {expect}")), "{out}");
        if nonce {
            let (_, req_text) = openssl(&["ocsp", "-reqin", &req_path, "-req_text"]);
            let (_, resp_text) =
                openssl(&["ocsp", "-respin", &p("resp.der"), "-resp_text", "-noverify"]);
            let line = |t: &str| {
                t.lines()
                    .skip_while(|l| !l.contains("OCSP Nonce"))
                    .nth(1)
                    .map(|l| l.trim().to_owned())
            };
            assert!(line(&req_text).is_some());
            assert_eq!(line(&req_text), line(&resp_text), "the nonce is echoed");
        }
    }

    // A certificate of another CA is unknown to this responder.
    let other_ca =
        CertificateAuthority::create("other", OffsetDateTime::now_utc(), Duration::days(1))
            .unwrap();
    let stranger = issue(&other_ca, "GL/GOV/3");
    let resp = responder.respond(
        &ocsp::request(&stranger, other_ca.cert_der()).unwrap(),
        now,
        lookup,
    );
    let checked = ocsp::verify_response(&resp, &stranger, other_ca.cert_der(), now, 60);
    assert!(
        checked.is_err(),
        "signed by our CA, not the stranger's issuer"
    );

    // veksel's own request and verifier.
    let resp = responder.respond(&ocsp::request(&good, ca.cert_der()).unwrap(), now, lookup);
    assert_eq!(
        ocsp::verify_response(&resp, &good, ca.cert_der(), now, 60)
            .unwrap()
            .status,
        Status::Good
    );
    let resp_r = responder.respond(
        &ocsp::request(&revoked, ca.cert_der()).unwrap(),
        now,
        lookup,
    );
    assert_eq!(
        ocsp::verify_response(&resp_r, &revoked, ca.cert_der(), now, 60)
            .unwrap()
            .status,
        Status::Revoked(now - 100)
    );
    assert!(
        ocsp::verify_response(&resp, &good, ca.cert_der(), now + 120, 60).is_err(),
        "stale"
    );
    assert!(
        ocsp::verify_response(&resp, &good, ca.cert_der(), now + 7200, 100_000).is_err(),
        "past nextUpdate"
    );
    assert!(
        ocsp::verify_response(&resp, &revoked, ca.cert_der(), now, 60).is_err(),
        "about another certificate"
    );
    let mut tampered = resp.clone();
    let at = tampered.len() - 5;
    tampered[at] ^= 1;
    assert!(ocsp::verify_response(&tampered, &good, ca.cert_der(), now, 60).is_err());
    let malformed = responder.respond(b"not ocsp", now, lookup);
    assert!(ocsp::verify_response(&malformed, &good, ca.cert_der(), now, 60).is_err());
}
