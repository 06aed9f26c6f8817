//! The gateway's console in Debian's chromium, by keyboard: a security officer signs
//! in with an admin token, gives the municipality an access right and its refused
//! call then goes through, searches the message log and downloads evidence that
//! verifies offline. Every page is scanned with axe-core and kept as a screenshot.
//! Then the sessions and forms are attacked without a browser: signed out, another
//! site's form, a form without its token, an observer who tries to change things.

mod common;

use common::browser::{
    Chromedriver, axe_source, chromium, chromium_trusting_authority, click, focused_attr,
    no_violations, press, text_of, type_keys, wait_for, wait_text,
};
use common::pages::{csrf_of, get_as, location, page_as, post_as, raw_client, session};
use common::*;
use fantoccini::Locator;
use fantoccini::key::Key;
use std::time::Duration;
use veksel_sandbox::ORGS;

/// The municipality searches persons by name: refused until it has the right.
async fn search_by_name(net: &Net) -> reqwest::Response {
    net.r1(
        MUNICIPALITY,
        &ORGS[MUNICIPALITY].subsystem_id(),
        &format!("{}/persons?name=olsen", ORGS[POPULATION].subsystem_id()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_officer_grants_access_and_fetches_evidence_in_chromium() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let (admin, token) = net.admin(POPULATION);
    let refused = search_by_name(&net).await;
    expect_fault(refused, 500, "Server.ServerProxy.AccessDenied").await;

    let driver = Chromedriver::start().await;
    let browser = chromium(&driver, &[]).await;
    let axe = axe_source();

    // Signed out, the console sends the browser to sign in; the field has focus.
    browser.goto(&format!("{admin}/console/")).await.unwrap();
    let field = wait_for(&browser, "#token", "console-signin-missing").await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/console/signin")
    );
    no_violations(&browser, &axe, "console-signin").await;
    assert_eq!(focused_attr(&browser, "id").await.as_deref(), Some("token"));
    // A wrong token: the page says so at the field.
    field
        .send_keys(&format!("vka_not-a-token{}", char::from(Key::Enter)))
        .await
        .unwrap();
    wait_for(&browser, "#token-error", "console-signin-error-missing").await;
    no_violations(&browser, &axe, "console-signin-error").await;
    let field = browser.find(Locator::Css("#token")).await.unwrap();
    assert_eq!(
        field.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    field
        .send_keys(&format!("{token}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    wait_for(&browser, "#readiness", "console-overview-missing").await;
    no_violations(&browser, &axe, "console-overview").await;
    let text = text_of(&browser, "main").await;
    assert!(text.contains(&ORGS[POPULATION].subsystem_id()), "{text}");
    assert!(
        text.contains("authentication"),
        "certificates are listed: {text}"
    );

    // The population register's subsystem: its services and who may call them.
    click(
        &browser,
        Locator::LinkText(&ORGS[POPULATION].subsystem_id()),
    )
    .await;
    wait_for(&browser, "#access-rights", "console-client-missing").await;
    no_violations(&browser, &axe, "console-client").await;
    // The add form by keyboard: who, the service chosen by typing, the method by
    // typing, the path cleared and written, Enter.
    click(&browser, Locator::Css("#subject")).await;
    press(&browser, Key::End).await;
    type_keys(
        &browser,
        &format!(
            "{}{}",
            ORGS[MUNICIPALITY].subsystem_id(),
            char::from(Key::Tab)
        ),
    )
    .await;
    assert_eq!(
        focused_attr(&browser, "id").await.as_deref(),
        Some("service")
    );
    type_keys(&browser, &format!("persons{}", char::from(Key::Tab))).await;
    assert_eq!(
        focused_attr(&browser, "id").await.as_deref(),
        Some("method")
    );
    type_keys(&browser, &format!("G{}", char::from(Key::Tab))).await;
    assert_eq!(focused_attr(&browser, "id").await.as_deref(), Some("path"));
    let erase: String = std::iter::repeat_n(char::from(Key::Backspace), 3).collect();
    type_keys(
        &browser,
        &format!("{}{erase}/{}", char::from(Key::End), char::from(Key::Enter)),
    )
    .await;
    let notice = wait_for(&browser, "#notice", "console-added-missing").await;
    assert!(notice.text().await.unwrap().contains("added"));
    no_violations(&browser, &axe, "console-access-added").await;
    let rules = text_of(&browser, "#access-rights").await;
    assert!(
        rules.contains(&ORGS[MUNICIPALITY].subsystem_id()),
        "{rules}"
    );

    // The call that was refused goes through.
    let allowed = search_by_name(&net).await;
    assert_eq!(allowed.status(), 200);
    let request_id = allowed.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for org in [MUNICIPALITY, POPULATION] {
        veksel_gateway::stamper::stamp_and_record(net.sandbox().gateway(org).unwrap()).await;
    }

    // The message log, searched by the request id typed into the form.
    browser.goto(&format!("{admin}/console/log")).await.unwrap();
    wait_for(&browser, "#q-request", "console-log-missing").await;
    click(&browser, Locator::Css("#q-request")).await;
    browser
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{request_id}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    for _ in 0..100 {
        if browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&request_id)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&request_id)
    );
    no_violations(&browser, &axe, "console-log").await;
    let found = text_of(&browser, "#found").await;
    assert!(found.starts_with("1 "), "{found}");
    let link = browser
        .find(Locator::Css("#records a[download]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    // The evidence behind the link, fetched with the browser's session, verifies
    // offline against the anchor alone.
    let cookie = browser
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name() == "veksel_console")
        .expect("the session cookie");
    let resp = net
        .http
        .get(format!("{admin}{link}"))
        .header("cookie", format!("veksel_console={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let bundle: veksel_verify::evidence::Bundle = resp.json().await.unwrap();
    let anchor: veksel_proto::conf::Anchor =
        serde_json::from_str(&std::fs::read_to_string(&net.sandbox().info.anchor_file).unwrap())
            .unwrap();
    let proven = veksel_verify::evidence::verify(&bundle, &anchor).unwrap();
    assert_eq!(proven.request_id, request_id);

    // Monitoring: the last hour's exchanges per minute as a chart drawn on the
    // server, and per service the counts and latency percentiles.
    click(&browser, Locator::LinkText("Monitoring")).await;
    let chart = wait_for(&browser, "svg#per-minute", "console-monitoring-missing").await;
    assert_eq!(chart.attr("role").await.unwrap().as_deref(), Some("img"));
    let stats = text_of(&browser, "#stats").await;
    assert!(
        stats.contains("persons") && stats.contains("provider"),
        "{stats}"
    );
    no_violations(&browser, &axe, "console-monitoring").await;
    // In Danish, and signed out by the button.
    click(&browser, Locator::Css("a[hreflang=da]")).await;
    wait_for(&browser, "html[lang=da]", "console-danish-missing").await;
    no_violations(&browser, &axe, "console-log-da").await;
    click(&browser, Locator::Css(".signout button")).await;
    wait_for(&browser, "#token", "console-signed-out-missing").await;
    browser.goto(&format!("{admin}/console/log")).await.unwrap();
    wait_for(&browser, "#token", "console-still-signed-out").await;
    let _ = browser.close().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_forms_refuse_what_a_browser_of_the_officer_did_not_send() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let (admin, token) = net.admin(POPULATION);
    let http = raw_client();
    let client_path = format!(
        "/console/clients/{}",
        ORGS[POPULATION].subsystem_id().replace('/', ":")
    );
    let add = format!("{admin}{client_path}/access/add");
    let rule = format!(
        "subject={}&service=persons&method=GET&path=%2F",
        ORGS[MUNICIPALITY].subsystem_id()
    );
    let post = |cookie: Option<&str>, body: String, origin: Option<&str>| {
        let mut req = http
            .post(&add)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };

    // Signed out: every page and form sends to sign in, and nothing changes.
    for path in ["/console/", "/console/log", client_path.as_str()] {
        let resp = http.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(resp.headers()["location"], "/console/signin");
    }
    let resp = post(None, format!("csrf=x&{rule}"), None).await.unwrap();
    assert_eq!(resp.status(), 303);
    let evidence = format!("{admin}/console/log/x/evidence?side=provider");
    assert_eq!(get_as(&http, &evidence, "").await.status(), 303);
    // A forged session cookie is no session.
    let resp = get_as(&http, &format!("{admin}/console/"), "veksel_console=forged").await;
    assert_eq!(resp.status(), 303);
    // Another site cannot sign a browser in.
    let resp = http
        .post(format!("{admin}/console/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("set-cookie").is_none());

    // Signed in as a security officer: another site's form, a form without the
    // session's token, or with a guessed one, is refused.
    let cookie = session(&http, &admin, &token).await;
    let csrf = csrf_of(&http, &admin, &cookie, &client_path).await;
    for (body, origin) in [
        (format!("csrf={csrf}&{rule}"), Some("https://evil.example")),
        (rule.clone(), None),
        (format!("csrf=guessed&{rule}"), None),
    ] {
        let resp = post(Some(&cookie), body, origin).await.unwrap();
        assert_eq!(resp.status(), 403);
    }
    expect_fault(
        search_by_name(&net).await,
        500,
        "Server.ServerProxy.AccessDenied",
    )
    .await;
    // A bad rule: the form again, with the error.
    let resp = post(
        Some(&cookie),
        format!("csrf={csrf}&subject=not-an-id&service=persons&method=GET&path=%2F"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("role=\"alert\""));
    // The real thing.
    let resp = post(Some(&cookie), format!("csrf={csrf}&{rule}"), Some(&admin))
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(search_by_name(&net).await.status(), 200);

    // An observer sees the rules but no form, and its posts are refused.
    let dir = net.sandbox().info.gateways[POPULATION].data_dir.clone();
    let observer = veksel_gateway::create_admin_token(&dir, "observer", "console test", &net.clock)
        .await
        .unwrap();
    let observer_cookie = session(&http, &admin, &observer).await;
    let page = page_as(&http, &format!("{admin}{client_path}"), &observer_cookie).await;
    assert!(page.contains(&ORGS[MUNICIPALITY].subsystem_id()));
    assert!(!page.contains("access/add") && !page.contains("access/remove"));
    let observer_csrf = csrf_of(&http, &admin, &observer_cookie, "/console/").await;
    let resp = post(
        Some(&observer_cookie),
        format!(
            "csrf={observer_csrf}&subject=DEV/GOV/10000002/tax&service=echo&method=GET&path=%2F"
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = post_as(
        &http,
        &format!("{admin}{client_path}/groups/save"),
        &observer_cookie,
        format!("csrf={observer_csrf}&code=x&members="),
    )
    .await;
    assert_eq!(resp.status(), 403, "an observer cannot change local groups");
    let log = page_as(&http, &format!("{admin}/console/log"), &observer_cookie).await;
    assert!(
        !log.contains("q-person") && !log.contains("evidence?side"),
        "{log}"
    );
    let resp = get_as(&http, &evidence, &observer_cookie).await;
    assert_eq!(resp.status(), 403);

    // The observer's token revoked: its session ends with it.
    let gw = net.sandbox().gateway(POPULATION).unwrap();
    let row = veksel_store::tokens::list(&gw.db)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.description == "console test")
        .unwrap();
    veksel_store::tokens::revoke(&gw.db, &row.id, net.clock.now_ms())
        .await
        .unwrap();
    let resp = get_as(&http, &format!("{admin}/console/"), &observer_cookie).await;
    assert_eq!(resp.status(), 303);

    // The officer removes the right again: the call is refused again. Removing it a
    // second time (an old page) changes nothing and says so.
    let page = page_as(&http, &format!("{admin}{client_path}"), &cookie).await;
    let row = page
        .split("<tr>")
        .find(|r| r.contains(&ORGS[MUNICIPALITY].subsystem_id()) && r.contains("<td>/</td>"))
        .expect("the new rule's row");
    let at = row.find("name=\"rule\" value=\"").unwrap() + 19;
    let key = row[at..].split('"').next().unwrap().to_owned();
    for expected in ["removed", "gone"] {
        let resp = post_as(
            &http,
            &format!("{admin}{client_path}/access/remove"),
            &cookie,
            format!("csrf={csrf}&rule={key}"),
        )
        .await;
        assert_eq!(resp.status(), 303);
        assert!(location(&resp).ends_with(expected), "{expected}");
    }
    expect_fault(
        search_by_name(&net).await,
        500,
        "Server.ServerProxy.AccessDenied",
    )
    .await;

    // A local group: saved with the municipality as member, named by an access
    // right; the search goes through. A malformed member is refused with the form
    // again. The group deleted, the search is refused again.
    let groups = format!("{admin}{client_path}/groups");
    let member = ORGS[MUNICIPALITY].subsystem_id().replace('/', "%2F");
    let resp = post_as(
        &http,
        &format!("{groups}/save"),
        &cookie,
        format!("csrf={csrf}&code=searchers&description=Case+workers&members=not%2Fan+id"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("role=\"alert\""));
    let resp = post_as(
        &http,
        &format!("{groups}/save"),
        &cookie,
        format!("csrf={csrf}&code=searchers&description=Case+workers&members={member}"),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert!(location(&resp).ends_with("group-saved"));
    let resp = post(
        Some(&cookie),
        format!("csrf={csrf}&subject=local%3Asearchers&service=persons&method=GET&path=%2F"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(search_by_name(&net).await.status(), 200);
    let page = page_as(&http, &format!("{admin}{client_path}"), &cookie).await;
    assert!(page.contains("Case workers") && page.contains("local:searchers"));
    let resp = post_as(
        &http,
        &format!("{groups}/delete"),
        &cookie,
        format!("csrf={csrf}&code=searchers"),
    )
    .await;
    assert_eq!(resp.status(), 303);
    expect_fault(
        search_by_name(&net).await,
        500,
        "Server.ServerProxy.AccessDenied",
    )
    .await;
    // Signed out: the old cookie is no longer a session.
    let resp = post_as(
        &http,
        &format!("{admin}/console/signout"),
        &cookie,
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(resp.status(), 303);
    let resp = get_as(&http, &format!("{admin}/console/"), &cookie).await;
    assert_eq!(resp.status(), 303);
    // Every page carries the policy that loads nothing from elsewhere.
    let resp = http
        .get(format!("{admin}/console/signin"))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    net.stop().await;
}

/// Applies to join the network as member `code` of class MUN; the request's number.
async fn apply(http: &reqwest::Client, authority: &str, code: u32, name: &str) -> i64 {
    let resp = http
        .post(format!("{authority}/apply/v1"))
        .json(&serde_json::json!({
            "type": "member-application",
            "member": format!("DEV/MUN/{code:08}"),
            "name": name,
            "gateway": format!("DEV/MUN/{code:08}/gw1"),
            "address": "127.0.0.1:1",
            "contact": "it@example.invalid",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_officer_decides_applications_in_chromium() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let (http, authority, token) = authority_client(&net);
    let approved = apply(&http, &authority, 40_000_001, "Qeqqata Kommunia").await;
    let declined = apply(&http, &authority, 40_000_002, "Not a municipality").await;
    let unreasoned = apply(&http, &authority, 40_000_003, "Kommune Kujalleq").await;

    let driver = Chromedriver::start().await;
    let browser = chromium_trusting_authority(&driver, &net).await;
    let axe = axe_source();

    browser
        .goto(&format!("{authority}/console/"))
        .await
        .unwrap();
    wait_for(&browser, "#token", "authority-signin-missing").await;
    type_keys(&browser, &format!("{token}{}", char::from(Key::Enter))).await;
    let pending = wait_for(&browser, "#pending", "authority-overview-missing").await;
    assert_eq!(pending.text().await.unwrap(), "3");
    no_violations(&browser, &axe, "authority-overview").await;

    // The waiting applications; the first approved by keyboard on its button.
    pending.click().await.unwrap();
    wait_for(
        &browser,
        &format!("#approve-{approved}"),
        "authority-requests-missing",
    )
    .await;
    no_violations(&browser, &axe, "authority-requests").await;
    click(&browser, Locator::Css(&format!("#reason-{approved}"))).await;
    // Back from the reason field to the approve button, by keyboard.
    let shift_tab = format!("{}{}", char::from(Key::Shift), char::from(Key::Tab));
    type_keys(&browser, &shift_tab).await;
    assert_eq!(
        focused_attr(&browser, "id").await,
        Some(format!("approve-{approved}"))
    );
    press(&browser, Key::Enter).await;
    let notice = wait_for(&browser, "#notice", "authority-approved-missing").await;
    assert!(notice.text().await.unwrap().contains("approved"));
    no_violations(&browser, &axe, "authority-approved").await;

    // The second declined with a reason typed into its field, then Tab, Enter.
    click(&browser, Locator::Css(&format!("#reason-{declined}"))).await;
    type_keys(
        &browser,
        &format!("Not a public body{}", char::from(Key::Tab)),
    )
    .await;
    press(&browser, Key::Enter).await;
    // The approval's page also had a notice: wait for the decline's.
    wait_text(
        &browser,
        "#notice",
        "declined",
        "authority-declined-missing",
    )
    .await;
    let recent = text_of(&browser, "#recent").await;
    assert!(recent.contains("Not a public body"), "{recent}");
    // Declining without a reason: refused, with the reason why at the top.
    click(&browser, Locator::Css(&format!("#reason-{unreasoned}"))).await;
    type_keys(&browser, &char::from(Key::Tab).to_string()).await;
    press(&browser, Key::Enter).await;
    let error = wait_for(&browser, "#decision-error", "authority-unreasoned-missing").await;
    assert!(error.text().await.unwrap().contains("reason"));
    no_violations(&browser, &axe, "authority-decline-refused").await;

    // The approved member is in the registry; the others are not.
    click(&browser, Locator::LinkText("Members")).await;
    let members = wait_for(&browser, "#members", "authority-members-missing").await;
    let members = members.text().await.unwrap();
    assert!(members.contains("DEV/MUN/40000001") && members.contains("Qeqqata Kommunia"));
    assert!(!members.contains("DEV/MUN/40000002") && !members.contains("DEV/MUN/40000003"));
    no_violations(&browser, &axe, "authority-members").await;
    // The certificates the authority issued, and the trust services it approved.
    click(&browser, Locator::LinkText("Certificates")).await;
    let certs = wait_for(&browser, "#certificates", "authority-certificates-missing").await;
    let certs = certs.text().await.unwrap();
    assert!(
        certs.contains("gateway-auth") && certs.contains(&ORGS[POPULATION].gateway_id()),
        "{certs}"
    );
    no_violations(&browser, &axe, "authority-certificates").await;
    click(&browser, Locator::LinkText("Trust services")).await;
    wait_for(&browser, "#cas-h", "authority-trust-missing").await;
    no_violations(&browser, &axe, "authority-trust").await;
    // The audit trail: each new configuration version, and the officer's decisions.
    click(&browser, Locator::LinkText("Audit trail")).await;
    let audit = wait_for(&browser, "#audit", "authority-audit-missing").await;
    let audit = audit.text().await.unwrap();
    assert!(audit.contains("configuration.publish"), "{audit}");
    no_violations(&browser, &axe, "authority-audit").await;
    let _ = browser.close().await;

    // Without a browser: an observer sees the requests but cannot decide, and
    // another site's form is refused even with the officer's session.
    let resp = http
        .post(format!("{authority}/api/v1/tokens"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"role": "observer", "description": "console test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: serde_json::Value = resp.json().await.unwrap();
    let observer = created["token"].as_str().unwrap().to_owned();
    let raw = reqwest::Client::builder()
        .use_preconfigured_tls({
            let ca = std::fs::read_to_string(&net.sandbox().info.authority_ca_file).unwrap();
            veksel_pki::tls::https_client_config(&veksel_pki::certs_from_pem(&ca).unwrap()).unwrap()
        })
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let observer_cookie = session(&raw, &authority, &observer).await;
    let page = page_as(
        &raw,
        &format!("{authority}/console/requests"),
        &observer_cookie,
    )
    .await;
    assert!(page.contains(&format!("req-{unreasoned}")) && !page.contains("/approve"));
    let csrf = csrf_of(&raw, &authority, &observer_cookie, "/console/").await;
    let decide = format!("{authority}/console/requests/{unreasoned}/approve");
    let resp = post_as(&raw, &decide, &observer_cookie, format!("csrf={csrf}")).await;
    assert_eq!(resp.status(), 403);
    let officer_cookie = session(&raw, &authority, &token).await;
    let csrf = csrf_of(&raw, &authority, &officer_cookie, "/console/").await;
    let resp = raw
        .post(&decide)
        .header("cookie", &officer_cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // An approved request cannot be decided again.
    let again = format!("{authority}/console/requests/{approved}/decline");
    let resp = post_as(
        &raw,
        &again,
        &officer_cookie,
        format!("csrf={csrf}&reason=late"),
    )
    .await;
    assert_eq!(resp.status(), 409);
    // The observer's token revoked: its session ends with it.
    let resp = http
        .delete(format!(
            "{authority}/api/v1/tokens/{}",
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = get_as(
        &raw,
        &format!("{authority}/console/requests"),
        &observer_cookie,
    )
    .await;
    assert_eq!(resp.status(), 303);
    let members: serde_json::Value = http
        .get(format!("{authority}/api/v1/members"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !members.to_string().contains("DEV/MUN/40000003"),
        "the observer's and the other site's posts changed nothing"
    );
    net.stop().await;
}
