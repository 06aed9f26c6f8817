//! People's login through an external OpenID Connect provider named by its
//! discovery URL, as a network uses ID-porten or MitID: a second veksel authority,
//! with its test login, stands in for the external provider. The network's
//! authority is that provider's relying party and issues its own ID tokens, which a
//! member's system then uses on the exchange. Each way a callback can be abused is
//! tried: a replay, another browser, a refusal, a mixed-up issuer, a made-up code,
//! and the provider gone.

mod common;

use common::people::{Provider, REDIRECT, login_id, pkce, query_param};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use veksel_authority::oidc::PeopleLogin;
use veksel_authority::upstream::ExternalProvider;
use veksel_proto::person::Level;
use veksel_sandbox::ORGS;

const PERSON: &str = "0101701234";
/// The network authority's client id at the external provider.
const CLIENT_AT_IDP: &str = "veksel-network";

/// The stand-in for ID-porten: a veksel authority of its own with the test login.
struct Idp {
    authority: veksel_authority::RunningAuthority,
    url: String,
    admin_token: String,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start_idp(clock: &veksel_proto::Clock) -> Idp {
    let dir = tempfile::tempdir().unwrap();
    // Held from here until the provider serves on it: no other socket can take it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("https://127.0.0.1:{}", addr.port());
    let mut config =
        veksel_authority::AuthorityConfig::new("IDP", addr, &url, vec!["127.0.0.1".into()]);
    config.people_login = Some(PeopleLogin {
        test_login: true,
        external: None,
        test_officers: false,
    });
    let outcome = veksel_authority::init(dir.path(), config, clock)
        .await
        .unwrap();
    let authority = veksel_authority::start(dir.path(), clock.clone(), Some(listener))
        .await
        .unwrap();
    Idp {
        authority,
        url,
        admin_token: outcome.admin_token,
        ca_file: dir.path().join(veksel_authority::files::CA_CERT),
        _dir: dir,
    }
}

fn external(idp: &Idp) -> ExternalProvider {
    ExternalProvider {
        name: "Stand-in ID-porten".into(),
        discovery_url: format!("{}/.well-known/openid-configuration", idp.url),
        client_id: CLIENT_AT_IDP.into(),
        client_secret_file: None,
        ca_file: Some(idp.ca_file.clone()),
        person_claim: "pid".into(),
        levels: BTreeMap::from([
            ("substantial".into(), Level::Substantial),
            ("high".into(), Level::High),
        ]),
        scopes: vec![],
    }
}

/// A client for both authorities (each has its own CA) that follows no redirect.
fn http_for(net: &Net, idp: &Idp) -> reqwest::Client {
    let mut roots = Vec::new();
    for file in [&net.sandbox().info.authority_ca_file, &idp.ca_file] {
        roots.extend(veksel_pki::certs_from_pem(&std::fs::read_to_string(file).unwrap()).unwrap());
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `veksel_login` cookie a response sets.
fn cookie(resp: &reqwest::Response) -> String {
    resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

/// Starts a login at the network's authority for the municipality's system: the
/// external provider's URL, and the network authority's cookie.
async fn start_login(p: &Provider, challenge: &str, extra: &str) -> (String, String) {
    let resp = p
        .http
        .get(p.authorize_url(&ORGS[MUNICIPALITY].subsystem_id(), challenge, extra))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    (location(&resp), cookie(&resp))
}

/// The error a login started at the network's authority sends the relying party
/// back with, at once.
async fn error_at_authorize(p: &Provider) -> Option<String> {
    let (_, challenge) = pkce();
    let resp = p
        .http
        .get(p.authorize_url(&ORGS[MUNICIPALITY].subsystem_id(), &challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let to_rp = location(&resp);
    assert!(to_rp.starts_with(REDIRECT), "{to_rp}");
    query_param(&to_rp, "error")
}

/// Follows the way back to the network's authority.
async fn back(p: &Provider, url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = p.http.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

async fn external_login(backend: Backend) {
    let clock = veksel_proto::Clock::system();
    let idp = start_idp(&clock).await;
    let provider = external(&idp);
    // The two login methods exclude each other.
    assert!(
        PeopleLogin {
            test_login: true,
            external: Some(provider.clone()),
            test_officers: false,
        }
        .upstream(idp._dir.path())
        .is_err()
    );
    let Some(net) = Net::start_with(backend, |o| {
        o.clock = clock.clone();
        o.people_login = PeopleLogin {
            test_login: false,
            external: Some(provider.clone()),
            test_officers: false,
        };
    })
    .await
    else {
        eprintln!("skipped: VEKSEL_TEST_DATABASE_URL is not set");
        return;
    };
    let (_, url, admin) = authority_client(&net);
    let p = Provider {
        http: http_for(&net, &idp),
        url: url.clone(),
        admin,
    };
    let callback = format!("{url}/oidc/v1/callback");
    // The network's authority is a public client of the provider (PKCE).
    let resp = p
        .http
        .post(format!("{}/api/v1/oidc/clients", idp.url))
        .bearer_auth(&idp.admin_token)
        .json(
            &json!({"client_id": CLIENT_AT_IDP, "name": "The network's authority",
            "redirect_uris": [callback], "auth_method": "none"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    p.register_system(&net, MUNICIPALITY).await;

    // The person is sent on to the external provider, asked for the level the
    // relying party wants or more, lowest first.
    let (verifier, challenge) = pkce();
    let (at_idp, network_cookie) = start_login(&p, &challenge, "").await;
    assert!(
        at_idp.starts_with(&format!("{}/oidc/v1/authorize?", idp.url)),
        "{at_idp}"
    );
    assert_eq!(
        query_param(&at_idp, "client_id").as_deref(),
        Some(CLIENT_AT_IDP)
    );
    assert_eq!(query_param(&at_idp, "redirect_uri"), Some(callback.clone()));
    assert_eq!(
        query_param(&at_idp, "acr_values").as_deref(),
        Some("substantial high")
    );
    assert_eq!(
        query_param(&at_idp, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&at_idp, "nonce").is_some_and(|n| n.len() >= 43));
    // The network's own test login is off.
    let resp = p
        .http
        .post(format!("{url}/oidc/v1/login"))
        .header("cookie", &network_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "login={}&pid={PERSON}",
            query_param(&at_idp, "state").unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // At the provider: its own page and cookie; the person logs in.
    let resp = p.http.get(&at_idp).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let idp_cookie = cookie(&resp);
    let page = resp.text().await.unwrap();
    let resp = p
        .http
        .post(format!("{}/oidc/v1/login", idp.url))
        .header("cookie", &idp_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("login={}&pid={PERSON}&lang=en", login_id(&page)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let way_back = location(&resp);
    assert!(way_back.starts_with(&callback), "{way_back}");

    // Back at the network's authority: on to the relying party with a code.
    let resp = back(&p, &way_back, Some(&network_cookie)).await;
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let to_rp = location(&resp);
    assert!(to_rp.starts_with(REDIRECT), "{to_rp}");
    assert_eq!(query_param(&to_rp, "state").as_deref(), Some("st4te"));
    assert_eq!(query_param(&to_rp, "iss"), Some(url.clone()));
    let code = query_param(&to_rp, "code").unwrap();
    let (status, body) = p
        .redeem_as_member(&net, MUNICIPALITY, &code, &verifier)
        .await;
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().unwrap().to_owned();
    let claims: Value = {
        use base64::Engine;
        let payload = id_token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        claims["iss"],
        url.as_str(),
        "the network's authority vouches"
    );
    assert_eq!(claims["pid"], PERSON);
    assert_eq!(claims["acr"], "substantial");
    assert_eq!(
        claims["amr"],
        json!(["test"]),
        "how the provider says they logged in"
    );
    assert_eq!(claims["nonce"], "n0nce");
    // The way back is used once.
    let resp = back(&p, &way_back, Some(&network_cookie)).await;
    assert_eq!(resp.status(), 400);

    // The person, verified by the external provider, on the exchange.
    let resp = net
        .http
        .get(format!(
            "{}/r1/{}/echo/persons/{PERSON}",
            net.client_url(MUNICIPALITY),
            ORGS[POPULATION].subsystem_id()
        ))
        .header("X-Road-Client", ORGS[MUNICIPALITY].subsystem_id())
        .header("veksel-id-token", &id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let found = message_log(&net, POPULATION, &format!("person={PERSON}")).await;
    assert_eq!(found.len(), 1, "{found:?}");

    // The way back from another browser: not taken, and the login stays open for
    // its own browser.
    let (_, challenge) = pkce();
    let (at_idp, network_cookie) = start_login(&p, &challenge, "").await;
    let state = query_param(&at_idp, "state").unwrap();
    let refused =
        format!("{callback}?error=access_denied&error_description=cancelled&state={state}");
    assert_eq!(back(&p, &refused, None).await.status(), 400);
    assert_eq!(
        back(&p, &refused, Some("veksel_login=forged"))
            .await
            .status(),
        400
    );
    // The person cancels at the provider: the relying party hears it.
    let resp = back(&p, &refused, Some(&network_cookie)).await;
    assert_eq!(resp.status(), 303);
    let to_rp = location(&resp);
    assert_eq!(
        query_param(&to_rp, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&to_rp, "state").as_deref(), Some("st4te"));

    // An answer naming another issuer (a mix-up), and a code the provider never
    // issued: the relying party gets an error, never a code.
    for (query, error, says) in [
        (
            "code=x&iss=https%3A%2F%2Fevil.example",
            "server_error",
            "issuer",
        ),
        ("code=made-up", "server_error", "invalid_grant"),
    ] {
        let (_, challenge) = pkce();
        let (at_idp, network_cookie) = start_login(&p, &challenge, "").await;
        let state = query_param(&at_idp, "state").unwrap();
        let resp = back(
            &p,
            &format!("{callback}?{query}&state={state}"),
            Some(&network_cookie),
        )
        .await;
        assert_eq!(resp.status(), 303);
        let to_rp = location(&resp);
        assert_eq!(
            query_param(&to_rp, "error").as_deref(),
            Some(error),
            "{to_rp}"
        );
        assert!(query_param(&to_rp, "code").is_none());
        assert!(
            query_param(&to_rp, "error_description").is_some_and(|d| d.contains(says)),
            "{to_rp}"
        );
    }

    // The provider gone, and its documents older than an hour: the relying party
    // is told to come back later.
    idp.authority.stop().await;
    clock.advance(3_601_000);
    assert_eq!(
        error_at_authorize(&p).await.as_deref(),
        Some("temporarily_unavailable")
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_provider_on_sqlite() {
    external_login(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_provider_on_postgres() {
    external_login(Backend::Postgres).await;
}

/// A network whose people cannot log in says so to relying parties, and they may
/// try again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_login_method_relying_parties_hear_temporarily_unavailable() {
    let net = Net::start_with(Backend::Sqlite, |o| {
        o.people_login = PeopleLogin {
            test_login: false,
            external: None,
            test_officers: false,
        };
    })
    .await
    .unwrap();
    let p = Provider::of(&net);
    p.register_system(&net, MUNICIPALITY).await;
    assert_eq!(
        error_at_authorize(&p).await.as_deref(),
        Some("temporarily_unavailable")
    );
    // Nor can the way back from an external provider be used.
    let resp = p
        .http
        .get(format!("{}/oidc/v1/callback?code=x&state=y", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    net.stop().await;
}
