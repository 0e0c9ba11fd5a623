//! Browser sign-in over real HTTP: the application behind the layer with its login routes, the
//! test issuer as the OpenID provider, a cookie-keeping client as the browser, SQLite (and
//! PostgreSQL for several servers) as the store.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::browser::{Browser, Page};
use common::stores::{Backend, Db};
use common::{LogCapture, PgDatabase, user_json};
use serde_json::Value;
use tower_jit_provisioning::login::BrowserLogin;
use tower_jit_provisioning::testing::{ClientAuth, SignInFault, TestIssuer};
use tower_jit_provisioning::{
    AttributeMapping, AuditKind, Issuer, ProvisionedUser, ProvisioningLayer, UserStore,
};

/// One application server: the layer with browser login, its routes, `/me` and `/maybe`.
struct App {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Settings = fn(BrowserLogin) -> BrowserLogin;

/// `idp` as an issuer people sign in at with a browser, with the test issuer's client.
fn browser_issuer(idp: &TestIssuer) -> Issuer {
    idp.issuer().browser_client(
        TestIssuer::CLIENT_ID,
        Some(TestIssuer::CLIENT_SECRET.into()),
    )
}

impl App {
    async fn start<S: UserStore + Clone>(idp: &TestIssuer, store: S) -> Self {
        Self::start_with(idp, store, None, |login| login).await
    }

    /// Starts on `port` (a fresh one when `None`), the login settings adjusted by `settings`.
    async fn start_with<S: UserStore + Clone>(
        idp: &TestIssuer,
        store: S,
        port: Option<u16>,
        settings: Settings,
    ) -> Self {
        Self::launch(vec![browser_issuer(idp)], store, port, settings).await
    }

    /// Starts with these issuers, the first the default one.
    async fn launch<S: UserStore + Clone>(
        issuers: Vec<Issuer>,
        store: S,
        port: Option<u16>,
        settings: Settings,
    ) -> Self {
        // The public URL must be known before the layer is built: bind first, then build.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut builder = ProvisioningLayer::builder();
        for issuer in issuers {
            builder = builder.issuer(issuer);
        }
        let layer = builder
            .browser_login(settings(BrowserLogin::new(base.as_str())))
            .store(store)
            .mapping(AttributeMapping::new().group_role("staff", "staff-role"))
            .optional(true)
            .build()
            .unwrap();
        let app = Router::new()
            .route(
                "/me",
                get(|user: ProvisionedUser| async move { axum::Json(user_json(&user)) }),
            )
            .route(
                "/maybe",
                get(|user: Option<ProvisionedUser>| async move {
                    axum::Json(user.map_or(Value::Null, |u| user_json(&u)))
                }),
            )
            .route("/orders", get(|| async { "orders" }))
            .merge(layer.login_router())
            .layer(layer);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, task }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs `who` in with `browser`, through the issuer and back; the callback's response.
    async fn sign_in(&self, browser: &Browser, who: &str, return_to: Option<&str>) -> Page {
        let callback = self.callback_url(browser, who, return_to).await;
        browser.get(&callback).await
    }

    /// Starts a sign-in and lets the issuer sign `who` in; the callback URL it sent back.
    async fn callback_url(&self, browser: &Browser, who: &str, return_to: Option<&str>) -> String {
        let mut login = format!("{}?login_hint={who}", self.url("/login"));
        if let Some(path) = return_to {
            login.push_str(&format!("&return_to={}", urlencode(path)));
        }
        let start = browser.get(&login).await;
        assert_eq!(start.status, 303, "{}", start.body);
        let authorize = start.location.unwrap();
        let issued = browser.get(&authorize).await;
        assert_eq!(issued.status, 302, "{}", issued.body);
        issued.location.unwrap()
    }

    async fn me(&self, browser: &Browser) -> Page {
        browser.get(&self.url("/me")).await
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn query(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_query(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(name, value);
    parsed.to_string()
}

impl Db {
    async fn app(&self, idp: &TestIssuer) -> App {
        self.app_with(idp, None, |login| login).await
    }

    async fn app_with(&self, idp: &TestIssuer, port: Option<u16>, settings: Settings) -> App {
        with_store!(self, store => App::start_with(idp, store.clone(), port, settings).await)
    }

    async fn app_for(&self, issuers: Vec<Issuer>, settings: Settings) -> App {
        with_store!(self, store => App::launch(issuers, store.clone(), None, settings).await)
    }
}

on_every_store!(
    "login";
    a_first_browser_sign_in_creates_the_account_and_a_session,
    tampered_foreign_or_reused_state_and_reused_codes_sign_nobody_in,
    a_planted_session_id_never_becomes_a_signed_in_one,
    return_to_accepts_only_paths_of_this_site,
    logout_is_a_same_origin_post_that_ends_the_session_server_side,
    an_issuer_error_writes_nothing_and_echoes_nothing,
    a_deactivation_or_deletion_refuses_the_next_request_of_the_session,
    sessions_survive_a_restart,
    backchannel_logout_by_sid_and_by_sub_ends_sessions_once,
    idle_and_absolute_timeouts_end_sessions,
    bearer_and_cookie_requests_get_the_same_account,
    the_authorization_request_is_by_the_book,
    a_bad_id_token_from_the_token_endpoint_signs_nobody_in,
    the_application_picks_one_of_several_issuers_per_request,
    the_client_authenticates_as_the_issuer_advertises,
    behind_https_cookies_are_secure_and_host_prefixed,
    a_refused_or_deactivated_person_gets_no_account_and_no_session,
);

async fn a_first_browser_sign_in_creates_the_account_and_a_session(backend: Backend) {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let browser = Browser::new();

    // Signed out: `/me` is 401 (never a redirect), `/maybe` is null.
    assert_eq!(app.me(&browser).await.status, 401);
    let callback_url = app.callback_url(&browser, "alice", Some("/orders")).await;
    let code = query(&callback_url, "code").unwrap();
    let state = query(&callback_url, "state").unwrap();
    let callback = browser.get(&callback_url).await;
    assert_eq!(callback.status, 303, "{}", callback.body);
    assert_eq!(callback.location.as_deref(), Some("/orders"));
    let session = callback
        .set_cookies
        .iter()
        .find(|c| c.starts_with("jit_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(session.contains(attribute), "{session}");
    }
    let id = browser.cookie("jit_session").unwrap();
    assert_eq!(id.len(), 43, "256 random bits, base64url");

    let me = app.me(&browser).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let user: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(user["subject"], "alice");
    assert_eq!(user["issuer"], idp.url());
    assert_eq!(user["source"], "browser_oidc");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["roles"], serde_json::json!(["staff-role"]));

    // The same person again: the same account, a new session.
    let again = Browser::new();
    app.sign_in(&again, "alice", None).await;
    let second: Value = serde_json::from_str(&app.me(&again).await.body).unwrap();
    assert_eq!(second["id"], user["id"]);
    assert_ne!(again.cookie("jit_session"), browser.cookie("jit_session"));
    assert_eq!(db.users().await.len(), 1);
    let events = db.audit().await;
    assert_eq!(events[0].kind, AuditKind::Provisioned);
    assert_eq!(events[0].source.as_deref(), Some("browser_oidc"));

    // The store keeps only the id's hash.
    let rows = db.session_hashes().await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|hash| *hash != id && hash.len() == 64));

    // Nothing of the exchange reaches the logs.
    let logged = logs.text();
    for secret in [&code, &state, &id] {
        assert!(!logged.contains(secret.as_str()), "a secret was logged");
    }
}

async fn tampered_foreign_or_reused_state_and_reused_codes_sign_nobody_in(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;

    // A tampered state.
    let browser = Browser::new();
    let callback = app.callback_url(&browser, "alice", None).await;
    let tampered = with_query(
        &callback,
        "state",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    assert_eq!(browser.get(&tampered).await.status, 400);
    let missing = with_query(&callback, "state", "");
    assert_eq!(browser.get(&missing).await.status, 400);

    // The state of a flow another browser started (login CSRF): refused, and spent.
    let victim = Browser::new();
    let attacker = Browser::new();
    let attackers = app.callback_url(&attacker, "mallory", None).await;
    assert_eq!(victim.get(&attackers).await.status, 400);
    assert_eq!(attacker.get(&attackers).await.status, 400, "spent");

    // A state used once: never again, even by the browser that started it.
    let honest = Browser::new();
    let callback = app.callback_url(&honest, "bob", None).await;
    assert_eq!(honest.get(&callback).await.status, 303);
    let replayed = Browser::new();
    replayed.set_cookie("jit_flow", &honest.cookie("jit_flow").unwrap());
    assert_eq!(replayed.get(&callback).await.status, 400);
    assert_eq!(honest.get(&callback).await.status, 400);

    // A code already redeemed, under a fresh flow's state: the issuer refuses it.
    let code = query(&callback, "code").unwrap();
    let fresh = app.callback_url(&honest, "carol", None).await;
    let reused = with_query(&fresh, "code", &code);
    let before = idp.token_requests();
    assert_eq!(honest.get(&reused).await.status, 400);
    assert_eq!(idp.token_requests(), before + 1);

    // Only bob ever signed in.
    let users = db.users().await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].email.as_deref(), Some("bob@example.com"));
}

async fn a_planted_session_id_never_becomes_a_signed_in_one(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    // The attacker signs in as themselves and plants their session cookie in the victim's
    // browser; the victim then signs in.
    let attacker = Browser::new();
    app.sign_in(&attacker, "bob", None).await;
    let planted = attacker.cookie("jit_session").unwrap();
    let victim = Browser::new();
    victim.set_cookie("jit_session", &planted);
    assert_eq!(app.me(&victim).await.status, 200, "bob's session, planted");
    app.sign_in(&victim, "alice", None).await;
    let fresh = victim.cookie("jit_session").unwrap();
    assert_ne!(fresh, planted, "a new id at sign-in");
    let me: Value = serde_json::from_str(&app.me(&victim).await.body).unwrap();
    assert_eq!(me["subject"], "alice");
    // The planted session was ended with the sign-in.
    assert_eq!(app.me(&attacker).await.status, 401);
}

async fn return_to_accepts_only_paths_of_this_site(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    for bad in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "/..//evil.example",
        "/%2e%2e//evil.example",
        "evil.example",
    ] {
        let url = format!("{}?return_to={}", app.url("/login"), urlencode(bad));
        let page = browser.get(&url).await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.location.is_none());
    }
    let signed_in = app
        .sign_in(&browser, "alice", Some("/orders?tab=open"))
        .await;
    assert_eq!(signed_in.location.as_deref(), Some("/orders?tab=open"));
    let unknown = browser
        .get(&format!(
            "{}?issuer={}",
            app.url("/login"),
            urlencode("https://evil.example")
        ))
        .await;
    assert_eq!(unknown.status, 400);
}

async fn logout_is_a_same_origin_post_that_ends_the_session_server_side(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    app.sign_in(&browser, "alice", None).await;
    let other_port = format!("http://127.0.0.1:{}", app.port() + 1);
    for origin in [
        "http://evil.example",
        "null",
        other_port.as_str(),
        "https://127.0.0.1",
    ] {
        let refused = browser.post(&app.url("/logout"), Some(origin)).await;
        assert_eq!(refused.status, 403, "{origin}");
        assert_eq!(app.me(&browser).await.status, 200, "{origin}: session kept");
    }
    // No Origin and no Sec-Fetch-Site: refused too.
    assert_eq!(browser.post(&app.url("/logout"), None).await.status, 403);
    // GET never ends a session.
    let get = browser.get(&app.url("/logout")).await;
    assert_eq!(get.status, 405);
    assert_eq!(app.me(&browser).await.status, 200);

    let copy = browser.cookie("jit_session").unwrap();
    let out = browser.post(&app.url("/logout"), Some(&app.base)).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location.as_deref(), Some("/"));
    assert!(
        browser.cookie("jit_session").is_none(),
        "the cookie is cleared"
    );
    // Ended server-side: the old id is worth nothing.
    let replay = Browser::new();
    replay.set_cookie("jit_session", &copy);
    assert_eq!(app.me(&replay).await.status, 401);
    let maybe = replay.get(&app.url("/maybe")).await;
    assert_eq!(maybe.body, "null");
}

async fn an_issuer_error_writes_nothing_and_echoes_nothing(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    let start = browser
        .get(&format!("{}?login_hint=deny", app.url("/login")))
        .await;
    let denied = browser.get(&start.location.unwrap()).await;
    let callback = denied.location.unwrap();
    assert_eq!(query(&callback, "error").as_deref(), Some("access_denied"));
    let injected = with_query(&callback, "error_description", "<script>alert(1)</script>");
    let page = browser.get(&injected).await;
    assert_eq!(page.status, 403);
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(browser.cookie("jit_session").is_none());
    assert!(db.users().await.is_empty());
    // An unknown error code is not echoed either.
    let odd = with_query(&callback, "error", "<b>x</b>");
    let page = browser.get(&odd).await;
    assert_eq!(page.status, 400);
    assert!(!page.body.contains("<b>"));
}

async fn a_deactivation_or_deletion_refuses_the_next_request_of_the_session(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    app.sign_in(&browser, "alice", None).await;
    let me: Value = serde_json::from_str(&app.me(&browser).await.body).unwrap();
    let id = me["id"].as_str().unwrap().parse().unwrap();
    db.deactivate(id).await;
    assert_eq!(app.me(&browser).await.status, 401);
    db.reactivate(id).await;
    assert_eq!(
        app.me(&browser).await.status,
        401,
        "reactivation revives no session"
    );

    let other = Browser::new();
    app.sign_in(&other, "alice", None).await;
    assert_eq!(app.me(&other).await.status, 200);
    db.delete(id).await;
    assert_eq!(app.me(&other).await.status, 401);
}

async fn sessions_survive_a_restart(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let first = db.app(&idp).await;
    let browser = Browser::new();
    first.sign_in(&browser, "alice", None).await;
    assert_eq!(first.me(&browser).await.status, 200);
    let port = first.port();
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let db = db.reopened().await;
    let second = db.app_with(&idp, Some(port), |login| login).await;
    assert_eq!(second.me(&browser).await.status, 200);
}

async fn backchannel_logout_by_sid_and_by_sub_ends_sessions_once(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let first = Browser::new();
    let second = Browser::new();
    app.sign_in(&first, "alice", None).await;
    app.sign_in(&second, "alice", None).await;
    let sids = idp.sids("alice");
    assert_eq!(sids.len(), 2);
    let endpoint = app.url("/backchannel-logout");

    // By `sid`: that session only.
    let token = idp
        .logout_token()
        .subject("alice")
        .claim("sid", sids[0].as_str())
        .sign();
    assert_eq!(idp.send_backchannel_logout(&endpoint, &token).await, 200);
    assert_eq!(app.me(&first).await.status, 401);
    assert_eq!(app.me(&second).await.status, 200);
    // Replayed: refused, ends nothing.
    assert_eq!(idp.send_backchannel_logout(&endpoint, &token).await, 400);

    // Invalid tokens end nothing: no event, a nonce, no sub or sid, another audience, another
    // issuer's key, an edited payload, expired.
    let other_issuer = TestIssuer::start().await;
    let edited = {
        let token = idp.logout_token().subject("nobody").sign();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(engine.decode(&parts[1]).unwrap())
            .unwrap()
            .replace("nobody", "alice");
        parts[1] = engine.encode(payload);
        parts.join(".")
    };
    let invalid = [
        idp.logout_token()
            .subject("alice")
            .without_claim("events")
            .sign(),
        idp.logout_token()
            .subject("alice")
            .claim("nonce", "n")
            .sign(),
        idp.logout_token().sign(),
        idp.logout_token()
            .subject("alice")
            .audience("someone-else")
            .sign(),
        other_issuer
            .logout_token()
            .subject("alice")
            .claim("iss", idp.url())
            .sign(),
        edited,
        idp.logout_token()
            .subject("alice")
            .expires_at(chrono::Utc::now().timestamp() - 600)
            .sign(),
        idp.id_token().subject("alice").sign(),
    ];
    for token in &invalid {
        assert_eq!(idp.send_backchannel_logout(&endpoint, token).await, 400);
        assert_eq!(app.me(&second).await.status, 200, "ended nothing");
    }

    // By `sub` alone: every session of that person at that issuer.
    let third = Browser::new();
    app.sign_in(&third, "alice", None).await;
    let bob = Browser::new();
    app.sign_in(&bob, "bob", None).await;
    let token = idp.logout_token().subject("alice").sign();
    assert_eq!(idp.send_backchannel_logout(&endpoint, &token).await, 200);
    assert_eq!(app.me(&second).await.status, 401);
    assert_eq!(app.me(&third).await.status, 401);
    assert_eq!(app.me(&bob).await.status, 200);
    let logged_out = db
        .audit()
        .await
        .into_iter()
        .filter(|e| e.kind == AuditKind::LoggedOut)
        .count();
    assert_eq!(logged_out, 2);
}

async fn idle_and_absolute_timeouts_end_sessions(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db
        .app_with(&idp, None, |login| {
            login
                .idle_timeout(Duration::from_secs(2))
                .absolute_timeout(Duration::from_secs(4))
                .last_seen_interval(Duration::from_millis(200))
        })
        .await;
    // Idle: unused for longer than the idle timeout.
    let idle = Browser::new();
    app.sign_in(&idle, "alice", None).await;
    assert_eq!(app.me(&idle).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(app.me(&idle).await.status, 401);

    // Absolute: used all along, still ended.
    let busy = Browser::new();
    app.sign_in(&busy, "bob", None).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        assert_eq!(
            app.me(&busy).await.status,
            200,
            "used within the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.me(&busy).await.status, 401);
}

async fn bearer_and_cookie_requests_get_the_same_account(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    app.sign_in(&browser, "alice", None).await;
    let by_cookie: Value = serde_json::from_str(&app.me(&browser).await.body).unwrap();
    let token = idp
        .id_token()
        .subject("alice")
        .email("alice@example.com", true)
        .sign();
    let by_token = common::get_with(&reqwest::Client::new(), &app.url("/me"), Some(&token)).await;
    assert_eq!(by_token.status, 200);
    assert_eq!(by_token.json()["id"], by_cookie["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn two_servers_on_one_postgres_share_sessions_and_their_ends() {
    let db = PgDatabase::create("login::two_servers").await;
    let idp = TestIssuer::start().await;
    let store_a = db.store().await;
    let store_b = db.store().await;
    for store in [&store_a, &store_b] {
        let started = Instant::now();
        while !store.is_listening() {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let a = App::start(&idp, store_a.clone()).await;
    let b = App::start(&idp, store_b.clone()).await;
    let browser = Browser::new();
    a.sign_in(&browser, "alice", None).await;
    // The same cookie on the other server (as behind a load balancer).
    assert_eq!(b.me(&browser).await.status, 200);
    let me: Value = serde_json::from_str(&b.me(&browser).await.body).unwrap();

    // A deactivation through one server refuses the session on the other within a second.
    store_a
        .deactivate(me["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    while b.me(&browser).await.status != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A back-channel logout received by one server ends the session on the other.
    let other = Browser::new();
    a.sign_in(&other, "bob", None).await;
    assert_eq!(b.me(&other).await.status, 200);
    let token = idp.logout_token().subject("bob").sign();
    assert_eq!(
        idp.send_backchannel_logout(&a.url("/backchannel-logout"), &token)
            .await,
        200
    );
    let started = Instant::now();
    while b.me(&other).await.status != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a logout on one server holds on the other.
    let third = Browser::new();
    a.sign_in(&third, "carol", None).await;
    assert_eq!(b.me(&third).await.status, 200);
    assert_eq!(b.post(&b.url("/logout"), &third).await.status, 303);
    let started = Instant::now();
    while a.me(&third).await.status != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl App {
    async fn post(&self, url: &str, browser: &Browser) -> Page {
        browser.post(url, Some(&self.base)).await
    }
}

async fn the_authorization_request_is_by_the_book(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db
        .app_for(
            vec![browser_issuer(&idp).browser_scopes(["groups", "offline_access"])],
            |login| login,
        )
        .await;
    let browser = Browser::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        // Neither `Host` nor `X-Forwarded-*` moves the redirect URI.
        let request = browser
            .client
            .get(app.url("/login"))
            .header("host", "evil.example")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "https");
        let start = browser.send(request).await;
        assert_eq!(start.status, 303);
        let authorize = start.location.unwrap();
        assert!(authorize.starts_with(&format!("{}/authorize?", idp.url())));
        let param = |name: &str| query(&authorize, name).unwrap_or_default();
        assert_eq!(param("response_type"), "code");
        assert_eq!(param("client_id"), TestIssuer::CLIENT_ID);
        assert_eq!(param("redirect_uri"), app.url("/callback"));
        assert_eq!(param("code_challenge_method"), "S256");
        assert_eq!(param("code_challenge").len(), 43);
        let scopes: Vec<String> = param("scope").split(' ').map(str::to_owned).collect();
        for scope in ["openid", "email", "profile", "groups", "offline_access"] {
            assert!(scopes.iter().any(|s| s == scope), "{scopes:?}");
        }
        // At least 128 bits each, base64url.
        assert!(param("state").len() >= 22 && param("nonce").len() >= 22);
        assert_ne!(param("state"), param("nonce"));
        seen.extend([param("state"), param("nonce"), param("code_challenge")]);

        // The flow is bound to this browser by a short-lived cookie.
        let flow = start
            .set_cookies
            .iter()
            .find(|c| c.starts_with("jit_flow="))
            .expect("a flow cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
            assert!(flow.contains(attribute), "{flow}");
        }
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "fresh secrets for every flow");
}

async fn a_bad_id_token_from_the_token_endpoint_signs_nobody_in(backend: Backend) {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db.app(&idp).await;
    for fault in [
        SignInFault::WrongNonce,
        SignInFault::NoNonce,
        SignInFault::AccessTokenHashMismatch,
        SignInFault::WrongAudience,
        SignInFault::Expired,
        SignInFault::UnknownKey,
        SignInFault::NoIdToken,
        SignInFault::ServerError,
    ] {
        idp.set_sign_in_fault(Some(fault));
        let browser = Browser::new();
        let callback = app.callback_url(&browser, "alice", None).await;
        let page = browser.get(&callback).await;
        assert!(
            (400..500).contains(&page.status) || page.status == 502,
            "{fault:?}: {}",
            page.status
        );
        assert!(page.location.is_none(), "{fault:?}");
        assert!(browser.cookie("jit_session").is_none(), "{fault:?}");
        assert!(db.users().await.is_empty(), "{fault:?}");
        assert!(db.session_hashes().await.is_empty(), "{fault:?}");
        let code = query(&callback, "code").unwrap();
        assert!(
            !logs.text().contains(&code),
            "{fault:?}: the code was logged"
        );
    }
    // The same issuer, behaving: the sign-in works.
    idp.set_sign_in_fault(None);
    let browser = Browser::new();
    assert_eq!(app.sign_in(&browser, "alice", None).await.status, 303);
    assert_eq!(app.me(&browser).await.status, 200);
}

async fn the_application_picks_one_of_several_issuers_per_request(backend: Backend) {
    let first = TestIssuer::start().await;
    let second = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db
        .app_for(
            vec![browser_issuer(&first), browser_issuer(&second)],
            |login| login,
        )
        .await;

    // Without `issuer`: the first.
    let browser = Browser::new();
    app.sign_in(&browser, "alice", None).await;
    let at_first: Value = serde_json::from_str(&app.me(&browser).await.body).unwrap();
    assert_eq!(at_first["issuer"], first.url());

    // With the exact issuer URL: that one.
    let other = Browser::new();
    let login = format!(
        "{}?issuer={}&login_hint=alice",
        app.url("/login"),
        urlencode(second.url())
    );
    let start = other.get(&login).await;
    let authorize = start.location.unwrap();
    assert!(authorize.starts_with(&format!("{}/authorize?", second.url())));
    let issued = other.get(&authorize).await;
    assert_eq!(other.get(&issued.location.unwrap()).await.status, 303);
    let at_second: Value = serde_json::from_str(&app.me(&other).await.body).unwrap();
    assert_eq!(at_second["issuer"], second.url());
    // The same `sub` at two issuers is two people.
    assert_eq!(at_second["subject"], at_first["subject"]);
    assert_ne!(at_second["id"], at_first["id"]);
    assert_eq!(db.users().await.len(), 2);

    // A code from one issuer, under a flow started for the other: the flow's issuer refuses it.
    let mixed = Browser::new();
    let for_first = app.callback_url(&mixed, "bob", None).await;
    let elsewhere = Browser::new();
    let start = elsewhere
        .get(&format!(
            "{}?issuer={}&login_hint=bob",
            app.url("/login"),
            urlencode(second.url())
        ))
        .await;
    let from_second = elsewhere
        .get(&start.location.unwrap())
        .await
        .location
        .unwrap();
    let swapped = with_query(&for_first, "code", &query(&from_second, "code").unwrap());
    assert_eq!(mixed.get(&swapped).await.status, 400);
    assert!(mixed.cookie("jit_session").is_none());
    assert_eq!(db.users().await.len(), 2);

    // Not one of ours, or not exactly: 400.
    for unknown in [
        "https://evil.example",
        &format!("{}/", first.url()),
        &first.url().to_uppercase(),
    ] {
        let page = browser
            .get(&format!(
                "{}?issuer={}",
                app.url("/login"),
                urlencode(unknown)
            ))
            .await;
        assert_eq!(page.status, 400, "{unknown}");
    }
}

async fn the_client_authenticates_as_the_issuer_advertises(backend: Backend) {
    for auth in [ClientAuth::Post, ClientAuth::Basic] {
        let idp = TestIssuer::start().await;
        // Before the application reads discovery.
        idp.set_client_auth(auth);
        let db = Db::open(backend).await;
        let app = db.app(&idp).await;
        let browser = Browser::new();
        let signed_in = app.sign_in(&browser, "alice", None).await;
        assert_eq!(signed_in.status, 303, "{auth:?}: {}", signed_in.body);
        assert_eq!(app.me(&browser).await.status, 200, "{auth:?}");
        assert_eq!(idp.token_requests(), 1, "{auth:?}: first time right");
    }
}

async fn behind_https_cookies_are_secure_and_host_prefixed(backend: Backend) {
    // A TLS-terminating proxy in front: the public URL is https, the server speaks http.
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    let app = db
        .app_for(vec![browser_issuer(&idp)], |_| {
            BrowserLogin::new("https://app.example")
        })
        .await;
    let browser = Browser::new();
    let start = browser
        .get(&format!("{}?login_hint=alice", app.url("/login")))
        .await;
    let flow = start
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-jit_flow="))
        .expect("a __Host- flow cookie");
    assert!(flow.contains("Secure") && flow.contains("Path=/") && !flow.contains("Domain"));
    let authorize = start.location.unwrap();
    assert_eq!(
        query(&authorize, "redirect_uri").as_deref(),
        Some("https://app.example/callback")
    );
    let callback = browser.get(&authorize).await.location.unwrap();
    assert!(callback.starts_with("https://app.example/callback?"));
    let reached = callback.replace("https://app.example", &app.base);
    let signed_in = browser.get(&reached).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let session = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-jit_session="))
        .expect("a __Host- session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Domain"), "{session}");
    assert_eq!(app.me(&browser).await.status, 200);
    // A cookie without the prefix is not the session cookie here.
    let unprefixed = Browser::new();
    unprefixed.set_cookie(
        "jit_session",
        &browser.cookie("__Host-jit_session").unwrap(),
    );
    assert_eq!(app.me(&unprefixed).await.status, 401);
    // Logout: the public origin is the only same origin.
    assert_eq!(
        browser
            .post(&app.url("/logout"), Some(&app.base))
            .await
            .status,
        403
    );
    let out = browser
        .post(&app.url("/logout"), Some("https://app.example"))
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(app.me(&browser).await.status, 401);
}

async fn a_refused_or_deactivated_person_gets_no_account_and_no_session(backend: Backend) {
    let idp = TestIssuer::start().await;
    let db = Db::open(backend).await;
    // Only `example.org` may have accounts: the test users are at `example.com`.
    let strict = db
        .app_for(
            vec![browser_issuer(&idp).allowed_domains(["example.org"])],
            |login| login,
        )
        .await;
    let browser = Browser::new();
    let refused = strict.sign_in(&browser, "alice", None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.location.is_none());
    assert!(browser.cookie("jit_session").is_none());
    assert!(db.users().await.is_empty());
    assert!(db.session_hashes().await.is_empty());
    drop(strict);

    // A deactivated account signs in at the issuer, and is still refused here.
    let app = db.app(&idp).await;
    app.sign_in(&browser, "alice", None).await;
    let me: Value = serde_json::from_str(&app.me(&browser).await.body).unwrap();
    db.deactivate(me["id"].as_str().unwrap().parse().unwrap())
        .await;
    let again = Browser::new();
    let refused = app.sign_in(&again, "alice", None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(again.cookie("jit_session").is_none());
    assert!(db.session_hashes().await.is_empty(), "ended, none new");
}
