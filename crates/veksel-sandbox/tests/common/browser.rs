//! A real browser for the tests: Debian's chromium through chromedriver (in its own
//! process group, stopped with the test), axe-core from npm for accessibility scans,
//! screenshots kept in `target/tmp/screenshots`, and keys pressed where the focus is.

pub fn axe_source() -> String {
    use std::process::Command;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("axe-core");
    let script = dir.join("package").join("axe.min.js");
    if !script.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["pack", "axe-core@4.10.3", "--silent"])
            .current_dir(&dir)
            .output()
            .expect("npm is installed");
        assert!(
            out.status.success(),
            "npm pack axe-core (needs the registry once): {out:?}"
        );
        let out = Command::new("tar")
            .args(["xzf", "axe-core-4.10.3.tgz", "package/axe.min.js"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    std::fs::read_to_string(script).unwrap()
}

/// chromedriver on a free loopback port, stopped when dropped.
pub struct Chromedriver {
    child: std::process::Child,
    pub url: String,
}

impl Chromedriver {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        use std::os::unix::process::CommandExt;
        // Its own process group, so that stopping it stops the browsers it started
        // even when a test fails before closing its session.
        let mut child = std::process::Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Debian's chromium-driver is installed (.ci/run installs it)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{url}/status")).await.is_ok() {
                return Self { child, url };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not start");
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Runs axe-core in the page; returns its violations as `id: help (nodes)`.
pub async fn axe_violations(browser: &fantoccini::Client, axe: &str) -> Vec<String> {
    let step = std::time::Duration::from_secs(30);
    tokio::time::timeout(step, browser.execute(axe, vec![]))
        .await
        .expect("axe-core loads within 30 s")
        .unwrap();
    let found = tokio::time::timeout(step, browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']})
               .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' (' + v.nodes.length + ')')))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        ))
        .await
        .expect("axe-core answers within 30 s")
        .unwrap();
    serde_json::from_value(found).unwrap()
}

pub async fn screenshot(browser: &fantoccini::Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Presses a key where the keyboard focus is, as a person would.
pub async fn press(browser: &fantoccini::Client, key: fantoccini::key::Key) {
    type_keys(browser, &char::from(key).to_string()).await;
}

/// Types keys where the keyboard focus is.
pub async fn type_keys(browser: &fantoccini::Client, keys: &str) {
    let focused = browser.active_element().await.unwrap();
    focused.send_keys(keys).await.unwrap();
}

/// An attribute of the element that has the keyboard focus.
pub async fn focused_attr(browser: &fantoccini::Client, name: &str) -> Option<String> {
    let focused = browser.active_element().await.unwrap();
    focused.attr(name).await.unwrap()
}

/// A headless chromium session with `args` added to the usual ones.
pub async fn chromium(driver: &Chromedriver, args: &[String]) -> fantoccini::Client {
    let mut all = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1100,900".into(),
        "--lang=en-GB".into(),
    ];
    all.extend(args.iter().cloned());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": "/usr/bin/chromium", "args": all}),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// The SPKI pin of the authority's TLS certificate, for chromium to trust it
/// without trusting anything else.
pub fn spki_pin(cert_pem: &std::path::Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
        super::path(cert_pem)
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Waits up to 15 s for an element, keeping a screenshot named `shot` (and failing
/// with the page's source) if it never comes.
pub async fn wait_for(
    browser: &fantoccini::Client,
    css: &str,
    shot: &str,
) -> fantoccini::elements::Element {
    match browser
        .wait()
        .at_most(std::time::Duration::from_secs(15))
        .for_element(fantoccini::Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(_) => {
            screenshot(browser, shot).await;
            panic!("{css} did not appear: {}", browser.source().await.unwrap());
        }
    }
}

/// A chromium session that trusts the sandbox authority's TLS certificate (by its
/// SPKI pin) and nothing else besides the system's roots.
pub async fn chromium_trusting_authority(
    driver: &Chromedriver,
    net: &super::Net,
) -> fantoccini::Client {
    let tls_cert = net
        .sandbox()
        .info
        .authority_ca_file
        .with_file_name("tls.pem");
    chromium(
        driver,
        &[format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_pin(&tls_cert)
        )],
    )
    .await
}

/// The text of the element `css`.
pub async fn text_of(browser: &fantoccini::Client, css: &str) -> String {
    browser
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits up to 15 s for an element whose text contains `needle` (the page before
/// may have had the element with other text); its text.
pub async fn wait_text(
    browser: &fantoccini::Client,
    css: &str,
    needle: &str,
    shot: &str,
) -> String {
    for _ in 0..150 {
        if let Ok(e) = browser.find(fantoccini::Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && t.contains(needle)
        {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    screenshot(browser, shot).await;
    panic!(
        "no {css} with {needle:?}: {}",
        browser.source().await.unwrap()
    );
}

pub async fn click(browser: &fantoccini::Client, locator: fantoccini::Locator<'_>) {
    browser.find(locator).await.unwrap().click().await.unwrap();
}

/// Keeps a screenshot of the page and checks it with axe-core.
pub async fn no_violations(browser: &fantoccini::Client, axe: &str, page: &str) {
    screenshot(browser, page).await;
    assert_eq!(
        axe_violations(browser, axe).await,
        Vec::<String>::new(),
        "axe on {page}"
    );
}
