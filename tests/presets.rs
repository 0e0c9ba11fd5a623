//! Identity-provider presets against tokens shaped as each provider documents them: issuer
//! format, `typ`, audiences, where the client, the person, the tenant, roles and groups are.
//! Each provider's rules are applied to the loopback test issuer ([`Issuer::provider`]), which
//! signs the shapes; tokens are accepted with the documented configuration and refused when
//! of the wrong kind, from the wrong tenant or for the wrong audience.

mod common;

use common::{Reply, Server, get_with, sqlite_store, user_app};
use serde_json::json;
use tower_jit_provisioning::testing::{TestIssuer, TokenBuilder};
use tower_jit_provisioning::{
    AccessTokenProfile, AttributeMapping, ConfigError, Issuer, Provider, ProvisioningLayer,
    TokenError, TokenKind,
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const API: &str = "api://orders";
const CLIENT: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";

struct Harness {
    idp: TestIssuer,
    server: Server,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(issuer: impl FnOnce(&TestIssuer) -> Issuer, mapping: AttributeMapping) -> Self {
        let idp = TestIssuer::start().await;
        let (store, dir) = sqlite_store().await;
        let layer = ProvisioningLayer::builder()
            .issuer(issuer(&idp))
            .store(store)
            .mapping(mapping)
            .build()
            .unwrap();
        Self {
            server: Server::start(user_app(layer)).await,
            idp,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn me(&self, token: &str) -> Reply {
        get_with(&self.client, &self.server.url("/me"), Some(token)).await
    }

    async fn accepted(&self, token: &str) -> serde_json::Value {
        let reply = self.me(token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    async fn refused(&self, token: &str, status: u16, code: &str) {
        let reply = self.me(token).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.json()["code"], code, "{}", reply.body);
    }
}

/// The issuer's URL, as a local stand-in for the provider's, with its rules.
fn local(idp: &TestIssuer, provider: Provider) -> Issuer {
    Issuer::new(idp.url())
        .allow_http_loopback(true)
        .provider(provider)
}

/// A token with `typ: JWT` and no claim but `iss`, `iat` and `exp`: the rest is the provider's.
fn plain(idp: &TestIssuer) -> TokenBuilder {
    idp.id_token().without_claim("aud").without_claim("sub")
}

/// A v2.0 access token as Entra ID issues it for an API (`accessTokenAcceptedVersion: 2`).
fn entra_access(idp: &TestIssuer, tenant: &str) -> TokenBuilder {
    plain(idp)
        .audience(CLIENT)
        .subject("AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ")
        .claim("aio", "Y2NgYEjY…")
        .claim("azp", "c44b4083-3bb0-49c1-b47d-974e53cbdf3c")
        .claim("azpacr", "0")
        .claim("name", "Abe Lincoln")
        .claim("oid", "690222be-ff1a-4d56-abd1-7e4f7d38e474")
        .claim("preferred_username", "abeli@microsoft.com")
        .claim("rh", "I")
        .claim("scp", "Orders.Read")
        .claim("roles", json!(["Orders.Admin"]))
        .claim("groups", json!(["a6e37a5c-2f9c-4e2c-9b37-2d5c9f9fb1b2"]))
        .claim("tid", tenant)
        .claim("uti", "fqiBqXLPj0eQa82S-IYFAA")
        .claim("ver", "2.0")
}

/// A v2.0 ID token as Entra ID issues it to a web application.
fn entra_id(idp: &TestIssuer) -> TokenBuilder {
    plain(idp)
        .audience(CLIENT)
        .subject("AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ")
        .claim("aio", "Df2UVXL1ix!…")
        .claim("name", "Abe Lincoln")
        .claim("nonce", "123523")
        .claim("oid", "690222be-ff1a-4d56-abd1-7e4f7d38e474")
        .claim("preferred_username", "abeli@microsoft.com")
        .claim("roles", json!(["Orders.Admin"]))
        .claim("tid", TENANT)
        .claim("ver", "2.0")
}

#[tokio::test]
async fn entra_v2_access_tokens_with_typ_jwt_are_accepted_by_the_entra_preset() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Entra)
                .audiences([API, CLIENT])
                .token_kinds([TokenKind::Access])
                .require_claim("tid", TENANT)
        },
        AttributeMapping::new().claim_role("roles", "Orders.Admin", "admin"),
    )
    .await;
    let user = h.accepted(&entra_access(&h.idp, TENANT).sign()).await;
    assert_eq!(user["roles"], json!(["admin"]));
    assert_eq!(
        user["groups"],
        json!(["a6e37a5c-2f9c-4e2c-9b37-2d5c9f9fb1b2"])
    );
    // The application ID URI is an accepted audience too (v1.0-style access tokens carry it).
    let v1 = plain(&h.idp)
        .audience(API)
        .subject("l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA")
        .claim("appid", "c44b4083-3bb0-49c1-b47d-974e53cbdf3c")
        .claim("appidacr", "0")
        .claim("tid", TENANT)
        .claim("scp", "Orders.Read")
        .claim("ver", "1.0")
        .sign();
    h.accepted(&v1).await;

    // An ID token is refused where access tokens are expected, as is another tenant's token,
    // a token for another API, and an access token without its client.
    h.refused(&entra_id(&h.idp).sign(), 401, "expected_access_token")
        .await;
    h.refused(
        &entra_access(&h.idp, OTHER_TENANT).sign(),
        403,
        "claim_mismatch",
    )
    .await;
    h.refused(
        &entra_access(&h.idp, TENANT)
            .audience("api://payroll")
            .sign(),
        401,
        "wrong_audience",
    )
    .await;
    h.refused(
        &entra_access(&h.idp, TENANT).without_claim("azp").sign(),
        401,
        "missing_claim",
    )
    .await;
}

#[tokio::test]
async fn without_a_preset_a_typ_jwt_access_token_is_refused_with_what_was_expected() {
    let h = Harness::start(
        |idp| {
            Issuer::new(idp.url())
                .allow_http_loopback(true)
                .audiences([API, CLIENT])
                .token_kinds([TokenKind::Access])
        },
        AttributeMapping::new(),
    )
    .await;
    let reply = h.me(&entra_access(&h.idp, TENANT).sign()).await;
    assert_eq!(reply.status, 401);
    let description = TokenError::ExpectedAccessToken.to_string();
    assert!(description.contains("at+jwt") && description.contains("preset"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(common::invalid_token(&description).as_str())
    );
}

#[tokio::test]
async fn an_entra_id_token_is_accepted_where_id_tokens_are() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Entra)
                .audience(CLIENT)
                .token_kinds([TokenKind::Id])
                .require_claim("tid", TENANT)
        },
        AttributeMapping::new(),
    )
    .await;
    h.accepted(&entra_id(&h.idp).sign()).await;
    h.refused(
        &entra_access(&h.idp, TENANT).sign(),
        401,
        "expected_id_token",
    )
    .await;
}

/// An access token as an Okta custom authorization server issues it: no `typ`, the person's
/// login in `sub` and their id in `uid`, the client in `cid`.
fn okta_access(idp: &TestIssuer, login: &str) -> TokenBuilder {
    plain(idp)
        .without_header("typ")
        .audience("api://default")
        .subject(login)
        .claim("ver", 1)
        .claim("jti", "AT.0mP4JKAZX1iACIT4vbEDF7LpvDVjxypPMf0D7uX39RE")
        .claim("cid", "0oa1x8i3zzpROtgxm4x7")
        .claim("uid", "00ujmkLgOMAJRMUA67ss")
        .claim("scp", json!(["openid", "email", "orders.read"]))
        .claim("groups", json!(["Everyone", "Orders Admins"]))
}

#[tokio::test]
async fn okta_access_tokens_are_keyed_by_uid_so_a_renamed_login_keeps_its_account() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Okta)
                .audience("api://default")
                .token_kinds([TokenKind::Access])
        },
        AttributeMapping::new().group_role("Orders Admins", "admin"),
    )
    .await;
    let first = h
        .accepted(&okta_access(&h.idp, "jane.doe@example.com").sign())
        .await;
    assert_eq!(first["subject"], "00ujmkLgOMAJRMUA67ss");
    assert_eq!(first["roles"], json!(["admin"]));
    let renamed = h
        .accepted(&okta_access(&h.idp, "jane.smith@example.com").sign())
        .await;
    assert_eq!(renamed["id"], first["id"]);
    // An Okta ID token (no `cid`) is not an access token; nor is a token without `uid`.
    let id_token = plain(&h.idp)
        .audience("0oa1x8i3zzpROtgxm4x7")
        .subject("00ujmkLgOMAJRMUA67ss")
        .claim("amr", json!(["pwd"]))
        .claim("idp", "00o1x8i1vrHrG1E8x4x7")
        .sign();
    h.refused(&id_token, 401, "expected_access_token").await;
    h.refused(
        &okta_access(&h.idp, "x@example.com")
            .without_claim("uid")
            .sign(),
        401,
        "invalid_subject",
    )
    .await;
}

#[test]
fn okta_org_authorization_server_access_tokens_are_refused_at_build() {
    let err = ProvisioningLayer::builder()
        .issuer(Issuer::okta("https://example.okta.com").audience("api://default"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("org authorization server"),
        "{err}"
    );
    // Its ID tokens can be verified.
    let _ = ProvisioningLayer::builder()
        .issuer(
            Issuer::okta("https://example.okta.com")
                .audience("0oa1x8i3zzpROtgxm4x7")
                .token_kinds([TokenKind::Id]),
        )
        .build()
        .unwrap();
    let _ = ProvisioningLayer::builder()
        .issuer(Issuer::okta("https://example.okta.com/oauth2/default").audience("api://default"))
        .build()
        .unwrap();
}

/// A Keycloak access token: `typ: JWT` in the header, `typ: Bearer` in the payload, realm and
/// client roles, `account` beside the API in `aud`.
fn keycloak_access(idp: &TestIssuer) -> TokenBuilder {
    plain(idp)
        .audiences(["orders-api", "account"])
        .subject("f1c3a9b2-5c2d-4a8e-9d0e-2b6f5e7c1a30")
        .claim("typ", "Bearer")
        .claim("azp", "orders-web")
        .claim("jti", "onrtac:9b5a7f2e")
        .claim("sid", "1f9a0c5e-7a54-4a0f-b3b6-1f2c3d4e5f60")
        .claim("scope", "openid email profile")
        .claim(
            "realm_access",
            json!({"roles": ["offline_access", "orders-admin"]}),
        )
        .claim(
            "resource_access",
            json!({"orders-api": {"roles": ["editor"]}, "account": {"roles": ["manage-account"]}}),
        )
        .email("ada@example.com", true)
        .claim("preferred_username", "ada")
}

#[tokio::test]
async fn keycloak_access_tokens_with_typ_jwt_and_realm_roles() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Keycloak)
                .audience("orders-api")
                .token_kinds([TokenKind::Access])
        },
        AttributeMapping::new()
            .group_role("orders-admin", "admin")
            .claim_role("resource_access.orders-api.roles", "editor", "editor"),
    )
    .await;
    let user = h.accepted(&keycloak_access(&h.idp).sign()).await;
    assert_eq!(user["roles"], json!(["admin", "editor"]));
    assert_eq!(user["groups"], json!(["offline_access", "orders-admin"]));
    // `account` alone is not this API's audience.
    h.refused(
        &keycloak_access(&h.idp).audience("account").sign(),
        401,
        "wrong_audience",
    )
    .await;
    let id_token = keycloak_access(&h.idp)
        .claim("typ", "ID")
        .audience("orders-web")
        .sign();
    h.refused(&id_token, 401, "expected_access_token").await;
    // Refresh and logout tokens are neither.
    for typ in ["Refresh", "Logout"] {
        let token = keycloak_access(&h.idp).claim("typ", typ).sign();
        h.refused(&token, 401, "wrong_token_type").await;
    }
}

/// An Auth0 access token for a custom API requested with `openid`: `typ: JWT`, the API and the
/// tenant's `userinfo` in `aud`, namespaced custom claims.
fn auth0_access(idp: &TestIssuer, tenant: &str) -> TokenBuilder {
    plain(idp)
        .audiences([
            "https://api.example.com/orders",
            &format!("{tenant}userinfo"),
        ])
        .subject("auth0|5f7c8ec7c33c6c004bbafe82")
        .claim("azp", "zZr1g3Q2xGQp8Yv3Yd7LMYo4X1hEXAMPLE")
        .claim("scope", "openid profile email read:orders")
        .claim("https://example.com/roles", json!(["orders-admin"]))
}

#[tokio::test]
async fn auth0_access_tokens_for_a_custom_api_with_namespaced_claims() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Auth0)
                .audience("https://api.example.com/orders")
                .token_kinds([TokenKind::Access])
        },
        AttributeMapping::new().claim_role("https://example.com/roles", "orders-admin", "admin"),
    )
    .await;
    let tenant = h.idp.url().to_owned();
    let user = h.accepted(&auth0_access(&h.idp, &tenant).sign()).await;
    assert_eq!(user["roles"], json!(["admin"]));
    // The userinfo audience alone never suffices.
    let userinfo_only = auth0_access(&h.idp, &tenant)
        .audience(format!("{tenant}userinfo"))
        .sign();
    h.refused(&userinfo_only, 401, "wrong_audience").await;
    // An Auth0 ID token (no `scope`, a `nonce`) is not an access token.
    let id_token = plain(&h.idp)
        .audience("https://api.example.com/orders")
        .subject("auth0|5f7c8ec7c33c6c004bbafe82")
        .claim("nonce", "n-0S6_WzA2Mj")
        .claim("name", "Ada")
        .sign();
    h.refused(&id_token, 401, "expected_access_token").await;
}

#[test]
fn auth0_issuers_need_their_trailing_slash() {
    let err = ProvisioningLayer::builder()
        .issuer(Issuer::auth0("https://example.eu.auth0.com").audience("https://api.example.com"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("end with a slash"), "{err}");
}

/// A Google ID token, as Sign in with Google issues it for a Workspace account.
fn google_id(idp: &TestIssuer, hosted_domain: &str) -> TokenBuilder {
    plain(idp)
        .audience("1234987819200.apps.googleusercontent.com")
        .subject("110169484474386276334")
        .claim("azp", "1234987819200.apps.googleusercontent.com")
        .claim("hd", hosted_domain)
        .email(format!("ada@{hosted_domain}"), true)
        .claim("at_hash", "HK6E_P6Dh8Y93mRNtsDB1Q")
        .claim("name", "Ada Lovelace")
        .claim("picture", "https://lh3.googleusercontent.com/a/photo")
}

#[tokio::test]
async fn google_id_tokens_pinned_to_a_workspace_domain() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Google)
                .audience("1234987819200.apps.googleusercontent.com")
                .require_claim("hd", "example.com")
        },
        AttributeMapping::new(),
    )
    .await;
    let user = h.accepted(&google_id(&h.idp, "example.com").sign()).await;
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["email_verified"], true);
    h.refused(
        &google_id(&h.idp, "other.example").sign(),
        403,
        "claim_mismatch",
    )
    .await;
    h.refused(
        &google_id(&h.idp, "example.com")
            .audience("999.apps.googleusercontent.com")
            .sign(),
        401,
        "wrong_audience",
    )
    .await;
}

#[test]
fn google_access_tokens_are_opaque_and_refused_at_build() {
    let err = ProvisioningLayer::builder()
        .issuer(
            Issuer::google()
                .audience("1234987819200.apps.googleusercontent.com")
                .token_kinds([TokenKind::Access]),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidSetting { .. }));
    assert!(err.to_string().contains("opaque"), "{err}");
    let ok = ProvisioningLayer::builder()
        .issuer(Issuer::google().audience("1234987819200.apps.googleusercontent.com"))
        .build();
    assert!(ok.is_ok());
}

#[tokio::test]
async fn forcing_rfc_9068_refuses_a_providers_own_access_tokens() {
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Keycloak)
                .access_token_profile(AccessTokenProfile::Rfc9068)
                .audience("orders-api")
                .token_kinds([TokenKind::Access])
        },
        AttributeMapping::new(),
    )
    .await;
    h.refused(
        &keycloak_access(&h.idp).sign(),
        401,
        "expected_access_token",
    )
    .await;
    // A true RFC 9068 token is still accepted.
    h.accepted(&h.idp.access_token().audience("orders-api").sign())
        .await;
}

#[test]
fn presets_build_their_issuer_urls() {
    assert_eq!(
        Issuer::entra(TENANT).url(),
        format!("https://login.microsoftonline.com/{TENANT}/v2.0")
    );
    assert_eq!(
        Issuer::entra_v1(TENANT).url(),
        format!("https://sts.windows.net/{TENANT}/")
    );
    assert_eq!(Issuer::google().url(), "https://accounts.google.com");
    assert_eq!(Provider::from_name("keycloak"), Some(Provider::Keycloak));
    assert_eq!(Provider::from_name("azure"), None);
}

#[tokio::test]
async fn a_discovery_document_elsewhere_must_still_name_the_issuer() {
    // Entra ID's v1.0 issuer (`https://sts.windows.net/{tenant}/`) is discovered at
    // `login.microsoftonline.com`; here a document at a URL of its own, then another issuer's.
    let at = |idp: &TestIssuer| format!("{}/.well-known/openid-configuration", idp.url());
    let h = Harness::start(
        |idp| {
            local(idp, Provider::Entra)
                .audience(CLIENT)
                .discovery_url(at(idp))
        },
        AttributeMapping::new(),
    )
    .await;
    h.accepted(&entra_id(&h.idp).sign()).await;

    let other = TestIssuer::start().await;
    let elsewhere = at(&other);
    let h = Harness::start(
        move |idp| {
            local(idp, Provider::Entra)
                .audience(CLIENT)
                .discovery_url(elsewhere)
        },
        AttributeMapping::new(),
    )
    .await;
    h.refused(&entra_id(&h.idp).sign(), 503, "issuer_unavailable")
        .await;
}
