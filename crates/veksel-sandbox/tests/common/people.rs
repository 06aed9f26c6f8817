//! People's login as the tests drive it: the authority's OpenID Connect provider with
//! the sandbox's test login, step by step over HTTP (no redirect followed).

use super::{Net, authority_client};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use veksel_proto::oauth::Jwks;
use veksel_sandbox::ORGS;

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A PKCE pair (RFC 7636): a verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    (verifier, challenge)
}

pub struct Provider {
    pub http: reqwest::Client,
    pub url: String,
    pub admin: String,
}

impl Provider {
    pub fn of(net: &Net) -> Self {
        let (_, url, admin) = authority_client(net);
        let info = &net.sandbox().info;
        let ca = std::fs::read_to_string(&info.authority_ca_file).unwrap();
        let roots = veksel_pki::certs_from_pem(&ca).unwrap();
        // Redirects are the flow's steps: each is looked at, none is followed.
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { http, url, admin }
    }

    pub async fn register(&self, client: Value) -> u16 {
        self.http
            .post(format!("{}/api/v1/oidc/clients", self.url))
            .bearer_auth(&self.admin)
            .json(&client)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn jwks(&self) -> Jwks {
        self.admin_get("/oauth/v1/jwks").await
    }

    /// GET a path of the authority with the admin token; the JSON answer.
    pub async fn admin_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn authorize_url(&self, client_id: &str, challenge: &str, extra: &str) -> String {
        format!(
            "{}/oidc/v1/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid&state=st4te&nonce=n0nce&code_challenge={challenge}&code_challenge_method=S256{extra}",
            self.url,
            urlencode(REDIRECT)
        )
    }

    /// Opens the login page; returns status, the page, and the login cookie.
    pub async fn open(
        &self,
        url: &str,
        lang: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, String, Option<String>) {
        let mut req = self.http.get(url);
        if let Some(l) = lang {
            req = req.header("accept-language", l);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let cookie = headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        (status, headers, resp.text().await.unwrap(), cookie)
    }

    pub async fn submit(&self, cookie: Option<&str>, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/oidc/v1/login", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    pub async fn redeem(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/oauth/v1/token", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// The whole flow for `pid`; returns the code.
    pub async fn code_for(&self, client_id: &str, challenge: &str, pid: &str) -> String {
        self.code_at(client_id, challenge, pid, "substantial").await
    }

    /// The whole flow for `pid`, who logs in at `acr`; returns the code.
    pub async fn code_at(&self, client_id: &str, challenge: &str, pid: &str, acr: &str) -> String {
        let (status, _, page, cookie) = self
            .open(&self.authorize_url(client_id, challenge, ""), None)
            .await;
        assert_eq!(status, 200, "{page}");
        let resp = self
            .submit(
                cookie.as_deref(),
                &[
                    ("login", &login_id(&page)),
                    ("pid", pid),
                    ("acr", acr),
                    ("lang", "en"),
                ],
            )
            .await;
        assert_eq!(resp.status(), 303);
        query_param(resp.headers()["location"].to_str().unwrap(), "code").unwrap()
    }

    /// An ID token for `pid` logged in at `acr`, as the system of `org`'s subsystem
    /// (registered as a relying party by management request) gets it: the code flow,
    /// then the code redeemed with an assertion signed by the member's key.
    pub async fn id_token(&self, net: &Net, org: usize, pid: &str, acr: &str) -> String {
        let client_id = ORGS[org].subsystem_id();
        let (verifier, challenge) = pkce();
        let code = self.code_at(&client_id, &challenge, pid, acr).await;
        let (status, body) = self.redeem_as_member(net, org, &code, &verifier).await;
        assert_eq!(status, 200, "{body}");
        body["id_token"].as_str().unwrap().to_owned()
    }

    /// A client assertion for `org`'s subsystem, signed by its member's key, with a
    /// fresh `jti`.
    pub fn member_assertion(&self, net: &Net, org: usize) -> String {
        let signer = net
            .sandbox()
            .gateway(org)
            .unwrap()
            .keys
            .get()
            .signer(&ORGS[org].member().parse().unwrap())
            .unwrap();
        let grant = veksel_proto::oauth::Grant {
            client: ORGS[org].subsystem_id(),
            scope: String::new(),
            resources: vec![],
            consumer_org: None,
        };
        let now = i64::try_from(net.clock.now_secs()).unwrap();
        grant
            .assertion(
                signer.as_ref(),
                &self.url,
                now,
                &uuid::Uuid::new_v4().to_string(),
            )
            .unwrap()
    }

    /// Redeems a code as `org`'s subsystem, authenticated by its member's key.
    pub async fn redeem_as_member(
        &self,
        net: &Net,
        org: usize,
        code: &str,
        verifier: &str,
    ) -> (u16, Value) {
        self.redeem(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            (
                "client_assertion_type",
                veksel_authority::oauth::CLIENT_ASSERTION_TYPE,
            ),
            ("client_assertion", &self.member_assertion(net, org)),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Registers `org`'s subsystem as a relying party by management request.
    pub async fn register_system(&self, net: &Net, org: usize) {
        let r = super::manage(
            net,
            org,
            serde_json::json!({"type": "relying-party-registration",
                "subsystem": ORGS[org].subsystem_id(), "name": ORGS[org].subsystem_name,
                "redirect_uris": [REDIRECT]}),
        )
        .await;
        assert_eq!(r["state"], "approved", "{r}");
    }
}

pub fn urlencode(v: &str) -> String {
    let mut s = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn login_id(page: &str) -> String {
    let at = page
        .find("name=\"login\" value=\"")
        .expect("the page has its login id")
        + 20;
    page[at..].split('"').next().unwrap().to_owned()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
