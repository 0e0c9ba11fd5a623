//! SAML sign-in over real HTTP: the application with its sign-in routes, the SAML test IdP, a
//! cookie-keeping client as the browser (the IdP's cross-site POST sent without cookies, as a
//! browser sends it past `SameSite=Lax`), SQLite and PostgreSQL as the store.

mod common;

use axum::Router;
use axum::routing::get;
use chrono::{TimeDelta, Utc};
use common::browser::{Browser, Page};
use common::saml::{form_value, post_cross_site};
use common::stores::{Backend, Db};
use common::user_json;
use serde_json::Value;
use tower_jit_provisioning::login::{BrowserLogin, SamlLogin};
use tower_jit_provisioning::testing::{SamlUser, TestSamlIdp, Xsw};
use tower_jit_provisioning::{AttributeMapping, ProvisionedUser, ProvisioningLayer, UserStore};

const OBJECT_ID: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";

/// One application server with SAML sign-in at `idp`.
struct App {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl App {
    async fn start<S: UserStore + Clone>(
        idp: &TestSamlIdp,
        store: S,
        settings: impl FnOnce(SamlLogin) -> SamlLogin,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let saml = settings(
            SamlLogin::new()
                .idp_metadata(idp.metadata())
                .allow_http_endpoints(true),
        );
        let layer = ProvisioningLayer::builder()
            .browser_login(BrowserLogin::new(base.as_str()))
            .saml(saml)
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
            .merge(layer.login_router())
            .layer(layer);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn sp(&self) -> String {
        self.url("/saml/metadata")
    }

    fn acs(&self) -> String {
        self.url("/saml/acs")
    }

    /// Starts a sign-in in `browser`: the AuthnRequest's id, as the IdP received it.
    async fn start_sign_in(&self, browser: &Browser, idp: &TestSamlIdp) -> String {
        let start = browser.get(&self.url("/saml/login")).await;
        assert_eq!(start.status, 303, "{}", start.body);
        let location = start.location.unwrap();
        assert!(location.starts_with(&format!("{}/sso?SAMLRequest=", idp_base(idp))));
        // The IdP reads it (and would sign the person in); the tests craft the answer.
        let reached = reqwest::get(&location).await.unwrap();
        assert_eq!(reached.status(), 200);
        idp.requests().last().unwrap().id.clone()
    }

    /// Posts `encoded` to the ACS as the IdP's page does: cross-site, so without cookies.
    async fn post_response(&self, encoded: &str) -> Page {
        post_cross_site(&self.acs(), encoded).await
    }

    /// Posts `encoded` and, when it is accepted, finishes in `browser`: the last page.
    async fn deliver(&self, browser: &Browser, encoded: &str) -> Page {
        let posted = self.post_response(encoded).await;
        if posted.status != 303 {
            return posted;
        }
        let finish = posted.location.unwrap();
        assert!(finish.starts_with("/saml/acs?finish="), "{finish}");
        browser.get(&self.url(&finish)).await
    }

    /// The whole sign-in of `user` in `browser`, through the IdP's own page.
    async fn sign_in(&self, browser: &Browser, idp: &TestSamlIdp, user: SamlUser) -> Page {
        idp.sign_in_as(user);
        let start = browser.get(&self.url("/saml/login")).await;
        let page = reqwest::get(start.location.unwrap())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let encoded = form_value(&page, "SAMLResponse");
        self.deliver(browser, &encoded).await
    }

    async fn me(&self, browser: &Browser) -> Page {
        browser.get(&self.url("/me")).await
    }
}

fn idp_base(idp: &TestSamlIdp) -> String {
    idp.entity_id().trim_end_matches("/saml").to_owned()
}

fn alice() -> SamlUser {
    SamlUser::persistent("saml-alice")
        .attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            ["alice@example.com"],
        )
        .attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
            ["Alice"],
        )
        .attribute(
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
            ["staff"],
        )
}

impl Db {
    async fn app(&self, idp: &TestSamlIdp) -> App {
        self.app_with(idp, |saml| saml).await
    }

    async fn app_with(
        &self,
        idp: &TestSamlIdp,
        settings: impl FnOnce(SamlLogin) -> SamlLogin,
    ) -> App {
        with_store!(self, store => App::start(idp, store.clone(), settings).await)
    }
}

async fn a_first_saml_sign_in_creates_one_account_and_the_next_reuses_it(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    let done = app.sign_in(&browser, &idp, alice()).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/"));
    let me = app.me(&browser).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["source"], "saml");
    assert_eq!(me["issuer"], idp.entity_id());
    assert_eq!(me["subject"], "saml-alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["email_verified"], false);
    assert_eq!(me["given_name"], "Alice");
    assert_eq!(me["roles"], serde_json::json!(["staff-role"]));
    let request = idp.requests().pop().unwrap();
    assert_eq!(request.acs_url, app.acs());
    assert_eq!(request.issuer, app.sp());
    assert!(!request.signed);

    // The same person again, in another browser: the same account.
    let again = Browser::new();
    assert_eq!(app.sign_in(&again, &idp, alice()).await.status, 303);
    let me_again: Value = serde_json::from_str(&app.me(&again).await.body).unwrap();
    assert_eq!(me_again["id"], me["id"]);
    assert_eq!(db.users().await.len(), 1);
    assert_eq!(db.session_hashes().await.len(), 2);
}

async fn forged_wrapped_and_out_of_bounds_responses_are_refused_and_write_nothing(
    backend: Backend,
) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let impostor = TestSamlIdp::start().await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    let now = Utc::now();
    let mut cases: Vec<(String, String)> = Vec::new();
    let request = app.start_sign_in(&browser, &idp).await;
    let (sp, acs) = (app.sp(), app.acs());
    let base = || {
        idp.response(&alice(), &sp, &acs)
            .in_response_to(request.clone())
    };
    let signed = base().xml();
    for xsw in Xsw::ALL {
        let original = base()
            .signed(!xsw.wraps_response(), xsw.wraps_response())
            .xml();
        cases.push((format!("{xsw:?}"), xsw.apply(&original, "saml-mallory")));
    }
    cases.extend([
        ("unsigned".to_owned(), base().signed(false, false).xml()),
        (
            "signed by another key".to_owned(),
            impostor
                .response(&alice(), &sp, &acs)
                .issuer(idp.entity_id())
                .in_response_to(request.clone())
                .xml(),
        ),
        (
            "tampered".to_owned(),
            signed.replace(">saml-alice<", ">saml-mallory<"),
        ),
        (
            "expired".to_owned(),
            base()
                .valid(now - TimeDelta::minutes(10), now - TimeDelta::minutes(2))
                .xml(),
        ),
        (
            "not yet valid".to_owned(),
            base()
                .valid(now + TimeDelta::minutes(5), now + TimeDelta::minutes(10))
                .xml(),
        ),
        (
            "wrong audience".to_owned(),
            base().audience("https://other.example/sp").xml(),
        ),
        (
            "wrong destination".to_owned(),
            base()
                .destination(Some("https://other.example/acs".into()))
                .xml(),
        ),
        (
            "wrong recipient".to_owned(),
            base().recipient("https://other.example/acs").xml(),
        ),
        (
            "unsolicited".to_owned(),
            idp.response(&alice(), &sp, &acs).xml(),
        ),
        ("sha1".to_owned(), base().sha1().template()),
        (
            "dtd".to_owned(),
            format!("<!DOCTYPE r [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{signed}"),
        ),
        (
            "comment in NameID".to_owned(),
            signed.replace(">saml-alice<", ">saml-alice<!---->.evil<"),
        ),
        ("two assertions".to_owned(), {
            let start = signed.find("<saml:Assertion").unwrap();
            let end = signed.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
            let assertion = &signed[start..end];
            signed.replacen(
                assertion,
                &format!("{assertion}{}", assertion.replace(" ID=\"", " ID=\"x")),
                1,
            )
        }),
    ]);
    for (name, xml) in cases {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
        let page = app.deliver(&browser, &encoded).await;
        assert!(
            (400..500).contains(&page.status),
            "{name}: {} {}",
            page.status,
            page.body
        );
        assert!(!page.body.contains("saml-mallory"), "{name}: echoed");
        assert_eq!(db.written().await, (0, 0, 0), "{name}: wrote something");
    }
    // An oversized response is refused before it is parsed.
    let huge = "A".repeat(1024 * 1024 + 8);
    assert_eq!(app.post_response(&huge).await.status, 413);
    assert_eq!(db.written().await, (0, 0, 0));
}

async fn a_response_finishes_only_in_the_browser_that_asked_for_it(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let app = db.app(&idp).await;
    let (sp, acs) = (app.sp(), app.acs());
    // The attacker starts a sign-in in their browser and gets a response for their account.
    let attacker = Browser::new();
    let request = app.start_sign_in(&attacker, &idp).await;
    let mallory = SamlUser::persistent("saml-mallory");
    let encoded = idp
        .response(&mallory, &sp, &acs)
        .in_response_to(request)
        .encoded();
    // The victim's browser is made to post it (login CSRF): it cannot finish there.
    let victim = Browser::new();
    let _ = app.start_sign_in(&victim, &idp).await;
    let page = app.deliver(&victim, &encoded).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(app.me(&victim).await.status, 401);
    // A response to a request nobody made fails the same way.
    let made_up = idp
        .response(&alice(), &sp, &acs)
        .in_response_to("_made-up-request-id-that-no-flow-has-0000000000")
        .encoded();
    assert_eq!(app.deliver(&victim, &made_up).await.status, 400);
    assert_eq!(db.written().await, (0, 0, 0));
}

async fn an_assertion_is_accepted_once_across_restarts(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let app = db.app(&idp).await;
    let browser = Browser::new();
    let request = app.start_sign_in(&browser, &idp).await;
    let encoded = idp
        .response(&alice(), &app.sp(), &app.acs())
        .in_response_to(request)
        .encoded();
    assert_eq!(app.deliver(&browser, &encoded).await.status, 303);
    let written = db.written().await;
    // Replayed at once, with a fresh flow in the same browser.
    let _ = app.start_sign_in(&browser, &idp).await;
    assert_eq!(app.post_response(&encoded).await.status, 400);
    // At a second server on the same database, running beside the first.
    let second = db.app(&idp).await;
    assert_eq!(second.post_response(&encoded).await.status, 400);
    drop((app, second));
    // And after a restart, on a new server over the same database.
    let db = db.reopened().await;
    let app = db.app(&idp).await;
    assert_eq!(app.post_response(&encoded).await.status, 400);
    assert_eq!(db.written().await, written);
}

async fn a_transient_name_id_is_no_identity_until_an_attribute_is_configured(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let transient = SamlUser::persistent("_transient-7f3a")
        .format("urn:oasis:names:tc:SAML:2.0:nameid-format:transient")
        .attribute(OBJECT_ID, ["0b7c-object-id"]);
    {
        let app = db.app(&idp).await;
        let page = app.sign_in(&Browser::new(), &idp, transient.clone()).await;
        assert_eq!(page.status, 422, "{}", page.body);
        assert!(
            page.body.contains("JIT_SAML_SUBJECT_ATTRIBUTE"),
            "{}",
            page.body
        );
        assert_eq!(db.written().await, (0, 0, 0));
    }
    let app = db
        .app_with(&idp, |saml| {
            saml.subject_attribute("http://schemas.microsoft.com/identity/claims/objectidentifier")
        })
        .await;
    let browser = Browser::new();
    assert_eq!(app.sign_in(&browser, &idp, transient).await.status, 303);
    let me: Value = serde_json::from_str(&app.me(&browser).await.body).unwrap();
    assert_eq!(me["subject"], "0b7c-object-id");
}

async fn the_sp_metadata_and_the_request_say_what_the_idp_needs(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let app = db.app(&idp).await;
    let metadata = reqwest::get(app.url("/saml/metadata")).await.unwrap();
    assert_eq!(
        metadata.headers()["content-type"],
        "application/samlmetadata+xml"
    );
    let metadata = metadata.text().await.unwrap();
    assert!(metadata.contains(&format!("entityID=\"{}\"", app.sp())));
    assert!(metadata.contains(&format!(
        "Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{}\"",
        app.acs()
    )));
    assert!(metadata.contains(&format!("Location=\"{}\"", app.url("/saml/slo"))));
    let browser = Browser::new();
    let unknown = browser
        .get(&app.url("/saml/login?idp=https%3A%2F%2Fnot-configured.example"))
        .await;
    assert_eq!(unknown.status, 400);
    let elsewhere = browser
        .get(&app.url("/saml/login?return_to=%2F%2Fevil.example"))
        .await;
    assert_eq!(elsewhere.status, 400);
    let start = browser
        .get(&app.url(&format!(
            "/saml/login?idp={}&return_to=%2Forders",
            url::form_urlencoded::byte_serialize(idp.entity_id().as_bytes()).collect::<String>()
        )))
        .await;
    assert_eq!(start.status, 303);
    assert!(start.set_cookies.iter().any(|c| c.contains("SameSite=Lax")));
    let page = reqwest::get(start.location.unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let done = app
        .deliver(&browser, &form_value(&page, "SAMLResponse"))
        .await;
    assert_eq!(done.location.as_deref(), Some("/orders"));
    // The finish key is spent: the same URL again signs nobody in.
    assert_eq!(db.session_hashes().await.len(), 1);
}

/// Signs `user` in with `browser` by a response with the IdP session `session_index`.
async fn sign_in_with_session(
    app: &App,
    idp: &TestSamlIdp,
    browser: &Browser,
    user: &SamlUser,
    session_index: &str,
) {
    let request = app.start_sign_in(browser, idp).await;
    let encoded = idp
        .response(user, &app.sp(), &app.acs())
        .in_response_to(request)
        .session_index(session_index)
        .encoded();
    let done = app.deliver(browser, &encoded).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(app.me(browser).await.status, 200);
}

/// The LogoutResponse an SP's redirect carries: its XML, inflated.
fn logout_response(location: &str) -> String {
    use base64::Engine as _;
    use std::io::Read as _;
    let encoded = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "SAMLResponse")
        .unwrap()
        .1
        .into_owned();
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&compressed[..])
        .read_to_string(&mut xml)
        .unwrap();
    xml
}

async fn single_logout_ends_the_sessions_it_names_and_nothing_unsigned(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    // The SP signs its answers with a key of its own (another test IdP's will do).
    let sp_key = TestSamlIdp::start().await;
    let (key, cert) = (sp_key.private_key_pem(), sp_key.certificate_pem());
    let app = db
        .app_with(&idp, move |saml| saml.sp_key_pem(key, cert))
        .await;
    let slo = app.url("/saml/slo");
    let alice = alice();
    let (first, second) = (Browser::new(), Browser::new());
    sign_in_with_session(&app, &idp, &first, &alice, "_s-alice-1").await;
    sign_in_with_session(&app, &idp, &second, &alice, "_s-alice-2").await;
    // With a key, the SP signs its AuthnRequests.
    assert!(idp.requests().iter().all(|r| r.signed));

    // Unsigned, by either binding: nothing ends.
    let unsigned = idp
        .logout_request("saml-alice", Some("_s-alice-1"), &slo)
        .unsigned();
    assert_eq!(
        Browser::new().get(&unsigned.redirect_url()).await.status,
        400
    );
    let posted = post_form(&slo, "SAMLRequest", &unsigned.post_value()).await;
    assert_eq!(posted.status, 400);
    // The IdP's request with another key's signature, or with its signed query changed:
    // nothing ends.
    let genuine = idp
        .logout_request("saml-alice", Some("_s-alice-1"), &slo)
        .relay_state("r")
        .redirect_url();
    let impostor = TestSamlIdp::start().await;
    let other = impostor
        .logout_request("saml-alice", Some("_s-alice-1"), &slo)
        .relay_state("r")
        .redirect_url();
    let signature_of = |url: &str| url[url.find("&Signature=").unwrap()..].to_owned();
    let forged = genuine.replace(&signature_of(&genuine), &signature_of(&other));
    assert_ne!(forged, genuine);
    assert_eq!(Browser::new().get(&forged).await.status, 400);
    let tampered = genuine.replace("RelayState=r&", "RelayState=x&");
    assert_ne!(tampered, genuine);
    assert_eq!(Browser::new().get(&tampered).await.status, 400);
    assert_eq!(app.me(&first).await.status, 200);
    assert_eq!(app.me(&second).await.status, 200);

    // Signed, by HTTP-Redirect, for one IdP session: that session ends, the other holds.
    let logout = idp
        .logout_request("saml-alice", Some("_s-alice-1"), &slo)
        .relay_state("back-to-idp");
    let answered = Browser::new().get(&logout.redirect_url()).await;
    assert_eq!(answered.status, 303, "{}", answered.body);
    let location = answered.location.unwrap();
    assert!(location.starts_with(&format!("{}/slo?SAMLResponse=", idp_base(&idp))));
    assert!(
        location.contains("&RelayState=back-to-idp&SigAlg="),
        "{location}"
    );
    assert!(location.contains("&Signature="), "{location}");
    let response = logout_response(&location);
    assert!(
        response.contains(&format!("InResponseTo=\"{}\"", logout.id())),
        "{response}"
    );
    assert!(
        response.contains("urn:oasis:names:tc:SAML:2.0:status:Success"),
        "{response}"
    );
    assert_eq!(app.me(&first).await.status, 401);
    assert_eq!(app.me(&second).await.status, 200);
    // The same request again is refused.
    assert_eq!(Browser::new().get(&logout.redirect_url()).await.status, 400);

    // Signed, by HTTP-POST, for every session of the person.
    let everything = idp.logout_request("saml-alice", None, &slo);
    let posted = post_form(&slo, "SAMLRequest", &everything.post_value()).await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    assert_eq!(app.me(&second).await.status, 401);
    let logged_out = db
        .audit()
        .await
        .into_iter()
        .filter(|e| e.kind == tower_jit_provisioning::AuditKind::LoggedOut)
        .count();
    assert_eq!(logged_out, 2);
}

async fn an_encrypted_assertion_signs_in_with_the_sp_key_and_is_refused_without_it(
    backend: Backend,
) {
    use tower_jit_provisioning::testing::SamlCipher;
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let sp_key = TestSamlIdp::start().await;
    let cert = sp_key.certificate_pem();
    {
        // Without an SP key, an encrypted assertion cannot be read: refused, nothing written.
        let app = db.app(&idp).await;
        let browser = Browser::new();
        let request = app.start_sign_in(&browser, &idp).await;
        let encoded = idp
            .response(&alice(), &app.sp(), &app.acs())
            .in_response_to(request)
            .encrypt_for(cert.clone(), SamlCipher::Aes256Gcm)
            .encoded();
        assert_eq!(app.deliver(&browser, &encoded).await.status, 400);
        assert_eq!(db.written().await, (0, 0, 0));
    }
    let (key, cert_for_app) = (sp_key.private_key_pem(), cert.clone());
    let app = db
        .app_with(&idp, move |saml| saml.sp_key_pem(key, cert_for_app))
        .await;
    // The SP metadata offers the certificate for encryption.
    let metadata = reqwest::get(app.url("/saml/metadata"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metadata.contains("use=\"encryption\""), "{metadata}");
    let browser = Browser::new();
    let request = app.start_sign_in(&browser, &idp).await;
    let encoded = idp
        .response(&alice(), &app.sp(), &app.acs())
        .in_response_to(request)
        .encrypt_for(cert, SamlCipher::Aes256Cbc)
        .encoded();
    let done = app.deliver(&browser, &encoded).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let me: Value = serde_json::from_str(&app.me(&browser).await.body).unwrap();
    assert_eq!(me["subject"], "saml-alice");
    assert_eq!(me["email"], "alice@example.com");
}

async fn idp_initiated_sign_in_works_only_when_turned_on(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    {
        let app = db.app(&idp).await;
        let unsolicited = idp.response(&alice(), &app.sp(), &app.acs()).encoded();
        assert_eq!(app.deliver(&Browser::new(), &unsolicited).await.status, 400);
        assert_eq!(db.written().await, (0, 0, 0));
    }
    let app = db
        .app_with(&idp, |saml| saml.allow_idp_initiated(true))
        .await;
    let browser = Browser::new();
    let unsolicited = idp.response(&alice(), &app.sp(), &app.acs()).encoded();
    let done = app.deliver(&browser, &unsolicited).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/"));
    assert_eq!(app.me(&browser).await.status, 200);
}

async fn single_logout_at_one_server_ends_the_session_on_another(backend: Backend) {
    let db = Db::open(backend).await;
    let idp = TestSamlIdp::start().await;
    let (one, two) = (db.app(&idp).await, db.app(&idp).await);
    let browser = Browser::new();
    sign_in_with_session(&one, &idp, &browser, &alice(), "_s-shared").await;
    let logout = idp.logout_request("saml-alice", Some("_s-shared"), &two.url("/saml/slo"));
    assert_eq!(Browser::new().get(&logout.redirect_url()).await.status, 303);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        if one.me(&browser).await.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session still works after 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn url_encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A form POST of one field, without cookies.
async fn post_form(url: &str, name: &str, value: &str) -> Page {
    let plain = Browser::new();
    plain
        .send(
            plain
                .client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("{name}={}", url_encoded(value))),
        )
        .await
}

on_every_store!(
    "saml";
    single_logout_ends_the_sessions_it_names_and_nothing_unsigned,
    an_encrypted_assertion_signs_in_with_the_sp_key_and_is_refused_without_it,
    idp_initiated_sign_in_works_only_when_turned_on,
    single_logout_at_one_server_ends_the_session_on_another,
    a_first_saml_sign_in_creates_one_account_and_the_next_reuses_it,
    forged_wrapped_and_out_of_bounds_responses_are_refused_and_write_nothing,
    a_response_finishes_only_in_the_browser_that_asked_for_it,
    an_assertion_is_accepted_once_across_restarts,
    a_transient_name_id_is_no_identity_until_an_attribute_is_configured,
    the_sp_metadata_and_the_request_say_what_the_idp_needs,
);
