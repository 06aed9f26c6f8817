//! The citizens' data tracker: a person logs in to the population register's console
//! with the network's login and sees which organisations looked up data about them,
//! when, through which service and for which case — never anyone else's lookups.
//! Driven in Debian's chromium by keyboard, scanned with axe-core; then the way back
//! from the login is attacked without a browser.

mod common;

use common::browser::{
    Chromedriver, axe_source, axe_violations, chromium_trusting_authority, press, screenshot,
    type_keys, wait_for,
};
use common::*;
use fantoccini::Locator;
use fantoccini::key::Key;
use veksel_sandbox::ORGS;

const ME: &str = "0101701234";
const SOMEONE_ELSE: &str = "0202802345";

/// `org` looks up a person in the population register, for a case.
async fn look_up(net: &Net, org: usize, person: &str, case: &str) {
    let resp = net
        .http
        .get(format!(
            "{}/r1/{}/persons/{person}",
            net.client_url(org),
            ORGS[POPULATION].subsystem_id()
        ))
        .header("X-Road-Client", ORGS[org].subsystem_id())
        .header("X-Road-Issue", case)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("x-road-error").is_none(),
        "{:?}",
        resp.headers()
    );
}

/// Logs `person` in through the console's link and the test login, by keyboard.
async fn log_in(browser: &fantoccini::Client, admin: &str, person: &str, axe: &str) {
    browser.goto(&format!("{admin}/console/me")).await.unwrap();
    let link = wait_for(browser, "#log-in", "tracker-signed-out-missing").await;
    assert_eq!(axe_violations(browser, axe).await, Vec::<String>::new());
    screenshot(browser, "tracker-signed-out").await;
    link.click().await.unwrap();
    wait_for(browser, "#pid", "tracker-login-page-missing").await;
    type_keys(browser, &format!("{person}{}", char::from(Key::Enter))).await;
    wait_for(browser, "#me", "tracker-back-missing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_who_looked_them_up_and_nobody_else_does() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    look_up(&net, MUNICIPALITY, ME, "housing benefit 17/2026").await;
    look_up(&net, MUNICIPALITY, ME, "housing benefit 17/2026").await;
    look_up(&net, TAX, ME, "").await;
    look_up(&net, MUNICIPALITY, SOMEONE_ELSE, "child care 3/2026").await;
    // A search by name names nobody: nothing to hash.
    let resp = net
        .r1(
            TAX,
            &ORGS[TAX].subsystem_id(),
            &format!("{}/persons?name=olsen", ORGS[POPULATION].subsystem_id()),
        )
        .await;
    assert_eq!(resp.status(), 200);

    let (admin, _) = net.admin(POPULATION);
    let driver = Chromedriver::start().await;
    let browser = chromium_trusting_authority(&driver, &net).await;
    let axe = axe_source();

    log_in(&browser, &admin, ME, &axe).await;
    let table = wait_for(&browser, "#lookups", "tracker-lookups-missing").await;
    screenshot(&browser, "tracker-lookups").await;
    assert_eq!(axe_violations(&browser, &axe).await, Vec::<String>::new());
    let rows = table.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert_eq!(
        rows.len(),
        3,
        "two lookups by the municipality, one by the tax agency"
    );
    let text = table.text().await.unwrap();
    assert!(
        text.contains("Municipality of Sermersooq") && text.contains("Tax Agency"),
        "{text}"
    );
    assert!(text.contains("housing benefit 17/2026"), "{text}");
    assert!(
        !text.contains("child care"),
        "someone else's lookup: {text}"
    );
    // A person has no business in the operators' pages.
    browser.goto(&format!("{admin}/console/log")).await.unwrap();
    let main = wait_for(&browser, "main", "tracker-operator-page").await;
    assert!(main.text().await.unwrap().contains("Not allowed"));
    // Signed out by the button: the list is gone.
    browser.goto(&format!("{admin}/console/me")).await.unwrap();
    wait_for(&browser, ".signout button", "tracker-signout-missing")
        .await
        .click()
        .await
        .unwrap();
    // The sign-out's answer lands on the sign-in page before anything else is opened.
    wait_for(&browser, "#token", "tracker-signed-out-missing").await;
    browser.goto(&format!("{admin}/console/me")).await.unwrap();
    wait_for(&browser, "#log-in", "tracker-signed-out-again").await;

    // The other person sees only their own.
    log_in(&browser, &admin, SOMEONE_ELSE, &axe).await;
    let text = wait_for(&browser, "#lookups", "tracker-other-missing")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("child care 3/2026") && !text.contains("housing benefit"),
        "{text}"
    );
    // Someone nobody looked up is told so.
    browser.goto(&format!("{admin}/console/me")).await.unwrap();
    wait_for(&browser, ".signout button", "tracker-signout-2")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#token", "tracker-signed-out-2-missing").await;
    log_in(&browser, &admin, "0303903456", &axe).await;
    wait_for(&browser, "#no-lookups", "tracker-nobody-missing").await;
    press(&browser, Key::Tab).await;
    let _ = browser.close().await;

    // The way back from the login, played by someone else: without the browser's
    // login cookie, with a made-up state, or with a code but another login's
    // cookie, nobody is signed in.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(format!("{admin}/console/me/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = pages::cookie_of(&login);
    let state = cookie.split('=').nth(1).unwrap().to_owned();
    for (query, with_cookie) in [
        (format!("code=made-up&state={state}"), None),
        (
            "code=made-up&state=made-up".to_owned(),
            Some(cookie.as_str()),
        ),
        (format!("code=made-up&state={state}"), Some(cookie.as_str())),
        // The state was spent by the last attempt.
        (format!("code=made-up&state={state}"), Some(cookie.as_str())),
    ] {
        let mut req = http.get(format!("{admin}/console/me/callback?{query}"));
        if let Some(c) = with_cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 303);
        assert_eq!(resp.headers()["location"], "/console/me?failed", "{query}");
        assert!(resp.headers().get("set-cookie").is_none());
    }
    net.stop().await;
}
