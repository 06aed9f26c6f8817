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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_harmless() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
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

    // A truncated body: the client promises 100 bytes and hangs up after 10.
    let resp = raw_bytes(&base, format!("POST {target} HTTP/1.1\r\nHost: x\r\nX-Road-Client: {client}\r\nContent-Length: 100\r\n\r\n0123456789").as_bytes()).await;
    assert!(
        !resp.starts_with("HTTP/1.1 200"),
        "a truncated body is never answered with 200: {resp}"
    );

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
