//! Login for people: the authority's OpenID Connect provider with the sandbox's test
//! login. The code flow with PKCE is driven by hand (and every way of breaking it),
//! by authlib from PyPI as an unmodified relying party, and through the login page
//! in Debian's chromium by keyboard, with an axe-core scan.

mod common;

use common::browser::{
    Chromedriver, axe_source, axe_violations, chromium_trusting_authority, focused_attr, press,
    screenshot,
};
use common::people::{Provider, REDIRECT, login_id, pkce, query_param, urlencode};
use common::{Backend, Net};
use serde_json::{Value, json};
use veksel_proto::oauth::Jwks;

/// Verifies an ID token with the provider's JWKS; returns its claims.
fn verify_id_token(token: &str, jwks: &Jwks) -> Value {
    let jws = veksel_proto::jws::Unverified::parse(token, None).unwrap();
    assert_eq!(jws.header.typ.as_deref(), Some("JWT"));
    let key = jwks
        .keys
        .iter()
        .find(|k| Some(&k.kid) == jws.header.kid.as_ref())
        .expect("the key is published");
    serde_json::from_slice(&jws.verify(&key.point().unwrap()).unwrap()).unwrap()
}

async fn code_flow(backend: Backend) {
    let Some(net) = Net::start(backend).await else {
        eprintln!("skipped: VEKSEL_TEST_DATABASE_URL is not set");
        return;
    };
    let p = Provider::of(&net);
    let discovery: Value = p
        .http
        .get(format!("{}/.well-known/openid-configuration", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], p.url.as_str());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        discovery["acr_values_supported"],
        json!(["substantial", "high"])
    );

    // Relying parties: one public (PKCE), one a member's system that signs.
    let public = json!({"client_id": "case-portal", "name": "Case portal",
        "redirect_uris": [REDIRECT], "auth_method": "none"});
    assert_eq!(p.register(public.clone()).await, 201);
    assert_eq!(p.register(public).await, 409);
    assert_eq!(
        p.register(json!({"client_id": "x", "name": "x", "redirect_uris": ["http://evil.example/cb"], "auth_method": "none"})).await,
        400,
        "plain http only on loopback"
    );
    assert_eq!(
        p.register(json!({"client_id": "not-a-member", "name": "x", "redirect_uris": [REDIRECT], "auth_method": "private_key_jwt"})).await,
        400
    );
    // A member registers its own system by management request; another member
    // cannot register it.
    let r = common::manage(
        &net,
        common::MUNICIPALITY,
        json!({"type": "relying-party-registration", "subsystem": "DEV/MUN/30000003/casework",
               "name": "Casework", "redirect_uris": [REDIRECT]}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    let (admin, token) = net.admin(common::POPULATION);
    let resp = net
        .http
        .post(format!("{admin}/api/v1/management-requests"))
        .bearer_auth(token)
        .json(
            &json!({"type": "relying-party-registration", "subsystem": "DEV/MUN/30000003/casework",
                      "name": "Hijack", "redirect_uris": ["https://evil.example/cb"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let clients: Value = p.admin_get("/api/v1/oidc/clients").await;
    let casework = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "DEV/MUN/30000003/casework")
        .unwrap();
    assert_eq!(casework["auth_method"], "private_key_jwt");
    assert_eq!(casework["name"], "Casework");

    // The page: in the language asked for, with its security headers.
    let (verifier, challenge) = pkce();
    let (status, headers, page, cookie) = p
        .open(
            &p.authorize_url("case-portal", &challenge, ""),
            Some("da-DK,da;q=0.9"),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("<html lang=\"da\">") && page.contains("Personnummer"),
        "{page}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    let cookie = cookie.expect("a login cookie");
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly; Secure; SameSite=Lax")
    );
    let id = login_id(&page);

    // A bad person number: the page again, with the error tied to the field.
    let resp = p
        .submit(
            Some(&cookie),
            &[("login", &id), ("pid", "12ab"), ("lang", "da")],
        )
        .await;
    assert_eq!(resp.status(), 400);
    let again = resp.text().await.unwrap();
    assert!(
        again.contains("aria-invalid=\"true\"") && again.contains("role=\"alert\""),
        "{again}"
    );
    // The form from another browser (no cookie, or another one): refused.
    let resp = p
        .submit(None, &[("login", &id), ("pid", "0101701234")])
        .await;
    assert_eq!(resp.status(), 400);
    let resp = p
        .submit(
            Some("veksel_login=forged"),
            &[("login", &id), ("pid", "0101701234")],
        )
        .await;
    assert_eq!(resp.status(), 400);
    // The person asks for high, above the substantial the service asked for.
    let resp = p
        .submit(
            Some(&cookie),
            &[
                ("login", &id),
                ("pid", "0101701234"),
                ("acr", "high"),
                ("lang", "da"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st4te"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(p.url.as_str())
    );
    let code = query_param(&location, "code").unwrap();
    // The same form again: the first submission won.
    let resp = p
        .submit(Some(&cookie), &[("login", &id), ("pid", "0101701234")])
        .await;
    assert_eq!(resp.status(), 400);

    // Redeeming: a wrong verifier fails and spends the code.
    let (status, body) = p
        .redeem(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "case-portal"),
            ("code_verifier", &pkce().0),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier"),
        "{body}"
    );
    let (_, body) = p
        .redeem(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "case-portal"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("used before"),
        "{body}"
    );

    // A good redemption.
    let jwks = p.jwks().await;
    let (verifier, challenge) = pkce();
    let code = p.code_for("case-portal", &challenge, "0101701234").await;
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "case-portal"),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body) = p.redeem(&good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let id_token = verify_id_token(body["id_token"].as_str().unwrap(), &jwks);
    assert_eq!(id_token["iss"], p.url.as_str());
    assert_eq!(id_token["aud"], "case-portal");
    assert_eq!(id_token["pid"], "0101701234");
    assert_eq!(id_token["acr"], "substantial");
    assert_eq!(id_token["amr"], json!(["test"]));
    assert_eq!(id_token["nonce"], "n0nce");
    assert_ne!(
        id_token["sub"], "0101701234",
        "the subject is pairwise, not the number"
    );
    let (status, body) = p.redeem(&good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "replayed code"
    );
    // A made-up code, a verifier that is not one, and a code redeemed too late.
    let (verifier, challenge) = pkce();
    let code = p.code_for("case-portal", &challenge, "0101701234").await;
    let redeem_with = |code: &str, verifier: &str| {
        let fields = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", "case-portal".to_owned()),
            ("code_verifier", verifier.to_owned()),
        ];
        let p = &p;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            p.redeem(&fields).await
        }
    };
    let (_, body) = redeem_with("made-up", &verifier).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("unknown authorization code"),
        "{body}"
    );
    let (_, body) = redeem_with(&code, "short").await;
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier"),
        "{body}"
    );
    net.clock.advance(61_000);
    let (_, body) = redeem_with(&code, &verifier).await;
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // The member's system must sign: its client_id alone is refused, an assertion
    // by its member's key is accepted; its subject for the same person differs.
    let (verifier, challenge) = pkce();
    let code = p
        .code_for("DEV/MUN/30000003/casework", &challenge, "0101701234")
        .await;
    let (status, body) = p
        .redeem(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "DEV/MUN/30000003/casework"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let (verifier, challenge) = pkce();
    let code = p
        .code_for("DEV/MUN/30000003/casework", &challenge, "0101701234")
        .await;
    let (status, body) = p
        .redeem_as_member(&net, common::MUNICIPALITY, &code, &verifier)
        .await;
    assert_eq!(status, 200, "{body}");
    let member_token = verify_id_token(body["id_token"].as_str().unwrap(), &jwks);
    assert_eq!(member_token["pid"], "0101701234");
    assert_ne!(
        member_token["sub"], id_token["sub"],
        "pairwise per relying party"
    );
    // A code for one client cannot be redeemed by another.
    let (verifier, challenge) = pkce();
    let code = p.code_for("case-portal", &challenge, "0101701234").await;
    let (_, body) = p
        .redeem_as_member(&net, common::MUNICIPALITY, &code, &verifier)
        .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("another client"),
        "{body}"
    );

    // Errors before the client is known are shown, never redirected; after, they
    // go back to the client.
    let (status, _, page, _) = p
        .open(&p.authorize_url("unknown", &challenge, ""), None)
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("not registered"), "{page}");
    let evil = p
        .authorize_url("case-portal", &challenge, "")
        .replace(&urlencode(REDIRECT), &urlencode("https://evil.example/cb"));
    let (status, _, page, _) = p.open(&evil, None).await;
    assert_eq!(status, 400, "{page}");
    let base = p.authorize_url("case-portal", &challenge, "");
    for (url, error) in [
        (
            base.replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (format!("{base}&acr_values=low"), "invalid_request"),
        (
            base.replace("&code_challenge_method=S256", ""),
            "invalid_request",
        ),
        (
            base.replace("scope=openid", "scope=profile"),
            "invalid_scope",
        ),
    ] {
        let resp = p.http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{url}");
        let location = resp.headers()["location"].to_str().unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(
            query_param(location, "error").as_deref(),
            Some(error),
            "{location}"
        );
        assert_eq!(query_param(location, "state").as_deref(), Some("st4te"));
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_pkce_on_sqlite() {
    code_flow(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_pkce_on_postgres() {
    code_flow(Backend::Postgres).await;
}

/// authlib's unmodified OAuth 2.0 client as the relying party: it makes the
/// authorization URL with PKCE and a nonce, a plain HTTP session plays the browser on
/// the login page, and authlib redeems the code and validates the ID token
/// (signature from the JWKS, issuer, audience, nonce, times) with its own OpenID
/// Connect rules.
const RELYING_PARTY_SCRIPT: &str = r#"
import json, re, sys
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

issuer, ca, client_id, redirect_uri, pid = sys.argv[1:6]
browser = requests.Session()
browser.trust_env = False
browser.verify = ca
meta = browser.get(f"{issuer}/.well-known/openid-configuration").json()
rp = OAuth2Session(client_id, redirect_uri=redirect_uri, scope="openid",
                   code_challenge_method="S256", token_endpoint_auth_method="none")
rp.trust_env = False
rp.verify = ca
verifier, nonce = generate_token(48), generate_token(16)
url, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                         nonce=nonce, acr_values="high", ui_locales="da")
page = browser.get(url)
login = re.search(r'name="login" value="([^"]+)"', page.text).group(1)
resp = browser.post(f"{issuer}/oidc/v1/login", data={"login": login, "pid": pid},
                    allow_redirects=False)
location = resp.headers["location"]
token = rp.fetch_token(meta["token_endpoint"], authorization_response=location,
                       code_verifier=verifier)
keys = JsonWebKey.import_key_set(browser.get(meta["jwks_uri"]).json())
claims = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                    claims_options={"iss": {"essential": True, "value": meta["issuer"]}},
                    claims_params={"nonce": nonce, "client_id": client_id})
claims.validate()
try:
    other = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                       claims_params={"nonce": "another", "client_id": client_id})
    other.validate()
    wrong_nonce = "accepted"
except Exception:
    wrong_nonce = "refused"
print(json.dumps({"claims": dict(claims), "page_lang_da": 'lang="da"' in page.text,
                  "wrong_nonce": wrong_nonce}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_logs_a_person_in_as_a_relying_party() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let p = Provider::of(&net);
    assert_eq!(
        p.register(
            json!({"client_id": "authlib-rp", "name": "authlib relying party",
            "redirect_uris": [REDIRECT], "auth_method": "none"})
        )
        .await,
        201
    );
    let ca = net.sandbox().info.authority_ca_file.clone();
    let python = common::python_with_oauth_libraries();
    let args: Vec<String> = vec![
        "-c".into(),
        RELYING_PARTY_SCRIPT.into(),
        p.url.clone(),
        common::path(&ca).into(),
        "authlib-rp".into(),
        REDIRECT.into(),
        "0101701234".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["page_lang_da"], true);
    assert_eq!(answer["wrong_nonce"], "refused");
    let claims = &answer["claims"];
    assert_eq!(claims["iss"], p.url.as_str());
    assert_eq!(claims["aud"], "authlib-rp");
    assert_eq!(claims["pid"], "0101701234");
    assert_eq!(
        claims["acr"], "high",
        "the level the relying party asked for"
    );
    net.stop().await;
}

/// axe-core from the npm registry, fetched once into the target directory.
/// The relying party's callback: answers with a page and hands over the query.
async fn callback_server() -> (String, tokio::sync::mpsc::Receiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: http::Uri| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(uri.query().unwrap_or_default().to_owned()).await;
                axum::response::Html(
                    "<!DOCTYPE html><html lang=\"en\"><head><title>Signed in</title></head><body><main><h1>Signed in</h1></main></body></html>",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_by_keyboard_in_chromium() {
    use fantoccini::key::Key;
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let p = Provider::of(&net);
    let (redirect, mut arrived) = callback_server().await;
    assert_eq!(
        p.register(
            json!({"client_id": "browser-rp", "name": "Sermersooq self-service",
            "redirect_uris": [redirect], "auth_method": "none"})
        )
        .await,
        201
    );
    let driver = Chromedriver::start().await;
    let browser = chromium_trusting_authority(&driver, &net).await;
    let axe = axe_source();

    let (verifier, challenge) = pkce();
    let url = p
        .authorize_url("browser-rp", &challenge, "&acr_values=substantial")
        .replace(&urlencode(REDIRECT), &urlencode(&redirect));
    browser.goto(&url).await.unwrap();
    screenshot(&browser, "login-page").await;
    assert_eq!(axe_violations(&browser, &axe).await, Vec::<String>::new());
    let focused = browser.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("pid"),
        "the field has focus"
    );

    // A mistake the browser's own checks (length) let through: the page says what
    // is wrong, at the field.
    focused
        .send_keys(&format!("1234ab5{}", char::from(Key::Enter)))
        .await
        .unwrap();
    let shown = browser
        .wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(fantoccini::Locator::Css("#pid-error"))
        .await;
    if shown.is_err() {
        screenshot(&browser, "login-error-missing").await;
        panic!("no error shown: {}", browser.source().await.unwrap());
    }
    screenshot(&browser, "login-error").await;
    assert_eq!(axe_violations(&browser, &axe).await, Vec::<String>::new());
    let field = browser.active_element().await.unwrap();
    assert_eq!(
        field.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );

    // Correct it (the caret starts before the kept text: End, then erase), choose
    // the high level with the arrow key, submit with Enter.
    let backspaces: String = std::iter::repeat_n(char::from(Key::Backspace), 7).collect();
    field
        .send_keys(&format!(
            "{}{backspaces}0101701234{}",
            char::from(Key::End),
            char::from(Key::Tab)
        ))
        .await
        .unwrap();
    assert_eq!(
        focused_attr(&browser, "id").await.as_deref(),
        Some("acr-substantial")
    );
    press(&browser, Key::Right).await;
    assert_eq!(
        focused_attr(&browser, "id").await.as_deref(),
        Some("acr-high")
    );
    press(&browser, Key::Tab).await;
    assert_eq!(
        focused_attr(&browser, "type").await.as_deref(),
        Some("submit")
    );
    press(&browser, Key::Enter).await;

    let Ok(Some(query)) =
        tokio::time::timeout(std::time::Duration::from_secs(15), arrived.recv()).await
    else {
        screenshot(&browser, "login-no-return").await;
        panic!(
            "the browser did not come back to the relying party: at {}: {}",
            browser.current_url().await.unwrap(),
            browser.source().await.unwrap()
        );
    };
    screenshot(&browser, "signed-in").await;
    let code = query_param(&format!("{redirect}?{query}"), "code").unwrap();
    assert_eq!(
        query_param(&format!("{redirect}?{query}"), "state").as_deref(),
        Some("st4te")
    );
    browser.close().await.unwrap();

    let (status, body) = p
        .redeem(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", "browser-rp"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let jwks = p.jwks().await;
    let claims = verify_id_token(body["id_token"].as_str().unwrap(), &jwks);
    assert_eq!(claims["pid"], "0101701234");
    assert_eq!(claims["acr"], "high", "chosen with the arrow key");
    drop(driver);
    net.stop().await;
}
