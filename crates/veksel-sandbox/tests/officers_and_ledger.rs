//! Two things of the console, in Debian's chromium by keyboard with axe-core on
//! every page:
//!
//! - People instead of tokens: an admin grants a person a role on the people page;
//!   that person signs in with the network's login, at the authority (its own
//!   relying party) and at a gateway (a relying party of the authority), acts, and
//!   the audit trail names them. A person without a role is told so; a removed
//!   role ends the session at once.
//! - The ledger explorer: the published checkpoint, its witnesses' cosignatures and
//!   an entry whose inclusion proof the browser checks by itself, and the same
//!   check failing when the page's bytes or the authority's database are changed.

mod common;

use common::browser::{
    Chromedriver, axe_source, chromium_trusting_authority, no_violations, screenshot, text_of,
    type_keys, wait_for, wait_text,
};
use common::pages::{csrf_of, page_as, post_as, raw_client, session};
use common::people::urlencode;
use common::*;
use fantoccini::Locator;
use fantoccini::key::Key;
use std::time::Duration;
use veksel_sandbox::ORGS;
use veksel_store::sqlx;

const OFFICER: &str = "0505705678";
const NOBODY: &str = "0606806789";

/// Signs in with an admin token on the sign-in page of `console`.
async fn sign_in_with_token(browser: &fantoccini::Client, console: &str, token: &str, shot: &str) {
    browser.goto(&format!("{console}/console/")).await.unwrap();
    wait_for(browser, "#token", shot).await;
    type_keys(browser, &format!("{token}{}", char::from(Key::Enter))).await;
    wait_for(browser, ".signout", shot).await;
}

async fn sign_out(browser: &fantoccini::Client, shot: &str) {
    browser
        .find(Locator::Css(".signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(browser, "#token", shot).await;
}

/// Grants `role` to `person` on the people page, by keyboard from the first field.
async fn grant(browser: &fantoccini::Client, console: &str, person: &str, role: &str) {
    browser
        .goto(&format!("{console}/console/people"))
        .await
        .unwrap();
    wait_for(browser, "#person", "people-page-missing")
        .await
        .click()
        .await
        .unwrap();
    let tab = char::from(Key::Tab);
    type_keys(browser, &format!("{person}{tab}Aviaja Lynge{tab}{role}")).await;
    type_keys(browser, &format!("{tab}{}", char::from(Key::Enter))).await;
    wait_for(browser, "#notice", "people-granted-missing").await;
    let grants = text_of(browser, "#grants").await;
    assert!(grants.contains(person) && grants.contains(role), "{grants}");
}

/// From the sign-in page of `console`, logs in as `person` with the test login.
async fn person_logs_in(browser: &fantoccini::Client, console: &str, person: &str, shot: &str) {
    browser
        .goto(&format!("{console}/console/signin"))
        .await
        .unwrap();
    wait_for(browser, "#person-login", shot)
        .await
        .click()
        .await
        .unwrap();
    wait_for(browser, "#pid", shot).await;
    type_keys(browser, &format!("{person}{}", char::from(Key::Enter))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_granted_a_role_sign_in_as_themselves_and_lose_it_at_once() {
    let mut net = Net::start(Backend::Sqlite).await.unwrap();
    let (http, authority, token) = authority_client(&net);
    let application = http
        .post(format!("{authority}/apply/v1"))
        .json(&serde_json::json!({
            "type": "member-application",
            "member": "DEV/MUN/40000011",
            "name": "Avannaata Kommunia",
            "gateway": "DEV/MUN/40000011/gw1",
            "address": "127.0.0.1:1",
            "contact": "it@avannaata.gl",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        application.status(),
        202,
        "{}",
        application.text().await.unwrap()
    );
    let application: serde_json::Value = application.json().await.unwrap();
    let request = application["id"].as_i64().unwrap();

    let driver = Chromedriver::start().await;
    let browser = chromium_trusting_authority(&driver, &net).await;
    let axe = axe_source();

    // The admin grants the person the registration officer's role.
    sign_in_with_token(&browser, &authority, &token, "authority-admin-signin").await;
    grant(&browser, &authority, OFFICER, "registration-officer").await;
    no_violations(&browser, &axe, "authority-people").await;
    sign_out(&browser, "authority-admin-signout").await;
    no_violations(&browser, &axe, "authority-signin-people").await;

    // The person signs in with the login, not a token, and decides the application.
    person_logs_in(&browser, &authority, OFFICER, "authority-person-login").await;
    let who = wait_text(
        &browser,
        ".signout span",
        "Aviaja Lynge (registration-officer)",
        "authority-person-overview",
    )
    .await;
    assert!(who.contains("Signed in as"), "{who}");
    browser
        .goto(&format!("{authority}/console/requests"))
        .await
        .unwrap();
    wait_for(
        &browser,
        &format!("#approve-{request}"),
        "authority-person-requests",
    )
    .await
    .click()
    .await
    .unwrap();
    wait_text(&browser, "#notice", "approved", "authority-person-approved").await;
    // The audit trail names the person, not a token.
    browser
        .goto(&format!("{authority}/console/audit"))
        .await
        .unwrap();
    let audit = wait_text(
        &browser,
        "#audit",
        &format!("person:{OFFICER}"),
        "authority-person-audit",
    )
    .await;
    assert!(audit.contains("management_request.approved"), "{audit}");
    // A registration officer does not manage who has roles.
    browser
        .goto(&format!("{authority}/console/people"))
        .await
        .unwrap();
    wait_text(&browser, "main", "Not allowed", "authority-person-people").await;

    // The admin (another browser) removes the role: the person's next page is the
    // sign-in page.
    let admin_browser = chromium_trusting_authority(&driver, &net).await;
    sign_in_with_token(&admin_browser, &authority, &token, "authority-admin-again").await;
    admin_browser
        .goto(&format!("{authority}/console/people"))
        .await
        .unwrap();
    wait_for(&admin_browser, "#grants button", "authority-grants-missing")
        .await
        .click()
        .await
        .unwrap();
    wait_text(
        &admin_browser,
        "#notice",
        "removed",
        "authority-revoked-missing",
    )
    .await;
    let _ = admin_browser.close().await;
    browser
        .goto(&format!("{authority}/console/requests"))
        .await
        .unwrap();
    wait_for(&browser, "#token", "authority-person-signed-out").await;

    // Someone with no role logs in fine and is told they have none here.
    person_logs_in(&browser, &authority, NOBODY, "authority-nobody-login").await;
    wait_text(
        &browser,
        "#token-error",
        "no role",
        "authority-nobody-refused",
    )
    .await;
    no_violations(&browser, &axe, "authority-nobody-refused").await;
    let _ = browser.close().await;

    // The console's relying party is the authority's own: nobody registers it, and
    // its codes are not redeemed at the token endpoint.
    let resp = http
        .post(format!("{authority}/api/v1/oidc/clients"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "client_id": "veksel-console", "name": "Mallory",
            "redirect_uris": ["https://evil.example/cb"], "auth_method": "none"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(format!("{authority}/oauth/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=authorization_code&client_id=veksel-console&code=made-up&redirect_uri={}&code_verifier={}",
            urlencode(&format!("{authority}/console/signin/callback")),
            "v".repeat(43)
        ))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{body}");
    // A way back to the console's sign-in that this browser did not start signs
    // nobody in.
    let resp = http
        .get(format!(
            "{authority}/console/signin/callback?code=made-up&state=made-up"
        ))
        .send()
        .await
        .unwrap();
    assert!(
        resp.url().path().ends_with("/console/signin"),
        "{}",
        resp.url()
    );
    assert_eq!(resp.status(), 403);

    // At a gateway the same, through the authority's login as its relying party.
    let (gw, gw_token) = net.admin(POPULATION);
    let browser = chromium_trusting_authority(&driver, &net).await;
    sign_in_with_token(&browser, &gw, &gw_token, "gateway-admin-signin").await;
    grant(&browser, &gw, OFFICER, "security-officer").await;
    no_violations(&browser, &axe, "gateway-people").await;
    sign_out(&browser, "gateway-admin-signout").await;
    person_logs_in(&browser, &gw, OFFICER, "gateway-person-login").await;
    wait_for(&browser, "#readiness", "gateway-person-overview").await;
    let who = text_of(&browser, ".signout span").await;
    assert!(who.contains("Aviaja Lynge (security-officer)"), "{who}");
    no_violations(&browser, &axe, "gateway-person-overview").await;
    // The citizens' page does not take an officer for a citizen.
    browser.goto(&format!("{gw}/console/me")).await.unwrap();
    wait_for(&browser, "#log-in", "gateway-officer-me").await;
    // A gateway that does not allow the test login for its officers (the default
    // outside sandboxes) refuses it: it believes any person number.
    let gw_dir = net.dir.path().join(ORGS[POPULATION].slug);
    edit_gateway_config(&gw_dir, |c| {
        c.as_object_mut().unwrap().remove("console_test_officers");
    });
    let sandbox = net.sandbox.as_mut().unwrap();
    sandbox.stop_gateway(POPULATION).await;
    sandbox.start_gateway(POPULATION).await.unwrap();
    person_logs_in(&browser, &gw, OFFICER, "gateway-test-login").await;
    wait_text(
        &browser,
        "#token-error",
        "test login cannot sign you in",
        "gateway-test-login-refused",
    )
    .await;
    let _ = browser.close().await;

    // Without a browser: another site cannot grant a role with the admin's session,
    // and a form naming an unknown role or a malformed number is refused.
    let raw = raw_client();
    let cookie = session(&raw, &gw, &gw_token).await;
    let csrf = csrf_of(&raw, &gw, &cookie, "/console/people").await;
    let grant_url = format!("{gw}/console/people/grant");
    let evil = raw
        .post(&grant_url)
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={csrf}&person={NOBODY}&name=Mallory&role=admin"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let no_token = post_as(
        &raw,
        &grant_url,
        &cookie,
        format!("person={NOBODY}&name=Mallory&role=admin"),
    )
    .await;
    assert_eq!(no_token.status(), 403);
    for (form, needle) in [
        (
            format!("csrf={csrf}&person={NOBODY}&name=M&role=root"),
            "root",
        ),
        (
            format!("csrf={csrf}&person=12ab&name=M&role=admin"),
            "6 to 12 digits",
        ),
        (
            format!("csrf={csrf}&person={NOBODY}&name=%20&role=admin"),
            "name",
        ),
    ] {
        let resp = post_as(&raw, &grant_url, &cookie, form.clone()).await;
        assert_eq!(resp.status(), 400, "{form}");
        assert!(resp.text().await.unwrap().contains(needle), "{form}");
    }
    let listed = page_as(&raw, &format!("{gw}/console/people"), &cookie).await;
    assert!(!listed.contains(NOBODY) && !listed.contains("Mallory"));
    // Revoking someone who has no role says so.
    let revoke = format!("{gw}/console/people/{NOBODY}/revoke");
    let resp = post_as(&raw, &revoke, &cookie, format!("csrf={csrf}")).await;
    assert_eq!(resp.status(), 404);
    // The grant went into the gateway's outbox for the ledger, with the actor kept
    // off it.
    let db = net
        .sqlite_db(ORGS[POPULATION].slug, veksel_gateway::files::DB)
        .await;
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT event, subject FROM ledger_outbox WHERE event LIKE 'console.%'")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        events,
        vec![(
            "console.person.grant".to_owned(),
            "security-officer".to_owned()
        )]
    );
    db.close().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_explorer_proves_an_entry_in_the_browser_and_catches_a_changed_one() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let (_, authority, token) = authority_client(&net);
    let driver = Chromedriver::start().await;
    let browser = chromium_trusting_authority(&driver, &net).await;
    let axe = axe_source();
    sign_in_with_token(&browser, &authority, &token, "ledger-signin").await;

    // The witnesses cosign within seconds of the sandbox's start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        browser
            .goto(&format!("{authority}/console/ledger"))
            .await
            .unwrap();
        wait_for(&browser, "#checkpoint", "ledger-page-missing").await;
        if browser.find(Locator::Css("#published-size")).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint published in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let size: u64 = text_of(&browser, "#published-size").await.parse().unwrap();
    assert!(size > 2, "the sandbox's set-up is in the ledger");
    let witnesses = text_of(&browser, "#witnesses").await;
    assert!(witnesses.contains("verified"), "{witnesses}");
    no_violations(&browser, &axe, "ledger").await;

    // An entry in the middle of the tree, so that its proof has several hashes.
    let index = size / 2;
    browser
        .goto(&format!("{authority}/console/ledger/{index}"))
        .await
        .unwrap();
    wait_text(
        &browser,
        "#server-check",
        "is in the published checkpoint",
        "ledger-entry",
    )
    .await;
    let verdict = wait_for(&browser, "#browser-verdict", "ledger-entry-browser").await;
    assert_eq!(
        verdict.attr("class").await.unwrap().as_deref(),
        Some("ok"),
        "{}",
        verdict.text().await.unwrap()
    );
    let checked = text_of(&browser, "#browser-check").await;
    assert!(
        checked.contains(&format!("entry {index} (leaf "))
            && checked.contains("signed by the ledger key")
            && checked.contains("cosigned by")
            && checked.contains("quorum"),
        "{checked}"
    );
    // The proof and both checks in view for the screenshot.
    browser
        .execute(
            "document.getElementById('proof-h').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    no_violations(&browser, &axe, "ledger-entry").await;

    // The page's bytes changed one at a time: the browser's own check fails each
    // time, whatever the server said. "Check again" by keyboard.
    let changes = [
        (
            "const s = atob(d.dataset.entry); d.dataset.entry = btoa(s.slice(0, 10) + (s[10] === 'A' ? 'B' : 'A') + s.slice(11))",
            "the proof leads to",
        ),
        (
            "const p = d.dataset.proof.split(','); p[0] = (p[0][0] === '0' ? '1' : '0') + p[0].slice(1); d.dataset.proof = p.join(',')",
            "the proof leads to",
        ),
        (
            "d.dataset.proof = d.dataset.proof.split(',').slice(1).join(',')",
            "fewer hashes",
        ),
        (
            "d.dataset.note = d.dataset.note.replace(/\\n[0-9]+\\n/, n => '\\n' + (Number(n.trim()) + 1) + '\\n')",
            "",
        ),
        (
            "const lines = d.dataset.note.split('\\n'); const i = lines.findIndex(l => l.startsWith('\u{2014} ') && !l.includes('veksel.ledger')); const b = lines[i].split(' '); const sig = atob(b[2]); b[2] = btoa(sig.slice(0, 20) + String.fromCharCode(sig.charCodeAt(20) ^ 1) + sig.slice(21)); lines[i] = b.join(' '); d.dataset.note = lines.join('\\n')",
            "cosignature of",
        ),
        (
            "d.dataset.note = d.dataset.note.split('\\n').filter(l => !l.startsWith('\u{2014} ') || l.includes('veksel.ledger')).join('\\n')",
            "quorum",
        ),
    ];
    for (n, (change, says)) in changes.iter().enumerate() {
        browser.refresh().await.unwrap();
        wait_for(&browser, "#browser-verdict.ok", "ledger-entry-again").await;
        browser
            .execute(
                &format!("const d = document.getElementById('proof-data'); {change};"),
                vec![],
            )
            .await
            .unwrap();
        browser
            .find(Locator::Css("#check-again"))
            .await
            .unwrap()
            .send_keys(&char::from(Key::Enter).to_string())
            .await
            .unwrap();
        let bad = wait_for(
            &browser,
            "#browser-verdict.bad",
            &format!("ledger-tampered-{n}"),
        )
        .await;
        let text = bad.text().await.unwrap();
        assert!(
            text.contains("does not verify") && text.contains(says),
            "change {n}: {text}"
        );
        if n == 0 {
            no_violations(&browser, &axe, "ledger-entry-tampered").await;
        }
    }

    // The authority's database changed behind its back: the server's own check of
    // the entry fails, and so does the browser's.
    let db = net
        .sqlite_db("authority", veksel_authority::files::DB)
        .await;
    let data: Vec<u8> = sqlx::query_scalar("SELECT data FROM ledger_entries WHERE idx = $1")
        .bind(index as i64 - 1)
        .fetch_one(db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_entries SET data = $1 WHERE idx = $2")
        .bind(&data)
        .bind(index as i64)
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    browser.refresh().await.unwrap();
    let server = wait_for(&browser, "#server-check", "ledger-forged-server").await;
    assert_eq!(server.attr("class").await.unwrap().as_deref(), Some("bad"));
    assert!(
        server
            .text()
            .await
            .unwrap()
            .contains("not in the checkpoint's tree"),
        "{}",
        server.text().await.unwrap()
    );
    let verdict = wait_for(&browser, "#browser-verdict", "ledger-forged-browser").await;
    assert_eq!(verdict.attr("class").await.unwrap().as_deref(), Some("bad"));
    screenshot(&browser, "ledger-entry-forged").await;
    // A page for an entry that does not exist, and for one that is not a number.
    for missing in [format!("{}", size + 1_000_000), "x".into()] {
        browser
            .goto(&format!("{authority}/console/ledger/{missing}"))
            .await
            .unwrap();
        wait_text(&browser, "h1", "Not found", "ledger-missing").await;
    }
    let _ = browser.close().await;
    net.stop().await;
}
