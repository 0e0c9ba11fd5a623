//! Organisations over real HTTP, on SQLite and PostgreSQL: connections added, changed and
//! removed in the store while the application runs sign people in (or stop) on every server
//! at the next request; each connection creates, links and signs in accounts of its own
//! organisation only; an address outside the organisation's domains is not verified; a shared
//! issuer is pinned to its tenant.

mod common;

use common::browser::Browser;
use common::saml::{form_value, post_cross_site};
use common::stores::{Backend, Db};
use common::{Server, get_with, scim_request, user_app};
use serde_json::{Value, json};
use tower_jit_provisioning::login::{BrowserLogin, SamlLogin};
use tower_jit_provisioning::organization::{Connection, Organization};
use tower_jit_provisioning::scim::Scim;
use tower_jit_provisioning::testing::{SamlUser, TestIssuer, TestSamlIdp};
use tower_jit_provisioning::{
    IdentityKey, OrganizationDirectory, ProvisioningLayer, ProvisioningLayerBuilder, StoreError,
    UserStore,
};

/// An application server signing in the organisations of `store`, and nothing else.
fn server(store: impl UserStore + Clone) -> ProvisioningLayer {
    ProvisioningLayer::builder()
        .organizations(OrganizationDirectory::new().allow_http_loopback(true))
        .store(store)
        .link_by_verified_email(true)
        .build()
        .unwrap()
}

async fn app(db: &Db) -> Server {
    with_store!(db, store => Server::start(user_app(server(store.clone()))).await)
}

/// Another server on the same database: on PostgreSQL a store of its own, which hears the
/// first one's changes by `NOTIFY` only.
async fn other_app(db: &Db) -> Server {
    match db {
        Db::Sqlite(..) => app(db).await,
        Db::Postgres(_, database) => Server::start(user_app(server(database.store().await))).await,
    }
}

fn person(idp: &TestIssuer, subject: &str, email: &str) -> String {
    idp.id_token().subject(subject).email(email, true).sign()
}

async fn create(db: &Db, organization: Organization) -> Organization {
    with_store!(db, store => store.create_organization(organization).await.unwrap())
}

async fn update(db: &Db, organization: Organization) -> Organization {
    with_store!(db, store => store.update_organization(organization, None).await.unwrap())
}

/// Polls `url` with `token` until it answers `status` (a change event reaching another
/// server takes a moment), for 5 s at most.
async fn eventually(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    status: u16,
) -> common::Reply {
    let started = std::time::Instant::now();
    loop {
        let reply = get_with(client, url, Some(token)).await;
        if reply.status == status || started.elapsed() > std::time::Duration::from_secs(5) {
            assert_eq!(reply.status, status, "{}", reply.body);
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn an_organisation_added_at_runtime_signs_its_people_in_on_every_server(backend: Backend) {
    let db = Db::open(backend).await;
    let (one, two) = (app(&db).await, other_app(&db).await);
    let client = reqwest::Client::new();
    let idp = TestIssuer::start().await;
    let ada = person(&idp, "ada", "ada@partner.example");

    // Nobody trusts the issuer yet.
    assert_eq!(
        get_with(&client, &one.url("/me"), Some(&ada)).await.status,
        401
    );

    let partner = create(
        &db,
        Organization::new("Partner")
            .domains(["partner.example"])
            .connection(Connection::oidc(idp.url(), ["test-client"]).default_roles(["partner"])),
    )
    .await;
    for server in [&one, &two] {
        let reply = eventually(&client, &server.url("/me"), &ada, 200).await;
        let user = reply.json();
        assert_eq!(user["organization_id"], partner.id.to_string());
        assert_eq!(user["email_verified"], true);
        assert!(
            user["roles"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "partner")
        );
    }
    assert_eq!(db.users().await.len(), 1, "one account, whichever server");

    // The connection removed: its tokens stop at the next request, even a cached one.
    let mut without = partner.clone();
    without.connections.clear();
    update(&db, without).await;
    for server in [&one, &two] {
        eventually(&client, &server.url("/me"), &ada, 401).await;
    }
}

async fn a_connection_reaches_its_own_organisation_only(backend: Backend) {
    let db = Db::open(backend).await;
    let server = app(&db).await;
    let client = reqwest::Client::new();
    let me = server.url("/me");
    let (idp_a, idp_b) = (TestIssuer::start().await, TestIssuer::start().await);
    let a = create(
        &db,
        Organization::new("A")
            .domains(["a.example"])
            .connection(Connection::oidc(idp_a.url(), ["test-client"])),
    )
    .await;
    let b = create(
        &db,
        Organization::new("B")
            .domains(["b.example"])
            .connection(Connection::oidc(idp_b.url(), ["test-client"])),
    )
    .await;
    let ceo = get_with(&client, &me, Some(&person(&idp_a, "ceo", "ceo@a.example"))).await;
    assert_eq!(ceo.status, 200, "{}", ceo.body);

    // B's IdP asserts an address in A's domain, verified: a new account in B, not A's, and
    // the address does not count as verified.
    let impostor = get_with(&client, &me, Some(&person(&idp_b, "imp", "ceo@a.example"))).await;
    assert_eq!(impostor.status, 200, "{}", impostor.body);
    let impostor = impostor.json();
    assert_eq!(impostor["organization_id"], b.id.to_string());
    assert_ne!(impostor["id"], ceo.json()["id"]);
    assert_eq!(impostor["email_verified"], false);
    let users = db.users().await;
    assert_eq!(users.len(), 2);
    assert_eq!(
        users
            .iter()
            .filter(|u| u.organization_id == Some(a.id))
            .count(),
        1,
        "nothing created in A"
    );

    // A's connection moved to B: the accounts it signed in stay A's, and it no longer
    // reaches them.
    let mut a_now = with_store!(&db, store => store.get_organization(a.id).await.unwrap().unwrap());
    let moved = a_now.connections.remove(0);
    update(&db, a_now).await;
    let mut b_now = with_store!(&db, store => store.get_organization(b.id).await.unwrap().unwrap());
    b_now.connections.push(moved);
    update(&db, b_now).await;
    let crossed = get_with(&client, &me, Some(&person(&idp_a, "ceo", "ceo@a.example"))).await;
    assert_eq!(crossed.status, 403, "{}", crossed.body);
    assert_eq!(crossed.json()["code"], "other_organization");
    let ceo_now = db
        .users()
        .await
        .into_iter()
        .find(|u| u.organization_id == Some(a.id))
        .unwrap();
    assert!(
        ceo_now.email_verified,
        "nothing of B's sign-in was synced into A's account"
    );
    assert_eq!(ceo_now.version, 1);
}

async fn a_shared_issuer_is_pinned_to_each_organisations_tenant(backend: Backend) {
    let db = Db::open(backend).await;
    let server = app(&db).await;
    let client = reqwest::Client::new();
    let me = server.url("/me");
    // One issuer URL for every tenant, as Entra's multi-tenant `common` endpoint's tokens.
    let common_idp = TestIssuer::start().await;
    let tenant = |name: &str, tid: &str| {
        Organization::new(name)
            .connection(Connection::oidc(common_idp.url(), ["test-client"]).tenant("tid", tid))
    };
    let contoso = create(&db, tenant("Contoso", "t-contoso")).await;
    let fabrikam = create(&db, tenant("Fabrikam", "t-fabrikam")).await;
    let token = |sub: &str, tid: &str| common_idp.id_token().subject(sub).claim("tid", tid).sign();

    let c = get_with(&client, &me, Some(&token("c1", "t-contoso"))).await;
    assert_eq!(c.json()["organization_id"], contoso.id.to_string());
    let f = get_with(&client, &me, Some(&token("f1", "t-fabrikam"))).await;
    assert_eq!(f.json()["organization_id"], fabrikam.id.to_string());
    for stranger in [
        token("x1", "t-elsewhere"),
        common_idp.id_token().subject("x2").sign(),
    ] {
        let refused = get_with(&client, &me, Some(&stranger)).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
    assert_eq!(db.users().await.len(), 2, "no account for another tenant");

    // A second organisation cannot claim a tenant that is taken.
    let taken =
        with_store!(&db, store => store.create_organization(tenant("Copycat", "t-contoso")).await);
    assert!(
        matches!(taken, Err(StoreError::Duplicate("connection"))),
        "{taken:?}"
    );
}

/// A SCIM client scoped to one organisation sees, changes and deletes its users and groups
/// only: another organisation's are not there to it; what it creates is its organisation's.
async fn a_scim_token_of_one_organisation_reaches_no_other(backend: Backend) {
    const GLOBAL: &str = "global-scim-secret-0123456789";
    const SECRET_A: &str = "scim-secret-of-organisation-a";
    const SECRET_B: &str = "scim-secret-of-organisation-b";
    let db = Db::open(backend).await;
    let a = create(&db, Organization::new("A").domains(["a.example"])).await;
    let b = create(&db, Organization::new("B").domains(["b.example"])).await;
    let router = with_store!(&db, store => {
        let scim = Scim::new(store.clone())
            .bearer_token("it", GLOBAL)
            .organization_token("a-idp", SECRET_A, a.id)
            .organization_token("b-idp", SECRET_B, b.id)
            .router()
            .unwrap();
        user_app(server(store.clone())).nest("/scim/v2", scim)
    });
    let server = Server::start(router).await;
    let http = reqwest::Client::new();
    let scim = |secret: &'static str, method: &'static str, path: String, body: Option<Value>| {
        let (http, url) = (http.clone(), server.url(&format!("/scim/v2{path}")));
        async move { scim_request(&http, secret, method, &url, body.as_ref()).await }
    };
    let user = |name: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name, "externalId": name, "active": true
        })
    };
    let total = |reply: common::Reply| reply.json()["totalResults"].as_u64().unwrap();

    let alice = scim(
        SECRET_A,
        "POST",
        "/Users".into(),
        Some(user("alice@a.example")),
    )
    .await;
    assert_eq!(alice.status, 201, "{}", alice.body);
    let alice = alice.json()["id"].as_str().unwrap().to_owned();
    let bob = scim(
        SECRET_B,
        "POST",
        "/Users".into(),
        Some(user("bob@b.example")),
    )
    .await;
    let bob = bob.json()["id"].as_str().unwrap().to_owned();
    let stored = with_store!(&db, store => store.find_by_external_id("alice@a.example").await.unwrap().unwrap());
    assert_eq!(stored.organization_id, Some(a.id));

    // B's client: A's user is not there, whatever it tries.
    let alice_path = format!("/Users/{alice}");
    assert_eq!(
        scim(SECRET_B, "GET", alice_path.clone(), None).await.status,
        404
    );
    let filter = "/Users?filter=userName%20eq%20%22alice@a.example%22".to_owned();
    assert_eq!(total(scim(SECRET_B, "GET", filter.clone(), None).await), 0);
    assert_eq!(total(scim(SECRET_B, "GET", "/Users".into(), None).await), 1);
    let deactivate = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]
    });
    let patched = scim(SECRET_B, "PATCH", alice_path.clone(), Some(deactivate)).await;
    assert_eq!(patched.status, 404);
    let replaced = scim(
        SECRET_B,
        "PUT",
        alice_path.clone(),
        Some(user("alice@a.example")),
    )
    .await;
    assert_eq!(replaced.status, 404);
    assert_eq!(
        scim(SECRET_B, "DELETE", alice_path.clone(), None)
            .await
            .status,
        404
    );
    let still = scim(SECRET_A, "GET", alice_path, None).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.json()["active"], true);

    // Groups: B cannot enrol A's user, nor see A's group.
    let group = |name: &str, members: &[&str]| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()
        })
    };
    let b_team = scim(
        SECRET_B,
        "POST",
        "/Groups".into(),
        Some(group("B team", &[&alice, &bob])),
    )
    .await;
    assert_eq!(b_team.status, 201, "{}", b_team.body);
    assert_eq!(
        b_team.json()["members"].as_array().unwrap().len(),
        1,
        "A's user dropped"
    );
    let a_team = scim(
        SECRET_A,
        "POST",
        "/Groups".into(),
        Some(group("A team", &[&alice])),
    )
    .await;
    let a_team = a_team.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        scim(SECRET_B, "GET", format!("/Groups/{a_team}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        total(scim(SECRET_B, "GET", "/Groups".into(), None).await),
        1
    );
    assert_eq!(
        scim(SECRET_B, "DELETE", format!("/Groups/{a_team}"), None)
            .await
            .status,
        404
    );

    // The application's own client sees every organisation.
    assert_eq!(total(scim(GLOBAL, "GET", "/Users".into(), None).await), 2);
    assert_eq!(total(scim(GLOBAL, "GET", "/Groups".into(), None).await), 2);
}

/// Home-realm discovery and browser sign-in through an organisation's connection: an address
/// of an organisation's domain goes to its IdP and signs in to its account; an unknown domain
/// gets the sign-in open to everyone; an organisation without browser sign-in gets a clear
/// page; whether an address has an account changes nothing in the answer.
async fn home_realm_discovery_routes_by_domain_alone(backend: Backend) {
    let db = Db::open(backend).await;
    let public = TestIssuer::start().await;
    let partner_idp = TestIssuer::start().await;
    let partner = create(
        &db,
        Organization::new("Partner")
            .domains(["partner.example"])
            .connection(
                Connection::oidc(partner_idp.url(), [TestIssuer::CLIENT_ID]).browser_client(
                    TestIssuer::CLIENT_ID,
                    Some(TestIssuer::CLIENT_SECRET.to_owned()),
                ),
            ),
    )
    .await;
    create(&db, Organization::new("Closed").domains(["closed.example"])).await;
    let app = LoginApp::start(&db, |builder| {
        builder.issuer(public.issuer().browser_client(
            TestIssuer::CLIENT_ID,
            Some(TestIssuer::CLIENT_SECRET.to_owned()),
        ))
    })
    .await;
    let base = app.base.clone();
    let login = |email: &str| format!("{base}/login?email={}", email.replace('@', "%40"));
    let browser = Browser::new();

    // The organisation's domain goes to its IdP, which signs the person in to its account.
    let start = browser.get(&login("ada@partner.example")).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.location.clone().unwrap();
    assert!(authorize.starts_with(partner_idp.url()), "{authorize}");
    assert!(
        authorize.contains("login_hint=ada%40partner.example"),
        "{authorize}"
    );
    let issued = browser.get(&authorize).await;
    let signed_in = browser.get(&issued.location.unwrap()).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let me = browser.get(&format!("{base}/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["organization_id"], partner.id.to_string());
    assert_eq!(me["email_verified"], true);

    // Whether an address has an account changes nothing: same answer, same destination.
    let stranger = Browser::new().get(&login("nobody@partner.example")).await;
    let known = Browser::new().get(&login("ada@partner.example")).await;
    assert_eq!(stranger.status, known.status);
    let until_query = |page: &common::browser::Page| {
        page.location
            .clone()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(until_query(&stranger), until_query(&known));

    // An unknown domain: the sign-in open to everyone. An organisation without browser
    // sign-in: a page that says so. Not an address: 400.
    let elsewhere = Browser::new().get(&login("eve@elsewhere.example")).await;
    assert_eq!(elsewhere.status, 303);
    assert!(elsewhere.location.unwrap().starts_with(public.url()));
    let closed = Browser::new().get(&login("bob@closed.example")).await;
    assert_eq!(closed.status, 404, "{}", closed.body);
    assert!(
        closed.body.contains("No sign-in for this domain"),
        "{}",
        closed.body
    );
    assert_eq!(
        Browser::new().get(&login("not-an-address")).await.status,
        400
    );
}

/// A connection reads its IdP's own claim names: profile fields, groups (which earn the
/// connection's group roles) and attributes; a mapping target that does not exist is refused.
async fn a_connection_maps_its_idps_own_claims(backend: Backend) {
    let db = Db::open(backend).await;
    let server = app(&db).await;
    let client = reqwest::Client::new();
    let idp = TestIssuer::start().await;
    let connection = Connection::oidc(idp.url(), ["test-client"])
        .claim("display_name", "nickname")
        .claim("groups", "teams")
        .claim("attributes.department", "org.dept")
        .group_role("red", "red-team");
    create(
        &db,
        Organization::new("Mapped")
            .domains(["mapped.example"])
            .connection(connection.clone()),
    )
    .await;
    let token = idp
        .id_token()
        .subject("m1")
        .email("m1@mapped.example", true)
        .claim("nickname", "Em")
        .claim("teams", json!(["red", "blue"]))
        .claim("org", json!({"dept": "R&D"}))
        .sign();
    let me = get_with(&client, &server.url("/me"), Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["display_name"], "Em");
    assert_eq!(me["groups"], json!(["blue", "red"]));
    assert_eq!(me["attributes"]["department"], "R&D");
    assert_eq!(me["roles"], json!(["red-team"]));

    let wrong = Organization::new("Wrong").connection(connection.claim("email", "upn"));
    let refused = wrong.validate().unwrap_err();
    assert_eq!(refused.field, "connections[0].claims.email");
}

const SAML_EMAIL: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";

/// One application server with browser sign-in for the organisations' connections, and
/// whatever else the test adds to it.
struct LoginApp {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoginApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoginApp {
    async fn start(
        db: &Db,
        more: impl FnOnce(ProvisioningLayerBuilder) -> ProvisioningLayerBuilder,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let builder = ProvisioningLayer::builder()
            .organizations(OrganizationDirectory::new().allow_http_loopback(true))
            .browser_login(BrowserLogin::new(base.as_str()))
            .optional(true);
        let layer = with_store!(db, store => more(builder.store(store.clone())).build().unwrap());
        let app = user_app(layer.clone()).merge(layer.login_router());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts a sign-in in `browser` at `path` and follows it to the IdP: the IdP's answer
    /// page, and the id of the AuthnRequest it received.
    async fn to_idp(&self, browser: &Browser, idp: &TestSamlIdp, path: &str) -> (String, String) {
        let start = browser.get(&self.url(path)).await;
        assert_eq!(start.status, 303, "{}", start.body);
        let mut location = start.location.unwrap();
        if location.starts_with("/saml/login") {
            let saml = browser.get(&self.url(&location)).await;
            assert_eq!(saml.status, 303, "{}", saml.body);
            location = saml.location.unwrap();
        }
        assert!(
            location.starts_with(&idp.entity_id().replace("/saml", "/sso")),
            "{location}"
        );
        let page = reqwest::get(&location).await.unwrap().text().await.unwrap();
        (page, idp.requests().last().unwrap().id.clone())
    }

    /// Posts `encoded` to the ACS cross-site (no cookies) and, when it is accepted, finishes
    /// in `browser`: the last page.
    async fn deliver(&self, browser: &Browser, encoded: &str) -> common::browser::Page {
        let posted = post_cross_site(&self.url("/saml/acs"), encoded).await;
        if posted.status != 303 {
            return posted;
        }
        browser.get(&self.url(&posted.location.unwrap())).await
    }

    async fn me(&self, browser: &Browser) -> Value {
        let me = browser.get(&self.url("/me")).await;
        assert_eq!(me.status, 200, "{}", me.body);
        serde_json::from_str(&me.body).unwrap()
    }
}

/// A SAML IdP as an organisation's connection: added while the application runs (its
/// metadata fetched on first use), reached by home-realm discovery, it signs the
/// organisation's people in to accounts of that organisation with their e-mail verified in its
/// domains only; its entity id is trusted by its own key only; removed, it signs nobody in.
async fn an_organisations_saml_idp_signs_its_people_in(backend: Backend) {
    let db = Db::open(backend).await;
    // A SAML service provider for the organisations' SAML connections only: it trusts no IdP
    // of its own.
    let app = LoginApp::start(&db, |builder| {
        builder.saml(SamlLogin::new().allow_http_endpoints(true))
    })
    .await;
    let idp = TestSamlIdp::start().await;
    let forger = TestSamlIdp::start().await;
    let (sp, acs) = (app.url("/saml/metadata"), app.url("/saml/acs"));

    // Nobody trusts the IdP yet: its answer is refused and nothing is written.
    let early = idp
        .response(&SamlUser::persistent("p-early"), &sp, &acs)
        .encoded();
    assert_eq!(app.deliver(&Browser::new(), &early).await.status, 400);

    let partner = create(
        &db,
        Organization::new("Partner")
            .domains(["partner.example"])
            .connection(
                Connection::saml(idp.entity_id())
                    .saml_metadata_url(idp.metadata_url())
                    .default_roles(["partner"]),
            ),
    )
    .await;
    let connection = partner.connections[0].id;

    // Home-realm discovery sends the domain's people to the IdP, which signs Ada in.
    idp.sign_in_as(SamlUser::persistent("p-ada").attribute(SAML_EMAIL, ["ada@partner.example"]));
    let ada = Browser::new();
    let (page, _) = app
        .to_idp(&ada, &idp, "/login?email=ada%40partner.example")
        .await;
    let done = app.deliver(&ada, &form_value(&page, "SAMLResponse")).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let me = app.me(&ada).await;
    assert_eq!(me["source"], "saml");
    assert_eq!(me["issuer"], idp.entity_id());
    assert_eq!(me["subject"], "p-ada");
    assert_eq!(me["organization_id"], partner.id.to_string());
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["roles"], json!(["partner"]));

    // An address outside the organisation's domains is the person's, but never verified.
    idp.sign_in_as(SamlUser::persistent("p-eve").attribute(SAML_EMAIL, ["eve@victim.example"]));
    let eve = Browser::new();
    let (page, _) = app
        .to_idp(&eve, &idp, &format!("/saml/login?connection={connection}"))
        .await;
    let done = app.deliver(&eve, &form_value(&page, "SAMLResponse")).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let me = app.me(&eve).await;
    assert_eq!(me["organization_id"], partner.id.to_string());
    assert_eq!(me["email_verified"], false);

    // Another IdP's key cannot speak for the connection's entity id.
    let mallory = Browser::new();
    let (_, request) = app
        .to_idp(
            &mallory,
            &idp,
            &format!("/saml/login?connection={connection}"),
        )
        .await;
    let forged = forger
        .response(&SamlUser::persistent("p-mallory"), &sp, &acs)
        .issuer(idp.entity_id())
        .in_response_to(request)
        .encoded();
    assert_eq!(app.deliver(&mallory, &forged).await.status, 400);
    let mallory_user = with_store!(&db, store => store
        .find_by_identity(&IdentityKey::new(idp.entity_id(), "p-mallory"))
        .await
        .unwrap());
    assert!(mallory_user.is_none());

    // Its Single Logout ends Ada's session, and only when its own key signed the request.
    let slo = app.url("/saml/slo");
    let impostor = forger.logout_request("p-ada", None, &slo).redirect_url();
    assert_eq!(Browser::new().get(&impostor).await.status, 400);
    assert_eq!(ada.get(&app.url("/me")).await.status, 200);
    let logout = idp.logout_request("p-ada", None, &slo).redirect_url();
    let answered = Browser::new().get(&logout).await;
    assert!(matches!(answered.status, 200 | 303), "{}", answered.body);
    assert_eq!(ada.get(&app.url("/me")).await.status, 401);
    assert_eq!(eve.get(&app.url("/me")).await.status, 200);

    // Removed: a sign-in started before is refused at the ACS, and none starts.
    let late = Browser::new();
    let (page, _) = app
        .to_idp(&late, &idp, &format!("/saml/login?connection={connection}"))
        .await;
    let mut removed = partner.clone();
    removed.connections.clear();
    update(&db, removed).await;
    let refused = app.deliver(&late, &form_value(&page, "SAMLResponse")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let start = Browser::new()
        .get(&app.url(&format!("/saml/login?connection={connection}")))
        .await;
    assert_eq!(start.status, 400, "{}", start.body);
}

on_every_store!(
    "organizations";
    an_organisation_added_at_runtime_signs_its_people_in_on_every_server,
    a_connection_reaches_its_own_organisation_only,
    a_shared_issuer_is_pinned_to_each_organisations_tenant,
    a_scim_token_of_one_organisation_reaches_no_other,
    home_realm_discovery_routes_by_domain_alone,
    a_connection_maps_its_idps_own_claims,
    an_organisations_saml_idp_signs_its_people_in,
);
