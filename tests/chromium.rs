//! The whole browser sign-in in a real headless Chromium, driven through WebDriver: the
//! reference server with no settings, its development issuer's sign-in page, the callback, the
//! signed-in page, and sign-out.
//!
//! Needs Chromium and its driver (Debian: `chromium`, `chromium-driver`); `bash .ci/run`
//! installs them and sets `JIT_TEST_CHROMEDRIVER`. Without it the test shows as ignored, with
//! the reason. `JIT_SCREENSHOT=<file.png>` saves the signed-in page (the README's picture).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::reference::start;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A `chromedriver` on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let path = std::env::var("JIT_TEST_CHROMEDRIVER").expect(
            "this test needs JIT_TEST_CHROMEDRIVER, the path of chromedriver \
             (`bash .ci/run` installs Chromium and sets it)",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(reply) = reqwest::get(format!("{url}/status")).await
                && reply.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    async fn browser(&self) -> Client {
        let mut chrome = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=900,600",
            ],
        });
        if let Ok(binary) = std::env::var("JIT_TEST_CHROMIUM") {
            chrome["binary"] = json!(binary);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), chrome);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the first element `locator` finds.
async fn text_at(browser: &Client, locator: Locator<'_>) -> String {
    browser
        .find(locator)
        .await
        .unwrap_or_else(|e| panic!("{locator:?}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn text_of(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jit_test_chromium),
    ignore = "needs Chromium: install chromium and chromium-driver, set JIT_TEST_CHROMEDRIVER \
              (bash .ci/run does)"
)]
async fn a_person_signs_in_and_out_with_a_real_browser() {
    let db = tempfile::tempdir().unwrap();
    let server = start(&[("JIT_GROUP_ROLES", "staff=staff-role")], &db);
    let driver = Driver::start().await;
    let session = driver.browser().await;
    let browser = session.clone();
    let base = server.base.clone();
    let result = async move {
        browser.goto(&format!("{base}/")).await.unwrap();
        assert_eq!(
            browser
                .find(Locator::Css("h1"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "Signed out"
        );

        // The sign-in link, the issuer's page, a test user.
        browser
            .find(Locator::Id("login"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let picker = browser.current_url().await.unwrap();
        assert!(picker.path().starts_with("/authorize"), "{picker}");
        browser
            .find(Locator::Id("user-alice"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // Back on the application's own page, signed in, the account made on the way.
        let home = browser.current_url().await.unwrap();
        assert_eq!(home.as_str(), format!("{base}/"));
        assert_eq!(text_of(&browser, "name").await, "Alice Liddell");
        assert_eq!(text_of(&browser, "email").await, "alice@example.com");
        assert_eq!(text_of(&browser, "roles").await, "staff-role");
        // The session cookie is out of the page's reach.
        let visible = browser
            .execute("return document.cookie", Vec::new())
            .await
            .unwrap();
        assert!(
            !visible.as_str().unwrap_or_default().contains("jit_session"),
            "{visible}"
        );
        if let Ok(path) = std::env::var("JIT_SCREENSHOT") {
            std::fs::write(&path, browser.screenshot().await.unwrap()).unwrap();
        }
        // The JSON of `/me`, in the same browser.
        browser.goto(&format!("{base}/me")).await.unwrap();
        let body = text_at(&browser, Locator::Css("body")).await;
        let me: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(me["identity"]["subject"], "alice");

        // Sign-out: the form's POST, then signed out for good.
        browser.goto(&format!("{base}/")).await.unwrap();
        browser
            .find(Locator::Id("logout"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The click starts a navigation: the old page's heading may be found, then go stale,
        // before the new page is there. Read until the new page answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let heading = loop {
            let text = match browser.find(Locator::Css("h1")).await {
                Ok(h1) => h1.text().await.ok(),
                Err(_) => None,
            };
            match text {
                Some(text) if text == "Signed out" => break text,
                seen if std::time::Instant::now() > deadline => {
                    panic!("no signed-out page after 10 s; last heading: {seen:?}")
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        assert_eq!(heading, "Signed out");
        browser.goto(&format!("{base}/me")).await.unwrap();
        let body = text_at(&browser, Locator::Css("body")).await;
        assert!(body.contains("sign-in required"), "{body}");
    };
    // Close the session whatever happened, so no Chromium outlives the test.
    let outcome = tokio::spawn(result).await;
    let _ = session.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

/// SAML in a real browser: the IdP (on `localhost`, another site than the application on
/// `127.0.0.1`) posts the response with its page's script, cross-site, so the browser leaves the
/// `SameSite=Lax` binding cookie out of that POST; the sign-in still finishes, on the
/// application's own redirect, in this browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jit_test_chromium),
    ignore = "needs Chromium: install chromium and chromium-driver, set JIT_TEST_CHROMEDRIVER \
              (bash .ci/run does)"
)]
async fn a_person_signs_in_through_saml_with_a_real_browser() {
    use tower_jit_provisioning::testing::{SamlUser, TestSamlIdp};
    let idp = TestSamlIdp::start_as("localhost").await;
    idp.sign_in_as(
        SamlUser::persistent("saml-grace")
            .attribute(
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                ["grace@example.com"],
            )
            .attribute(
                "http://schemas.microsoft.com/identity/claims/displayname",
                ["Grace Hopper"],
            ),
    );
    let db = tempfile::tempdir().unwrap();
    let metadata = idp.metadata_url();
    let server = start(
        &[
            ("JIT_SAML_IDP_METADATA", metadata.as_str()),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ],
        &db,
    );
    let driver = Driver::start().await;
    let session = driver.browser().await;
    let browser = session.clone();
    let base = server.base.clone();
    let entity_id = idp.entity_id();
    let result = async move {
        browser.goto(&format!("{base}/")).await.unwrap();
        browser
            .find(Locator::Id("login-saml"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // To the IdP, its page's POST back, the application's finishing redirect, home.
        let deadline = Instant::now() + Duration::from_secs(15);
        let name = loop {
            let here = browser.current_url().await.unwrap();
            if here.as_str() == format!("{base}/")
                && let Ok(name) = browser.find(Locator::Id("name")).await
                && let Ok(text) = name.text().await
            {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "not signed in after 15 s; at {here}: {}",
                browser.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(name, "Grace Hopper");
        assert_eq!(text_of(&browser, "email").await, "grace@example.com");
        browser.goto(&format!("{base}/me")).await.unwrap();
        let body = text_at(&browser, Locator::Css("body")).await;
        let me: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(me["identity"]["issuer"], entity_id);
        assert_eq!(me["identity"]["subject"], "saml-grace");
        assert_eq!(me["email_verified"], false);
    };
    let outcome = tokio::spawn(result).await;
    let _ = session.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
