//! The token service of the authority, driven as members drive it: scopes and
//! delegations registered by management requests through their gateways, grants
//! signed with the members' real signing keys, and every refusal a dishonest or
//! careless client can provoke, each with its OAuth error. An unmodified OAuth
//! library from PyPI (authlib) obtains a token and pyjwt verifies it.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, MUNICIPALITY, Net, POPULATION, TAX, authority_client};
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
        assert!(description.contains(says), "{says:?} not in {description:?}");
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

/// Submits a change through a gateway's admin API; returns the request as the
/// authority answers it.
async fn manage(net: &Net, org: usize, change: Value) -> Value {
    let (admin, token) = net.admin(org);
    let resp = net
        .http
        .post(format!("{admin}/api/v1/management-requests"))
        .bearer_auth(token)
        .json(&change)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
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
    assert_eq!(r["state"], "approved", "the owner's consent and the policy approve: {r}");
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
        r["reason"].as_str().unwrap().contains(&format!("belongs to {tax}")),
        "{r}"
    );
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
    svc.refused(&assertion, "invalid_grant", "used before").await;

    // Without a resource the audience is the scope's owner.
    let (status, body) = svc.grant(&mun.assertion(&mun.claims(svc.issuer(), INCOME))).await;
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
    let (_, body) = svc.grant(&with(&|c| c["resource"] = "has space".into())).await;
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
    let hs = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
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
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
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
    let (_, body) = svc.grant(&mun.assertion(&mun.claims(svc.issuer(), INCOME))).await;
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
            json!({"activate_in_secs": 0, "withdraw_current": true}),
        )
        .await;
    assert_eq!(status, 200);
    let jwks = svc.jwks().await;
    assert!(jwks.keys.iter().all(|k| k.kid != new_kid), "withdrawn");
    assert!(verify_access_token(&fresh, &jwks.keys, svc.issuer(), now()).is_err());
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
