//! Independent tools accept what the network produces: `openssl verify` the issued
//! certificates, `openssl dgst` the ES256 JWS of the global configuration and of the
//! message log, `openssl s_client -status` the TLS handshake with its stapled OCSP
//! response. Keys on disk are private to their owner.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use veksel_sandbox::ORGS;

fn pem(der: &[u8]) -> String {
    veksel_pki::certs_to_pem(&[der.to_vec()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_accepts_certificates_and_signatures() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let root = net.dir.path();
    let ca = root.join("authority/ca.pem");
    let scratch = tempfile::tempdir().unwrap();

    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        path(&ca),
        "-purpose",
        "sslserver",
        path(&root.join("authority/tls.pem")),
    ]);
    assert!(ok, "authority TLS certificate: {out}");
    for org in ORGS {
        let dir = root.join(org.slug);
        for purpose in ["sslclient", "sslserver"] {
            let (ok, out) = openssl(&[
                "verify",
                "-CAfile",
                path(&ca),
                "-purpose",
                purpose,
                path(&dir.join("auth.pem")),
            ]);
            assert!(ok, "{} auth certificate as {purpose}: {out}", org.slug);
        }
        let signing = dir
            .join("signing")
            .join(format!("{}.pem", org.member().replace('/', ":")));
        let (ok, out) = openssl(&["verify", "-CAfile", path(&ca), path(&signing)]);
        assert!(ok, "{} signing certificate: {out}", org.slug);
    }

    // Every private key and salt on disk is readable by its owner only.
    let (mut keys, mut salts) = (0, 0);
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "key" || x == "salt") {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
                if p.extension().is_some_and(|x| x == "key") {
                    keys += 1;
                } else {
                    salts += 1;
                }
            }
        }
    }
    assert_eq!(
        keys,
        6 + 3 * 3,
        "CA, configuration-signing, TLS, TSA, ledger and token-signing keys, and three keys per gateway (authentication, signing, witness)"
    );
    assert_eq!(
        salts,
        1 + 3,
        "the authority's salt of pairwise subjects, each gateway's of the persons requests are about"
    );

    // The global configuration JWS verifies with the anchor's certificate.
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap();
    let jws = gw.conf.latest().unwrap().jws.clone();
    let conf_cert = std::fs::read_to_string(root.join("authority/conf-signing.pem")).unwrap();
    assert!(openssl_verifies_jws(scratch.path(), &jws, None, &conf_cert));
    let mut tampered: Vec<&str> = jws.split('.').collect();
    let changed_payload = URL_SAFE_NO_PAD.encode(b"{\"version\":999}");
    tampered[1] = &changed_payload;
    assert!(
        !openssl_verifies_jws(scratch.path(), &tampered.join("."), None, &conf_cert),
        "openssl must reject a changed payload"
    );

    // A logged exchange: both signatures verify over the logged descriptors with the
    // certificates they carry.
    let resp = net
        .r1(
            MUNICIPALITY,
            &ORGS[MUNICIPALITY].subsystem_id(),
            &format!("{}/companies/12345678", ORGS[TAX].subsystem_id()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let records = message_log(&net, TAX, &format!("request_id={request_id}")).await;
    let r = &records[0];
    for (sig_field, desc_field) in [
        ("request_signature", "request_descriptor"),
        ("response_signature", "response_descriptor"),
    ] {
        let jws = r[sig_field].as_str().unwrap();
        let cert_der = message_signing_cert(&net, TAX, jws).await;
        let payload = r[desc_field].as_str().unwrap().as_bytes();
        assert!(
            openssl_verifies_jws(scratch.path(), jws, Some(payload), &pem(&cert_der)),
            "{sig_field}"
        );
        let mut changed = payload.to_vec();
        changed[10] ^= 1;
        assert!(
            !openssl_verifies_jws(scratch.path(), jws, Some(&changed), &pem(&cert_der)),
            "{sig_field} over changed bytes"
        );
        std::fs::write(scratch.path().join("signer.pem"), pem(&cert_der)).unwrap();
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            path(&ca),
            path(&scratch.path().join("signer.pem")),
        ]);
        assert!(
            ok,
            "the signer's certificate chains to the authority CA: {out}"
        );
    }

    // The gateway-to-gateway listener staples its OCSP response in the TLS 1.3
    // handshake (status_request), as `openssl s_client -status` shows.
    let muni_dir = root.join(ORGS[MUNICIPALITY].slug);
    let (ok, out) = openssl(&[
        "s_client",
        "-connect",
        &net.sandbox().info.gateways[TAX].peer_address,
        "-tls1_3",
        "-status",
        "-CAfile",
        path(&ca),
        "-verify_return_error",
        "-cert",
        path(&muni_dir.join("auth.pem")),
        "-key",
        path(&muni_dir.join("auth.key")),
        "-alpn",
        "h2",
    ]);
    assert!(ok, "{out}");
    for expected in [
        "OCSP Response Status: successful",
        "Cert Status: good",
        "Verify return code: 0 (ok)",
        "TLSv1.3",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    net.stop().await;
}
