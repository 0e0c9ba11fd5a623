//! Signing in with GitHub (an OAuth2-only provider) over real HTTP: the application behind the
//! layer with its login routes, `TestGitHub` as GitHub, a cookie-keeping client as the browser,
//! SQLite as the store; and GitHub access tokens sent as bearer tokens.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::browser::{Browser, Page};
use common::{get_with, user_json};
use serde_json::{Value, json};
use tower_jit_provisioning::login::{BrowserLogin, OAuth2Provider, ProfileClaims};
use tower_jit_provisioning::testing::{GitHubEmail, GitHubUser, TestGitHub, TestIssuer};
use tower_jit_provisioning::{
    AttributeMapping, IssuerPolicy, ProvisionedUser, ProvisioningLayer, ProvisioningLayerBuilder,
    SqliteStore, UserStore,
};

struct App {
    base: String,
    store: SqliteStore,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl App {
    /// The app with `provider`, the rest of the layer as `configure` leaves it.
    async fn start(
        provider: OAuth2Provider,
        configure: impl FnOnce(ProvisioningLayerBuilder) -> ProvisioningLayerBuilder,
    ) -> Self {
        let (store, dir) = common::sqlite_store().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let builder = ProvisioningLayer::builder()
            .oauth2_provider(provider)
            .browser_login(BrowserLogin::new(base.as_str()))
            .store(store.clone())
            .optional(true);
        let layer = configure(builder).build().unwrap();
        let routes = layer.login_router();
        let app = Router::new()
            .route(
                "/me",
                get(|user: ProvisionedUser| async move { axum::Json(user_json(&user)) }),
            )
            .layer(layer)
            .merge(routes);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            store,
            _dir: dir,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/login` for `provider`, through the double as `who`; the callback URL it sent back.
    async fn callback_url(&self, browser: &Browser, provider: &str, who: &str) -> String {
        let start = browser
            .get(&format!(
                "{}?provider={provider}&login_hint={who}",
                self.url("/login")
            ))
            .await;
        assert_eq!(start.status, 303, "{}", start.body);
        let authorized = browser.get(&start.location.unwrap()).await;
        assert_eq!(authorized.status, 302, "{}", authorized.body);
        authorized.location.unwrap()
    }

    async fn sign_in(&self, browser: &Browser, who: &str) -> Page {
        let callback = self.callback_url(browser, "github", who).await;
        browser.get(&callback).await
    }

    async fn me(&self, browser: &Browser) -> (u16, Value) {
        let page = browser.get(&self.url("/me")).await;
        (
            page.status,
            serde_json::from_str(&page.body).unwrap_or(Value::Null),
        )
    }
}

fn query(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn one_account_per_numeric_id_kept_across_a_rename() {
    let github = TestGitHub::start().await;
    let app = App::start(github.provider(), |b| b).await;
    let browser = Browser::new();

    // The authorization request, by the book.
    let start = browser
        .get(&format!("{}?provider=github", app.url("/login")))
        .await;
    let authorize = start.location.unwrap();
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", github.url())));
    assert_eq!(
        query(&authorize, "scope").as_deref(),
        Some("read:user user:email read:org")
    );
    assert_eq!(
        query(&authorize, "redirect_uri"),
        Some(app.url("/callback"))
    );
    assert_eq!(
        query(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query(&authorize, "state").is_some_and(|s| s.len() >= 22));

    let signed_in = app.sign_in(&browser, "ada").await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location.as_deref(), Some("/"));
    let (status, me) = app.me(&browser).await;
    assert_eq!(status, 200);
    assert_eq!(me["issuer"], "github");
    assert_eq!(me["subject"], "1001");
    assert_eq!(me["source"], "oauth2");
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["display_name"], "Ada Lovelace");
    assert_eq!(me["groups"], json!(["acme", "acme/admins"]));

    // Renamed on GitHub: the same account.
    github.rename(1001, "ada-l");
    let again = Browser::new();
    assert_eq!(app.sign_in(&again, "ada-l").await.status, 303);
    let (_, renamed) = app.me(&again).await;
    assert_eq!(renamed["id"], me["id"]);
    assert_eq!(app.store.list_users(None, 10).await.unwrap().len(), 1);

    // Another person who takes the old login name is another account.
    github.add_user(GitHubUser::new(2001, "ada", "Another Ada"));
    let impostor = Browser::new();
    assert_eq!(app.sign_in(&impostor, "ada").await.status, 303);
    let (_, other) = app.me(&impostor).await;
    assert_ne!(other["id"], me["id"]);
    assert_eq!(other["subject"], "2001");
}

#[tokio::test]
async fn an_unverified_address_neither_admits_nor_links_and_a_verified_one_links() {
    let github = TestGitHub::start().await;
    let idp = TestIssuer::start().await;
    let app = App::start(
        github
            .provider()
            .policy(IssuerPolicy::new().trust_any_email_domain()),
        |b| {
            b.issuer(idp.issuer().trust_any_email_domain())
                .link_by_verified_email(true)
        },
    )
    .await;
    let client = reqwest::Client::new();
    // Existing accounts, from the OpenID Connect issuer, with verified addresses.
    let mut existing = Vec::new();
    for (subject, email) in [
        ("oidc-bob", "bob@example.com"),
        ("oidc-carol", "carol@example.com"),
    ] {
        let token = idp.id_token().subject(subject).email(email, true).sign();
        let me = get_with(&client, &app.url("/me"), Some(&token)).await;
        assert_eq!(me.status, 200, "{}", me.body);
        existing.push(me.json()["id"].clone());
    }

    // bob's primary address is unverified (and his verified one is not primary): no address,
    // no link, an account of his own.
    let bob = Browser::new();
    assert_eq!(app.sign_in(&bob, "bob").await.status, 303);
    let (_, me) = app.me(&bob).await;
    assert_eq!(me["email"], Value::Null);
    assert_ne!(me["id"], existing[0]);
    // carol's is verified and primary: linked to her account.
    let carol = Browser::new();
    assert_eq!(app.sign_in(&carol, "carol").await.status, 303);
    let (_, me) = app.me(&carol).await;
    assert_eq!(me["id"], existing[1]);

    // A domain allow-list counts verified addresses only.
    let strict = App::start(
        github
            .provider()
            .policy(IssuerPolicy::new().allowed_domains(["example.com"])),
        |b| b,
    )
    .await;
    let refused = strict.sign_in(&Browser::new(), "bob").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(strict.store.list_users(None, 10).await.unwrap().is_empty());
    let admitted = strict.sign_in(&Browser::new(), "carol").await;
    assert_eq!(admitted.status, 303);
}

#[tokio::test]
async fn organisation_and_team_membership_map_to_roles_and_admission() {
    let github = TestGitHub::start().await;
    let mapping = || {
        AttributeMapping::new()
            .group_role("acme", "member")
            .group_role("acme/admins", "admin")
    };
    let app = App::start(github.provider(), |b| b.mapping(mapping())).await;
    let ada = Browser::new();
    app.sign_in(&ada, "ada").await;
    let (_, me) = app.me(&ada).await;
    let mut roles: Vec<String> = serde_json::from_value(me["roles"].clone()).unwrap();
    roles.sort();
    assert_eq!(roles, ["admin", "member"]);
    let carol = Browser::new();
    app.sign_in(&carol, "carol").await;
    assert_eq!(app.me(&carol).await.1["roles"], json!([]));

    // Only members of the organisation get in.
    let members_only = App::start(
        github
            .provider()
            .policy(IssuerPolicy::new().required_groups(["acme"])),
        |b| b.mapping(mapping()),
    )
    .await;
    assert_eq!(
        members_only.sign_in(&Browser::new(), "carol").await.status,
        403
    );
    assert_eq!(
        members_only.sign_in(&Browser::new(), "ada").await.status,
        303
    );
}

#[tokio::test]
async fn the_state_is_checked_before_the_code_is_exchanged_and_codes_work_once() {
    let github = TestGitHub::start().await;
    let app = App::start(github.provider(), |b| b).await;
    let browser = Browser::new();
    let callback = app.callback_url(&browser, "github", "ada").await;

    // A wrong state: refused, and the code was not spent (it still works with its own state).
    let state = query(&callback, "state").unwrap();
    let tampered = callback.replace(&state, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(browser.get(&tampered).await.status, 400);
    assert_eq!(browser.get(&callback).await.status, 303);
    // Replayed: the flow is gone.
    assert_eq!(browser.get(&callback).await.status, 400);
    // The used code under a fresh flow: GitHub refuses it (`200` with an `error`).
    let fresh = app.callback_url(&browser, "github", "carol").await;
    let code = query(&callback, "code").unwrap();
    let reused = fresh.replace(&query(&fresh, "code").unwrap(), &code);
    let page = browser.get(&reused).await;
    assert_eq!(page.status, 400, "{}", page.body);
    // Denied at GitHub.
    let denied = app.callback_url(&Browser::new(), "github", "deny").await;
    assert_eq!(query(&denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(app.store.list_users(None, 10).await.unwrap().len(), 1);
    // An unknown provider.
    let unknown = browser
        .get(&format!("{}?provider=gitlab", app.url("/login")))
        .await;
    assert_eq!(unknown.status, 400);
}

#[tokio::test]
async fn a_github_token_as_a_bearer_token_finds_the_same_account() {
    let github = TestGitHub::start().await;
    let bound = Duration::from_secs(1);
    let app = App::start(github.provider().accept_bearer_tokens(bound), |b| b).await;
    let browser = Browser::new();
    app.sign_in(&browser, "ada").await;
    let (_, by_browser) = app.me(&browser).await;

    let client = reqwest::Client::new();
    let token = github.token_for(1001);
    let calls = github.user_calls();
    let by_token = get_with(&client, &app.url("/me"), Some(&token)).await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    assert_eq!(by_token.json()["id"], by_browser["id"]);
    for _ in 0..5 {
        assert_eq!(
            get_with(&client, &app.url("/me"), Some(&token))
                .await
                .status,
            200
        );
    }
    assert_eq!(github.user_calls(), calls + 1, "cached");

    // Revoked at GitHub: refused within the bound.
    github.revoke(&token);
    let revoked_at = Instant::now();
    while get_with(&client, &app.url("/me"), Some(&token))
        .await
        .status
        == 200
    {
        assert!(revoked_at.elapsed() < bound + Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A token of another shape never goes to GitHub.
    let calls = github.user_calls();
    let other = get_with(&client, &app.url("/me"), Some("not-a-github-token")).await;
    assert_eq!(other.status, 401);
    assert_eq!(github.user_calls(), calls);
}

#[tokio::test]
async fn a_generic_provider_reads_its_profile_by_claim_paths() {
    // The GitHub double's endpoints, read the generic way: its public `email` is never verified.
    let github = TestGitHub::start().await;
    let provider = OAuth2Provider::new(
        "code-host",
        TestGitHub::CLIENT_ID,
        Some(TestGitHub::CLIENT_SECRET.to_owned()),
        format!("{}/login/oauth/authorize", github.url()),
        format!("{}/login/oauth/access_token", github.url()),
        format!("{}/user", github.url()),
        ProfileClaims::new("id")
            .email("email")
            .name("name")
            .picture("avatar_url"),
    )
    .scopes(["read:user"])
    .client_secret_in_body(true)
    .allow_http_loopback(true);
    let app = App::start(provider, |b| b).await;
    let browser = Browser::new();
    // No `login` hint for a generic provider: the person picks on the provider's page.
    let start = browser
        .get(&format!("{}?provider=code-host", app.url("/login")))
        .await;
    let picker = browser.get(&start.location.unwrap()).await;
    let choice = picker
        .body
        .split("id=\"user-carol\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let authorized = browser.get(&format!("{}{choice}", github.url())).await;
    let callback = authorized.location.unwrap();
    assert_eq!(browser.get(&callback).await.status, 303);
    let (_, me) = app.me(&browser).await;
    assert_eq!(me["issuer"], "code-host");
    assert_eq!(me["subject"], "1003");
    assert_eq!(me["email"], "carol@example.com");
    assert_eq!(me["email_verified"], false);
    assert_eq!(me["display_name"], "Carol Shaw");

    // A provider whose endpoints are not https is refused at build time.
    let insecure = OAuth2Provider::new(
        "plain",
        "id",
        None,
        "http://example.com/authorize",
        "https://example.com/token",
        "https://example.com/me",
        ProfileClaims::new("id"),
    );
    let (store, _dir) = common::sqlite_store().await;
    let error = ProvisioningLayer::builder()
        .oauth2_provider(insecure)
        .browser_login(BrowserLogin::new("https://app.example"))
        .store(store)
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("authorization endpoint"),
        "{error}"
    );
}

#[tokio::test]
async fn a_github_user_with_no_address_and_a_provider_down() {
    let github = TestGitHub::start().await;
    github.add_user(GitHubUser::new(4004, "nomail", "No Mail").emails(vec![]));
    github.add_user(GitHubUser::new(4005, "second", "Second").emails(vec![
        GitHubEmail::new("second@example.net", false, true),
        GitHubEmail::new("second@example.com", true, true),
    ]));
    let app = App::start(github.provider(), |b| b).await;
    let browser = Browser::new();
    assert_eq!(app.sign_in(&browser, "nomail").await.status, 303);
    assert_eq!(app.me(&browser).await.1["email"], Value::Null);
    let second = Browser::new();
    assert_eq!(app.sign_in(&second, "second").await.status, 303);
    assert_eq!(app.me(&second).await.1["email"], "second@example.com");

    // GitHub unreachable at the callback: a 5xx page, nothing written.
    let late = Browser::new();
    let callback = app.callback_url(&late, "github", "carol").await;
    let url = github.url();
    drop(github);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let page = late.get(&callback).await;
    assert!(page.status >= 500, "{}: {}", page.status, page.body);
    assert!(late.cookie("jit_session").is_none());
    assert!(!page.body.contains(&url));
    assert_eq!(app.store.list_users(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn memberships_are_read_across_pages() {
    let github = TestGitHub::start().await;
    let mut user = GitHubUser::new(5005, "busy", "Busy Person").emails(vec![GitHubEmail::new(
        "busy@example.com",
        true,
        true,
    )]);
    user.orgs = (0..150).map(|i| format!("org-{i}")).collect();
    user.teams = (0..120)
        .map(|i| ("org-0".to_owned(), format!("team-{i}")))
        .collect();
    github.add_user(user);
    let app = App::start(github.provider(), |b| b).await;
    let browser = Browser::new();
    assert_eq!(app.sign_in(&browser, "busy").await.status, 303);
    let (_, me) = app.me(&browser).await;
    let groups = me["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 270);
    assert!(groups.contains(&json!("org-149")));
    assert!(groups.contains(&json!("org-0/team-119")));
}
