//! Hostile input against the client side, the gateway-to-gateway side and the admin
//! API: each gets a refusal (an X-Road fault where the request got far enough to be
//! understood, an HTTP error from the parser otherwise), nothing crashes, and the
//! gateway goes on serving.

mod common;

use common::*;
use veksel_sandbox::ORGS;

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn still_serving(net: &Net) {
    let r = net
        .r1(
            MUNICIPALITY,
            &ORGS[MUNICIPALITY].subsystem_id(),
            &format!("{}/companies/12345678", ORGS[TAX].subsystem_id()),
        )
        .await;
    assert_eq!(r.status(), 200, "the gateway still serves");
}

async fn hostile_requests(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let base = net.client_url(MUNICIPALITY);
    let client = ORGS[MUNICIPALITY].subsystem_id();
    let target = format!("/r1/{}/echo/x", ORGS[POPULATION].subsystem_id());

    // An oversized header, too many headers, an oversized URL.
    let big = "v".repeat(10 * 1024);
    let resp = raw_bytes(&base, format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Road-Client: {client}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert_eq!(status_of(&resp), 400);
    assert!(resp.contains("Client.TooLarge"), "{resp}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw_bytes(
        &base,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(matches!(status_of(&resp), 400 | 431), "{resp}");
    let long = format!(
        "/r1/{}/echo/{}",
        ORGS[POPULATION].subsystem_id(),
        "a".repeat(9000)
    );
    let resp = raw_bytes(
        &base,
        format!(
            "GET {long} HTTP/1.1\r\nHost: x\r\nX-Road-Client: {client}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        matches!(status_of(&resp), 400 | 414 | 431),
        "{}",
        &resp[..resp.len().min(200)]
    );

    // Request smuggling: both Content-Length and Transfer-Encoding. hyper frames the
    // message by Transfer-Encoding (RFC 9112 §6.3) and closes the connection after the
    // answer, so the request hidden in the body is never read.
    let resp = raw_bytes(
        &base,
        format!("POST {target} HTTP/1.1\r\nHost: x\r\nX-Road-Client: {client}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /listClients HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        !resp.contains("clientList") && !resp.contains("\"member\""),
        "{resp}"
    );
    assert_eq!(
        resp.matches("HTTP/1.1").count(),
        1,
        "the smuggled request was not answered: {resp}"
    );

    // Invalid UTF-8 and control characters in X-Road headers.
    let mut bytes =
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Road-Client: DEV/MUN/\u{0}").into_bytes();
    bytes.truncate(bytes.len() - 1);
    bytes.extend_from_slice(b"\xff\xfe/casework\r\nConnection: close\r\n\r\n");
    let resp = raw_bytes(&base, &bytes).await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    let resp = raw_bytes(&base, format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Road-Client: {client}\r\nX-Road-Id: a\u{1}b\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert_eq!(status_of(&resp), 400, "{resp}");

    // Garbage on the gateway-to-gateway port and on the client port.
    let peer = net.sandbox().info.gateways[POPULATION].peer_address.clone();
    let _ = raw_bytes(&peer, b"GET / HTTP/1.1\r\n\r\n").await;
    let _ = raw_bytes(&peer, &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]).await;
    let resp = raw_bytes(&base, b"\x00\x01\x02 not http\r\n\r\n").await;
    assert!(resp.is_empty() || status_of(&resp) == 400, "{resp}");

    // The admin API: malformed JSON, a huge token, an unknown role.
    let (admin, token) = net.admin(MUNICIPALITY);
    let r = net
        .http
        .put(format!(
            "{admin}/api/v1/clients/{}",
            client.replace('/', ":")
        ))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"log_mode\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = net
        .http
        .get(format!("{admin}/api/v1/status"))
        .bearer_auth(format!("vka_{}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 431), "{}", r.status());
    let r = net
        .http
        .put(format!("{admin}/api/v1/clients/{}/access", client.replace('/', ":")))
        .bearer_auth(&token)
        .json(&serde_json::json!([{"subject": {"type": "root", "id": "x"}, "service_code": "a", "endpoint": {"method": "*", "path": "/**"}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    still_serving(&net).await;
    // None of the refused requests produced a message-log record: only the POST framed
    // by Transfer-Encoding (an empty body, answered) and the final call are logged.
    let logged = message_log(&net, MUNICIPALITY, "limit=100").await;
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[1]["method"], "POST");
    assert_eq!(logged[1]["request_size"], 0);
    net.stop().await;
}
both_backends!(hostile_requests_are_refused_and_harmless, hostile_requests);

/// Sends `bytes`, optionally closes the sending half, and returns what the server
/// answers (at most 10 s) and how long that took.
async fn answer_to(addr: &str, bytes: &[u8], half_close: bool) -> (String, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

/// What the information system gets wrong is reported as its fault (`Client.*`),
/// at once, before the peer gateway is bothered: a body over the limit announced by
/// Content-Length, more headers than fit beside the gateway's own, a malformed chunk,
/// a body that ends early, and a body that stalls.
async fn client_faults(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    // Stalled bodies are given up after 1 s here (30 s by default).
    let sb = net.sandbox.as_mut().unwrap();
    sb.stop_gateway(MUNICIPALITY).await;
    edit_gateway_config(&sb.info.gateways[MUNICIPALITY].data_dir, |c| {
        c["body_idle_timeout_secs"] = 1.into();
    });
    sb.start_gateway(MUNICIPALITY).await.unwrap();
    let base = net.client_url(MUNICIPALITY);
    let client = ORGS[MUNICIPALITY].subsystem_id();
    let target = format!("/r1/{}/echo/x", ORGS[POPULATION].subsystem_id());
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Road-Client: {client}\r\n"
    );
    let many: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "Content-Length over the limit",
            format!("{head}Content-Length: 9000000000000\r\n\r\n").into_bytes(),
            false,
            "Client.TooLarge",
        ),
        (
            "90 headers to pass on",
            format!("{head}{many}Content-Length: 0\r\n\r\n").into_bytes(),
            false,
            "Client.TooLarge",
        ),
        (
            "a malformed chunk",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n").into_bytes(),
            false,
            "Client.BadRequest",
        ),
        (
            "a body that ends early",
            format!("{head}Content-Length: 100\r\n\r\n0123456789").into_bytes(),
            true,
            "Client.BadRequest",
        ),
        (
            "a body that stalls",
            format!("{head}Content-Length: 100\r\n\r\n0123456789").into_bytes(),
            false,
            "Client.Timeout",
        ),
    ];
    let logged_before = message_log(&net, MUNICIPALITY, "limit=100").await.len();
    for (case, bytes, half_close, expected) in cases {
        let (resp, took) = answer_to(&base, &bytes, half_close).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{case}: {resp}");
        assert!(
            resp.contains(&format!("X-Road-Error: {expected}"))
                || resp.contains(&format!("x-road-error: {expected}")),
            "{case}: {resp}"
        );
        assert!(
            took < std::time::Duration::from_secs(5),
            "{case}: answered after {took:?}"
        );
    }
    assert_eq!(
        message_log(&net, MUNICIPALITY, "limit=100").await.len(),
        logged_before,
        "nothing refused was logged"
    );
    still_serving(&net).await;
    net.stop().await;
}
both_backends!(client_mistakes_are_client_faults_at_once, client_faults);

/// Repeated X-Road headers. From a client, r1's rule holds (the last one wins) and the
/// one value that wins is the one checked, signed, logged and passed on: the service
/// never sees the other. From a gateway, which sends each header once, a repeat is
/// refused.
async fn repeated_headers(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let client = ORGS[MUNICIPALITY].subsystem_id();
    let url = format!(
        "{}/r1/{}/echo/x",
        net.client_url(MUNICIPALITY),
        ORGS[POPULATION].subsystem_id()
    );
    let r = net
        .http
        .get(&url)
        .header("X-Road-Client", ORGS[TAX].subsystem_id())
        .header("X-Road-Client", &client)
        .header("X-Road-Id", "first-id")
        .header("X-Road-Id", "last-id")
        .header("X-Road-UserId", "GL0101700000")
        .header("X-Road-UserId", "GL0202800000")
        .header("X-Road-Issue", "case-1")
        .header("X-Road-Issue", "case-2")
        .header("veksel-created-at", "1")
        .header("veksel-created-at", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-road-id"], "last-id");
    let echoed: serde_json::Value = r.json().await.unwrap();
    let seen = |name: &str| -> Vec<String> {
        echoed["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(seen("x-road-client"), [client.as_str()]);
    assert_eq!(seen("x-road-id"), ["last-id"]);
    assert_eq!(seen("x-road-userid"), ["GL0202800000"]);
    assert_eq!(seen("x-road-issue"), ["case-2"]);
    assert!(
        seen("veksel-created-at")
            .iter()
            .all(|v| v != "1" && v != "2"),
        "a client's veksel header never reaches the service"
    );
    for org in [MUNICIPALITY, POPULATION] {
        let logged = message_log(&net, org, "limit=1").await;
        assert_eq!(logged[0]["client"], client, "{org}");
        assert_eq!(logged[0]["xroad_id"], "last-id", "{org}");
    }

    // The other way round, the last value names a subsystem this gateway does not
    // serve: the first one is not silently used instead.
    let r = net
        .http
        .get(&url)
        .header("X-Road-Client", &client)
        .header("X-Road-Client", ORGS[TAX].subsystem_id())
        .send()
        .await
        .unwrap();
    assert_eq!(
        fault(&r).as_deref(),
        Some("Server.ClientProxy.UnknownMember"),
        "{r:?}"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains(&ORGS[TAX].subsystem_id()), "{text}");

    // Gateway to gateway: a correctly signed message that repeats a protocol header.
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    let before = message_log(&net, POPULATION, "limit=100").await.len();
    // The request carries X-Road-Id and veksel-consumer-gateway once already. The
    // last case is a second signature in the trailers: the provider would check one
    // and a reader of the record might take the other.
    for (name, extra, in_trailers) in [
        ("x-road-id", &["raw-peer-test"][..], false),
        (
            "x-road-userid",
            &["GL0101700000", "GL0202800000"][..],
            false,
        ),
        (
            "veksel-consumer-gateway",
            &["GL/GOV/00000000/other"][..],
            false,
        ),
        ("veksel-signature", &["forged..signature"][..], true),
    ] {
        let mut req = peer.request(&net, "/hello");
        let repeated = extra.iter().map(|v| (name.to_owned(), (*v).to_owned()));
        if in_trailers {
            req.extra_trailers.extend(repeated);
        } else {
            req.extra_headers.extend(repeated);
        }
        let (status, headers, body) = peer.send(req).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            headers.get("x-road-error").and_then(|v| v.to_str().ok()),
            Some("Server.ServerProxy.InvalidRequest"),
            "{name}: {status} {body}"
        );
        assert!(
            body.contains(&format!("{name} appears more than once")),
            "{body}"
        );
    }
    // The same message without the repeat is served, so the refusals above are not an
    // artefact of the test's peer.
    let (status, _, body) = peer.send(peer.request(&net, "/hello")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        message_log(&net, POPULATION, "limit=100").await.len(),
        before + 1,
        "refused messages leave no record"
    );
    net.stop().await;
}
both_backends!(
    repeated_xroad_headers_resolve_to_one_value_or_are_refused,
    repeated_headers
);
