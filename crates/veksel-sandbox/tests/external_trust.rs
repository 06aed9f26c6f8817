//! Trust services from outside the authority: an external CA with its own OCSP
//! responder and an external TSA are approved through the authority's API, published
//! in the configuration, and used by the gateways — stamps come from the external TSA
//! first and fail over to the authority's when it is down; a signing certificate from
//! the external CA is accepted with a fresh response from its responder, refused
//! without one, and refused everywhere once the CA is withdrawn.

mod common;

use axum::routing::post;
use base64::Engine;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use veksel_pki::ca::{CertificateAuthority, Profile, make_csr};
use veksel_pki::{KeyFile, certs_to_pem};
use veksel_proto::descriptor::{self, BodyDigest, REQUEST_CTY};
use veksel_sandbox::ORGS;
use veksel_store::sqlx;

struct External {
    ca: Arc<CertificateAuthority>,
    tsa_cert: Vec<u8>,
    addr: std::net::SocketAddr,
    shutdown: veksel_net::Shutdown,
    task: tokio::task::JoinHandle<()>,
}

/// Serves the external CA's OCSP responder at `/ocsp` and its TSA at `/tsa`.
async fn external_services() -> External {
    let now = time::OffsetDateTime::now_utc();
    let ca = Arc::new(
        CertificateAuthority::create("External eID CA", now, time::Duration::days(30)).unwrap(),
    );
    let tsa_key = KeyFile::generate().unwrap();
    let tsa_cert = ca
        .issue_from_csr(
            &make_csr(&tsa_key, "tsa").unwrap(),
            &Profile::TimeStamping {
                name: "External TSA".into(),
            },
            now,
            time::Duration::days(30),
        )
        .unwrap();
    let tsa = Arc::new(
        veksel_pki::tsa::TimeStampAuthority::new(
            tsa_key,
            tsa_cert.clone(),
            veksel_pki::tsa::VEKSEL_TSA_POLICY,
        )
        .unwrap(),
    );
    let ocsp_ca = ca.clone();
    let router = axum::Router::new()
        .route(
            "/ocsp",
            post(move |body: axum::body::Bytes| {
                let ca = ocsp_ca.clone();
                async move {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
                    veksel_pki::ocsp::Responder::new(&ca, 3600)
                        .unwrap()
                        .respond(&body, now, |_| veksel_pki::ocsp::Status::Good)
                }
            }),
        )
        .route(
            "/tsa",
            post(move |body: axum::body::Bytes| {
                let tsa = tsa.clone();
                async move {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
                    tsa.respond(&body, now, uuid::Uuid::new_v4().as_bytes())
                }
            }),
        );
    let listener = veksel_net::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = veksel_net::Shutdown::new();
    let task = tokio::spawn(veksel_net::serve(
        listener,
        None,
        move |_c| hyper_util::service::TowerToHyperService::new(router.clone()),
        veksel_net::ServerLimits::default(),
        shutdown.clone(),
    ));
    External {
        ca,
        tsa_cert,
        addr,
        shutdown,
        task,
    }
}

/// Waits until `f` holds; on timeout says what each gateway last saw of the
/// configuration, so a failure tells why it never arrived.
async fn wait_for<F: Fn() -> bool>(what: &str, gateways: &[&veksel_gateway::Gateway], f: F) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what}: {:?}", {
            gateways
                .iter()
                .map(|g| {
                    (
                        g.conf.latest().map(|c| c.conf().version),
                        g.conf.last_error(),
                    )
                })
                .collect::<Vec<_>>()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn external(b: Backend) {
    let Some(net) = Net::start_with(b, |o| o.conf_refresh_secs = 1).await else {
        return;
    };
    let ext = external_services().await;
    let (http, url, token) = authority_client(&net);
    let post_json = |path: &str, body: serde_json::Value| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let path = path.to_owned();
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let ca_pem = ext.ca.cert_pem();
    let tsa_pem = certs_to_pem(std::slice::from_ref(&ext.tsa_cert));

    // Bad requests are refused with reasons.
    let (status, body) = post_json(
        "/api/v1/approved-cas",
        serde_json::json!({"name": "x", "cert_pem": tsa_pem}),
    )
    .await;
    assert!(
        status == 400 && body.contains("not a CA certificate"),
        "{status} {body}"
    );
    let (status, body) = post_json(
        "/api/v1/approved-tsas",
        serde_json::json!({"name": "External TSA", "url": format!("http://{}/tsa", ext.addr), "cert_pem": tsa_pem}),
    )
    .await;
    assert!(
        status == 400 && body.contains("from an approved CA"),
        "a TSA whose CA is not approved yet: {status} {body}"
    );
    let (status, body) = post_json(
        "/api/v1/approved-cas",
        serde_json::json!({"name": "External eID CA", "cert_pem": ca_pem, "ocsp_url": "ftp://nowhere"}),
    )
    .await;
    assert!(
        status == 400 && body.contains("ocsp_url"),
        "{status} {body}"
    );

    // Approve the CA with its responder, then its TSA ahead of the authority's.
    let (status, body) = post_json(
        "/api/v1/approved-cas",
        serde_json::json!({"name": "External eID CA", "cert_pem": ca_pem, "ocsp_url": format!("http://{}/ocsp", ext.addr)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post_json(
        "/api/v1/approved-tsas",
        serde_json::json!({"name": "External TSA", "url": format!("http://{}/tsa", ext.addr), "cert_pem": tsa_pem, "priority": 10}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = post_json(
        "/api/v1/approved-cas",
        serde_json::json!({"name": "External eID CA", "cert_pem": ca_pem}),
    )
    .await;
    assert_eq!(status, 409, "names are unique");

    let muni = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    let pop = net.sandbox().gateway(POPULATION).unwrap().clone();
    wait_for(
        "the gateways learn the external services",
        &[&muni, &pop],
        || {
            [&muni, &pop].iter().all(|g| {
                g.conf.latest().is_some_and(|c| {
                    c.conf()
                        .approved_tsas
                        .first()
                        .is_some_and(|t| t.name == "External TSA")
                        && c.conf().approved_cas.len() == 2
                })
            })
        },
    )
    .await;

    // Stamps come from the external TSA first…
    // One more record, then a stamping round.
    let log_and_stamp = |n: u32| {
        let (net, muni) = (&net, &muni);
        async move {
            let path = format!("{}/persons/010170123{n}", ORGS[POPULATION].subsystem_id());
            let r = net
                .r1(MUNICIPALITY, &ORGS[MUNICIPALITY].subsystem_id(), &path)
                .await;
            assert_eq!(r.status(), 200);
            veksel_gateway::stamper::stamp_and_record(muni).await;
        }
    };
    log_and_stamp(4).await;
    let last_tsa = || async {
        let (tsa,): (String,) =
            sqlx::query_as("SELECT tsa FROM log_stamps ORDER BY size DESC LIMIT 1")
                .fetch_one(muni.db.pool())
                .await
                .unwrap();
        tsa
    };
    assert_eq!(last_tsa().await, "External TSA");

    // …a signing certificate from the external CA is accepted with its responder's
    // response…
    let member: veksel_id::MemberId = ORGS[MUNICIPALITY].member().parse().unwrap();
    let key = KeyFile::generate().unwrap();
    let cert = ext
        .ca
        .issue_from_csr(
            &make_csr(&key, member.code()).unwrap(),
            &Profile::MemberSigning {
                member: member.clone(),
                name: "Municipality of Sermersooq".into(),
            },
            time::OffsetDateTime::now_utc(),
            time::Duration::days(30),
        )
        .unwrap();
    let signer = key.signer(vec![cert.clone()]).unwrap();
    let ocsp = reqwest::Client::new()
        .post(format!("http://{}/ocsp", ext.addr))
        .body(veksel_pki::ocsp::request(&cert, ext.ca.cert_der()).unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let staple = base64::engine::general_purpose::STANDARD.encode(&ocsp);
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    let signed_externally = |peer: &RawPeer, staple: Option<String>| {
        let mut r = peer.request(&net, "/x");
        r.descriptor.body = BodyDigest::of(&r.body);
        r.signature = Some(
            veksel_proto::jws::sign_detached(
                &signer,
                REQUEST_CTY,
                true,
                &descriptor::canonical_bytes(&r.descriptor),
            )
            .unwrap(),
        );
        r.signing_staple = staple;
        r
    };
    let (status, _, body) = peer
        .send(signed_externally(&peer, Some(staple.clone())))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // …and refused without one.
    let (status, h, body) = peer.send(signed_externally(&peer, None)).await;
    assert_eq!(
        (
            status,
            h.get("x-road-error")
                .map(|v| v.to_str().unwrap().to_owned())
        ),
        (500, Some("Server.ServerProxy.IncorrectCertificate".into())),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // With the external TSA down, stamping fails over to the authority's.
    ext.shutdown.trigger();
    let _ = ext.task.await;
    log_and_stamp(5).await;
    assert!(muni.stamper.status().last_error.is_none());
    assert_ne!(last_tsa().await, "External TSA");

    // Withdrawn, the CA's certificates are refused network-wide.
    let r = http
        .delete(format!("{url}/api/v1/approved-cas/External%20eID%20CA"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for("the provider learns the CA was withdrawn", &[&pop], || {
        pop.conf
            .latest()
            .is_some_and(|c| c.conf().approved_cas.len() == 1)
    })
    .await;
    let (status, h, body) = peer.send(signed_externally(&peer, Some(staple))).await;
    assert_eq!(
        (
            status,
            h.get("x-road-error")
                .map(|v| v.to_str().unwrap().to_owned())
        ),
        (500, Some("Server.ServerProxy.IncorrectCertificate".into())),
        "{}",
        String::from_utf8_lossy(&body)
    );
    net.stop().await;
}
both_backends!(
    external_cas_and_tsas_are_approved_used_and_withdrawn,
    external
);
