//! `openssl ts` accepts the tokens of veksel's time-stamping authority, and veksel's
//! verifier accepts what openssl would and refuses the rest.

use std::process::Command;
use time::{Duration, OffsetDateTime};
use veksel_pki::ca::{CertificateAuthority, Profile, make_csr};
use veksel_pki::tsa::{self, TimeStampAuthority};
use veksel_pki::verify::Roots;
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

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A CA and a TSA certificate it issued, written to `ca.pem` and `tsa.pem` in `dir`.
fn test_tsa(
    dir: &std::path::Path,
    now: OffsetDateTime,
) -> (CertificateAuthority, KeyFile, Vec<u8>) {
    let ca = CertificateAuthority::create("veksel test CA", now, Duration::days(3650)).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    let key = KeyFile::generate().unwrap();
    let cert = ca
        .issue_from_csr(
            &make_csr(&key, "tsa").unwrap(),
            &Profile::TimeStamping {
                name: "veksel test TSA".into(),
            },
            now,
            Duration::days(365),
        )
        .unwrap();
    std::fs::write(
        dir.join("tsa.pem"),
        certs_to_pem(std::slice::from_ref(&cert)),
    )
    .unwrap();
    (ca, key, cert)
}

#[test]
fn openssl_verifies_time_stamp_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let now = OffsetDateTime::now_utc();
    let (ca, key, cert) = test_tsa(dir.path(), now);
    let (ok, out) = openssl(&[
        "x509",
        "-in",
        &p("tsa.pem"),
        "-noout",
        "-ext",
        "extendedKeyUsage",
    ]);
    assert!(
        ok && out.contains("critical") && out.contains("Time Stamping"),
        "{out}"
    );
    let authority = TimeStampAuthority::new(key, cert.clone(), tsa::VEKSEL_TSA_POLICY).unwrap();

    let data = b"the Merkle root of a message log";
    std::fs::write(p("data"), data).unwrap();

    // A request made by openssl, answered by veksel, verified by openssl.
    let (ok, out) = openssl(&[
        "ts",
        "-query",
        "-data",
        &p("data"),
        "-sha256",
        "-cert",
        "-out",
        &p("req.tsq"),
    ]);
    assert!(ok, "{out}");
    let reply = authority.respond(
        &std::fs::read(p("req.tsq")).unwrap(),
        now.unix_timestamp() as u64,
        &[0x01, 0x02, 0x03],
    );
    std::fs::write(p("resp.tsr"), &reply).unwrap();
    let (ok, out) = openssl(&[
        "ts",
        "-verify",
        "-in",
        &p("resp.tsr"),
        "-data",
        &p("data"),
        "-CAfile",
        &p("ca.pem"),
    ]);
    assert!(ok && out.contains("Verification: OK"), "{out}");
    let (_, text) = openssl(&["ts", "-reply", "-in", &p("resp.tsr"), "-text"]);
    assert!(text.contains(tsa::VEKSEL_TSA_POLICY), "{text}");
    assert!(text.contains("Status: Granted"), "{text}");

    // Changed data, or another CA: openssl refuses.
    std::fs::write(p("other"), b"another root").unwrap();
    let (ok, _) = openssl(&[
        "ts",
        "-verify",
        "-in",
        &p("resp.tsr"),
        "-data",
        &p("other"),
        "-CAfile",
        &p("ca.pem"),
    ]);
    assert!(!ok, "openssl must refuse a token over other data");
    let other_ca = CertificateAuthority::create("other", now, Duration::days(1)).unwrap();
    std::fs::write(p("other-ca.pem"), other_ca.cert_pem()).unwrap();
    let (ok, _) = openssl(&[
        "ts",
        "-verify",
        "-in",
        &p("resp.tsr"),
        "-data",
        &p("data"),
        "-CAfile",
        &p("other-ca.pem"),
    ]);
    assert!(!ok, "openssl must refuse a token from another CA");

    // veksel's own request and verifier agree with openssl.
    let hash = sha256(data);
    let reply = authority.respond(
        &tsa::request(&hash, Some(42), false).unwrap(),
        now.unix_timestamp() as u64,
        &[9; 16],
    );
    let token = tsa::token_from_response(&reply).unwrap();
    let roots = Roots::from_ders(vec![ca.cert_der().to_vec()]).unwrap();
    let stamp = tsa::verify_token(&token, &hash, &roots, std::slice::from_ref(&cert)).unwrap();
    assert_eq!(stamp.gen_time, now.unix_timestamp() as u64);
    assert!(tsa::verify_token(&token, &sha256(b"x"), &roots, std::slice::from_ref(&cert)).is_err());
    assert!(
        tsa::verify_token(&token, &hash, &roots, &[]).is_err(),
        "without the certificate there is nothing to check against"
    );
    let other_roots = Roots::from_ders(vec![other_ca.cert_der().to_vec()]).unwrap();
    assert!(tsa::verify_token(&token, &hash, &other_roots, std::slice::from_ref(&cert)).is_err());
    let mut tampered = token.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    assert!(tsa::verify_token(&tampered, &hash, &roots, std::slice::from_ref(&cert)).is_err());

    // A SHA-1 request is rejected, not stamped.
    let (ok, out) = openssl(&[
        "ts",
        "-query",
        "-data",
        &p("data"),
        "-sha1",
        "-out",
        &p("sha1.tsq"),
    ]);
    assert!(ok, "{out}");
    let reply = authority.respond(
        &std::fs::read(p("sha1.tsq")).unwrap(),
        now.unix_timestamp() as u64,
        &[1],
    );
    assert!(tsa::token_from_response(&reply).is_err());
    assert!(tsa::token_from_response(&authority.respond(b"garbage", 0, &[1])).is_err());
}

/// A Python with rfc3161-client (Trail of Bits' independent RFC 3161 verifier, on
/// PyPI): the system one if it has the package, otherwise a virtualenv made once in
/// the target directory.
fn python_with_rfc3161_client() -> std::path::PathBuf {
    let has = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import rfc3161_client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let system = std::path::PathBuf::from("python3");
    if has(&system) {
        return system;
    }
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-rfc3161-client");
    let python = venv.join("bin").join("python3");
    if !has(&python) {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .expect("python3 is installed");
        assert!(out.status.success(), "python3 -m venv: {out:?}");
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "rfc3161-client==1.0.9"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "installing rfc3161-client from PyPI failed (needs network once): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    python
}

const RFC3161_CLIENT_SCRIPT: &str = r#"
import sys
from cryptography import x509
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder, VerifierBuilder
from rfc3161_client import decode_timestamp_response
from rfc3161_client.tsp import TimeStampRequest

step, d = sys.argv[1], sys.argv[2]
data = open(f"{d}/data", "rb").read()
if step == "request":
    alg = {"sha256": HashAlgorithm.SHA256, "sha512": HashAlgorithm.SHA512}[sys.argv[3]]
    req = TimestampRequestBuilder().data(data).hash_algorithm(alg).nonce(nonce=True).cert_request(cert_request=True).build()
    open(f"{d}/py.tsq", "wb").write(req.as_bytes())
else:
    from rfc3161_client import _rust
    req = _rust.parse_timestamp_request(open(f"{d}/py.tsq", "rb").read())
    resp = decode_timestamp_response(open(f"{d}/py.tsr", "rb").read())
    root = x509.load_pem_x509_certificate(open(f"{d}/ca.pem", "rb").read())
    tsa = x509.load_pem_x509_certificate(open(f"{d}/tsa.pem", "rb").read())
    verifier = VerifierBuilder.from_request(req).tsa_certificate(tsa).add_root_certificate(root).build()
    try:
        verifier.verify_message(resp, data)
    except Exception as e:
        print(f"REFUSED {type(e).__name__}: {e}")
        sys.exit(1)
    print("VERIFIED", resp.tst_info.gen_time.isoformat())
"#;

#[test]
fn rfc3161_client_verifies_time_stamp_tokens() {
    let python = python_with_rfc3161_client();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let now = OffsetDateTime::now_utc();
    let (_ca, key, cert) = test_tsa(dir.path(), now);
    let authority = TimeStampAuthority::new(key, cert, tsa::VEKSEL_TSA_POLICY).unwrap();
    std::fs::write(p("script.py"), RFC3161_CLIENT_SCRIPT).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&python)
            .arg(p("script.py"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let d = dir.path().to_str().unwrap();
    for alg in ["sha256", "sha512"] {
        std::fs::write(p("data"), b"the Merkle root of a message log").unwrap();
        let (ok, out) = run(&["request", d, alg]);
        assert!(ok, "{out}");
        let reply = authority.respond(
            &std::fs::read(p("py.tsq")).unwrap(),
            now.unix_timestamp() as u64,
            &[0x07, 0x11],
        );
        std::fs::write(p("py.tsr"), &reply).unwrap();
        let (ok, out) = run(&["verify", d]);
        assert!(ok && out.contains("VERIFIED"), "{alg}: {out}");
        // The same token over other data is refused by the independent verifier.
        std::fs::write(p("data"), b"another root").unwrap();
        let (ok, out) = run(&["verify", d]);
        assert!(!ok && out.contains("REFUSED"), "{alg}: {out}");
    }
}
