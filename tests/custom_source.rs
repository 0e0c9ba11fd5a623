//! A sign-in source the application defines, through the public API only: a reverse proxy
//! that authenticated the person signs who they are into two headers, and an [`Authenticator`]
//! verifies the signature and turns them into a [`SignIn`]. Admission, mapping, linking and
//! audit apply exactly as they do to a bearer token, over real HTTP on a real SQLite file.

mod common;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::{Reply, Server, get_with, reply, sqlite_store, user_app};
use serde_json::{Value, json};
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    AttributeMapping, AuditKind, Authenticator, Error, IssuerPolicy, ProvisioningLayer, SignIn,
    SignInSource, SqliteStore, UserStore,
};

const PROXY: &str = "https://proxy.internal";
const SOURCE: SignInSource = SignInSource::Custom("trusted_proxy");

/// `X-Proxy-User`: base64url of a JSON object (`sub`, `email`, `email_verified`, `groups`,
/// `exp`, anything else); `X-Proxy-Signature`: base64url of its HMAC-SHA256 under a key
/// shared with the proxy.
struct ProxyHeaders {
    key: hmac::Key,
}

impl Authenticator for ProxyHeaders {
    fn source(&self) -> SignInSource {
        SOURCE
    }

    async fn authenticate(&self, request: &http::request::Parts) -> Result<Option<SignIn>, Error> {
        let header = |name| request.headers.get(name).and_then(|v| v.to_str().ok());
        let Some(user) = header("x-proxy-user") else {
            return Ok(None);
        };
        let invalid = || Error::InvalidCredentials("bad_proxy_headers");
        let signature = header("x-proxy-signature")
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or_else(invalid)?;
        hmac::verify(&self.key, user.as_bytes(), &signature).map_err(|_| invalid())?;
        let payload = URL_SAFE_NO_PAD.decode(user).map_err(|_| invalid())?;
        let Ok(Value::Object(attributes)) = serde_json::from_slice(&payload) else {
            return Err(invalid());
        };
        let expires_at = attributes
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| DateTime::from_timestamp(exp, 0))
            .ok_or_else(invalid)?;
        if expires_at <= Utc::now() {
            return Err(Error::InvalidCredentials("expired_proxy_headers"));
        }
        let subject = attributes
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?;
        let mut builder = SignIn::builder(SOURCE, PROXY, subject).expires_at(expires_at);
        if let Some(email) = attributes.get("email").and_then(Value::as_str) {
            // The proxy vouches for an address only when it says so.
            let verified = attributes.get("email_verified") == Some(&Value::Bool(true));
            builder = builder.email(email, verified);
        }
        builder
            .attributes(attributes)
            .build()
            .map(Some)
            .map_err(|_| invalid())
    }
}

const SECRET: &[u8] = b"a secret shared with the proxy, 32+ bytes long";

/// The two headers for `claims`, signed with `key`.
fn headers(claims: &Value, key: &[u8]) -> (String, String) {
    let user = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), user.as_bytes());
    (user, URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn claims(subject: &str, email: &str, verified: bool) -> Value {
    json!({
        "sub": subject,
        "email": email,
        "email_verified": verified,
        "name": "Ada Lovelace",
        "groups": ["engines"],
        "department": "Analytical",
        "exp": Utc::now().timestamp() + 300,
    })
}

struct Harness {
    idp: TestIssuer,
    store: SqliteStore,
    _dir: tempfile::TempDir,
    server: Server,
    client: reqwest::Client,
}

impl Harness {
    async fn start() -> Self {
        let idp = TestIssuer::start().await;
        let (store, dir) = sqlite_store().await;
        let layer = ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .authenticator(ProxyHeaders {
                key: hmac::Key::new(hmac::HMAC_SHA256, SECRET),
            })
            .policy(PROXY, IssuerPolicy::new().allowed_domains(["example.com"]))
            .store(store.clone())
            .mapping(
                AttributeMapping::new()
                    .group_role("engines", "engineer")
                    .attribute("department", "department")
                    .default_roles(["member"]),
            )
            .build()
            .unwrap();
        let server = Server::start(user_app(layer)).await;
        Self {
            idp,
            store,
            _dir: dir,
            server,
            client: reqwest::Client::new(),
        }
    }

    async fn me(&self, (user, signature): &(String, String)) -> Reply {
        let request = self
            .client
            .get(self.server.url("/me"))
            .header("x-proxy-user", user)
            .header("x-proxy-signature", signature);
        reply(request.send().await.unwrap()).await
    }

    async fn users(&self) -> usize {
        self.store.list_users(None, 100).await.unwrap().len()
    }
}

#[tokio::test]
async fn a_signed_proxy_header_provisions_through_the_same_pipeline_as_a_token() {
    let h = Harness::start().await;
    let signed = headers(&claims("ada", "ada@example.com", true), SECRET);
    let first = h.me(&signed).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let user = first.json();
    assert_eq!(user["issuer"], PROXY);
    assert_eq!(user["subject"], "ada");
    assert_eq!(user["source"], "trusted_proxy");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["display_name"], "Ada Lovelace");
    assert_eq!(user["groups"], json!(["engines"]));
    assert_eq!(user["roles"], json!(["engineer", "member"]));
    assert_eq!(user["attributes"]["department"], "Analytical");

    // The same person again: the same account, nothing more written.
    let again = h.me(&signed).await;
    assert_eq!(again.json()["id"], user["id"]);
    assert_eq!(h.users().await, 1);
    let events = h.store.audit_events(None).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, AuditKind::Provisioned);
    assert_eq!(events[0].source.as_deref(), Some("trusted_proxy"));
    assert_eq!(events[0].issuer.as_deref(), Some(PROXY));
    assert_eq!(events[0].subject.as_deref(), Some("ada"));

    // A bearer token beside it is its own source and its own identity.
    let token = h
        .idp
        .id_token()
        .subject("ada")
        .email("ada@example.com", true)
        .sign();
    let by_token = get_with(&h.client, &h.server.url("/me"), Some(&token)).await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    assert_eq!(by_token.json()["source"], "bearer_jwt");
    assert_ne!(by_token.json()["id"], user["id"]);
    let events = h.store.audit_events(None).await.unwrap();
    assert_eq!(events[1].source.as_deref(), Some("bearer_jwt"));
}

#[tokio::test]
async fn the_issuers_admission_rules_refuse_before_anything_is_written() {
    let h = Harness::start().await;
    for (who, email, verified, code) in [
        (
            "mallory",
            "mallory@evil.example",
            true,
            "domain_not_allowed",
        ),
        ("eve", "eve@example.com", false, "email_not_verified"),
    ] {
        let refused = h.me(&headers(&claims(who, email, verified), SECRET)).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.json()["code"], code);
    }
    assert_eq!(h.users().await, 0);
    let events = h.store.audit_events(None).await.unwrap();
    assert_eq!(events.len(), 2);
    for event in events {
        assert_eq!(event.kind, AuditKind::Denied);
        assert_eq!(event.source.as_deref(), Some("trusted_proxy"));
    }
}

#[tokio::test]
async fn a_forged_or_expired_header_is_refused_and_nothing_is_written() {
    let h = Harness::start().await;
    let mut expired = claims("ada", "ada@example.com", true);
    expired["exp"] = json!(Utc::now().timestamp() - 1);
    let good = headers(&claims("ada", "ada@example.com", true), SECRET);
    let cases = [
        (
            "wrong key",
            headers(
                &claims("ada", "ada@example.com", true),
                b"another key entirely",
            ),
        ),
        (
            "other payload",
            (
                headers(&claims("root", "root@example.com", true), SECRET).0,
                good.1.clone(),
            ),
        ),
        ("no signature", (good.0.clone(), String::new())),
        ("expired", headers(&expired, SECRET)),
        ("not json", headers_raw("not json")),
    ];
    for (name, case) in cases {
        let refused = h.me(&case).await;
        assert_eq!(refused.status, 401, "{name}: {}", refused.body);
        assert!(
            !refused.body.contains(&case.0),
            "{name}: the credential is not echoed"
        );
    }
    assert_eq!(h.users().await, 0);
    let events = h.store.audit_events(None).await.unwrap();
    assert!(
        events.is_empty(),
        "rejected credentials are never persisted: {events:?}"
    );
    // No credential at all is still 401.
    let none = get_with(&h.client, &h.server.url("/me"), None).await;
    assert_eq!(none.status, 401);
}

fn headers_raw(payload: &str) -> (String, String) {
    let user = URL_SAFE_NO_PAD.encode(payload);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), user.as_bytes());
    (user, URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[tokio::test]
async fn a_store_deactivation_refuses_the_next_request_of_any_source() {
    let h = Harness::start().await;
    let signed = headers(&claims("ada", "ada@example.com", true), SECRET);
    let id = h.me(&signed).await.json()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    h.store.deactivate(id).await.unwrap();
    let refused = h.me(&signed).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], "deactivated");
}
