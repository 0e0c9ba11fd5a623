//! The reference server (`examples/server.rs`) run as a process and driven over HTTP, as it is
//! run and checked from outside.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::{Browser, Page};
use common::get_with;
use common::reference::{Running, server_binary, start};
use serde_json::json;
use tower_jit_provisioning::UserStore;
use tower_jit_provisioning::testing::TestIssuer;

/// Runs the server expecting it to refuse to start; returns its stderr.
fn refuses(env: &[(&str, &str)]) -> String {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("jit.db").display());
    let output = Command::new(server_binary())
        .env_clear()
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("JIT_DATABASE_URL", url)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{env:?} started");
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn with_no_settings_a_newcomer_gets_an_account_on_the_first_request() {
    let db = tempfile::tempdir().unwrap();
    let server = start(&[], &db);
    let client = reqwest::Client::new();

    let health = get_with(&client, &format!("{}/healthz", server.base), None).await;
    assert_eq!(health.status, 200);
    let anonymous = get_with(&client, &format!("{}/me", server.base), None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.challenge(), Some("Bearer"));

    // The printed curl command carries a working token.
    let curl = server
        .stdout
        .iter()
        .find(|l| l.starts_with("curl "))
        .expect("a ready-to-paste curl command");
    let token = curl
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let me = get_with(&client, &format!("{}/me", server.base), Some(token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let user = me.json();
    for field in [
        "id",
        "email",
        "email_verified",
        "display_name",
        "given_name",
        "family_name",
        "roles",
        "groups",
        "status",
        "created_at",
        "updated_at",
        "last_login_at",
    ] {
        assert!(user.get(field).is_some(), "/me lacks `{field}`: {user}");
    }
    assert_eq!(user["email"], "dev@example.com");
    assert_eq!(user["status"], "active");
    assert!(db.path().join("jit.db").exists());
}

#[tokio::test]
async fn configured_from_the_environment() {
    let idp = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let server = start(
        &[
            ("JIT_ISSUERS", idp.url()),
            ("JIT_AUDIENCES", "orders-api,test-client"),
            ("JIT_TOKEN_KINDS", "access"),
            ("JIT_ALLOWED_DOMAINS", "example.com"),
            ("JIT_DEFAULT_ROLES", "member"),
            ("JIT_GROUP_ROLES", "admins=admin,ops=operator"),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ],
        &db,
    );
    assert!(
        !server.stdout.iter().any(|l| l.starts_with("curl ")),
        "no development issuer when JIT_ISSUERS is set"
    );
    let client = reqwest::Client::new();
    let me = format!("{}/me", server.base);

    let token = idp
        .access_token()
        .subject("env-user")
        .email("env@example.com", true)
        .groups(["admins"])
        .sign();
    let reply = get_with(&client, &me, Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["roles"], json!(["admin", "member"]));

    // ID tokens are not accepted: JIT_TOKEN_KINDS=access.
    let id_token = idp
        .id_token()
        .subject("x")
        .email("x@example.com", true)
        .sign();
    assert_eq!(get_with(&client, &me, Some(&id_token)).await.status, 401);

    // Another domain: refused by JIT_ALLOWED_DOMAINS.
    let outsider = idp
        .access_token()
        .subject("y")
        .email("y@elsewhere.org", true)
        .sign();
    let reply = get_with(&client, &me, Some(&outsider)).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["code"], "domain_not_allowed");
}

#[tokio::test]
async fn bad_settings_stop_the_server_with_one_line_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("JIT_TOKEN_KINDS", "id,refresh")], "JIT_TOKEN_KINDS"),
        (&[("JIT_LISTEN", "not-an-address")], "JIT_LISTEN"),
        (&[("JIT_GROUP_ROLES", "admins")], "JIT_GROUP_ROLES"),
        (
            &[("JIT_ISSUERS", "https://idp.example.com")],
            "JIT_AUDIENCES",
        ),
        (
            &[
                ("JIT_ISSUERS", "http://127.0.0.1:9"),
                ("JIT_AUDIENCES", "a"),
            ],
            "JIT_ISSUERS",
        ),
        (
            &[("JIT_ALLOW_HTTP_ISSUERS", "yes")],
            "JIT_ALLOW_HTTP_ISSUERS",
        ),
        (
            &[
                ("JIT_ISSUERS", "azure=https://idp.example.com"),
                ("JIT_AUDIENCES", "a"),
            ],
            "JIT_ISSUERS",
        ),
        (
            &[("JIT_ISSUERS", "entra:contoso"), ("JIT_AUDIENCES", "a")],
            "JIT_ISSUERS",
        ),
        (
            &[
                ("JIT_ISSUERS", "google"),
                ("JIT_AUDIENCES", "a"),
                ("JIT_TOKEN_KINDS", "access"),
            ],
            "JIT_ISSUERS",
        ),
    ];
    for (env, variable) in cases {
        let stderr = refuses(env);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: {stderr}");
        assert!(lines[0].contains(variable), "{env:?}: {stderr}");
    }
    let stderr = refuses(&[("JIT_DATABASE_URL", "mysql://nope")]);
    assert!(stderr.contains("JIT_DATABASE_URL"), "{stderr}");
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_explained_without_its_password() {
    // The cause is printed, not just "store error".
    let stderr = refuses(&[("JIT_DATABASE_URL", "sqlite:///no/such/directory/jit.db")]);
    assert!(stderr.contains("JIT_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("unable to open database file"), "{stderr}");
    // A PostgreSQL server that is not there: the cause, and no password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:s3cret-pw@127.0.0.1:{port}/app");
    let stderr = refuses(&[("JIT_DATABASE_URL", &url)]);
    assert!(stderr.contains("JIT_DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("s3cret-pw"),
        "the password is never printed: {stderr}"
    );
    assert!(stderr.contains("***"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("refused") || stderr.contains("timed out"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_development_issuer_keeps_its_port_keys_and_users_across_restarts() {
    let db = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let first = start(&[("RUST_LOG", "info")], &db);
    let token = printed_token(&first);
    let issuer = issuer_line(&first);
    let me = get_with(&client, &format!("{}/me", first.base), Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let id = me.json()["id"].clone();
    // Logs are plain text when they do not go to a terminal.
    assert!(
        first.stdout.iter().all(|line| !line.contains('\u{1b}')),
        "{:?}",
        first.stdout
    );
    drop(first);

    let second = start(&[], &db);
    assert_eq!(issuer_line(&second), issuer, "the same issuer URL");
    let again = get_with(&client, &format!("{}/me", second.base), Some(&token)).await;
    assert_eq!(
        again.status, 200,
        "a token minted before the restart: {}",
        again.body
    );
    assert_eq!(again.json()["id"], id, "the same account");

    // Any user, either kind, from the printed mint command.
    let mint = second
        .stdout
        .iter()
        .find_map(|line| line.split('\'').find(|part| part.contains("/mint?")))
        .expect("a mint command")
        .to_owned();
    let minted = client
        .get(&mint)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let alice = get_with(&client, &format!("{}/me", second.base), Some(&minted)).await;
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert_eq!(alice.json()["email"], "alice@example.com");
    assert_ne!(alice.json()["id"], id);
}

#[tokio::test]
async fn listens_on_a_host_name() {
    let db = tempfile::tempdir().unwrap();
    let server = start(&[("JIT_LISTEN", "localhost:0")], &db);
    let health = get_with(
        &reqwest::Client::new(),
        &format!("{}/healthz", server.base),
        None,
    )
    .await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn presets_in_jit_issuers() {
    let idp = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let issuers = format!("keycloak={}", idp.url());
    let server = start(
        &[
            ("JIT_ISSUERS", &issuers),
            ("JIT_AUDIENCES", "orders-api"),
            ("JIT_TOKEN_KINDS", "access"),
            ("JIT_GROUP_ROLES", "orders-admin=admin"),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ],
        &db,
    );
    let client = reqwest::Client::new();
    let me = format!("{}/me", server.base);
    // A Keycloak access token: `typ: JWT` in the header, `typ: Bearer` in the payload.
    let access = idp
        .id_token()
        .audiences(["orders-api", "account"])
        .subject("f1c3a9b2")
        .claim("typ", "Bearer")
        .claim("azp", "orders-web")
        .claim("realm_access", json!({"roles": ["orders-admin"]}))
        .sign();
    let reply = get_with(&client, &me, Some(&access)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["roles"], json!(["admin"]));
    let id_token = idp
        .id_token()
        .audience("orders-api")
        .claim("typ", "ID")
        .sign();
    let reply = get_with(&client, &me, Some(&id_token)).await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .challenge()
            .unwrap()
            .contains("expected an access token"),
        "{:?}",
        reply.challenge()
    );
}

/// The settings that point a server at `idp`, followed by `more`.
fn at_issuer<'a>(idp: &'a TestIssuer, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("JIT_ISSUERS", idp.url()),
        ("JIT_AUDIENCES", "test-client"),
        ("JIT_ALLOW_HTTP_ISSUERS", "1"),
    ];
    env.extend_from_slice(more);
    env
}

/// The token of the printed `curl` command.
fn printed_token(server: &Running) -> String {
    server
        .stdout
        .iter()
        .find(|l| l.starts_with("curl -s -H 'Authorization"))
        .and_then(|curl| curl.split("Bearer ").nth(1))
        .and_then(|rest| rest.split('\'').next())
        .expect("a ready-to-paste curl command")
        .to_owned()
}

/// The development issuer's URL, as printed.
fn issuer_line(server: &Running) -> String {
    server
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("development issuer at "))
        .and_then(|rest| rest.split(';').next())
        .expect("the development issuer's URL")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn two_server_processes_share_one_postgres_database() {
    let db = common::PgDatabase::create("two_server_processes_share_one_postgres").await;
    let idp = TestIssuer::start().await;
    let unused = tempfile::tempdir().unwrap();
    let env = [
        ("JIT_ISSUERS", idp.url()),
        ("JIT_AUDIENCES", "test-client"),
        ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ("JIT_DATABASE_URL", db.url.as_str()),
    ];
    let one = start(&env, &unused);
    let two = start(&env, &unused);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(50)
        .build()
        .unwrap();

    // 100 concurrent first logins for 20 people, alternating between the processes.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let token = idp.id_token().subject(format!("p{}", i % 20)).sign();
        let url = format!("{}/me", if i % 2 == 0 { &one.base } else { &two.base });
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            get_with(&client, &url, Some(&token)).await
        }));
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let store = db.store().await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM jit_users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(users, 20, "one account per person across both processes");

    // A deactivation written by a third party reaches both processes.
    let token = idp.id_token().subject("p7").sign();
    let me_one = format!("{}/me", one.base);
    let me_two = format!("{}/me", two.base);
    let id = get_with(&client, &me_one, Some(&token)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get_with(&client, &me_two, Some(&token)).await.status, 200);
    let started = std::time::Instant::now();
    store
        .deactivate(uuid::Uuid::parse_str(&id).unwrap())
        .await
        .unwrap();
    for me in [&me_one, &me_two] {
        loop {
            let status = get_with(&client, me, Some(&token)).await.status;
            if status == 403 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{me} never heard"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    println!(
        "both processes refused the deactivated user after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn scim_is_mounted_when_a_token_is_set() {
    let idp = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let secret = "reference-server-scim-secret";
    let server = start(
        &at_issuer(
            &idp,
            &[
                ("JIT_GROUP_ROLES", "Admins=admin"),
                ("JIT_SCIM_TOKEN", secret),
            ],
        ),
        &db,
    );
    let client = reqwest::Client::new();
    let scim = |path: &str| format!("{}/scim/v2{path}", server.base);
    let config = client
        .get(scim("/ServiceProviderConfig"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    let refused = client
        .get(scim("/Users"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // A person signs in; the IdP finds them by userName, adds them to a group, deactivates them.
    let token = idp
        .id_token()
        .subject("srv-user")
        .email("srv@example.com", true)
        .sign();
    let me = format!("{}/me", server.base);
    assert_eq!(get_with(&client, &me, Some(&token)).await.status, 200);
    let found: serde_json::Value = client
        .get(scim("/Users?filter=userName+eq+%22srv%40example.com%22"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = found["Resources"][0]["id"].as_str().unwrap().to_owned();
    let group = client
        .post(scim("/Groups"))
        .bearer_auth(secret)
        .header("content-type", "application/scim+json")
        .body(json!({"displayName": "Admins", "members": [{"value": id}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(group.status(), 201);
    assert_eq!(
        get_with(&client, &me, Some(&token)).await.json()["roles"],
        json!(["admin"])
    );
    let deactivate = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}]
    });
    let patched = client
        .patch(scim(&format!("/Users/{id}")))
        .bearer_auth(secret)
        .header("content-type", "application/scim+json")
        .body(deactivate.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(get_with(&client, &me, Some(&token)).await.status, 403);

    // Without the variable there is no SCIM at all.
    let plain = start(&at_issuer(&idp, &[]), &tempfile::tempdir().unwrap());
    let missing = client
        .get(format!("{}/scim/v2/Users", plain.base))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let stderr = refuses(&[("JIT_SCIM_TOKEN", "short")]);
    assert!(stderr.contains("JIT_SCIM_TOKEN"), "{stderr}");
}

/// Signs `who` in at the server with `browser`, through whichever issuer `/login` sends it to;
/// the callback's page.
async fn browser_sign_in(server: &Running, browser: &Browser, who: &str) -> Page {
    let start = browser
        .get(&format!("{}/login?login_hint={who}", server.base))
        .await;
    assert_eq!(start.status, 303, "{}", start.body);
    let issued = browser.get(&start.location.unwrap()).await;
    assert_eq!(issued.status, 302, "{}", issued.body);
    browser.get(&issued.location.unwrap()).await
}

#[tokio::test]
async fn with_no_settings_a_browser_signs_in_sees_itself_and_signs_out() {
    let db = tempfile::tempdir().unwrap();
    let server = start(&[], &db);
    let browser = Browser::new();
    let url = |path: &str| format!("{}{path}", server.base);

    let signed_out = browser.get(&url("/")).await;
    assert_eq!(signed_out.status, 200);
    assert!(
        signed_out.body.contains("href=\"/login\""),
        "{}",
        signed_out.body
    );
    assert_eq!(browser.get(&url("/me")).await.status, 401);

    // The redirect URI is the public URL's, whatever the request's headers claim.
    let request = browser
        .client
        .get(url("/login"))
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https");
    let start = browser.send(request).await;
    let authorize = start.location.unwrap();
    let redirect_uri = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    assert_eq!(redirect_uri, Some(url("/callback")));

    let callback = browser_sign_in(&server, &browser, "alice").await;
    assert_eq!(callback.status, 303, "{}", callback.body);
    assert_eq!(callback.location.as_deref(), Some("/"));
    let home = browser.get(&url("/")).await;
    assert!(home.body.contains("Alice Liddell"), "{}", home.body);
    assert!(home.body.contains("alice@example.com"), "{}", home.body);
    assert!(home.body.contains("action=\"/logout\""), "{}", home.body);
    let me = browser.get(&url("/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["identity"]["subject"], "alice");

    // The same person with a bearer token: the same account.
    let mint = format!("{}/mint?sub=alice&kind=id", issuer_line(&server));
    let token = reqwest::get(&mint).await.unwrap().text().await.unwrap();
    let by_token = get_with(&reqwest::Client::new(), &url("/me"), Some(&token)).await;
    assert_eq!(by_token.json()["id"], me["id"]);

    // Sign-out: same-origin POST only.
    let evil = browser
        .post(&url("/logout"), Some("http://evil.example"))
        .await;
    assert_eq!(evil.status, 403);
    assert_eq!(browser.get(&url("/me")).await.status, 200);
    assert_eq!(browser.get(&url("/logout")).await.status, 405);
    let out = browser.post(&url("/logout"), Some(&server.base)).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location.as_deref(), Some("/"));
    assert_eq!(browser.get(&url("/me")).await.status, 401);
    assert!(
        browser
            .get(&url("/"))
            .await
            .body
            .contains("href=\"/login\"")
    );
}

#[tokio::test]
async fn the_home_page_shows_what_the_issuer_sent_as_text() {
    let db = tempfile::tempdir().unwrap();
    let server = start(&[], &db);
    let mint = format!(
        "{}/mint?sub=mallory&name={}&email=m%40example.com",
        issuer_line(&server),
        "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
    );
    let token = reqwest::get(&mint).await.unwrap().text().await.unwrap();
    let home = get_with(
        &reqwest::Client::new(),
        &format!("{}/", server.base),
        Some(&token),
    )
    .await;
    assert_eq!(home.status, 200);
    assert!(!home.body.contains("<img"), "{}", home.body);
    assert!(home.body.contains("&lt;img src=x"), "{}", home.body);
    assert!(
        home.header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'none'")),
    );
}

#[tokio::test]
async fn public_url_scopes_and_session_settings_from_the_environment() {
    let db = tempfile::tempdir().unwrap();
    let server = start(
        &[
            ("JIT_PUBLIC_URL", "https://app.example"),
            ("JIT_OIDC_SCOPES", "groups offline_access"),
            ("JIT_SESSION_IDLE_SECS", "600"),
            ("JIT_SESSION_MAX_SECS", "3600"),
        ],
        &db,
    );
    let browser = Browser::new();
    let start = browser
        .get(&format!("{}/login?login_hint=alice", server.base))
        .await;
    assert_eq!(start.status, 303);
    let authorize = url::Url::parse(&start.location.unwrap()).unwrap();
    let param = |name: &str| {
        authorize
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    assert_eq!(param("redirect_uri"), "https://app.example/callback");
    assert_eq!(param("scope"), "openid email profile groups offline_access");
    let flow = &start.set_cookies[0];
    assert!(
        flow.starts_with("__Host-jit_flow=") && flow.contains("Secure"),
        "{flow}"
    );

    // The session cookie lives no longer than the absolute timeout.
    let issued = browser.get(authorize.as_str()).await.location.unwrap();
    let callback = issued.replace("https://app.example", &server.base);
    let signed_in = browser.get(&callback).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let session = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-jit_session="))
        .expect("a session cookie");
    assert!(session.contains("Max-Age=3600"), "{session}");

    for (variable, value) in [
        ("JIT_SESSION_IDLE_SECS", "soon"),
        ("JIT_SESSION_MAX_SECS", "0"),
        ("JIT_PUBLIC_URL", "app.example"),
        ("JIT_PUBLIC_URL", "https://app.example/?x=1"),
    ] {
        let stderr = refuses(&[(variable, value)]);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
    let stderr = refuses(&[("JIT_OIDC_CLIENT_SECRET", "s")]);
    assert!(stderr.contains("JIT_OIDC_CLIENT_ID"), "{stderr}");
}

#[tokio::test]
async fn browser_sign_in_at_a_configured_issuer_and_its_back_channel_logout() {
    let idp = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let server = start(
        &[
            ("JIT_ISSUERS", idp.url()),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
            ("JIT_OIDC_CLIENT_ID", TestIssuer::CLIENT_ID),
            ("JIT_OIDC_CLIENT_SECRET", TestIssuer::CLIENT_SECRET),
        ],
        &db,
    );
    let url = |path: &str| format!("{}{path}", server.base);
    let browser = Browser::new();
    let callback = browser_sign_in(&server, &browser, "bob").await;
    assert_eq!(callback.status, 303, "{}", callback.body);
    assert_eq!(browser.get(&url("/me")).await.status, 200);
    // `JIT_AUDIENCES` defaults to the client: its ID tokens work as bearer tokens too.
    let token = idp.id_token().subject("bob").sign();
    let by_token = get_with(&reqwest::Client::new(), &url("/me"), Some(&token)).await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);

    let logout = idp.logout_token().subject("bob").sign();
    let endpoint = url("/backchannel-logout");
    assert_eq!(idp.send_backchannel_logout(&endpoint, &logout).await, 200);
    assert_eq!(browser.get(&url("/me")).await.status, 401);
    assert_eq!(idp.send_backchannel_logout(&endpoint, &logout).await, 400);

    // Without a client there is no browser sign-in.
    let plain = start(&at_issuer(&idp, &[]), &tempfile::tempdir().unwrap());
    let login = Browser::new().get(&format!("{}/login", plain.base)).await;
    assert_eq!(login.status, 404);
    let home = Browser::new().get(&format!("{}/", plain.base)).await;
    assert_eq!(home.status, 200);
    assert!(!home.body.contains("href=\"/login\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn two_server_processes_share_browser_sessions_and_their_ends() {
    let db = common::PgDatabase::create("two_server_processes_share_browser_sessions").await;
    let idp = TestIssuer::start().await;
    let unused = tempfile::tempdir().unwrap();
    let env = [
        ("JIT_ISSUERS", idp.url()),
        ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ("JIT_OIDC_CLIENT_ID", TestIssuer::CLIENT_ID),
        ("JIT_OIDC_CLIENT_SECRET", TestIssuer::CLIENT_SECRET),
        ("JIT_DATABASE_URL", db.url.as_str()),
        ("JIT_SCIM_TOKEN", "reference-server-scim-secret"),
    ];
    let one = start(&env, &unused);
    let two = start(&env, &unused);
    let ends_on = |server: &Running, browser: &Browser| {
        let me = format!("{}/me", server.base);
        let browser = browser.clone();
        async move {
            let started = std::time::Instant::now();
            while browser.get(&me).await.status != 401 {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "within a second"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Made on one, good on the other; a logout on the other ends it on the first.
    let alice = Browser::new();
    assert_eq!(browser_sign_in(&one, &alice, "alice").await.status, 303);
    assert_eq!(alice.get(&format!("{}/me", two.base)).await.status, 200);
    let out = alice
        .post(&format!("{}/logout", two.base), Some(&two.base))
        .await;
    assert_eq!(out.status, 303);
    ends_on(&one, &alice).await;

    // A back-channel logout received by one ends the session on the other.
    let bob = Browser::new();
    assert_eq!(browser_sign_in(&one, &bob, "bob").await.status, 303);
    assert_eq!(bob.get(&format!("{}/me", two.base)).await.status, 200);
    let token = idp.logout_token().subject("bob").sign();
    let endpoint = format!("{}/backchannel-logout", one.base);
    assert_eq!(idp.send_backchannel_logout(&endpoint, &token).await, 200);
    ends_on(&two, &bob).await;

    // A SCIM deactivation through one ends the session on the other.
    let carol = Browser::new();
    assert_eq!(browser_sign_in(&two, &carol, "carol").await.status, 303);
    let me: serde_json::Value =
        serde_json::from_str(&carol.get(&format!("{}/me", one.base)).await.body).unwrap();
    let id = me["id"].as_str().unwrap();
    let deactivated = reqwest::Client::new()
        .patch(format!("{}/scim/v2/Users/{id}", one.base))
        .bearer_auth("reference-server-scim-secret")
        .header("content-type", "application/scim+json")
        .body(
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deactivated.status(), 200);
    ends_on(&two, &carol).await;
}

#[tokio::test]
async fn opaque_tokens_by_introspection_from_the_environment() {
    let client = reqwest::Client::new();

    // The development issuer's opaque tokens work with no settings.
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let dev = start(&[], &dirs[0]);
    let mint = format!("{}/mint?sub=opaque-dev&kind=opaque", issuer_line(&dev));
    let token = reqwest::get(&mint).await.unwrap().text().await.unwrap();
    assert!(!token.contains('.'), "{token}");
    let me = get_with(&client, &format!("{}/me", dev.base), Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["identity"]["subject"], "opaque-dev");

    // A configured issuer, with the cache bound from the environment.
    let idp = TestIssuer::start().await;
    let server = start(
        &at_issuer(
            &idp,
            &[
                ("JIT_INTROSPECTION_CLIENT_ID", TestIssuer::CLIENT_ID),
                ("JIT_INTROSPECTION_CLIENT_SECRET", TestIssuer::CLIENT_SECRET),
                ("JIT_INTROSPECTION_CACHE_SECS", "1"),
            ],
        ),
        &dirs[1],
    );
    let me_url = format!("{}/me", server.base);
    let token = idp.opaque_token().subject("opaque-erin").opaque();
    assert_eq!(get_with(&client, &me_url, Some(&token)).await.status, 200);
    idp.revoke(&token);
    let revoked_at = std::time::Instant::now();
    loop {
        let reply = get_with(&client, &me_url, Some(&token)).await;
        if reply.status == 401 {
            assert!(
                reply
                    .challenge()
                    .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
                "{:?}",
                reply.challenge()
            );
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without the settings, opaque tokens are not accepted.
    let plain = start(&at_issuer(&idp, &[]), &dirs[2]);
    let other = idp.opaque_token().subject("opaque-frank").opaque();
    let refused = get_with(&client, &format!("{}/me", plain.base), Some(&other)).await;
    assert_eq!(refused.status, 401);

    for (env, variable) in [
        (
            vec![("JIT_INTROSPECTION_CLIENT_ID", "api")],
            "JIT_INTROSPECTION_CLIENT_SECRET",
        ),
        (
            vec![("JIT_INTROSPECTION_CLIENT_SECRET", "s")],
            "JIT_INTROSPECTION_CLIENT_ID",
        ),
        (
            vec![("JIT_INTROSPECTION_CACHE_SECS", "soon")],
            "JIT_INTROSPECTION_CACHE_SECS",
        ),
    ] {
        let stderr = refuses(&env);
        assert!(stderr.contains(variable), "{env:?}: {stderr}");
    }
}

/// Signs in at the server's GitHub, as `who`; the callback's page.
async fn github_sign_in(server: &Running, browser: &Browser, who: &str) -> Page {
    let start = browser
        .get(&format!(
            "{}/login?provider=github&login_hint={who}",
            server.base
        ))
        .await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorized = browser.get(&start.location.unwrap()).await;
    assert_eq!(authorized.status, 302, "{}", authorized.body);
    browser.get(&authorized.location.unwrap()).await
}

#[tokio::test]
async fn github_sign_in_in_development_and_from_the_environment() {
    // Development: a local GitHub stand-in, offered on the home page.
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let dev = start(&[], &dirs[0]);
    let browser = Browser::new();
    let home = browser.get(&format!("{}/", dev.base)).await;
    assert!(
        home.body.contains("href=\"/login?provider=github\""),
        "{}",
        home.body
    );
    let signed_in = github_sign_in(&dev, &browser, "ada").await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let me: serde_json::Value =
        serde_json::from_str(&browser.get(&format!("{}/me", dev.base)).await.body).unwrap();
    assert_eq!(me["identity"]["issuer"], "github");
    assert_eq!(me["identity"]["subject"], "1001");
    assert_eq!(me["email"], "ada@example.com");

    // Configured, against a GitHub double: its URL is the accounts' issuer (as an Enterprise
    // server's is), memberships map to roles, and its tokens work as bearer tokens.
    let github = tower_jit_provisioning::testing::TestGitHub::start().await;
    let idp = TestIssuer::start().await;
    let server = start(
        &at_issuer(
            &idp,
            &[
                ("JIT_GITHUB_CLIENT_ID", "test-github-client"),
                ("JIT_GITHUB_CLIENT_SECRET", "test-github-secret"),
                ("JIT_GITHUB_URL", &github.url()),
                ("JIT_GITHUB_API_URL", &github.url()),
                ("JIT_GITHUB_ACCEPT_TOKENS", "1"),
                ("JIT_GROUP_ROLES", "acme=member,acme/admins=admin"),
            ],
        ),
        &dirs[1],
    );
    let browser = Browser::new();
    let home = browser.get(&format!("{}/", server.base)).await;
    assert!(home.body.contains("login-github"), "{}", home.body);
    assert_eq!(github_sign_in(&server, &browser, "ada").await.status, 303);
    let me: serde_json::Value =
        serde_json::from_str(&browser.get(&format!("{}/me", server.base)).await.body).unwrap();
    assert_eq!(me["identity"]["issuer"], github.url());
    assert_eq!(me["identity"]["subject"], "1001");
    let mut roles: Vec<String> = serde_json::from_value(me["roles"].clone()).unwrap();
    roles.sort();
    assert_eq!(roles, ["admin", "member"]);
    let token = github.token_for(1001);
    let by_token = get_with(
        &reqwest::Client::new(),
        &format!("{}/me", server.base),
        Some(&token),
    )
    .await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    assert_eq!(by_token.json()["id"], me["id"]);

    for (env, variable) in [
        (
            vec![("JIT_GITHUB_CLIENT_ID", "id")],
            "JIT_GITHUB_CLIENT_SECRET",
        ),
        (
            vec![
                ("JIT_GITHUB_CLIENT_ID", "id"),
                ("JIT_GITHUB_CLIENT_SECRET", "s"),
                ("JIT_GITHUB_URL", "http://github.example.com"),
            ],
            "JIT_GITHUB",
        ),
    ] {
        let stderr = refuses(&env);
        assert!(stderr.contains(variable), "{env:?}: {stderr}");
    }
}

/// `JIT_LINK_CLAIM`: a first sign-in finds the account SCIM created with that claim as its
/// `externalId` (`sub` by default); set but empty, it creates a new account instead.
#[tokio::test]
async fn a_first_sign_in_finds_the_account_scim_created_by_jit_link_claim() {
    let idp = TestIssuer::start().await;
    let secret = "reference-server-scim-secret";
    let client = reqwest::Client::new();
    for (setting, claim, linked) in [
        (None, "sub", true),
        (Some("oid"), "oid", true),
        (Some(""), "sub", false),
    ] {
        let db = tempfile::tempdir().unwrap();
        let mut env = vec![
            ("JIT_ISSUERS", idp.url()),
            ("JIT_AUDIENCES", "test-client"),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
            ("JIT_SCIM_TOKEN", secret),
        ];
        if let Some(setting) = setting {
            env.push(("JIT_LINK_CLAIM", setting));
        }
        let server = start(&env, &db);
        let created: serde_json::Value = client
            .post(format!("{}/scim/v2/Users", server.base))
            .bearer_auth(secret)
            .header("content-type", "application/scim+json")
            .body(json!({"userName": "pre@example.com", "externalId": "object-id-7"}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut token = idp.id_token().email("pre@example.com", true);
        token = if claim == "sub" {
            token.subject("object-id-7")
        } else {
            token.subject("pairwise-7").claim("oid", "object-id-7")
        };
        let me = get_with(&client, &format!("{}/me", server.base), Some(&token.sign())).await;
        assert_eq!(me.status, 200, "{setting:?}: {}", me.body);
        assert_eq!(
            me.json()["id"] == created["id"],
            linked,
            "JIT_LINK_CLAIM={setting:?}: {} vs {}",
            me.body,
            created
        );
    }
}

/// `JIT_CREATE_ACCOUNTS=0`: only accounts SCIM created sign in; a stranger is refused with
/// `not_provisioned` and gets no account.
#[tokio::test]
async fn with_jit_create_accounts_0_only_accounts_scim_created_sign_in() {
    let idp = TestIssuer::start().await;
    let secret = "reference-server-scim-secret";
    let db = tempfile::tempdir().unwrap();
    let server = start(
        &at_issuer(
            &idp,
            &[("JIT_SCIM_TOKEN", secret), ("JIT_CREATE_ACCOUNTS", "0")],
        ),
        &db,
    );
    let client = reqwest::Client::new();
    let me = format!("{}/me", server.base);
    let stranger = idp.id_token().subject("stranger").sign();
    let refused = get_with(&client, &me, Some(&stranger)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["code"], "not_provisioned");
    let users = |body: serde_json::Value| body["totalResults"].as_u64().unwrap();
    let list = || async {
        client
            .get(format!("{}/scim/v2/Users", server.base))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(users(list().await), 0, "nothing written");

    let created = client
        .post(format!("{}/scim/v2/Users", server.base))
        .bearer_auth(secret)
        .header("content-type", "application/scim+json")
        .body(json!({"userName": "known@example.com", "externalId": "known"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let known = idp.id_token().subject("known").sign();
    assert_eq!(get_with(&client, &me, Some(&known)).await.status, 200);
    assert_eq!(users(list().await), 1);

    let stderr = refuses(&[("JIT_CREATE_ACCOUNTS", "no")]);
    assert!(stderr.contains("JIT_CREATE_ACCOUNTS"), "{stderr}");
}

/// `JIT_REQUIRE_APPROVAL=1` with `JIT_ADMIN_TOKEN`: two servers on one PostgreSQL database; an
/// approval or a refusal through one server's admin API holds on the other within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn approvals_through_the_admin_api_hold_on_every_server() {
    let db = common::PgDatabase::create("approvals_through_the_admin_api").await;
    let idp = TestIssuer::start().await;
    let unused = tempfile::tempdir().unwrap();
    let admin = "reference-server-admin-secret";
    let env = [
        ("JIT_ISSUERS", idp.url()),
        ("JIT_AUDIENCES", "test-client"),
        ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ("JIT_DATABASE_URL", db.url.as_str()),
        ("JIT_REQUIRE_APPROVAL", "1"),
        ("JIT_ADMIN_TOKEN", admin),
    ];
    let one = start(&env, &unused);
    let two = start(&env, &unused);
    let client = reqwest::Client::new();
    let ada = idp
        .id_token()
        .subject("ada")
        .email("ada@example.com", true)
        .sign();
    let bob = idp
        .id_token()
        .subject("bob")
        .email("bob@example.com", true)
        .sign();
    for token in [&ada, &bob] {
        let reply = get_with(&client, &format!("{}/me", two.base), Some(token)).await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.json()["code"], "pending_approval");
    }

    let call = |method: reqwest::Method, path: &str, secret: &str| {
        client
            .request(method, format!("{}/admin{path}", one.base))
            .bearer_auth(secret)
            .send()
    };
    let refused = call(reqwest::Method::GET, "/pending", "not-the-admin-secret")
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let pending: serde_json::Value = call(reqwest::Method::GET, "/pending", admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_of = |email: &str| {
        pending["pending"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == email)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ada_id, bob_id) = (id_of("ada@example.com"), id_of("bob@example.com"));

    for (id, decision, token, status) in [
        (&ada_id, "approve", &ada, 200),
        (&bob_id, "refuse", &bob, 403),
    ] {
        let decided = call(
            reqwest::Method::POST,
            &format!("/users/{id}/{decision}"),
            admin,
        )
        .await
        .unwrap();
        assert_eq!(decided.status(), 200, "{decision}");
        let started = std::time::Instant::now();
        let me = format!("{}/me", two.base);
        loop {
            let reply = get_with(&client, &me, Some(token)).await;
            if reply.status == status && (status == 200 || reply.json()["code"] == "deactivated") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{decision}: the other server still answers {} {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Decided already: 409; an unknown id: 404.
    let again = call(
        reqwest::Method::POST,
        &format!("/users/{ada_id}/refuse"),
        admin,
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 409);
    let unknown = call(reqwest::Method::POST, "/users/not-an-id/approve", admin)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let stderr = refuses(&[("JIT_ADMIN_TOKEN", "short")]);
    assert!(stderr.contains("JIT_ADMIN_TOKEN"), "{stderr}");
}

/// The metric lines of a Prometheus text scrape, by name and sorted labels.
fn scraped(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    (name, labels.join(","))
                }
                None => (series, String::new()),
            };
            Some((format!("{name}{{{labels}}}"), value.parse().ok()?))
        })
        .collect()
}

/// `JIT_METRICS=1`: after a scripted sequence of requests, `GET /metrics` shows exactly what
/// happened, by outcome, source and reason, and nothing about any person.
#[tokio::test]
async fn metrics_show_the_exact_counts_of_a_scripted_sequence() {
    let idp = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let secret = "reference-server-scim-secret";
    let server = start(
        &at_issuer(
            &idp,
            &[
                ("JIT_ALLOWED_DOMAINS", "example.com"),
                ("JIT_SCIM_TOKEN", secret),
                ("JIT_METRICS", "1"),
            ],
        ),
        &db,
    );
    let client = reqwest::Client::new();
    let me = format!("{}/me", server.base);
    let ada = idp
        .id_token()
        .subject("ada")
        .email("ada@example.com", true)
        .sign();
    let eve = idp
        .id_token()
        .subject("eve")
        .email("eve@elsewhere.org", true)
        .sign();
    let forged = stranger.id_token().subject("ada").sign();
    // Ada's token three times: verified at its first and second sight (when the token cache
    // takes it), then a cache hit.
    for (token, status) in [
        (None, 401),
        (Some(&ada), 200),
        (Some(&ada), 200),
        (Some(&ada), 200),
        (Some(&forged), 401),
        (Some(&eve), 403),
    ] {
        assert_eq!(
            get_with(&client, &me, token.map(String::as_str))
                .await
                .status,
            status
        );
    }
    for (bearer, status) in [(secret, 200), ("not-the-scim-secret", 401)] {
        let reply = client
            .get(format!("{}/scim/v2/Users", server.base))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), status);
    }
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = scraped(&text);
    for (series, expected) in [
        // The server's layer is optional: no credential passes as anonymous, and the
        // handler answers 401.
        (
            r#"jit_requests_total{outcome="anonymous",source="none"}"#,
            1.0,
        ),
        (
            r#"jit_requests_total{outcome="admitted",source="bearer_jwt"}"#,
            3.0,
        ),
        (
            r#"jit_requests_total{outcome="unauthenticated",source="bearer_jwt"}"#,
            1.0,
        ),
        (
            r#"jit_requests_total{outcome="refused",source="bearer_jwt"}"#,
            1.0,
        ),
        (r#"jit_token_cache_total{result="hit"}"#, 1.0),
        (r#"jit_token_cache_total{result="miss"}"#, 4.0),
        (r#"jit_token_verifications_total{result="valid"}"#, 3.0),
        (r#"jit_token_verifications_total{result="invalid"}"#, 1.0),
        (r#"jit_user_cache_total{result="hit"}"#, 2.0),
        (r#"jit_user_cache_total{result="miss"}"#, 1.0),
        (r#"jit_accounts_total{event="provisioned"}"#, 1.0),
        (r#"jit_refusals_total{reason="domain_not_allowed"}"#, 1.0),
        (r#"jit_key_set_refreshes_total{result="ok"}"#, 1.0),
        (
            r#"jit_scim_requests_total{method="GET",resource="Users",status="2xx"}"#,
            1.0,
        ),
        (
            r#"jit_scim_requests_total{method="GET",resource="Users",status="4xx"}"#,
            1.0,
        ),
    ] {
        assert_eq!(metrics.get(series), Some(&expected), "{series} in\n{text}");
    }
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("jit_token_verification_seconds"))
    );
    assert!(metrics.keys().any(|k| k.starts_with("jit_store_seconds")));
    for private in [
        "subject-ada-4711",
        "subject-eve-4712",
        "example.com",
        "elsewhere.org",
        ada.as_str(),
    ] {
        assert!(!text.contains(private), "{private} in the metrics");
    }
    // Without the variable there is no such route.
    let plain = start(&at_issuer(&idp, &[]), &tempfile::tempdir().unwrap());
    let missing = client
        .get(format!("{}/metrics", plain.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// `JIT_GRAPH_*`: an Entra overage token's groups are read from Graph (here a local double),
/// and `JIT_GROUP_ROLES` maps their object ids.
#[tokio::test]
async fn jit_graph_resolves_an_entra_group_overage() {
    use tower_jit_provisioning::testing::TestGraph;
    let idp = TestIssuer::start().await;
    let graph = TestGraph::start().await;
    let admins = "6f0c4a1e-0000-4000-8000-0000000000a1";
    let oid = "33333333-3333-4333-8333-333333333333";
    graph.set_groups(oid, ["6f0c4a1e-0000-4000-8000-000000000001", admins]);
    let roles = format!("{admins}=admin");
    let (graph_url, token_url) = (graph.url(), graph.token_url());
    let db = tempfile::tempdir().unwrap();
    let server = start(
        &at_issuer(
            &idp,
            &[
                ("JIT_GROUP_ROLES", roles.as_str()),
                ("JIT_GRAPH_TENANT", TestGraph::TENANT),
                ("JIT_GRAPH_CLIENT_ID", TestGraph::CLIENT_ID),
                ("JIT_GRAPH_CLIENT_SECRET", TestGraph::CLIENT_SECRET),
                ("JIT_GRAPH_URL", graph_url.as_str()),
                ("JIT_GRAPH_TOKEN_URL", token_url.as_str()),
            ],
        ),
        &db,
    );
    let token = idp
        .id_token()
        .subject("overage")
        .claim("oid", oid)
        .claim("hasgroups", true)
        .sign();
    let client = reqwest::Client::new();
    let me = get_with(&client, &format!("{}/me", server.base), Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["roles"], json!(["admin"]));
    assert_eq!(graph.group_calls(), 1);

    let stderr = refuses(&[("JIT_GRAPH_TENANT", "only-the-tenant")]);
    assert!(stderr.contains("JIT_GRAPH_TENANT"), "{stderr}");
}

/// `POST /admin/explain`: a token, or an issuer and claims, answered with the decision trace
/// and the would-be account, writing nothing; a token that fails verification answered 422
/// with its reason and nothing of its contents.
#[tokio::test]
async fn the_admin_api_explains_decisions_and_writes_nothing() {
    let idp = TestIssuer::start().await;
    let admin = "reference-server-admin-secret";
    let db = tempfile::tempdir().unwrap();
    let server = start(
        &at_issuer(
            &idp,
            &[
                ("JIT_ADMIN_TOKEN", admin),
                ("JIT_ALLOWED_DOMAINS", "example.com"),
                ("JIT_GROUP_ROLES", "admins=admin"),
                ("JIT_DEFAULT_ROLES", "member"),
            ],
        ),
        &db,
    );
    let store = tower_jit_provisioning::SqliteStore::connect(&common::sqlite_url(&db))
        .await
        .unwrap();
    let rows = || async {
        let mut counts = Vec::new();
        for table in ["jit_users", "jit_identities", "jit_audit_events"] {
            let count: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            counts.push(count);
        }
        counts
    };
    let client = reqwest::Client::new();
    let explain = |body: String, secret: &'static str| {
        client
            .post(format!("{}/admin/explain", server.base))
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let token = idp
        .id_token()
        .subject("ann")
        .email("ann@example.com", true)
        .groups(["admins"])
        .claim("name", "Ann")
        .sign();
    let body = json!({ "token": token }).to_string();
    assert_eq!(
        explain(body.clone(), "not-the-admin-secret")
            .await
            .unwrap()
            .status(),
        401
    );
    let answer = explain(body.clone(), admin).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["admitted"], true, "{answer}");
    assert_eq!(answer["account_action"], "created");
    assert_eq!(answer["account"]["display_name"], "Ann");
    assert_eq!(answer["account"]["email"], "ann@example.com");
    let steps = answer["trace"]["steps"].as_array().unwrap();
    let find = |rule: &str| {
        steps
            .iter()
            .find(|s| s["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} in {answer}"))
    };
    assert_eq!(find("allowed_domains")["verdict"], "passed");
    assert_eq!(find("allowed_domains")["seen"], "example.com");
    assert_eq!(find("group:admins")["verdict"], "granted");
    assert_eq!(find("group:admins")["target"], "admin");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .starts_with("admitted; account created")
    );
    assert!(!answer.to_string().contains(&token));
    assert_eq!(rows().await, [0, 0, 0], "explaining wrote nothing");

    let what_if = json!({
        "issuer": idp.url(),
        "claims": {"sub": "eve", "email": "eve@evil.example", "email_verified": true},
    });
    let answer: serde_json::Value = explain(what_if.to_string(), admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["admitted"], false);
    assert_eq!(answer["reason"], "domain_not_allowed");
    assert_eq!(answer["account"], serde_json::Value::Null);
    let refusal = answer["trace"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["verdict"] == "refused")
        .unwrap();
    assert_eq!(refusal["rule"], "allowed_domains");
    assert_eq!(refusal["seen"], "evil.example");
    assert_eq!(rows().await, [0, 0, 0]);

    // Tokens that fail verification: the reason, and nothing the token carried.
    let expired = idp
        .id_token()
        .subject("late")
        .email("late-secret-mark@example.com", true)
        .issued_at(1_000_000_000)
        .expires_at(1_000_000_600)
        .sign();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let stranger = TestIssuer::start().await;
    let foreign = stranger
        .id_token()
        .subject("x")
        .email("foreign-secret-mark@example.com", true)
        .sign();
    for (bad, reason) in [
        (expired, "expired"),
        (forged, "bad_signature"),
        (foreign, "untrusted_issuer"),
    ] {
        let answer = explain(json!({ "token": bad }).to_string(), admin)
            .await
            .unwrap();
        assert_eq!(answer.status(), 422, "{reason}");
        let text = answer.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["reason"], reason, "{text}");
        assert!(!text.contains("secret-mark"), "{text}");
        assert!(!text.contains(&bad[..20]), "{text}");
    }
    for malformed in ["", "[]", r#"{"token": 1}"#, r#"{"issuer": "x"}"#] {
        let answer = explain(malformed.to_owned(), admin).await.unwrap();
        assert_eq!(answer.status(), 400, "{malformed}");
    }
    assert_eq!(rows().await, [0, 0, 0]);

    // The person explained signs in for real: the account is created then.
    let me = get_with(&client, &format!("{}/me", server.base), Some(&token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["roles"], json!(["admin", "member"]));
    assert_eq!(rows().await[0], 1);
}

/// The SAML sign-in of the person the IdP signs in, as a browser goes through it: the IdP's
/// page posts the response cross-site (no cookies), and the server finishes on its own page.
async fn saml_sign_in(server: &Running, browser: &Browser) -> Page {
    saml_sign_in_from(server, browser, "/saml/login").await
}

/// A SAML sign-in started at `path` (`/saml/login`, or a `/login` that sends the browser
/// there), through the IdP's page and the ACS, finished in `browser`.
async fn saml_sign_in_from(server: &Running, browser: &Browser, path: &str) -> Page {
    let mut start = browser.get(&format!("{}{path}", server.base)).await;
    assert_eq!(start.status, 303, "{}", start.body);
    if let Some(saml_login) = start
        .location
        .clone()
        .filter(|l| l.starts_with("/saml/login"))
    {
        start = browser.get(&format!("{}{saml_login}", server.base)).await;
        assert_eq!(start.status, 303, "{}", start.body);
    }
    let idp_page = reqwest::get(start.location.unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"SAMLResponse\" value=\"";
    let from = idp_page.find(marker).unwrap() + marker.len();
    let encoded = &idp_page[from..from + idp_page[from..].find('"').unwrap()];
    let posted = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/saml/acs", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "SAMLResponse={}",
            url::form_urlencoded::byte_serialize(encoded.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 303);
    let finish = posted.headers()["location"].to_str().unwrap().to_owned();
    browser.get(&format!("{}{finish}", server.base)).await
}

// Multi-threaded: the server fetches the IdP's metadata while `start` blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_sign_in_from_the_environment() {
    use tower_jit_provisioning::testing::{SamlUser, TestSamlIdp};
    let idp = TestSamlIdp::start().await;
    idp.sign_in_as(
        SamlUser::persistent("saml-ada")
            .attribute("urn:oid:0.9.2342.19200300.100.1.3", ["ada@example.com"])
            .attribute("urn:oid:2.5.4.42", ["Ada"])
            .attribute("isMemberOf", ["engineers"]),
    );
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    // By metadata URL, the e-mail trusted.
    let metadata_url = idp.metadata_url();
    let server = start(
        &[
            ("JIT_SAML_IDP_METADATA", metadata_url.as_str()),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
            ("JIT_SAML_TRUST_EMAIL", "1"),
            ("JIT_GROUP_ROLES", "engineers=engineer"),
        ],
        &dirs[0],
    );
    let browser = Browser::new();
    let home = browser.get(&format!("{}/", server.base)).await;
    assert!(home.body.contains("id=\"login-saml\""), "{}", home.body);
    let metadata = browser.get(&format!("{}/saml/metadata", server.base)).await;
    assert!(
        metadata
            .body
            .contains(&format!("entityID=\"{}/saml/metadata\"", server.base)),
        "{}",
        metadata.body
    );
    let done = saml_sign_in(&server, &browser).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let me = browser.get(&format!("{}/me", server.base)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["identity"]["issuer"], idp.entity_id());
    assert_eq!(me["identity"]["subject"], "saml-ada");
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["given_name"], "Ada");
    assert_eq!(me["roles"], json!(["engineer"]));
    let huge = "A".repeat(1024 * 1024 + 8);
    let refused = reqwest::Client::new()
        .post(format!("{}/saml/acs", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("SAMLResponse={huge}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    drop(server);

    // By file, the e-mail not trusted: `email_verified` is false.
    let file = dirs[1].path().join("idp.xml");
    std::fs::write(&file, idp.metadata()).unwrap();
    let server = start(
        &[
            ("JIT_SAML_IDP_METADATA", file.to_str().unwrap()),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ],
        &dirs[1],
    );
    let browser = Browser::new();
    assert_eq!(saml_sign_in(&server, &browser).await.status, 303);
    let me: serde_json::Value =
        serde_json::from_str(&browser.get(&format!("{}/me", server.base)).await.body).unwrap();
    assert_eq!(me["email_verified"], false);

    for (env, variable) in [
        (
            vec![("JIT_SAML_IDP_METADATA", "/nonexistent/idp.xml")],
            "JIT_SAML_",
        ),
        (
            vec![
                ("JIT_SAML_IDP_METADATA", file.to_str().unwrap()),
                ("JIT_SAML_SP_KEY", "/nonexistent/key.pem"),
            ],
            "JIT_SAML_SP_CERT",
        ),
        (
            vec![("JIT_SAML_IDP_METADATA", "http://idp.example.com/metadata")],
            "JIT_SAML_IDP_METADATA",
        ),
    ] {
        let stderr = refuses(&env);
        assert!(stderr.contains(variable), "{env:?}: {stderr}");
    }
}

/// The old system's database: a `users` table, as `JIT_LEGACY_QUERY` reads it, with a secret
/// column the query must never copy.
const LEGACY_SCHEMA: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, \
    display_name TEXT, roles TEXT, plan TEXT, password_hash TEXT)";
const LEGACY_ROWS: &str = "INSERT INTO users VALUES \
    (42, 'Ada@Example.com', 'Ada Lovelace (legacy)', 'editor,billing', 'pro', 'secret-hash-1'), \
    (43, 'grace@example.com', 'Grace H.', '', NULL, 'secret-hash-2')";
const LEGACY_QUERY: &str =
    "SELECT id, display_name, roles, plan FROM users WHERE lower(email) = lower($1)";

/// Where a migration scenario keeps its accounts and the old system's: two SQLite files, or two
/// PostgreSQL databases.
struct MigrationDbs {
    jit_url: String,
    legacy_url: String,
    _dir: tempfile::TempDir,
    pg: Option<(common::PgDatabase, common::PgDatabase)>,
}

impl MigrationDbs {
    async fn open(postgres: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match postgres {
            None => {
                let legacy_url = format!("sqlite://{}", dir.path().join("legacy.db").display());
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("legacy.db"))
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                sqlx::query(LEGACY_SCHEMA).execute(&pool).await.unwrap();
                sqlx::query(LEGACY_ROWS).execute(&pool).await.unwrap();
                pool.close().await;
                Self {
                    jit_url: format!("sqlite://{}", dir.path().join("jit.db").display()),
                    legacy_url,
                    _dir: dir,
                    pg: None,
                }
            }
            Some(test) => {
                let jit = common::PgDatabase::create(test).await;
                let legacy = common::PgDatabase::create(test).await;
                let pool = sqlx::PgPool::connect(&legacy.url).await.unwrap();
                sqlx::query(LEGACY_SCHEMA).execute(&pool).await.unwrap();
                sqlx::query(LEGACY_ROWS).execute(&pool).await.unwrap();
                pool.close().await;
                Self {
                    jit_url: jit.url.clone(),
                    legacy_url: legacy.url.clone(),
                    _dir: dir,
                    pg: Some((jit, legacy)),
                }
            }
        }
    }

    /// `(users, adopted legacy ids, audit reasons of linked events)` in the accounts database.
    async fn written(&self) -> (i64, Vec<String>, Vec<String>) {
        let users = "SELECT count(*) FROM jit_users";
        let adopted = "SELECT legacy_id FROM jit_legacy_adoptions ORDER BY legacy_id";
        let linked = "SELECT reason FROM jit_audit_events WHERE kind = 'linked' ORDER BY id";
        macro_rules! read {
            ($pool:ty) => {{
                let pool = <$pool>::connect(&self.jit_url).await.unwrap();
                let users = sqlx::query_scalar(users).fetch_one(&pool).await.unwrap();
                let adopted = sqlx::query_scalar(adopted).fetch_all(&pool).await.unwrap();
                let linked = sqlx::query_scalar(linked).fetch_all(&pool).await.unwrap();
                pool.close().await;
                (users, adopted, linked)
            }};
        }
        if self.pg.is_some() {
            read!(sqlx::PgPool)
        } else {
            read!(sqlx::SqlitePool)
        }
    }
}

/// A first sign-in adopts the legacy account its verified address names, once; a second
/// identity naming it is refused; a refused admission adopts nothing; a person without one
/// gets a new account; a legacy database that is down refuses for now (503) rather than
/// create the duplicate a migration is there to avoid. Two servers race two claimants.
async fn migration_adopts_each_legacy_account_once(postgres: Option<&str>) {
    let idp = TestIssuer::start().await;
    let dbs = MigrationDbs::open(postgres).await;
    let env = at_issuer(
        &idp,
        &[
            ("JIT_DATABASE_URL", dbs.jit_url.as_str()),
            ("JIT_ALLOWED_DOMAINS", "example.com"),
            ("JIT_DEFAULT_ROLES", "member"),
            ("JIT_LEGACY_DATABASE_URL", dbs.legacy_url.as_str()),
            ("JIT_LEGACY_QUERY", LEGACY_QUERY),
        ],
    );
    let unused = tempfile::tempdir().unwrap();
    let one = start(&env, &unused);
    let two = start(&env, &unused);
    let client = reqwest::Client::new();
    let me = |server: &Running| format!("{}/me", server.base);

    // Admission refuses an unverified address first: nothing is adopted or written.
    let unverified = idp
        .id_token()
        .subject("ada-unverified")
        .email("ada@example.com", false)
        .sign();
    let refused = get_with(&client, &me(&one), Some(&unverified)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["code"], "email_not_verified");
    assert_eq!(dbs.written().await, (0, vec![], vec![]));

    // Two identities claim legacy account 42 at once, at two servers: one adopts it.
    let ada = idp
        .id_token()
        .subject("ada")
        .email("ada@example.com", true)
        .sign();
    let mallory = idp
        .id_token()
        .subject("mallory")
        .email("ADA@example.com", true)
        .sign();
    let (at_one, at_two) = (me(&one), me(&two));
    let (first, second) = tokio::join!(
        get_with(&client, &at_one, Some(&ada)),
        get_with(&client, &at_two, Some(&mallory)),
    );
    let (winner, loser, winner_token) = if first.status == 200 {
        (first, second, ada.clone())
    } else {
        (second, first, mallory.clone())
    };
    assert_eq!(winner.status, 200, "{}", winner.body);
    assert_eq!(loser.status, 403, "{}", loser.body);
    assert_eq!(loser.json()["code"], "legacy_account_claimed");
    let adopted = winner.json();
    assert_eq!(adopted["display_name"], "Ada Lovelace (legacy)");
    assert_eq!(adopted["attributes"]["legacy_id"], "42");
    assert_eq!(adopted["attributes"]["plan"], "pro");
    assert!(!winner.body.contains("secret-hash"), "{}", winner.body);
    let roles = adopted["roles"].as_array().unwrap();
    for role in ["billing", "editor", "member"] {
        assert!(roles.iter().any(|r| r == role), "{role} missing: {adopted}");
    }

    // The adopted account is the person's from now on, at either server; the claimant stays
    // refused.
    for server in [&one, &two] {
        let again = get_with(&client, &me(server), Some(&winner_token)).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.json()["id"], adopted["id"]);
    }
    let loser_token = if winner_token == ada { &mallory } else { &ada };
    let still = get_with(&client, &me(&one), Some(loser_token)).await;
    assert_eq!(still.json()["code"], "legacy_account_claimed");

    // Someone the old system never knew gets a new account of their own.
    let carol = idp
        .id_token()
        .subject("carol")
        .email("carol@example.com", true)
        .sign();
    let fresh = get_with(&client, &me(&two), Some(&carol)).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert!(fresh.json()["attributes"].get("legacy_id").is_none());

    let (users, adopted_ids, linked) = dbs.written().await;
    assert_eq!(users, 2, "the adopted account and carol's");
    assert_eq!(adopted_ids, ["42"]);
    assert_eq!(linked, ["legacy:legacy-db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_adopts_each_legacy_account_once_on_sqlite() {
    migration_adopts_each_legacy_account_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn migration_adopts_each_legacy_account_once_on_postgres() {
    migration_adopts_each_legacy_account_once(Some("server::migration")).await;
}

#[tokio::test]
async fn migration_waits_for_a_legacy_database_that_is_down() {
    let idp = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", db.path().join("gone/legacy.db").display());
    let server = start(
        &at_issuer(&idp, &[("JIT_LEGACY_DATABASE_URL", missing.as_str())]),
        &db,
    );
    let token = idp
        .id_token()
        .subject("ada")
        .email("ada@example.com", true)
        .sign();
    let client = reqwest::Client::new();
    let reply = get_with(&client, &format!("{}/me", server.base), Some(&token)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.header("retry-after").is_some());
    let store = tower_jit_provisioning::SqliteStore::connect(&format!(
        "sqlite://{}",
        db.path().join("jit.db").display()
    ))
    .await
    .unwrap();
    assert!(store.list_users(None, 10).await.unwrap().is_empty());
}

/// Organisations through the admin API: refused input names its field and writes nothing; an
/// organisation added at runtime signs its first person in at every server without a restart;
/// another organisation cannot take its domain; removing its connection stops its tokens.
async fn organisations_through_the_admin_api(postgres: Option<&str>) {
    let idp = TestIssuer::start().await;
    let pg = match postgres {
        Some(test) => Some(common::PgDatabase::create(test).await),
        None => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("jit.db").display());
    let database = pg.as_ref().map_or(sqlite.as_str(), |db| db.url.as_str());
    let admin = "admin-secret-of-sixteen-or-more";
    let env = [
        ("JIT_ISSUERS", "https://login.example.com"),
        ("JIT_AUDIENCES", "test-client"),
        ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ("JIT_ADMIN_TOKEN", admin),
        ("JIT_DATABASE_URL", database),
    ];
    let one = start(&env, &dir);
    let two = if pg.is_some() {
        Some(start(&env, &dir))
    } else {
        None
    };
    let servers: Vec<&Running> = std::iter::once(&one).chain(two.as_ref()).collect();
    let client = reqwest::Client::new();
    let organizations = format!("{}/admin/organizations", one.base);
    let post = |url: String, body: serde_json::Value| {
        let client = client.clone();
        async move { common::post_json(&client, &url, admin, &body).await }
    };
    let list = || async {
        get_with(&client, &organizations, Some(admin)).await.json()["organizations"]
            .as_array()
            .unwrap()
            .len()
    };

    // Bad input: 400 naming the field, and nothing written.
    let connection = json!({"issuer": idp.url(), "audiences": ["test-client"]});
    for (body, field) in [
        (json!({"domains": ["partner.example"]}), "name"),
        (
            json!({"name": "P", "connections": [{"audiences": ["a"]}]}),
            "connections[0].issuer",
        ),
        (
            json!({"name": "P", "domains": ["not a domain"]}),
            "domains[0]",
        ),
        (
            json!({"name": "P", "domains": "partner.example"}),
            "domains",
        ),
        (
            json!({"name": "P", "connections": [{"issuer": "http://idp.partner.example", "audiences": ["a"]}]}),
            "connections[0].issuer",
        ),
        (
            json!({"name": "P", "connections": [{"issuer": idp.url(), "audiences": []}]}),
            "connections[0].audiences",
        ),
        (
            json!({"name": "P", "connections": [{"issuer": idp.url(), "audiences": ["a"], "colour": "red"}]}),
            "connections[0].colour",
        ),
    ] {
        let refused = post(organizations.clone(), body.clone()).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        let problem = refused.json();
        assert_eq!(
            problem["field"].as_str().unwrap_or_default(),
            field,
            "{body}: {problem}"
        );
    }
    assert_eq!(list().await, 0, "nothing written");
    let anonymous = common::reply(
        client
            .post(&organizations)
            .json(&json!({"name": "P"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous.status, 401);

    // Added at runtime: its first person signs in at every server, in the organisation.
    let ada = idp
        .id_token()
        .subject("ada")
        .email("ada@partner.example", true)
        .sign();
    assert_eq!(
        get_with(&client, &format!("{}/me", one.base), Some(&ada))
            .await
            .status,
        401
    );
    let created = post(
        organizations.clone(),
        json!({"name": "Partner", "domains": ["Partner.example"], "connections": [connection]}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let partner = created.json();
    assert_eq!(partner["domains"], json!(["partner.example"]));
    let id = partner["id"].as_str().unwrap().to_owned();
    for server in &servers {
        let me = format!("{}/me", server.base);
        let mut reply = get_with(&client, &me, Some(&ada)).await;
        let started = std::time::Instant::now();
        while reply.status != 200 && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            reply = get_with(&client, &me, Some(&ada)).await;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["organization_id"], id.as_str());
    }

    // Another organisation cannot take its domain (or its connection): 409, nothing written.
    let grab = post(
        organizations.clone(),
        json!({"name": "Grab", "domains": ["partner.example"]}),
    )
    .await;
    assert_eq!(grab.status, 409, "{}", grab.body);
    assert_eq!(grab.json()["field"], "domains");
    assert_eq!(list().await, 1);

    // Its connection removed: its tokens stop at every server.
    let connection_id = partner["connections"][0]["id"].as_str().unwrap();
    let removed = common::reply(
        client
            .delete(format!("{organizations}/{id}/connections/{connection_id}"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    for server in &servers {
        let me = format!("{}/me", server.base);
        let mut status = get_with(&client, &me, Some(&ada)).await.status;
        let started = std::time::Instant::now();
        while status != 401 && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = get_with(&client, &me, Some(&ada)).await.status;
        }
        assert_eq!(status, 401);
    }
    let deleted = common::reply(
        client
            .delete(format!("{organizations}/{id}"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deleted.status, 204);
    let gone = get_with(&client, &format!("{organizations}/{id}"), Some(admin)).await;
    assert_eq!(gone.status, 404);
    let malformed = get_with(&client, &format!("{organizations}/not-an-id"), Some(admin)).await;
    assert_eq!(malformed.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisations_through_the_admin_api_on_sqlite() {
    organisations_through_the_admin_api(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn organisations_through_the_admin_api_on_two_servers_on_postgres() {
    organisations_through_the_admin_api(Some("server::organizations")).await;
}

/// The B2B flow on the reference server: an organisation created through the admin API, its
/// IdP's SCIM client (`JIT_SCIM_TOKEN_<ORG_ID>`) provisioning a person, and that person's first
/// sign-in through the organisation's connection finding that account; another
/// organisation's SCIM client sees none of it.
#[tokio::test]
async fn an_organisations_scim_client_provisions_what_its_connection_signs_in() {
    let idp = TestIssuer::start().await;
    let db = tempfile::tempdir().unwrap();
    let admin = "admin-secret-of-sixteen-or-more";
    let base_env = [
        ("JIT_ISSUERS", "https://login.example.com"),
        ("JIT_AUDIENCES", "test-client"),
        ("JIT_ALLOW_HTTP_ISSUERS", "1"),
        ("JIT_ADMIN_TOKEN", admin),
    ];
    let client = reqwest::Client::new();
    let (partner, other) = {
        let server = start(&base_env, &db);
        let organizations = format!("{}/admin/organizations", server.base);
        let mut ids = Vec::new();
        for body in [
            json!({"name": "Partner", "domains": ["partner.example"],
                   "connections": [{"issuer": idp.url(), "audiences": ["test-client"]}]}),
            json!({"name": "Other", "domains": ["other.example"]}),
        ] {
            let created = common::reply(
                client
                    .post(&organizations)
                    .bearer_auth(admin)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(created.status, 201, "{}", created.body);
            ids.push(created.json()["id"].as_str().unwrap().to_owned());
        }
        (ids[0].clone(), ids[1].clone())
    };
    // The organisations' SCIM secrets, read at start.
    let (partner_var, other_var) = (
        format!("JIT_SCIM_TOKEN_{}", partner.replace('-', "")),
        format!("JIT_SCIM_TOKEN_{}", other.replace('-', "_")),
    );
    let (partner_secret, other_secret) = (
        "partner-scim-secret-0123456789",
        "other-scim-secret-0123456789",
    );
    let mut env = base_env.to_vec();
    env.extend([
        (partner_var.as_str(), partner_secret),
        (other_var.as_str(), other_secret),
    ]);
    let server = start(&env, &db);
    let users = format!("{}/scim/v2/Users", server.base);
    let provisioned = common::scim_request(
        &client,
        partner_secret,
        "POST",
        &users,
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@partner.example", "externalId": "ada-sub", "active": true
        })),
    )
    .await;
    assert_eq!(provisioned.status, 201, "{}", provisioned.body);
    let id = provisioned.json()["id"].as_str().unwrap().to_owned();
    let seen_by_other =
        common::scim_request(&client, other_secret, "GET", &format!("{users}/{id}"), None).await;
    assert_eq!(seen_by_other.status, 404);

    // The person's first sign-in through the organisation's connection finds that account.
    let token = idp
        .id_token()
        .subject("ada-sub")
        .email("ada@partner.example", true)
        .sign();
    let me = get_with(&client, &format!("{}/me", server.base), Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["organization_id"], partner.as_str());
}

/// A SAML IdP as an organisation's connection on the reference server: created through the
/// admin API (metadata that cannot verify anything refused, naming the field), it signs the
/// organisation's people in through home-realm discovery, without a restart and without
/// `JIT_SAML_IDP_METADATA`.
#[tokio::test]
async fn an_organisations_saml_idp_added_through_the_admin_api_signs_people_in() {
    let idp = tower_jit_provisioning::testing::TestSamlIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("jit.db").display());
    let admin = "admin-secret-of-sixteen-or-more";
    let server = start(
        &[
            ("JIT_ISSUERS", "https://login.example.com"),
            ("JIT_AUDIENCES", "test-client"),
            ("JIT_ALLOW_HTTP_ISSUERS", "1"),
            ("JIT_ADMIN_TOKEN", admin),
            ("JIT_DATABASE_URL", sqlite.as_str()),
        ],
        &dir,
    );
    let client = reqwest::Client::new();
    let organizations = format!("{}/admin/organizations", server.base);
    let post = |body: serde_json::Value| {
        let (client, url) = (client.clone(), organizations.clone());
        async move { common::post_json(&client, &url, admin, &body).await }
    };
    let saml = |metadata: String| {
        json!({
            "name": "Partner",
            "domains": ["partner.example"],
            "connections": [{
                "protocol": "saml",
                "issuer": idp.entity_id(),
                "saml_metadata": metadata,
                "default_roles": ["partner"],
            }],
        })
    };
    let other = tower_jit_provisioning::testing::TestSamlIdp::start().await;
    for metadata in ["<EntityDescriptor/>".to_owned(), other.metadata()] {
        let refused = post(saml(metadata)).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(
            refused.json()["field"],
            "connections[0].saml_metadata",
            "{}",
            refused.body
        );
    }
    let created = post(saml(idp.metadata())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let organization = created.json()["id"].as_str().unwrap().to_owned();

    idp.sign_in_as(
        tower_jit_provisioning::testing::SamlUser::persistent("p-ada").attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            ["ada@partner.example"],
        ),
    );
    let browser = Browser::new();
    let finished = saml_sign_in_from(&server, &browser, "/login?email=ada%40partner.example").await;
    assert_eq!(finished.status, 303, "{}", finished.body);
    let me = browser.get(&format!("{}/me", server.base)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["organization_id"], organization.as_str());
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["roles"], json!(["partner"]));
}
