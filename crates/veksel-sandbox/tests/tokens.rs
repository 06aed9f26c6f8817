//! The token service of the authority, driven as members drive it: scopes and
//! delegations registered by management requests through their gateways, grants
//! signed with the members' real signing keys, and every refusal a dishonest or
//! careless client can provoke, each with its OAuth error. An unmodified OAuth
//! library from PyPI (authlib) obtains a token and pyjwt verifies it.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, MUNICIPALITY, Net, POPULATION, TAX, authority_client, manage};
use serde_json::{Value, json};
use veksel_proto::jws::Signer;
use veksel_proto::oauth::{JWT_BEARER_GRANT, Jwks, verify_access_token};
use veksel_sandbox::ORGS;

const INCOME: &str = "tax:income";
const DEBT: &str = "tax:debt";

/// A member's signing key as a client of the token service.
struct Client {
    id: String,
    signer: veksel_gateway::signing::MemberSigner,
}

impl Client {
    fn of(net: &Net, org: usize, id: &str) -> Self {
        let gw = net.sandbox().gateway(org).unwrap();
        let member = ORGS[org].member().parse().unwrap();
        Self {
            id: id.to_owned(),
            signer: gw.keys.get().signer(&member).unwrap(),
        }
    }

    fn chain(&self) -> Vec<String> {
        self.signer
            .cert_chain()
            .iter()
            .map(|c| STANDARD.encode(c))
            .collect()
    }

    fn cert_sha256(&self) -> String {
        veksel_pki::sha256_hex(&self.signer.cert_chain()[0])
    }

    /// Claims of a fresh assertion for `scope`.
    fn claims(&self, issuer: &str, scope: &str) -> Value {
        let now = now();
        json!({"iss": self.id, "aud": issuer, "iat": now, "exp": now + 60,
               "jti": uuid::Uuid::new_v4().to_string(), "scope": scope})
    }

    /// An assertion carrying the certificate chain.
    fn assertion(&self, claims: &Value) -> String {
        self.signed(&json!({"alg": "ES256", "x5c": self.chain()}), claims)
    }

    fn signed(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.signer.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

struct Service {
    http: reqwest::Client,
    url: String,
    admin: String,
}

impl Service {
    fn of(net: &Net) -> Self {
        let (http, url, admin) = authority_client(net);
        Self { http, url, admin }
    }

    fn issuer(&self) -> &str {
        &self.url
    }

    async fn form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let body = form_body(form);
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status != 500 {
            assert_eq!(
                resp.headers()["cache-control"],
                "no-store",
                "token answers are not cached"
            );
        }
        (status, resp.json().await.unwrap())
    }

    async fn grant(&self, assertion: &str) -> (u16, Value) {
        self.form(
            "/oauth/v1/token",
            &[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)],
        )
        .await
    }

    /// The grant must fail with `error`, and the description must mention `says`.
    async fn refused(&self, assertion: &str, error: &str, says: &str) {
        let (status, body) = self.grant(assertion).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], error, "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.contains(says),
            "{says:?} not in {description:?}"
        );
    }

    async fn jwks(&self) -> Jwks {
        self.get("/oauth/v1/jwks").await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn form_body(form: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in form {
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                s.push(char::from(b));
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
    }
    s
}

async fn registered_scopes(net: &Net) {
    let tax = ORGS[TAX].member();
    let municipality = ORGS[MUNICIPALITY].member();
    let population_app = ORGS[POPULATION].subsystem_id();
    let r = manage(
        net,
        TAX,
        json!({"type": "scope-registration", "scope": INCOME, "description": "Income of a person",
               "consumers": [municipality], "delegable": true}),
    )
    .await;
    assert_eq!(
        r["state"], "approved",
        "the owner's consent and the policy approve: {r}"
    );
    let r = manage(
        net,
        TAX,
        json!({"type": "scope-registration", "scope": DEBT, "description": "Tax debt",
               "consumers": [population_app], "delegable": false}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    // A prefix belongs to the member that used it first: another member cannot
    // register a scope under it.
    let r = manage(
        net,
        POPULATION,
        json!({"type": "scope-registration", "scope": "tax:refunds", "description": "Squatted",
               "consumers": [], "delegable": false}),
    )
    .await;
    assert_eq!(r["state"], "submitted", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("belongs to {tax}")),
        "{r}"
    );
    // Also a prefix with a character SQL's LIKE would take as a wildcard.
    for (org, scope, state) in [
        (TAX, "tax_2:a", "approved"),
        (POPULATION, "tax_2:b", "submitted"),
    ] {
        let r = manage(
            net,
            org,
            json!({"type": "scope-registration", "scope": scope, "description": "Underscored",
                   "consumers": [], "delegable": false}),
        )
        .await;
        assert_eq!(r["state"], state, "{scope}: {r}");
    }
}

async fn token_service(backend: Backend) {
    let Some(net) = Net::start(backend).await else {
        eprintln!("skipped: VEKSEL_TEST_DATABASE_URL is not set");
        return;
    };
    let svc = Service::of(&net);
    registered_scopes(&net).await;
    let tax = ORGS[TAX].member();
    let municipality = ORGS[MUNICIPALITY].member();
    let population = ORGS[POPULATION].member();
    let mun = Client::of(&net, MUNICIPALITY, &municipality);

    // Metadata names the endpoints; the JWKS has the key the token names.
    let meta: Value = svc.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(meta["issuer"], svc.issuer());
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/oauth/v1/token", svc.url)
    );
    assert_eq!(meta["grant_types_supported"], json!([JWT_BEARER_GRANT]));

    // A good grant: the resource becomes the audience.
    let resource = format!("{tax}/tax/income");
    let mut claims = mun.claims(svc.issuer(), INCOME);
    claims["resource"] = resource.clone().into();
    let assertion = mun.assertion(&claims);
    let (status, body) = svc.grant(&assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120);
    assert_eq!(body["scope"], INCOME);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let jwks = svc.jwks().await;
    let t = verify_access_token(&token, &jwks.keys, svc.issuer(), now()).unwrap();
    assert_eq!(t.client_id, municipality);
    assert_eq!(t.consumer, municipality);
    assert_eq!(t.supplier, None);
    assert_eq!(t.aud.values(), vec![resource.clone()]);
    assert_eq!(t.exp - t.iat, 120);

    // The same assertion a second time.
    svc.refused(&assertion, "invalid_grant", "used before")
        .await;

    // Without a resource the audience is the scope's owner.
    let (status, body) = svc
        .grant(&mun.assertion(&mun.claims(svc.issuer(), INCOME)))
        .await;
    assert_eq!(status, 200, "{body}");
    let t = verify_access_token(
        body["access_token"].as_str().unwrap(),
        &jwks.keys,
        svc.issuer(),
        now(),
    )
    .unwrap();
    assert_eq!(t.aud.values(), vec![tax.clone()]);

    // Scope in the form instead of the assertion (RFC 7521 §4.1), as libraries send it.
    let mut claims = mun.claims(svc.issuer(), INCOME);
    claims.as_object_mut().unwrap().remove("scope");
    let (status, body) = svc
        .form(
            "/oauth/v1/token",
            &[
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", &mun.assertion(&claims)),
                ("scope", INCOME),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Each claim a careless or dishonest client gets wrong.
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = mun.claims(svc.issuer(), INCOME);
        change(&mut c);
        mun.assertion(&c)
    };
    svc.refused(
        &with(&|c| c["aud"] = "https://maskinporten.no/".into()),
        "invalid_grant",
        "audience",
    )
    .await;
    svc.refused(
        &with(&|c| {
            c["iat"] = (now() - 300).into();
            c["exp"] = (now() - 240).into();
        }),
        "invalid_grant",
        "expired",
    )
    .await;
    svc.refused(
        &with(&|c| c["exp"] = (now() + 121).into()),
        "invalid_grant",
        "at most 120 s",
    )
    .await;
    svc.refused(
        &with(&|c| c["scope"] = "tax:nope".into()),
        "invalid_scope",
        "unknown scope tax:nope",
    )
    .await;
    // A scope that only shares a prefix with a granted one is another scope.
    svc.refused(
        &with(&|c| c["scope"] = "tax:inc".into()),
        "invalid_scope",
        "unknown scope tax:inc",
    )
    .await;
    svc.refused(
        &with(&|c| c["scope"] = DEBT.into()),
        "invalid_scope",
        &format!("scope {DEBT} is not granted to {municipality}"),
    )
    .await;
    svc.refused(
        &with(&|c| c["iss"] = "not a client".into()),
        "invalid_grant",
        "iss must be",
    )
    .await;
    // Claiming to be another member with one's own certificate.
    svc.refused(
        &with(&|c| c["iss"] = tax.clone().into()),
        "invalid_grant",
        "not a valid signing certificate",
    )
    .await;
    let (_, body) = svc
        .grant(&with(&|c| c["resource"] = "has space".into()))
        .await;
    assert_eq!(body["error"], "invalid_target", "{body}");
    let (_, body) = svc
        .grant(&with(&|c| {
            c["authorization_details"] = json!([{"type": "x", "blob": "a".repeat(9000)}]);
        }))
        .await;
    assert_eq!(body["error"], "invalid_authorization_details", "{body}");

    // Algorithms and keys: none, HS256 keyed with the public key, a signature by
    // another member's key under this member's certificate.
    let claims = mun.claims(svc.issuer(), INCOME);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "x5c": mun.chain()}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    svc.refused(&none, "invalid_grant", "\"none\" is not accepted")
        .await;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "x5c": mun.chain()}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let public = veksel_pki::CertInfo::parse(&mun.signer.cert_chain()[0])
        .unwrap()
        .public_key;
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public),
        format!("{header}.{payload}").as_bytes(),
    );
    let hs = format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.as_ref())
    );
    svc.refused(&hs, "invalid_grant", "\"HS256\" is not accepted")
        .await;
    let tax_client = Client::of(&net, TAX, &tax);
    let forged = tax_client.signed(
        &json!({"alg": "ES256", "x5c": mun.chain()}),
        &mun.claims(svc.issuer(), INCOME),
    );
    svc.refused(&forged, "invalid_grant", "signature does not verify")
        .await;

    // A registered kid: the SHA-256 of a signing certificate this authority issued.
    let by_kid = mun.signed(
        &json!({"alg": "ES256", "kid": mun.cert_sha256()}),
        &mun.claims(svc.issuer(), INCOME),
    );
    let (status, body) = svc.grant(&by_kid).await;
    assert_eq!(status, 200, "{body}");
    svc.refused(
        &mun.signed(
            &json!({"alg": "ES256", "kid": "0".repeat(64)}),
            &mun.claims(svc.issuer(), INCOME),
        ),
        "invalid_grant",
        "is not a signing certificate of",
    )
    .await;
    svc.refused(
        &mun.signed(
            &json!({"alg": "ES256", "kid": tax_client.cert_sha256()}),
            &mun.claims(svc.issuer(), INCOME),
        ),
        "invalid_grant",
        "is not a signing certificate of",
    )
    .await;

    // A subsystem granted a scope gets it; its member as a whole does not.
    let pop_app = Client::of(&net, POPULATION, &ORGS[POPULATION].subsystem_id());
    let (status, body) = svc
        .grant(&pop_app.assertion(&pop_app.claims(svc.issuer(), DEBT)))
        .await;
    assert_eq!(status, 200, "{body}");
    let pop = Client::of(&net, POPULATION, &population);
    svc.refused(
        &pop.assertion(&pop.claims(svc.issuer(), DEBT)),
        "invalid_scope",
        "is not granted",
    )
    .await;

    // Delegation: the population agency as the municipality's supplier.
    let for_municipality = || {
        let mut c = pop.claims(svc.issuer(), INCOME);
        c["consumer_org"] = municipality.clone().into();
        pop.assertion(&c)
    };
    svc.refused(&for_municipality(), "invalid_grant", "has not delegated")
        .await;
    let r = manage(
        &net,
        MUNICIPALITY,
        json!({"type": "scope-delegation", "scope": INCOME, "supplier": population}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    let (status, body) = svc.grant(&for_municipality()).await;
    assert_eq!(status, 200, "{body}");
    let delegated = verify_access_token(
        body["access_token"].as_str().unwrap(),
        &jwks.keys,
        svc.issuer(),
        now(),
    )
    .unwrap();
    assert_eq!(delegated.consumer, municipality);
    assert_eq!(delegated.supplier.as_deref(), Some(population.as_str()));
    assert_eq!(delegated.client_id, population);
    // A scope that is not delegable cannot be delegated.
    let r = manage(
        &net,
        POPULATION,
        json!({"type": "scope-delegation", "scope": DEBT, "supplier": municipality}),
    )
    .await;
    assert_eq!(r["state"], "submitted", "{r}");
    let r = manage(
        &net,
        MUNICIPALITY,
        json!({"type": "scope-delegation-withdrawal", "scope": INCOME, "supplier": population}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    svc.refused(&for_municipality(), "invalid_grant", "has not delegated")
        .await;

    // Introspection: the scope's owner sees the token; a bystander learns nothing.
    let introspect = |caller: &Client, token: &str| {
        let mut c = caller.claims(svc.issuer(), "");
        c.as_object_mut().unwrap().remove("scope");
        let assertion = caller.assertion(&c);
        let token = token.to_owned();
        let svc = &svc;
        async move {
            svc.form(
                "/oauth/v1/introspect",
                &[
                    ("token", &token),
                    (
                        "client_assertion_type",
                        veksel_authority::oauth::CLIENT_ASSERTION_TYPE,
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let (status, body) = introspect(&tax_client, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["consumer"], municipality.as_str());
    assert_eq!(body["scope"], INCOME);
    let (_, body) = introspect(&pop, &token).await;
    assert_eq!(body, json!({"active": false}));
    let (_, body) = introspect(&tax_client, "not.a.token").await;
    assert_eq!(body, json!({"active": false}));
    let (status, body) = svc
        .form(
            "/oauth/v1/introspect",
            &[
                ("token", &token),
                (
                    "client_assertion_type",
                    veksel_authority::oauth::CLIENT_ASSERTION_TYPE,
                ),
                ("client_assertion", &forged),
            ],
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");

    // Malformed requests.
    let (status, body) = svc
        .form(
            "/oauth/v1/token",
            &[("grant_type", "client_credentials"), ("assertion", "x")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (_, body) = svc
        .form(
            "/oauth/v1/token",
            &[
                ("grant_type", JWT_BEARER_GRANT),
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", "x"),
            ],
        )
        .await;
    assert_eq!(body["error"], "invalid_request", "{body}");
    let (_, body) = svc
        .form("/oauth/v1/token", &[("grant_type", JWT_BEARER_GRANT)])
        .await;
    assert_eq!(body["error"], "invalid_request", "{body}");
    let resp = svc
        .http
        .post(format!("{}/oauth/v1/token", svc.url))
        .json(&json!({"grant_type": JWT_BEARER_GRANT}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");

    // The token log has the issued tokens as process state, never a token.
    let log: Value = svc
        .get(&format!("/api/v1/oauth/tokens?consumer={municipality}"))
        .await;
    let rows = log.as_array().unwrap();
    assert!(rows.len() >= 5, "{log}");
    assert!(rows.iter().any(|r| r["supplier"] == population.as_str()));
    assert!(!log.to_string().contains(&token[..40]));
    // Scope changes are management requests, so they are in the audit trail that
    // the ledger sequences.
    let audit: Value = svc.get("/api/v1/audit-events?limit=500").await;
    assert!(audit.to_string().contains("scope-delegation-withdrawal"));

    // Key rotation: the new key signs at once here; the old one stays published
    // while its tokens live, and a withdrawn one goes.
    let old_kid = jwks.keys[0].kid.clone();
    let (status, keys) = svc
        .admin_post("/api/v1/oauth/keys/rotate", json!({"activate_in_secs": 0}))
        .await;
    assert_eq!(status, 200, "{keys}");
    let new_kid = keys["signing_kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let jwks = svc.jwks().await;
    assert_eq!(jwks.keys.len(), 2);
    verify_access_token(&token, &jwks.keys, svc.issuer(), now()).unwrap();
    let (_, body) = svc
        .grant(&mun.assertion(&mun.claims(svc.issuer(), INCOME)))
        .await;
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(fresh.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(header["typ"], "at+jwt");
    let (status, _) = svc
        .admin_post(
            "/api/v1/oauth/keys/rotate",
            json!({"withdraw_current": true}),
        )
        .await;
    assert_eq!(status, 200);
    let jwks = svc.jwks().await;
    assert!(jwks.keys.iter().all(|k| k.kid != new_kid), "withdrawn");
    assert!(verify_access_token(&fresh, &jwks.keys, svc.issuer(), now()).is_err());
    // Its successor signs at once: the service never stands without a key.
    let (status, body) = svc
        .grant(&mun.assertion(&mun.claims(svc.issuer(), INCOME)))
        .await;
    assert_eq!(status, 200, "{body}");
    verify_access_token(
        body["access_token"].as_str().unwrap(),
        &jwks.keys,
        svc.issuer(),
        now(),
    )
    .unwrap();
    // Gateways get the keys with the configuration.
    let conf = wait_for_conf(&net, |ts| ts["keys"].as_array().unwrap().len() == 2).await;
    assert_eq!(conf["issuer"], svc.issuer());

    // Revoking the municipality's signing certificate revokes its tokens and its
    // grants.
    let certs: Value = svc
        .get(&format!("/api/v1/certificates?subject={municipality}"))
        .await;
    let serial = certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["sha256"] == mun.cert_sha256().as_str())
        .unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = svc
        .admin_post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            json!({"reason": "key compromise"}),
        )
        .await;
    assert_eq!(status, 204);
    let (_, body) = introspect(&tax_client, &token).await;
    assert_eq!(body, json!({"active": false}), "revoked with its member");
    svc.refused(
        &mun.assertion(&mun.claims(svc.issuer(), INCOME)),
        "invalid_grant",
        "was revoked",
    )
    .await;
    let conf = wait_for_conf(&net, |ts| {
        ts["revoked"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["member"] == municipality.as_str()))
    })
    .await;
    assert!(conf["revoked"][0]["issued_before"].as_i64().unwrap() >= now() - 10);

    // The token log keeps its records for a year after they expired, then forgets.
    let state = net.sandbox().authority.as_ref().unwrap().state.clone();
    let log_url = "/api/v1/oauth/tokens?limit=1000";
    let before = svc.get::<Value>(log_url).await.as_array().unwrap().len();
    assert!(before >= 5);
    net.clock.advance(364 * 86_400_000);
    veksel_authority::oauth::purge(&state).await.unwrap();
    assert_eq!(
        svc.get::<Value>(log_url).await.as_array().unwrap().len(),
        before
    );
    net.clock.advance(2 * 86_400_000);
    veksel_authority::oauth::purge(&state).await.unwrap();
    assert_eq!(svc.get::<Value>(log_url).await, json!([]));

    net.stop().await;
}

/// The token service part of the published configuration once `ready` holds.
async fn wait_for_conf(net: &Net, ready: impl Fn(&Value) -> bool) -> Value {
    let state = &net.sandbox().authority.as_ref().unwrap().state;
    for _ in 0..100 {
        let published = state.published();
        let part = serde_json::to_value(&published.conf.token_service).unwrap();
        if ready(&part) {
            return part;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the configuration never showed the change")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_on_sqlite() {
    token_service(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_on_postgres() {
    token_service(Backend::Postgres).await;
}

/// authlib's unmodified RFC 7523 client (`AssertionSession`) gets a token with the
/// member's key file and certificate chain; pyjwt verifies it from the published
/// JWKS, and authlib's RFC 7638 thumbprint is the key's id.
const OAUTH_CLIENT_SCRIPT: &str = r#"
import base64, json, sys, uuid
import jwt, requests
from authlib.integrations.requests_client import AssertionSession
from authlib.jose import JsonWebKey
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

base, ca, key_path, chain_path, client, scope, resource = sys.argv[1:8]
meta = requests.get(f"{base}/.well-known/oauth-authorization-server", verify=ca).json()
chain = [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
         for c in x509.load_pem_x509_certificates(open(chain_path, "rb").read())]
session = AssertionSession(
    token_endpoint=meta["token_endpoint"], issuer=client, subject=client,
    audience=meta["issuer"], claims={"jti": str(uuid.uuid4()), "resource": resource},
    scope=scope, key=open(key_path).read(), header={"alg": "ES256", "x5c": chain},
    expires_in=60)
# Only the network's CA, not a CA bundle named in the environment.
session.trust_env = False
session.verify = ca
token = session.refresh_token()
access = token["access_token"]
header = jwt.get_unverified_header(access)
jwks = requests.get(meta["jwks_uri"], verify=ca).json()
jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
claims = jwt.decode(access, jwt.PyJWK(jwk).key, algorithms=["ES256"],
                    audience=resource, issuer=meta["issuer"])
try:
    jwt.decode(access, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="someone-else")
    wrong_audience = "accepted"
except jwt.InvalidAudienceError:
    wrong_audience = "refused"
print(json.dumps({"claims": claims, "typ": header.get("typ"), "scope": token["scope"],
                  "expires_in": token["expires_in"],
                  "thumbprint_is_kid": JsonWebKey.import_key(jwk).thumbprint() == header["kid"],
                  "wrong_audience": wrong_audience}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_gets_a_token_and_pyjwt_verifies_it() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    registered_scopes(&net).await;
    let municipality = ORGS[MUNICIPALITY].member();
    let resource = format!("{}/tax/income", ORGS[TAX].member());
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap();
    let stem = municipality.replace('/', ":");
    let signing = gw.dir.join("signing");
    let (url, ca) = {
        let info = &net.sandbox().info;
        (info.authority_url.clone(), info.authority_ca_file.clone())
    };
    let python = common::python_with_oauth_libraries();
    let args: Vec<String> = vec![
        "-c".into(),
        OAUTH_CLIENT_SCRIPT.into(),
        url.clone(),
        common::path(&ca).into(),
        common::path(&signing.join(format!("{stem}.key"))).into(),
        common::path(&signing.join(format!("{stem}.pem"))).into(),
        municipality.clone(),
        INCOME.into(),
        resource.clone(),
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
    assert_eq!(answer["typ"], "at+jwt");
    assert_eq!(answer["scope"], INCOME);
    assert_eq!(answer["expires_in"], 120);
    assert_eq!(answer["thumbprint_is_kid"], true);
    assert_eq!(answer["wrong_audience"], "refused");
    let claims = &answer["claims"];
    assert_eq!(claims["iss"], url.as_str());
    assert_eq!(claims["aud"], resource.as_str());
    assert_eq!(claims["consumer"], municipality.as_str());
    assert_eq!(claims["client_id"], municipality.as_str());
    net.stop().await;
}

/// A call through a gateway's client side with an optional bearer token.
async fn call_with_token(
    net: &Net,
    org: usize,
    client: &str,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = net
        .http
        .get(format!("{}/r1/{path}", net.client_url(org)))
        .header("X-Road-Client", client);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn scopes_on_the_exchange(backend: Backend) {
    let Some(net) = Net::start(backend).await else {
        eprintln!("skipped: VEKSEL_TEST_DATABASE_URL is not set");
        return;
    };
    let svc = Service::of(&net);
    registered_scopes(&net).await;
    const COMPANIES: &str = "tax:companies";
    let tax = ORGS[TAX].member();
    let municipality = ORGS[MUNICIPALITY].member();
    let population = ORGS[POPULATION].member();
    let r = manage(
        &net,
        TAX,
        json!({"type": "scope-registration", "scope": COMPANIES, "description": "Business register",
               "consumers": [municipality], "delegable": true}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");

    // The tax agency's companies service now requires the scope on top of its
    // access rights (which let every sandbox member in).
    let (admin, admin_token) = net.admin(TAX);
    let client_url = format!(
        "{admin}/api/v1/clients/{}",
        ORGS[TAX].subsystem_id().replace('/', ":")
    );
    let client: Value = net
        .http
        .get(&client_url)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut service = client["services"]["companies"].clone();
    service["scopes"] = json!([{"scope": COMPANIES}]);
    let resp = net
        .http
        .put(format!("{client_url}/services/companies"))
        .bearer_auth(&admin_token)
        .json(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());
    let mut bad = service.clone();
    bad["scopes"] = json!([{"scope": "no-prefix"}]);
    let resp = net
        .http
        .put(format!("{client_url}/services/companies"))
        .bearer_auth(&admin_token)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let companies = format!("{}/companies/12345678", ORGS[TAX].subsystem_id());
    let mun_app = ORGS[MUNICIPALITY].subsystem_id();
    let mun = Client::of(&net, MUNICIPALITY, &municipality);
    let token_for =
        |client: &Client, scope: &str, resource: Option<&str>, consumer_org: Option<&str>| {
            let mut c = client.claims(svc.issuer(), scope);
            if let Some(r) = resource {
                c["resource"] = r.into();
            }
            if let Some(o) = consumer_org {
                c["consumer_org"] = o.into();
            }
            let assertion = client.assertion(&c);
            let svc = &svc;
            async move {
                let (status, body) = svc.grant(&assertion).await;
                assert_eq!(status, 200, "{body}");
                body["access_token"].as_str().unwrap().to_owned()
            }
        };

    // With a token for the service: through.
    let service_id = format!("{}/companies", ORGS[TAX].subsystem_id());
    let good = token_for(&mun, COMPANIES, Some(&service_id), None).await;
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, Some(&good)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // The default audience, the scope's owner, names the provider too.
    let owner_aud = token_for(&mun, COMPANIES, None, None).await;
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, Some(&owner_aud)).await;
    assert_eq!(resp.status(), 200);

    // Without one, with another scope, for another audience, forged, or someone
    // else's: each its precise fault.
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, None).await;
    let f = common::expect_fault(resp, 500, "Server.ServerProxy.MissingAccessToken").await;
    assert!(f["message"].as_str().unwrap().contains(COMPANIES), "{f}");
    let other_scope = token_for(&mun, INCOME, Some(&service_id), None).await;
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, Some(&other_scope)).await;
    common::expect_fault(resp, 500, "Server.ServerProxy.InsufficientScope").await;
    let elsewhere = token_for(
        &mun,
        COMPANIES,
        Some(&format!("{}/persons", ORGS[POPULATION].subsystem_id())),
        None,
    )
    .await;
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, Some(&elsewhere)).await;
    let f = common::expect_fault(resp, 500, "Server.ServerProxy.InvalidAccessToken").await;
    assert!(f["message"].as_str().unwrap().contains("not for"), "{f}");
    let (h, p, _) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    let tax_client = Client::of(&net, TAX, &tax);
    let forged = format!(
        "{h}.{p}.{}",
        URL_SAFE_NO_PAD.encode(
            tax_client
                .signer
                .sign(format!("{h}.{p}").as_bytes())
                .unwrap()
        )
    );
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, Some(&forged)).await;
    let f = common::expect_fault(resp, 500, "Server.ServerProxy.InvalidAccessToken").await;
    assert!(f["message"].as_str().unwrap().contains("signature"), "{f}");
    // The municipality's token in the population agency's hands.
    let pop_app = ORGS[POPULATION].subsystem_id();
    let resp = call_with_token(&net, POPULATION, &pop_app, &companies, Some(&good)).await;
    let f = common::expect_fault(resp, 500, "Server.ServerProxy.InvalidAccessToken").await;
    assert!(
        f["message"].as_str().unwrap().contains("may not use it"),
        "{f}"
    );

    // A supplier acting for the municipality: admitted while the delegation stands.
    let r = manage(
        &net,
        MUNICIPALITY,
        json!({"type": "scope-delegation", "scope": COMPANIES, "supplier": population}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    let pop = Client::of(&net, POPULATION, &population);
    let delegated = token_for(&pop, COMPANIES, Some(&service_id), Some(&municipality)).await;
    let provider = net.sandbox().gateway(TAX).unwrap();
    wait_until_gateway_has(provider, |ts| !ts.delegations.is_empty()).await;
    let resp = call_with_token(&net, POPULATION, &pop_app, &companies, Some(&delegated)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let r = manage(
        &net,
        MUNICIPALITY,
        json!({"type": "scope-delegation-withdrawal", "scope": COMPANIES, "supplier": population}),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    wait_until_gateway_has(provider, |ts| ts.delegations.is_empty()).await;
    let resp = call_with_token(&net, POPULATION, &pop_app, &companies, Some(&delegated)).await;
    let f = common::expect_fault(resp, 500, "Server.ServerProxy.InvalidAccessToken").await;
    assert!(
        f["message"].as_str().unwrap().contains("does not delegate"),
        "{f}"
    );

    // The municipality's gateway gets tokens itself for its information system,
    // which then needs no key: one grant serves several calls.
    let mun_admin = net.admin(MUNICIPALITY);
    let settings_url = format!(
        "{}/api/v1/clients/{}",
        mun_admin.0,
        mun_app.replace('/', ":")
    );
    let set_rules = |rules: Value| {
        let (http, url, token) = (&net.http, &settings_url, &mun_admin.1);
        async move {
            let current: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut settings = current["settings"].clone();
            settings["tokens"] = rules;
            let resp = http
                .put(url)
                .bearer_auth(token)
                .json(&settings)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    assert_eq!(
        set_rules(json!([{"service": service_id, "scope": COMPANIES}])).await,
        204
    );
    assert_eq!(
        set_rules(json!([{"service": service_id, "scope": "bad scope"}])).await,
        400
    );
    let log_url = format!("/api/v1/oauth/tokens?consumer={municipality}&limit=1000");
    let before = svc.get::<Value>(&log_url).await.as_array().unwrap().len();
    for _ in 0..3 {
        let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, None).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    assert_eq!(
        svc.get::<Value>(&log_url).await.as_array().unwrap().len(),
        before + 1,
        "one token for three calls"
    );
    // A scope the member does not hold: the gateway says why it has no token.
    assert_eq!(
        set_rules(json!([{"service": service_id, "scope": DEBT}])).await,
        204
    );
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, None).await;
    let f = common::expect_fault(resp, 500, "Server.ClientProxy.MissingAccessToken").await;
    assert!(
        f["message"].as_str().unwrap().contains("invalid_scope"),
        "{f}"
    );

    // Revoked with the member: the token that worked a moment ago stops working.
    let (status, _) = svc
        .admin_post("/api/v1/oauth/revocations", json!({"member": municipality}))
        .await;
    assert_eq!(status, 204);
    wait_until_gateway_has(provider, |ts| !ts.revoked.is_empty()).await;
    let resp = call_with_token(&net, MUNICIPALITY, &mun_app, &companies, Some(&good)).await;
    let f = common::expect_fault(resp, 500, "Server.ServerProxy.InvalidAccessToken").await;
    assert!(f["message"].as_str().unwrap().contains("revoked"), "{f}");
    net.stop().await;
}

/// Refreshes a gateway's configuration until its token service part satisfies `ready`.
async fn wait_until_gateway_has(
    gw: &veksel_gateway::Gateway,
    ready: impl Fn(&veksel_proto::oauth::TokenService) -> bool,
) {
    for _ in 0..100 {
        let _ = gw.conf.refresh().await;
        if let Some(state) = gw.conf.latest()
            && state.conf().token_service.as_ref().is_some_and(&ready)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the gateway never got the change")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_on_the_exchange_on_sqlite() {
    scopes_on_the_exchange(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_on_the_exchange_on_postgres() {
    scopes_on_the_exchange(Backend::Postgres).await;
}

/// pyjwt checks a broker answer's signature with the published key (not veksel's
/// code), and refuses it once a bound claim or the key changes.
const ANSWER_SCRIPT: &str = r#"
import base64, hashlib, json, sys
import jwt
signature, jwk_json, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
key = jwt.PyJWK(json.loads(jwk_json)).key
header = jwt.get_unverified_header(signature)
claims = jwt.decode(signature, key, algorithms=["ES256"], audience="DEV/MUN/30000003",
                    issuer="https://broker.dev.example", options={"require": ["iat", "jti"]})
digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
subject = base64.urlsafe_b64encode(hashlib.sha256(
    claims["jti"].encode() + b"\x00" + b"01017012345").digest()).rstrip(b"=").decode()
head, payload, sig = signature.split(".")
forged_claims = dict(claims, dataset="person-basic")
forged = head + "." + base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode() + "." + sig
try:
    jwt.decode(forged, key, algorithms=["ES256"], audience="DEV/MUN/30000003")
    forged_result = "accepted"
except jwt.InvalidSignatureError:
    forged_result = "refused"
print(json.dumps({"typ": header["typ"], "kid": header["kid"], "body_ok": claims["body_sha256"] == digest,
                  "subject_ok": claims["sub"] == subject, "dataset": claims["dataset"],
                  "forged": forged_result}))
"#;

#[test]
fn pyjwt_verifies_a_broker_answer() {
    use veksel_broker::answer::{AnswerClaims, body_digest, sign, subject_digest};
    let signer = veksel_proto::jws::SoftwareSigner::from_pkcs8(
        &veksel_proto::jws::generate_p256_pkcs8().unwrap(),
        vec![],
    )
    .unwrap();
    let jwk = veksel_proto::oauth::Jwk::es256(&signer.public_key()).unwrap();
    let body = r#"{"evidenceStatus":{"evidenceCodeName":"person-income"},"evidenceValues":[]}"#;
    let jti = "0e7b5f1a-9d3c-4b8e-a1f2-3c4d5e6f7a8b";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = AnswerClaims {
        iss: "https://broker.dev.example".into(),
        aud: "DEV/MUN/30000003".into(),
        sub: subject_digest(jti, "01017012345"),
        dataset: "person-income".into(),
        dataset_version: 1,
        purpose: "housing-benefit".into(),
        request: "dh-1".into(),
        iat: now,
        jti: jti.into(),
        body_sha256: body_digest(body.as_bytes()),
    };
    let signature = sign(&signer, &jwk.kid, &claims).unwrap();
    let python = common::python_with_oauth_libraries();
    let out = std::process::Command::new(python)
        .args([
            "-c",
            ANSWER_SCRIPT,
            &signature,
            &serde_json::to_string(&jwk).unwrap(),
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"typ": "veksel-evidence+jwt", "kid": jwk.kid, "body_ok": true,
            "subject_ok": true, "dataset": "person-income", "forged": "refused"})
    );
    // A claim changed after signing: pyjwt refuses the signature, as veksel does.
    let other = veksel_proto::jws::SoftwareSigner::from_pkcs8(
        &veksel_proto::jws::generate_p256_pkcs8().unwrap(),
        vec![],
    )
    .unwrap();
    let by_other_key = sign(&other, &jwk.kid, &claims).unwrap();
    let out = std::process::Command::new(common::python_with_oauth_libraries())
        .args([
            "-c",
            ANSWER_SCRIPT,
            &by_other_key,
            &serde_json::to_string(&jwk).unwrap(),
            body,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidSignatureError"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
