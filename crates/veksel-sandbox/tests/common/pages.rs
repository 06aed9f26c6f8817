//! The console's pages without a browser: a client that keeps no cookies and
//! follows no redirect, sessions signed in with a token, and forms posted with a
//! session's cookie, as another site or a script would send them.

/// A client that keeps no cookies and follows no redirect.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET with a session cookie.
pub async fn get_as(http: &reqwest::Client, url: &str, cookie: &str) -> reqwest::Response {
    http.get(url).header("cookie", cookie).send().await.unwrap()
}

/// A page's HTML, read with a session cookie.
pub async fn page_as(http: &reqwest::Client, url: &str, cookie: &str) -> String {
    get_as(http, url, cookie).await.text().await.unwrap()
}

/// POST a form with a session cookie.
pub async fn post_as(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    form: String,
) -> reqwest::Response {
    http.post(url)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
}

/// Where a redirect sends the browser.
pub fn location(resp: &reqwest::Response) -> &str {
    resp.headers()["location"].to_str().unwrap()
}

/// Signs in with `token`; the session cookie.
pub async fn session(http: &reqwest::Client, admin: &str, token: &str) -> String {
    let resp = http
        .post(format!("{admin}/console/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Strict"),
        "{set}"
    );
    cookie_of(&resp)
}

/// The `name=value` of the cookie an answer sets.
pub fn cookie_of(resp: &reqwest::Response) -> String {
    resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The CSRF token of the page at `path`.
pub async fn csrf_of(http: &reqwest::Client, admin: &str, cookie: &str, path: &str) -> String {
    let page = page_as(http, &format!("{admin}{path}"), cookie).await;
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with its token")
        + 19;
    page[at..].split('"').next().unwrap().to_owned()
}
