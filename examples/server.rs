//! The reference server: an axum app behind `ProvisioningLayer`, configured from the
//! environment. Each person's first request creates their account; `/me` shows it.
//!
//! Run with `cargo run --example server`. With no settings it starts a built-in development
//! issuer on loopback, keeps accounts in the SQLite file `jit.db`, listens on
//! `127.0.0.1:3000` and prints a `curl` command carrying a freshly minted token.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `JIT_ISSUERS` | comma-separated issuers: a URL; `entra:<tenant id>`; `google`; or `<preset>=<URL>` with a preset of `entra`, `okta`, `keycloak`, `auth0`, `google`, which applies that provider's token rules to the URL. When set, no development issuer | development issuer |
//! | `JIT_AUDIENCES` | comma-separated accepted audiences | `test-client` with the development issuer |
//! | `JIT_TOKEN_KINDS` | `id`, `access` or `id,access` | `id,access` (Google: `id`) |
//! | `JIT_ALLOWED_DOMAINS` | comma-separated e-mail domains (`*.example.com` for sub-domains); empty: any | any |
//! | `JIT_DEFAULT_ROLES` | comma-separated roles for every new account | none |
//! | `JIT_GROUP_ROLES` | `group=role,group=role` | none |
//! | `JIT_DATABASE_URL` | `sqlite://…`, or `postgres://…` for several servers sharing one database | `sqlite://jit.db` |
//! | `JIT_LISTEN` | `host:port` to listen on (a name such as `localhost` too) | `127.0.0.1:3000` |
//! | `JIT_ALLOW_HTTP_ISSUERS` | `1`: plain-http issuers allowed, on loopback addresses only | off |
//! | `JIT_LINK_BY_VERIFIED_EMAIL` | `1`: link first sign-ins to accounts with the same verified e-mail; issuers are trusted for `JIT_ALLOWED_DOMAINS` (or any domain when empty) | off |
//! | `JIT_LINK_CLAIM` | with `JIT_SCIM_TOKEN`: links a first sign-in to the account SCIM created whose `externalId` equals this claim of the token (`oid` for Entra), if nobody has signed in to it yet; empty turns it off | `sub` |
//! | `JIT_CREATE_ACCOUNTS` | `0`: pre-provisioned only; a first sign-in without an account (created by SCIM, or found by `JIT_LINK_CLAIM` or `JIT_LINK_BY_VERIFIED_EMAIL`) is refused 403 `not_provisioned` | `1` |
//! | `JIT_REQUIRE_APPROVAL` | `1`: new accounts wait for approval (403 `pending_approval` until approved through the admin API) | off |
//! | `JIT_ADMIN_TOKEN` | mounts the admin API at `/admin` behind this bearer secret (16 characters at least): `GET /admin/pending`, `POST /admin/users/{id}/approve`, `POST /admin/users/{id}/refuse`, and `POST /admin/explain` with `{"token": …}` or `{"issuer": …, "claims": {…}}`, which answers the decision trace and the would-be account as JSON and writes nothing (an expired, forged or unknown-issuer token: 422 naming the reason); organisations: `POST /admin/organizations` (`{"name", "domains", "connections": [{"issuer", "audiences", "tenant": {"claim", "value"}, "default_roles", "group_roles": {"group": "role"}, "create_accounts", "require_approval", "claims": {"display_name": "nickname", "groups": "teams", "attributes.department": "dept"}, "client_id", "client_secret"}]}`, or for a SAML IdP `{"protocol": "saml", "issuer": ENTITYID, "saml_metadata": XML \| "saml_metadata_url": URL, "subject_attribute", "default_roles", …}`; an OpenID Connect connection with a `client_id`, and every SAML connection, take browser sign-in, and `GET /login?email=` sends its organisation's domains there; the secret is never shown), `GET /admin/organizations`, `GET\|PUT\|DELETE /admin/organizations/{id}`, `POST /admin/organizations/{id}/connections`, `DELETE /admin/organizations/{id}/connections/{cid}`; bad input: 400 problem document naming the `field`, a domain or connection another organisation holds: 409, and nothing written. Their connections sign people in from the next request, on every server | no admin API |
//! | `JIT_METRICS` | `1`: `GET /metrics` answers the layer's, the store's and SCIM's metrics in the Prometheus text format | off |
//! | `JIT_GRAPH_TENANT`, `JIT_GRAPH_CLIENT_ID`, `JIT_GRAPH_CLIENT_SECRET` | Entra ID group overage: when a token says its groups did not fit, they are read from Microsoft Graph (`transitiveMemberOf`, as this application's client credentials); groups are object ids, so `JIT_GROUP_ROLES` maps GUIDs; until Graph answers, groups stay as they were | off |
//! | `JIT_GRAPH_URL`, `JIT_GRAPH_TOKEN_URL` | Graph's base URL and the client-credentials token endpoint | `https://graph.microsoft.com/`, `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token` |
//! | `JIT_SCIM_TOKEN` | mounts the SCIM 2.0 service provider at `/scim/v2` behind this bearer secret (16 characters at least) | no SCIM |
//! | `JIT_SCIM_TOKEN_<ORG_ID>` | a SCIM secret scoped to one organisation (its id, 32 hex digits without hyphens, or with `_` in their place): that client sees, changes and creates only that organisation's users and groups (others answer 404); mounts SCIM too. Read at start: restart after adding one | none |
//! | `JIT_PUBLIC_URL` | the server's external base URL; the redirect URI is exactly this + `/callback`, whatever `Host` or `X-Forwarded-*` say | `http://` + `JIT_LISTEN` |
//! | `JIT_OIDC_CLIENT_ID`, `JIT_OIDC_CLIENT_SECRET` | the application's client at the issuers of `JIT_ISSUERS`: browser sign-in is on when the client id is set (no secret: a public client, PKCE only), and always with the development issuer. `JIT_AUDIENCES` defaults to the client id | off |
//! | `JIT_OIDC_SCOPES` | scopes to ask for beside `openid email profile`, space-separated (`groups`) | none |
//! | `JIT_SESSION_IDLE_SECS` | a session unused this long ends | `28800` |
//! | `JIT_SESSION_MAX_SECS` | a session ends this long after sign-in, however used | `86400` |
//! | `JIT_INTROSPECTION_CLIENT_ID`, `JIT_INTROSPECTION_CLIENT_SECRET` | opaque bearer tokens from the `JIT_ISSUERS` issuers that advertise an `introspection_endpoint` are accepted, checked there by RFC 7662 as this client; always on with the development issuer | off |
//! | `JIT_GITHUB_CLIENT_ID`, `JIT_GITHUB_CLIENT_SECRET` | GitHub sign-in at `GET /login?provider=github`, on the shared `/callback`; accounts' issuer is `github` (or the Enterprise base URL). With the development issuer and no GitHub settings, a local GitHub stand-in signs in `ada`, `bob` and `carol` | off |
//! | `JIT_GITHUB_URL`, `JIT_GITHUB_API_URL` | GitHub Enterprise Server or a test double (plain http only on loopback with `JIT_ALLOW_HTTP_ISSUERS=1`) | `https://github.com`, `https://api.github.com` (`<JIT_GITHUB_URL>/api/v3` for another `JIT_GITHUB_URL`) |
//! | `JIT_GITHUB_SCOPES` | the scopes to ask GitHub for, space- or comma-separated | `read:user user:email read:org` |
//! | `JIT_GITHUB_ACCEPT_TOKENS` | `1`: GitHub access tokens are also accepted as bearer tokens, resolved through GitHub's API (cached 60 s) | off |
//! | `JIT_SAML_IDP_METADATA` | SAML sign-in at these IdPs: their metadata, comma-separated, each a file path or a URL (fetched at start to learn the entity ids, then kept fresh by its `cacheDuration`; plain http only on loopback with `JIT_ALLOW_HTTP_ISSUERS=1`). Adds `GET /saml/metadata`, `GET /saml/login[?idp=ENTITYID\|?connection=ID][&return_to=PATH]`, `POST /saml/acs`, `GET\|POST /saml/slo`; with `JIT_ADMIN_TOKEN` these are on without it, for organisations' SAML connections | off (on with `JIT_ADMIN_TOKEN`) |
//! | `JIT_SAML_SP_ENTITY_ID` | the SP's entity id | `JIT_PUBLIC_URL` + `/saml/metadata` |
//! | `JIT_SAML_SP_KEY`, `JIT_SAML_SP_CERT` | PEM files of the SP's RSA key and certificate: AuthnRequests are signed and the metadata lists the certificate | unsigned requests |
//! | `JIT_SAML_SUBJECT_ATTRIBUTE` | the identity is this attribute (its `Name`, e.g. `http://schemas.microsoft.com/identity/claims/objectidentifier`) instead of the persistent NameID | the persistent NameID |
//! | `JIT_SAML_TRUST_EMAIL` | `1`: the IdPs' e-mail addresses count as verified | off |
//! | `JIT_SAML_REQUIRE_SIGNED_ASSERTION` | `1`: the assertion itself must be signed, not only the Response | off |
//! | `JIT_SAML_ALLOW_IDP_INITIATED` | `1`: responses that answer no request of this server are accepted | off |
//! | `JIT_SAML_ALLOW_SHA1` | `1`: RSA-SHA1 signatures and SHA-1 digests are accepted | off |
//! | `JIT_LEGACY_DATABASE_URL` | migration: the old system's database (`sqlite://…` or `postgres://…`, read only). A first sign-in that linking finds no account for adopts the legacy account `JIT_LEGACY_QUERY` finds by its verified e-mail (issuers are trusted for `JIT_ALLOWED_DOMAINS`, or any domain when empty) instead of creating one; each legacy account once (a second claimant: 403 `legacy_account_claimed`); the account's `attributes.legacy_id` is the legacy id | off |
//! | `JIT_LEGACY_QUERY` | the query, with the e-mail as `$1`: columns `id` (required), `roles` (comma-separated), `user_name`, `display_name`, and any other column becomes an attribute (never select secrets) | `SELECT id, display_name, roles FROM users WHERE lower(email) = lower($1)` |
//! | `JIT_INTROSPECTION_CACHE_SECS` | the longest an introspection answer is trusted (never past the token's `exp`): how long a revoked token may still work | `60` |
//!
//! Routes: `GET /` a page: signed out, a link to sign in and a work e-mail field
//! (`GET /login?email=`, home-realm discovery); signed in, who you are, your roles
//! and a sign-out button. `GET /me` answers the provisioned user as JSON, for a bearer token or
//! a session cookie alike (401 with neither). With browser sign-in, `GET /login`,
//! `GET /callback`, `POST /logout` and `POST /backchannel-logout` (register `JIT_PUBLIC_URL` +
//! `/callback` as the redirect URI and `JIT_PUBLIC_URL` + `/backchannel-logout` as the
//! back-channel logout URI). `GET /healthz` answers 200 without a token; `/scim/v2/…` when
//! `JIT_SCIM_TOKEN` is set. SCIM and the layer share the store and the mapping, so SCIM group
//! memberships grant the same roles as token groups, and a SCIM deactivation refuses the
//! user's next request and ends their sessions.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::header;
use serde_json::Value;
use tower_jit_provisioning::login::{BrowserLogin, OAuth2Provider, SamlLogin};
use tower_jit_provisioning::provision::groups::MicrosoftGraph;
use tower_jit_provisioning::provision::legacy_sql::SqlLegacyAccounts;
use tower_jit_provisioning::scim::Scim;
use tower_jit_provisioning::testing::{TestGitHub, TestIssuer};
use tower_jit_provisioning::{
    AttributeMapping, ConfigError, Issuer, IssuerPolicy, OrganizationDirectory, PostgresStore,
    Provider, ProvisionedUser, ProvisioningLayer, ProvisioningLayerBuilder, SqliteStore,
    StoreError, TokenKind, UserStore,
};

/// A setting that cannot work, with the variable that holds it.
#[derive(Debug)]
struct BadSetting {
    variable: &'static str,
    message: String,
}

fn bad(variable: &'static str, message: impl Into<String>) -> BadSetting {
    BadSetting {
        variable,
        message: message.into(),
    }
}

/// The server's settings. No `Debug`: the database URL may carry a password, and the SCIM
/// token is a secret.
struct Settings {
    issuers: Vec<IssuerSpec>,
    audiences: Vec<String>,
    /// `None`: each issuer's own default.
    kinds: Option<Vec<TokenKind>>,
    allowed_domains: Vec<String>,
    default_roles: Vec<String>,
    group_roles: Vec<(String, String)>,
    database_url: String,
    listen: String,
    allow_http: bool,
    link_by_verified_email: bool,
    /// `None`: no linking by claim (`JIT_LINK_CLAIM=` empty, or no SCIM).
    link_claim: Option<String>,
    /// `JIT_CREATE_ACCOUNTS`: whether first sign-ins create accounts.
    create_accounts: bool,
    /// `JIT_REQUIRE_APPROVAL`: new accounts wait for approval.
    require_approval: bool,
    /// `JIT_METRICS`: `GET /metrics` in the Prometheus text format.
    metrics: bool,
    /// `JIT_GRAPH_*`: Entra ID group overage resolved through Microsoft Graph.
    graph: Option<MicrosoftGraph>,
    /// `JIT_ADMIN_TOKEN`: the admin API's bearer secret.
    admin_token: Option<String>,
    scim_token: Option<String>,
    /// `JIT_SCIM_TOKEN_<ORG_ID>`: SCIM secrets each scoped to one organisation.
    scim_organization_tokens: Vec<(uuid::Uuid, String)>,
    /// `None`: `http://` + `JIT_LISTEN`, with the port actually bound.
    public_url: Option<String>,
    /// The application's client for browser sign-in at `issuers`: id and secret.
    client: Option<(String, Option<String>)>,
    scopes: Vec<String>,
    session_idle: Duration,
    session_max: Duration,
    /// The client opaque tokens are introspected as: id and secret.
    introspection: Option<(String, String)>,
    introspection_cache: Duration,
    github: Option<GitHubSettings>,
    saml: Option<SamlSettings>,
    /// `JIT_LEGACY_DATABASE_URL` and `JIT_LEGACY_QUERY`: first sign-ins adopt legacy accounts.
    legacy: Option<(String, String)>,
}

/// SAML sign-in, from `JIT_SAML_*`.
struct SamlSettings {
    /// File paths and URLs.
    metadata: Vec<String>,
    entity_id: Option<String>,
    /// The SP key and certificate, PEM.
    sp_key: Option<(String, String)>,
    subject_attribute: Option<String>,
    trust_email: bool,
    require_signed_assertion: bool,
    allow_idp_initiated: bool,
    allow_sha1: bool,
}

/// `JIT_SAML_*`: `None` when `JIT_SAML_IDP_METADATA` is not set and no organisation can be
/// added (no `JIT_ADMIN_TOKEN`): with the admin API, organisations' SAML connections need the
/// service provider even when the server trusts no IdP of its own.
fn saml_settings() -> Result<Option<SamlSettings>, BadSetting> {
    let metadata = list("JIT_SAML_IDP_METADATA");
    if metadata.is_empty() && var("JIT_ADMIN_TOKEN").is_none() {
        return Ok(None);
    }
    let read = |variable: &'static str, path: String| {
        std::fs::read_to_string(&path)
            .map_err(|e| bad(variable, format!("cannot read {path}: {e}")))
    };
    let sp_key = match (var("JIT_SAML_SP_KEY"), var("JIT_SAML_SP_CERT")) {
        (None, None) => None,
        (Some(key), Some(cert)) => Some((
            read("JIT_SAML_SP_KEY", key)?,
            read("JIT_SAML_SP_CERT", cert)?,
        )),
        (Some(_), None) => return Err(bad("JIT_SAML_SP_CERT", "required with JIT_SAML_SP_KEY")),
        (None, Some(_)) => return Err(bad("JIT_SAML_SP_KEY", "required with JIT_SAML_SP_CERT")),
    };
    Ok(Some(SamlSettings {
        metadata,
        entity_id: var("JIT_SAML_SP_ENTITY_ID"),
        sp_key,
        subject_attribute: var("JIT_SAML_SUBJECT_ATTRIBUTE"),
        trust_email: flag("JIT_SAML_TRUST_EMAIL")?,
        require_signed_assertion: flag("JIT_SAML_REQUIRE_SIGNED_ASSERTION")?,
        allow_idp_initiated: flag("JIT_SAML_ALLOW_IDP_INITIATED")?,
        allow_sha1: flag("JIT_SAML_ALLOW_SHA1")?,
    }))
}

/// SAML sign-in as `JIT_SAML_*` describe it: metadata URLs are fetched now, to learn which
/// IdPs they describe.
async fn saml_login(settings: &Settings, saml: &SamlSettings) -> Result<SamlLogin, String> {
    let mut login = SamlLogin::new()
        .allow_http_endpoints(settings.allow_http)
        .trust_email(saml.trust_email)
        .require_signed_assertion(saml.require_signed_assertion)
        .allow_idp_initiated(saml.allow_idp_initiated)
        .allow_sha1(saml.allow_sha1)
        .policy(policy(settings));
    if let Some(entity_id) = &saml.entity_id {
        login = login.entity_id(entity_id);
    }
    if let Some((key, cert)) = &saml.sp_key {
        login = login.sp_key_pem(key, cert);
    }
    if let Some(attribute) = &saml.subject_attribute {
        login = login.subject_attribute(attribute);
    }
    for source in &saml.metadata {
        login = if source.starts_with("https://") || source.starts_with("http://") {
            login
                .idp_metadata_from_url(source)
                .await
                .map_err(|e| format!("JIT_SAML_IDP_METADATA: {e}"))?
        } else {
            login.idp_metadata_file(source)
        };
    }
    Ok(login)
}

/// GitHub sign-in, from `JIT_GITHUB_*`.
struct GitHubSettings {
    client_id: String,
    client_secret: String,
    /// `None`: github.com.
    web: Option<String>,
    api: Option<String>,
    scopes: Option<Vec<String>>,
    accept_tokens: bool,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn list(name: &'static str) -> Vec<String> {
    var(name)
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn flag(name: &'static str) -> Result<bool, BadSetting> {
    match var(name).as_deref() {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(bad(name, format!("`{other}` is not `0` or `1`"))),
    }
}

/// One entry of `JIT_ISSUERS`.
enum IssuerSpec {
    /// A URL, with the default (RFC 9068) rules.
    Url(String),
    /// A provider's rules on a URL.
    Preset(Provider, String),
    /// Microsoft Entra ID, one tenant.
    EntraTenant(String),
    /// Google.
    Google,
}

impl IssuerSpec {
    fn parse(entry: &str) -> Result<Self, BadSetting> {
        if entry == "google" {
            return Ok(Self::Google);
        }
        if let Some(tenant) = entry.strip_prefix("entra:") {
            let guid =
                tenant.len() == 36 && tenant.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if !guid {
                return Err(bad(
                    "JIT_ISSUERS",
                    format!("`{entry}`: an Entra tenant id is a GUID"),
                ));
            }
            return Ok(Self::EntraTenant(tenant.to_ascii_lowercase()));
        }
        if let Some((name, url)) = entry.split_once('=') {
            let provider = Provider::from_name(name).ok_or_else(|| {
                bad(
                    "JIT_ISSUERS",
                    format!("`{name}` is not a preset (entra, okta, keycloak, auth0, google)"),
                )
            })?;
            return Ok(Self::Preset(provider, url.to_owned()));
        }
        if entry.starts_with("https://") || entry.starts_with("http://") {
            return Ok(Self::Url(entry.to_owned()));
        }
        Err(bad(
            "JIT_ISSUERS",
            format!("`{entry}` is not a URL, `entra:<tenant id>`, `google` or `<preset>=<URL>`"),
        ))
    }

    /// The issuer URL, exactly as its tokens name it.
    fn issuer_url(&self) -> String {
        match self {
            Self::Url(url) | Self::Preset(_, url) => url.clone(),
            Self::Google => "https://accounts.google.com".to_owned(),
            Self::EntraTenant(tenant) => {
                format!("https://login.microsoftonline.com/{tenant}/v2.0")
            }
        }
    }

    fn issuer(&self) -> Issuer {
        match self {
            Self::Url(url) => Issuer::new(url),
            Self::Google => Issuer::google(),
            Self::EntraTenant(tenant) => Issuer::entra(tenant),
            Self::Preset(provider, url) => {
                let issuer = Issuer::new(url).provider(*provider);
                // An Entra issuer URL names its tenant: pin it, as `entra:<tenant>` does.
                match (provider, entra_tenant(url)) {
                    (Provider::Entra, Some(tenant)) => issuer.require_claim("tid", tenant),
                    _ => issuer,
                }
            }
        }
    }
}

/// The tenant id in an Entra issuer URL (`…/{tenant}/v2.0`, `https://sts.windows.net/{tenant}/`).
fn entra_tenant(url: &str) -> Option<String> {
    url.split('/')
        .find(|segment| {
            segment.len() == 36
                && segment.chars().filter(|c| *c == '-').count() == 4
                && segment.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
        .map(str::to_ascii_lowercase)
}

fn settings() -> Result<Settings, BadSetting> {
    let issuers = list("JIT_ISSUERS")
        .iter()
        .map(|entry| IssuerSpec::parse(entry))
        .collect::<Result<Vec<_>, _>>()?;
    let client = var("JIT_OIDC_CLIENT_ID").map(|id| (id, var("JIT_OIDC_CLIENT_SECRET")));
    if client.is_none() && var("JIT_OIDC_CLIENT_SECRET").is_some() {
        return Err(bad(
            "JIT_OIDC_CLIENT_ID",
            "required with JIT_OIDC_CLIENT_SECRET",
        ));
    }
    let mut audiences = list("JIT_AUDIENCES");
    if audiences.is_empty() {
        // The application's own client: ID tokens issued to it are its bearer tokens too.
        audiences.extend(client.iter().map(|(id, _)| id.clone()));
    }
    if !issuers.is_empty() && audiences.is_empty() {
        return Err(bad(
            "JIT_AUDIENCES",
            "required when JIT_ISSUERS is set (or set JIT_OIDC_CLIENT_ID)",
        ));
    }
    let kinds = match var("JIT_TOKEN_KINDS") {
        None => None,
        Some(_) => list("JIT_TOKEN_KINDS")
            .iter()
            .map(|kind| match kind.as_str() {
                "id" => Ok(TokenKind::Id),
                "access" => Ok(TokenKind::Access),
                other => Err(bad(
                    "JIT_TOKEN_KINDS",
                    format!("`{other}` is not `id` or `access`"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)?,
    };
    let group_roles = list("JIT_GROUP_ROLES")
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((group, role)) if !group.trim().is_empty() && !role.trim().is_empty() => {
                Ok((group.trim().to_owned(), role.trim().to_owned()))
            }
            _ => Err(bad(
                "JIT_GROUP_ROLES",
                format!("`{pair}` is not `group=role`"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let listen = var("JIT_LISTEN").unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let port_ok = listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(bad(
            "JIT_LISTEN",
            format!(
                "`{listen}` is not `host:port` (`127.0.0.1:3000`, `localhost:3000`, `[::1]:3000`)"
            ),
        ));
    }
    let public_url = var("JIT_PUBLIC_URL");
    if let Some(public_url) = &public_url {
        let public = url::Url::parse(public_url).ok().filter(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.query().is_none()
                && url.fragment().is_none()
        });
        if public.is_none() {
            return Err(bad(
                "JIT_PUBLIC_URL",
                format!("`{public_url}` is not an http(s) URL with a host and no query"),
            ));
        }
    }
    let seconds = |name: &'static str, default: u64| -> Result<Duration, BadSetting> {
        match var(name) {
            None => Ok(Duration::from_secs(default)),
            Some(value) => match value.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
                _ => Err(bad(
                    name,
                    format!("`{value}` is not a positive number of seconds"),
                )),
            },
        }
    };
    let introspection = match (
        var("JIT_INTROSPECTION_CLIENT_ID"),
        var("JIT_INTROSPECTION_CLIENT_SECRET"),
    ) {
        (Some(id), Some(secret)) => Some((id, secret)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                "JIT_INTROSPECTION_CLIENT_SECRET",
                "required with JIT_INTROSPECTION_CLIENT_ID",
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "JIT_INTROSPECTION_CLIENT_ID",
                "required with JIT_INTROSPECTION_CLIENT_SECRET",
            ));
        }
    };
    let introspection_cache = seconds("JIT_INTROSPECTION_CACHE_SECS", 60)?;
    let github = match (var("JIT_GITHUB_CLIENT_ID"), var("JIT_GITHUB_CLIENT_SECRET")) {
        (Some(client_id), Some(client_secret)) => Some(GitHubSettings {
            client_id,
            client_secret,
            web: var("JIT_GITHUB_URL").map(|url| url.trim_end_matches('/').to_owned()),
            api: var("JIT_GITHUB_API_URL").map(|url| url.trim_end_matches('/').to_owned()),
            scopes: var("JIT_GITHUB_SCOPES").map(|scopes| {
                scopes
                    .split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            accept_tokens: flag("JIT_GITHUB_ACCEPT_TOKENS")?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                "JIT_GITHUB_CLIENT_SECRET",
                "required with JIT_GITHUB_CLIENT_ID",
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "JIT_GITHUB_CLIENT_ID",
                "required with JIT_GITHUB_CLIENT_SECRET",
            ));
        }
    };
    let session_idle = seconds("JIT_SESSION_IDLE_SECS", 8 * 3600)?;
    let session_max = seconds("JIT_SESSION_MAX_SECS", 24 * 3600)?;
    let scopes = var("JIT_OIDC_SCOPES")
        .map(|value| value.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let database_url = var("JIT_DATABASE_URL").unwrap_or_else(|| "sqlite://jit.db".to_owned());
    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| database_url.starts_with(scheme))
    {
        return Err(bad(
            "JIT_DATABASE_URL",
            "not a `sqlite:` or `postgres://` URL",
        ));
    }
    Ok(Settings {
        issuers,
        audiences,
        kinds,
        allowed_domains: list("JIT_ALLOWED_DOMAINS"),
        default_roles: list("JIT_DEFAULT_ROLES"),
        group_roles,
        database_url,
        listen,
        allow_http: flag("JIT_ALLOW_HTTP_ISSUERS")?,
        link_by_verified_email: flag("JIT_LINK_BY_VERIFIED_EMAIL")?,
        // Set but empty turns it off; unset is `sub`.
        link_claim: match std::env::var("JIT_LINK_CLAIM") {
            Ok(claim) => Some(claim.trim().to_owned()).filter(|c| !c.is_empty()),
            Err(_) => Some("sub".to_owned()),
        }
        .filter(|_| {
            var("JIT_SCIM_TOKEN").is_some() || std::env::vars().any(|(k, _)| is_org_scim_token(&k))
        }),
        create_accounts: var("JIT_CREATE_ACCOUNTS").is_none() || flag("JIT_CREATE_ACCOUNTS")?,
        require_approval: flag("JIT_REQUIRE_APPROVAL")?,
        metrics: flag("JIT_METRICS")?,
        graph: graph_settings(flag("JIT_ALLOW_HTTP_ISSUERS")?)?,
        admin_token: match var("JIT_ADMIN_TOKEN") {
            Some(token) if token.chars().count() < 16 => {
                return Err(bad(
                    "JIT_ADMIN_TOKEN",
                    "use 16 characters at least".to_owned(),
                ));
            }
            token => token,
        },
        scim_token: var("JIT_SCIM_TOKEN"),
        scim_organization_tokens: organization_scim_tokens()?,
        public_url: public_url.map(|url| url.trim_end_matches('/').to_owned()),
        client,
        scopes,
        session_idle,
        session_max,
        introspection,
        introspection_cache,
        github,
        saml: saml_settings()?,
        legacy: var("JIT_LEGACY_DATABASE_URL").map(|url| {
            let query = var("JIT_LEGACY_QUERY").unwrap_or_else(|| DEFAULT_LEGACY_QUERY.to_owned());
            (url, query)
        }),
    })
}

/// The variable a configuration error comes from.
fn variable_of(error: &ConfigError) -> &'static str {
    match error {
        ConfigError::NoAudience { .. } => "JIT_AUDIENCES",
        ConfigError::NoTokenKind { .. } => "JIT_TOKEN_KINDS",
        ConfigError::InsecureIssuerUrl { .. } | ConfigError::HttpIssuerNotLoopback { .. } => {
            "JIT_ISSUERS (or JIT_ALLOW_HTTP_ISSUERS)"
        }
        ConfigError::InvalidSetting { setting, .. } if setting.contains("allowed_domains") => {
            "JIT_ALLOWED_DOMAINS"
        }
        ConfigError::InvalidSetting { setting, .. } if setting.contains("browser") => {
            "JIT_PUBLIC_URL, JIT_OIDC_CLIENT_ID or JIT_SESSION_*"
        }
        ConfigError::InvalidSetting { setting, .. }
        | ConfigError::InvalidDuration { setting, .. }
            if setting.contains("introspection") =>
        {
            "JIT_INTROSPECTION_*"
        }
        ConfigError::Saml(_) => "JIT_SAML_*",
        ConfigError::InvalidSetting { setting, .. } if setting.contains("oauth2_provider") => {
            "JIT_GITHUB_* (or JIT_ALLOW_HTTP_ISSUERS)"
        }
        _ => "JIT_ISSUERS",
    }
}

/// Whether `name` is a `JIT_SCIM_TOKEN_<ORG_ID>` variable.
fn is_org_scim_token(name: &str) -> bool {
    name.strip_prefix("JIT_SCIM_TOKEN_")
        .is_some_and(|id| !id.is_empty())
}

/// `JIT_SCIM_TOKEN_<ORG_ID>=<secret>`: a SCIM client that manages the organisation whose id
/// (32 hex digits, without hyphens, which variable names cannot hold; or with underscores in
/// their place) ends the name.
fn organization_scim_tokens() -> Result<Vec<(uuid::Uuid, String)>, BadSetting> {
    let mut tokens = Vec::new();
    for (name, secret) in std::env::vars() {
        let Some(id) = name
            .strip_prefix("JIT_SCIM_TOKEN_")
            .filter(|id| !id.is_empty())
        else {
            continue;
        };
        let id = uuid::Uuid::parse_str(&id.replace('_', "-"))
            .or_else(|_| uuid::Uuid::parse_str(id))
            .map_err(|_| {
                bad(
                    "JIT_SCIM_TOKEN_<ORG_ID>",
                    format!("{name}: not an organisation id"),
                )
            })?;
        tokens.push((id, secret));
    }
    Ok(tokens)
}

/// The legacy accounts query when `JIT_LEGACY_QUERY` is not set: a `users` table of the old
/// system with these columns.
const DEFAULT_LEGACY_QUERY: &str =
    "SELECT id, display_name, roles FROM users WHERE lower(email) = lower($1)";

/// Whether issuers vouch for e-mail addresses in their domains: for linking by e-mail, and for
/// finding legacy accounts by e-mail.
fn trusts_email(settings: &Settings) -> bool {
    settings.link_by_verified_email || settings.legacy.is_some()
}

/// The provisioning rules `JIT_ALLOWED_DOMAINS` and `JIT_LINK_BY_VERIFIED_EMAIL` give a source
/// that is not an `Issuer` (GitHub).
fn policy(settings: &Settings) -> IssuerPolicy {
    let mut policy = IssuerPolicy::new().allowed_domains(settings.allowed_domains.clone());
    if trusts_email(settings) {
        policy = if settings.allowed_domains.is_empty() {
            policy.trust_any_email_domain()
        } else {
            policy.trust_email_domains(settings.allowed_domains.clone())
        };
    }
    policy
}

/// GitHub, or GitHub Enterprise Server, as `JIT_GITHUB_*` describe it.
fn github_provider(settings: &Settings, github: &GitHubSettings) -> OAuth2Provider {
    let (id, secret) = (github.client_id.clone(), github.client_secret.clone());
    let mut provider = match github.web.as_deref() {
        None | Some("https://github.com") => {
            let provider = OAuth2Provider::github(id, secret);
            match &github.api {
                Some(api) => provider.github_urls("https://github.com", api),
                None => provider,
            }
        }
        Some(base) => {
            let provider = OAuth2Provider::github_enterprise(base, id, secret);
            match &github.api {
                Some(api) => provider.github_urls(base, api),
                None => provider,
            }
        }
    };
    if let Some(scopes) = &github.scopes {
        provider = provider.scopes(scopes.clone());
    }
    if github.accept_tokens {
        provider = provider.accept_bearer_tokens(Duration::from_secs(60));
    }
    provider
        .allow_http_loopback(settings.allow_http)
        .policy(policy(settings))
}

/// `JIT_GRAPH_TENANT`, `JIT_GRAPH_CLIENT_ID`, `JIT_GRAPH_CLIENT_SECRET` (all three, or none),
/// `JIT_GRAPH_URL`, `JIT_GRAPH_TOKEN_URL`.
fn graph_settings(allow_http: bool) -> Result<Option<MicrosoftGraph>, BadSetting> {
    let (tenant, id, secret) = match (
        var("JIT_GRAPH_TENANT"),
        var("JIT_GRAPH_CLIENT_ID"),
        var("JIT_GRAPH_CLIENT_SECRET"),
    ) {
        (None, None, None) => return Ok(None),
        (Some(tenant), Some(id), Some(secret)) => (tenant, id, secret),
        _ => {
            return Err(bad(
                "JIT_GRAPH_TENANT",
                "set JIT_GRAPH_TENANT, JIT_GRAPH_CLIENT_ID and JIT_GRAPH_CLIENT_SECRET together"
                    .to_owned(),
            ));
        }
    };
    let mut graph = MicrosoftGraph::builder(tenant, id, secret).allow_http_loopback(allow_http);
    if let Some(url) = var("JIT_GRAPH_URL") {
        graph = graph.graph_url(url);
    }
    if let Some(url) = var("JIT_GRAPH_TOKEN_URL") {
        graph = graph.token_url(url);
    }
    graph
        .build()
        .map(Some)
        .map_err(|e| bad("JIT_GRAPH_URL", e.to_string()))
}

fn issuer(settings: &Settings, base: Issuer) -> Issuer {
    let mut issuer = base.allowed_domains(settings.allowed_domains.clone());
    if let Some(graph) = &settings.graph {
        issuer = issuer.group_resolver(graph.clone());
    }
    if let Some((id, secret)) = &settings.introspection {
        issuer = issuer
            .introspection(id, secret)
            .introspection_cache(settings.introspection_cache);
    }
    if let Some(kinds) = &settings.kinds {
        issuer = issuer.token_kinds(kinds.clone());
    }
    if trusts_email(settings) {
        issuer = if settings.allowed_domains.is_empty() {
            issuer.trust_any_email_domain()
        } else {
            issuer.trust_email_domains(settings.allowed_domains.clone())
        };
    }
    issuer
}

/// `GET /metrics`: what the layer, the store and SCIM recorded, in the Prometheus text
/// format, from a recorder installed for this process.
fn metrics_router() -> Result<Router, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("JIT_METRICS: {e}"))?;
    // Histograms are summarised on a schedule the recorder leaves to its owner.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let render = move || {
        let text = handle.render();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
    };
    Ok(Router::new().route("/metrics", get(render)))
}

/// `GET /me`: the account, as JSON. Serialized straight from the account, with no JSON tree
/// built in between: this answers every authenticated request of a client.
async fn me(user: ProvisionedUser) -> Response {
    #[derive(serde::Serialize)]
    struct Identity<'a> {
        issuer: &'a str,
        subject: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Me<'a> {
        id: uuid::Uuid,
        email: &'a Option<String>,
        email_verified: bool,
        user_name: &'a Option<String>,
        display_name: &'a Option<String>,
        given_name: &'a Option<String>,
        family_name: &'a Option<String>,
        picture: &'a Option<String>,
        locale: &'a Option<String>,
        roles: Vec<&'a str>,
        groups: &'a [String],
        attributes: &'a serde_json::Map<String, Value>,
        status: tower_jit_provisioning::UserStatus,
        external_id: &'a Option<String>,
        created_at: Rfc3339,
        updated_at: Rfc3339,
        last_login_at: Option<Rfc3339>,
        organization_id: Option<uuid::Uuid>,
        identity: Identity<'a>,
    }
    let u = user.user();
    let key = &user.identity().key;
    let me = Me {
        id: u.id,
        email: &u.email,
        email_verified: u.email_verified,
        user_name: &u.user_name,
        display_name: &u.display_name,
        given_name: &u.given_name,
        family_name: &u.family_name,
        picture: &u.picture,
        locale: &u.locale,
        roles: u.role_names(),
        groups: &u.groups,
        attributes: &u.attributes,
        status: u.status,
        external_id: &u.external_id,
        created_at: Rfc3339(u.created_at),
        updated_at: Rfc3339(u.updated_at),
        last_login_at: u.last_login_at.map(Rfc3339),
        organization_id: u.organization_id,
        identity: Identity {
            issuer: key.issuer(),
            subject: key.subject(),
        },
    };
    // Sized for a typical account at once: `Json` starts at 128 bytes and grows three times.
    let mut body = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut body, &me) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A time as `chrono` serializes it (RFC 3339, UTC as `Z`, the fraction in 0, 3, 6 or 9
/// digits), written into a buffer on the stack: `chrono`'s own goes through the formatting
/// machinery, a microsecond per `/me` for three timestamps.
struct Rfc3339(chrono::DateTime<chrono::Utc>);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike as _, Timelike as _};
        let (time, nanos) = (self.0, self.0.nanosecond());
        if !(0..=9999).contains(&time.year()) || nanos >= 1_000_000_000 {
            // Outside four-digit years, or a leap second: chrono's own.
            return time.serialize(serializer);
        }
        /// Fixed-width decimal digits and separators, into a stack buffer.
        struct Text {
            buffer: [u8; 30],
            len: usize,
        }
        impl Text {
            fn byte(&mut self, byte: u8) {
                self.buffer[self.len] = byte;
                self.len += 1;
            }
            fn digits(&mut self, value: u32, width: u32) {
                for place in (0..width).rev() {
                    self.byte(b'0' + (value / 10u32.pow(place) % 10) as u8);
                }
            }
        }
        let mut text = Text {
            buffer: [0; 30],
            len: 0,
        };
        text.digits(time.year() as u32, 4);
        for (separator, value) in [
            (b'-', time.month()),
            (b'-', time.day()),
            (b'T', time.hour()),
            (b':', time.minute()),
            (b':', time.second()),
        ] {
            text.byte(separator);
            text.digits(value, 2);
        }
        let fraction = if nanos == 0 {
            None
        } else if nanos % 1_000_000 == 0 {
            Some((nanos / 1_000_000, 3))
        } else if nanos % 1_000 == 0 {
            Some((nanos / 1_000, 6))
        } else {
            Some((nanos, 9))
        };
        if let Some((value, width)) = fraction {
            text.byte(b'.');
            text.digits(value, width);
        }
        text.byte(b'Z');
        serializer.serialize_str(std::str::from_utf8(&text.buffer[..text.len]).unwrap_or_default())
    }
}

#[cfg(test)]
mod rfc3339_tests {
    use super::Rfc3339;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone as _;
        let base = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for nanos in [
            0,
            7_000_000,
            7_100_000,
            123_000,
            123_456_789,
            999_999_999,
            1,
        ] {
            let time = base + chrono::TimeDelta::nanoseconds(nanos);
            assert_eq!(
                serde_json::to_string(&Rfc3339(time)).unwrap(),
                serde_json::to_string(&time).unwrap()
            );
        }
        let now = chrono::Utc::now();
        assert_eq!(
            serde_json::to_string(&Rfc3339(now)).unwrap(),
            serde_json::to_string(&now).unwrap()
        );
    }
}

/// `GET /`: who is signed in, or a way to sign in.
/// One way to sign in offered on `/`: its element id, label and start URL.
struct SignInLink {
    id: &'static str,
    label: String,
    href: String,
}

async fn home(user: Option<ProvisionedUser>, links: Arc<Vec<SignInLink>>) -> Response {
    let body = match &user {
        Some(user) => {
            let u = user.user();
            let name = u
                .display_name
                .as_deref()
                .or(u.email.as_deref())
                .unwrap_or(user.identity().key.subject());
            let roles = u.role_names();
            let roles = if roles.is_empty() {
                "none".to_owned()
            } else {
                roles
                    .iter()
                    .map(|r| escape(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let email = u
                .email
                .as_deref()
                .map(|e| format!("<p>E-mail: <span id=\"email\">{}</span></p>", escape(e)))
                .unwrap_or_default();
            format!(
                "<h1>Signed in as <span id=\"name\">{}</span></h1>{email}\
                 <p>Roles: <span id=\"roles\">{roles}</span></p>\
                 <p>Signed in through {} at <code>{}</code>.</p>\
                 <form method=\"post\" action=\"/logout\">\
                 <button id=\"logout\" type=\"submit\">Sign out</button></form>",
                escape(name),
                escape(user.source().as_str()),
                escape(user.identity().key.issuer()),
            )
        }
        None if !links.is_empty() => {
            let mut body = String::from("<h1>Signed out</h1>");
            for link in links.iter() {
                body.push_str(&format!(
                    "<p><a class=\"sign-in\" id=\"{}\" href=\"{}\">{}</a></p>",
                    link.id,
                    escape(&link.href),
                    escape(&link.label)
                ));
            }
            // Home-realm discovery: an organisation's people go to its own IdP.
            body.push_str(
                "<form id=\"work-email\" method=\"get\" action=\"/login\"><p>\
                 <label>Work e-mail <input type=\"email\" name=\"email\" required></label> \
                 <button type=\"submit\">Continue</button></p></form>",
            );
            body
        }
        None => "<h1>Signed out</h1>\
             <p>Send a bearer token to <code>/me</code>; browser sign-in needs \
             <code>JIT_OIDC_CLIENT_ID</code>.</p>"
            .to_owned(),
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>tower-jit-provisioning</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;\
         color:#1d1d1f}}h1{{font-size:1.5rem}}code{{font-size:.9em}}\
         button,a.sign-in{{display:inline-block;font:inherit;padding:.5rem 1rem;border-radius:.4rem;border:1px solid #888;\
         background:#f4f4f6;color:inherit;text-decoration:none;cursor:pointer}}\
         </style></head><body>{body}</body></html>"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 frame-ancestors 'none'",
            ),
        ],
        Html(page),
    )
        .into_response()
}

/// Text fit for HTML: what an identity provider sends is data, never markup.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The SCIM secrets: the application's own client's, and one per organisation.
struct ScimSecrets {
    global: Option<String>,
    organizations: Vec<(uuid::Uuid, String)>,
}

/// The routers beside the layer, on its store: SCIM when a SCIM secret is set, the admin
/// API when an admin secret is.
struct Doors {
    scim: Option<Router>,
    /// The admin API, built once the layer it explains sign-ins with is.
    admin: Option<Box<dyn FnOnce(ProvisioningLayer) -> Router + Send>>,
}

/// A layer builder with the store `url` names, migrated, and the SCIM and admin routers on
/// the same store when their secrets are set.
async fn open_store(
    url: &str,
    mapping: &AttributeMapping,
    scim: &ScimSecrets,
    admin_token: Option<&str>,
) -> Result<(ProvisioningLayerBuilder, Doors), String> {
    fn doors<S: UserStore + Clone>(
        store: &S,
        mapping: &AttributeMapping,
        secrets: &ScimSecrets,
        admin_token: Option<&str>,
    ) -> Result<Doors, String> {
        let scim = if secrets.global.is_none() && secrets.organizations.is_empty() {
            None
        } else {
            let mut scim = Scim::new(store.clone()).mapping(mapping.clone());
            if let Some(token) = &secrets.global {
                scim = scim.bearer_token("scim", token);
            }
            for (organization, token) in &secrets.organizations {
                scim =
                    scim.organization_token(format!("scim:{organization}"), token, *organization);
            }
            let router = scim
                .router()
                .map_err(|e| format!("JIT_SCIM_TOKEN / JIT_SCIM_TOKEN_<ORG_ID>: {e}"))?;
            Some(router)
        };
        let admin = admin_token.map(|token| {
            let store = store.clone();
            let token = token.to_owned();
            Box::new(move |layer| admin::router(store, layer, &token))
                as Box<dyn FnOnce(ProvisioningLayer) -> Router + Send>
        });
        Ok(Doors { scim, admin })
    }
    let database = |e: StoreError| {
        format!(
            "JIT_DATABASE_URL: cannot open the database {}: {}",
            redacted(url),
            chain(&e)
        )
    };
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url).await.map_err(database)?;
        store.migrate().await.map_err(database)?;
        let doors = doors(&store, mapping, scim, admin_token)?;
        Ok((ProvisioningLayer::builder().store(store), doors))
    } else {
        let store = PostgresStore::connect(url).await.map_err(database)?;
        store.migrate().await.map_err(database)?;
        let doors = doors(&store, mapping, scim, admin_token)?;
        Ok((ProvisioningLayer::builder().store(store), doors))
    }
}

/// An error with its causes, `a: b: c`: what went wrong below a store error is the part that
/// says what to do.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A database URL fit to print: its password replaced.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Where the development issuer keeps its port and keys: beside an SQLite database file, so one
/// database always sees one issuer (and each development user keeps their account), else in
/// the working directory; nowhere for an in-memory database.
fn dev_issuer_file(database_url: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
    {
        if path.is_empty() || path.contains(":memory:") {
            return None;
        }
        return Some(format!("{path}.dev-issuer.json").into());
    }
    if database_url.starts_with("sqlite:") {
        return None;
    }
    Some("jit-dev-issuer.json".into())
}

async fn run() -> Result<(), String> {
    let settings = settings().map_err(|e| format!("{}: {}", e.variable, e.message))?;

    let mut mapping = AttributeMapping::new().default_roles(settings.default_roles.clone());
    for (group, role) in &settings.group_roles {
        mapping = mapping.group_role(group, role);
    }
    let scim = ScimSecrets {
        global: settings.scim_token.clone(),
        organizations: settings.scim_organization_tokens.clone(),
    };
    let (builder, doors) = open_store(
        &settings.database_url,
        &mapping,
        &scim,
        settings.admin_token.as_deref(),
    )
    .await?;

    // With no issuer configured, a development issuer on loopback stands in for one, with the
    // same port and keys after a restart.
    let dev_issuer = if settings.issuers.is_empty() {
        let mut dev = TestIssuer::builder();
        let file = dev_issuer_file(&settings.database_url);
        if let Some(file) = &file {
            dev = dev.persist(file);
        }
        let started = dev.start().await.map_err(|e| {
            format!(
                "development issuer: {e}{}",
                file.map(|f| format!(
                    " (its port and keys are kept in {}: free the port, or delete the file for \
                     a new issuer, whose tokens and users are new)",
                    f.display()
                ))
                .unwrap_or_default()
            )
        })?;
        Some(started)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("JIT_LISTEN: cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The redirect URI comes from settings alone, never from a request's headers.
    let public_url = settings.public_url.clone().unwrap_or_else(|| {
        let host = settings
            .listen
            .rsplit_once(':')
            .map_or(settings.listen.as_str(), |(host, _)| host);
        format!("http://{host}:{}", addr.port())
    });
    let mut builder = builder
        .mapping(mapping)
        // Organisations added through the admin API sign in from the next request.
        .organizations(OrganizationDirectory::new().allow_http_loopback(settings.allow_http))
        .link_by_verified_email(settings.link_by_verified_email)
        .create_accounts(settings.create_accounts)
        .require_approval(settings.require_approval);
    if let Some((url, query)) = &settings.legacy {
        let legacy = SqlLegacyAccounts::new(url, query.as_str())
            .map_err(|e| format!("JIT_LEGACY_DATABASE_URL / JIT_LEGACY_QUERY: {e}"))?
            .name("legacy-db");
        builder = builder.legacy_accounts(legacy);
    }
    if let Some(claim) = &settings.link_claim {
        // Only accounts SCIM created that nobody has signed in to yet.
        builder = builder
            .link_by_claim(claim.as_str())
            .link_by_claim_unused_only(true);
    }
    let mut builder = builder
        // Signed-out visitors see `/`; `/me` still answers 401 without a credential.
        .optional(true);
    let mut links = Vec::new();
    let browser = match &dev_issuer {
        Some(idp) => {
            // The development issuer accepts any client id with its own secret.
            let (id, secret) = settings.client.clone().unwrap_or_else(|| {
                (
                    TestIssuer::CLIENT_ID.to_owned(),
                    Some(TestIssuer::CLIENT_SECRET.to_owned()),
                )
            });
            let secret = secret.or_else(|| Some(TestIssuer::CLIENT_SECRET.to_owned()));
            let base = idp
                .issuer()
                .browser_client(id, secret)
                .browser_scopes(settings.scopes.clone());
            let mut dev = issuer(&settings, base);
            if settings.introspection.is_none() {
                // The development issuer's opaque tokens work out of the box.
                dev = dev
                    .introspection(TestIssuer::CLIENT_ID, TestIssuer::CLIENT_SECRET)
                    .introspection_cache(settings.introspection_cache);
            }
            builder = builder.issuer(dev);
            links.push(SignInLink {
                id: "login",
                label: "Sign in".to_owned(),
                href: "/login".to_owned(),
            });
            true
        }
        None => {
            for spec in &settings.issuers {
                let mut base = spec
                    .issuer()
                    .audiences(settings.audiences.clone())
                    .allow_http_loopback(settings.allow_http);
                if let Some((id, secret)) = &settings.client {
                    base = base
                        .browser_client(id, secret.clone())
                        .browser_scopes(settings.scopes.clone());
                }
                builder = builder.issuer(issuer(&settings, base));
                if settings.client.is_some() {
                    let url = spec.issuer_url();
                    let first = links.is_empty();
                    links.push(SignInLink {
                        id: if first { "login" } else { "login-issuer" },
                        label: format!("Sign in at {url}"),
                        href: format!(
                            "/login?issuer={}",
                            url::form_urlencoded::byte_serialize(url.as_bytes())
                                .collect::<String>()
                        ),
                    });
                }
            }
            settings.client.is_some()
        }
    };
    // GitHub: configured, or in development a local stand-in for it.
    let dev_github = match (&settings.github, &dev_issuer) {
        (None, Some(_)) => Some(TestGitHub::start().await),
        _ => None,
    };
    let github = match (&settings.github, &dev_github) {
        (Some(github), _) => Some(github_provider(&settings, github)),
        (None, Some(double)) => Some(
            double
                .provider()
                .accept_bearer_tokens(Duration::from_secs(60))
                .policy(policy(&settings)),
        ),
        (None, None) => None,
    };
    let browser = browser || github.is_some() || settings.saml.is_some();
    if let Some(saml) = &settings.saml {
        builder = builder.saml(saml_login(&settings, saml).await?);
    }
    if let Some(github) = github {
        builder = builder.oauth2_provider(github);
        links.push(SignInLink {
            id: "login-github",
            label: "Sign in with GitHub".to_owned(),
            href: "/login?provider=github".to_owned(),
        });
    }
    if browser {
        builder = builder.browser_login(
            BrowserLogin::new(public_url.as_str())
                .idle_timeout(settings.session_idle)
                .absolute_timeout(settings.session_max),
        );
    }
    let layer = builder
        .build()
        .map_err(|e| format!("{}: {e}", variable_of(&e)))?;
    if let Err(unreachable) = layer.fetch_keys().await {
        tracing::warn!("{unreachable}; requests get 503 until they can be reached");
    }

    let admin = doors.admin.map(|admin| admin(layer.clone()));
    // SAML: one way in per IdP, known once the layer read their metadata.
    let saml_idps = layer.saml_idps();
    for (n, entity_id) in saml_idps.iter().enumerate() {
        links.push(SignInLink {
            id: if n == 0 {
                "login-saml"
            } else {
                "login-saml-idp"
            },
            label: if saml_idps.len() == 1 {
                "Sign in with SAML".to_owned()
            } else {
                format!("Sign in with SAML at {entity_id}")
            },
            href: format!(
                "/saml/login?idp={}",
                url::form_urlencoded::byte_serialize(entity_id.as_bytes()).collect::<String>()
            ),
        });
    }
    let links = Arc::new(links);
    let signed_in = if browser {
        Router::new().merge(layer.login_router())
    } else {
        Router::new()
    };
    let mut app = signed_in
        .route("/", get(move |user| home(user, Arc::clone(&links))))
        .route("/me", get(me))
        // Only matched routes: an unknown path is 404 whatever credential it carries.
        .route_layer(layer)
        .route("/healthz", get(|| async { "ok" }));
    if settings.metrics {
        app = app.merge(metrics_router()?);
    }
    if let Some(scim) = doors.scim {
        app = app.nest("/scim/v2", scim);
    }
    if let Some(admin) = admin {
        app = app.nest("/admin", admin);
    }
    println!("listening on http://{addr}");
    if browser {
        println!("browser sign-in: open {public_url}/ (redirect URI {public_url}/callback)");
    }
    if let Some(idp) = &dev_issuer {
        let token = idp
            .id_token()
            .subject("dev-user-1")
            .email("dev@example.com", true)
            .claim("name", "Dev User")
            .claim("given_name", "Dev")
            .claim("family_name", "User")
            .sign();
        let mint = format!("{}/mint", idp.url());
        println!(
            "development issuer at {}; sign in as alice, bob or carol, or try:\n",
            idp.url()
        );
        if let Some(github) = &dev_github {
            println!(
                "development GitHub at {}: sign in with GitHub as ada, bob or carol\n",
                github.url()
            );
        }
        println!("curl -s -H 'Authorization: Bearer {token}' http://{addr}/me\n");
        println!("a token for any user, of any kind (id, access, opaque), at any time:\n");
        println!(
            "curl -s -H \"Authorization: Bearer $(curl -s '{mint}?sub=alice&email=alice@example.com&name=Alice&kind=access')\" http://{addr}/me\n"
        );
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server failed: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only for a terminal: a file or a log collector gets plain text.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_jit_provisioning=info".into()),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The admin API behind `JIT_ADMIN_TOKEN`: the approval queue, and explaining decisions.
mod admin {
    use aws_lc_rs::{constant_time, digest};
    use axum::extract::{DefaultBodyLimit, FromRef, Path, Request, State};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use bytes::Bytes;
    use http::{StatusCode, header};
    use serde_json::{Value, json};
    use tower_jit_provisioning::approval::{ApprovalError, Approvals};
    use tower_jit_provisioning::organization::{Connection, Organization, Protocol, TenantPin};
    use tower_jit_provisioning::{Error, ProvisioningLayer, StoreError, UserStore};

    /// What the admin routes share.
    #[derive(Clone)]
    struct Admin<S> {
        approvals: Approvals<S>,
        layer: ProvisioningLayer,
        store: S,
    }

    /// The store, as the organisation routes take it.
    #[derive(Clone)]
    struct Organizations<S>(S);

    impl<S: Clone> FromRef<Admin<S>> for Organizations<S> {
        fn from_ref(admin: &Admin<S>) -> Self {
            Self(admin.store.clone())
        }
    }

    impl<S: Clone> FromRef<Admin<S>> for Approvals<S> {
        fn from_ref(admin: &Admin<S>) -> Self {
            admin.approvals.clone()
        }
    }

    impl<S> FromRef<Admin<S>> for ProvisioningLayer {
        fn from_ref(admin: &Admin<S>) -> Self {
            admin.layer.clone()
        }
    }

    /// The largest explain request read: a token or a claims object, with room to spare.
    const MAX_EXPLAIN_BODY: usize = 64 * 1024;

    /// Who the audit names as the approver: the holder of the admin secret.
    const APPROVER: &str = "admin-api";

    pub(super) fn router<S: UserStore + Clone>(
        store: S,
        layer: ProvisioningLayer,
        token: &str,
    ) -> Router {
        let approvals = Approvals::new(store.clone());
        let expected = digest::digest(&digest::SHA256, token.as_bytes());
        let guard = move |request: Request, next: Next| {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|v| digest::digest(&digest::SHA256, v.as_bytes()));
            let allowed = presented.is_some_and(|p| {
                constant_time::verify_slices_are_equal(p.as_ref(), expected.as_ref()).is_ok()
            });
            async move {
                if allowed {
                    next.run(request).await
                } else {
                    let mut refused = error(StatusCode::UNAUTHORIZED, "unauthorized");
                    refused.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    );
                    refused
                }
            }
        };
        Router::new()
            .route("/pending", get(pending::<S>))
            .route("/users/{id}/approve", post(approve::<S>))
            .route("/users/{id}/refuse", post(refuse::<S>))
            .route(
                "/explain",
                post(explain).layer(DefaultBodyLimit::max(MAX_EXPLAIN_BODY)),
            )
            .route(
                "/organizations",
                get(list_organizations::<S>).post(create_organization::<S>),
            )
            .route(
                "/organizations/{id}",
                get(get_organization::<S>)
                    .put(replace_organization::<S>)
                    .delete(delete_organization::<S>),
            )
            .route("/organizations/{id}/connections", post(add_connection::<S>))
            .route(
                "/organizations/{id}/connections/{connection}",
                axum::routing::delete(remove_connection::<S>),
            )
            .layer(DefaultBodyLimit::max(MAX_ORGANIZATION_BODY))
            .layer(middleware::from_fn(guard))
            .with_state(Admin {
                approvals,
                layer,
                store,
            })
    }

    /// `POST /admin/explain`: `{"token": "<jwt or opaque token>"}`, verified as a request's
    /// bearer token would be, or `{"issuer": "<issuer URL>", "claims": {...}}`, taken as
    /// that issuer's token would carry them. Answers the decision trace and the account that
    /// would result; writes nothing.
    async fn explain(State(layer): State<ProvisioningLayer>, body: Bytes) -> Response {
        let invalid = |detail: &str| {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "invalid_request", "detail": detail })),
            )
                .into_response()
        };
        let shape = "send {\"token\": \"...\"} or {\"issuer\": \"...\", \"claims\": {...}}";
        let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(&body) else {
            return invalid(shape);
        };
        let explained = match (
            request.remove("token"),
            request.remove("issuer"),
            request.remove("claims"),
        ) {
            (Some(Value::String(token)), None, None) => layer.explain_token(&token).await,
            (None, Some(Value::String(issuer)), Some(Value::Object(claims))) => {
                layer.explain_claims(&issuer, claims).await
            }
            _ => return invalid(shape),
        };
        match explained {
            Ok(explanation) => {
                // An explanation serializes as an object: `text` joins its members.
                let mut answer = serde_json::to_value(&explanation).unwrap_or_default();
                answer["text"] = Value::from(explanation.to_string());
                Json(answer).into_response()
            }
            // The reason only: nothing of a token that failed verification is echoed.
            Err(Error::InvalidToken(reason)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": "invalid_token",
                    "reason": reason.code(),
                    "detail": reason.description(),
                })),
            )
                .into_response(),
            Err(failure) => error(failure.status(), failure.code()),
        }
    }

    fn error(status: StatusCode, code: &str) -> Response {
        (status, Json(json!({ "error": code }))).into_response()
    }

    /// What `POST /admin/organizations` and `PUT /admin/organizations/{id}` read.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OrganizationInput {
        name: String,
        #[serde(default)]
        domains: Vec<String>,
        #[serde(default)]
        connections: Vec<ConnectionInput>,
    }

    /// A connection as the admin API reads it.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConnectionInput {
        /// Kept when given (a `PUT` that keeps a connection), else a new one.
        #[serde(default)]
        id: Option<uuid::Uuid>,
        /// `oidc` (the default) or `saml`.
        #[serde(default)]
        protocol: Protocol,
        /// An OpenID Connect issuer URL, or a SAML IdP's entity id.
        issuer: String,
        #[serde(default)]
        audiences: Vec<String>,
        /// SAML: the IdP's metadata document, or the URL it is published at.
        #[serde(default)]
        saml_metadata: Option<String>,
        #[serde(default)]
        saml_metadata_url: Option<String>,
        /// SAML: the attribute that identifies people instead of the persistent NameID.
        #[serde(default)]
        subject_attribute: Option<String>,
        #[serde(default)]
        tenant: Option<TenantPin>,
        #[serde(default)]
        default_roles: Vec<String>,
        /// `{"group": "role"}`.
        #[serde(default)]
        group_roles: std::collections::BTreeMap<String, String>,
        #[serde(default = "yes")]
        create_accounts: bool,
        #[serde(default)]
        require_approval: bool,
        /// Field or `attributes.<name>` → claim path.
        #[serde(default)]
        claims: std::collections::BTreeMap<String, String>,
        /// The application's client at the issuer, for browser sign-in.
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_secret: Option<String>,
    }

    fn yes() -> bool {
        true
    }

    impl ConnectionInput {
        fn connection(self) -> Connection {
            let mut connection = match self.protocol {
                Protocol::Saml => Connection::saml(self.issuer),
                _ => Connection::oidc(self.issuer, std::iter::empty::<String>()),
            };
            connection.audiences = self.audiences;
            connection.saml_metadata = self.saml_metadata;
            connection.saml_metadata_url = self.saml_metadata_url;
            connection.subject_attribute = self.subject_attribute;
            let mut connection = connection
                .default_roles(self.default_roles)
                .create_accounts(self.create_accounts)
                .require_approval(self.require_approval);
            if let Some(id) = self.id {
                connection.id = id;
            }
            if let Some(client_id) = self.client_id {
                connection = connection.browser_client(client_id, self.client_secret);
            } else {
                // Kept for validation to name: a secret without a client id.
                connection.client_secret = self.client_secret;
            }
            connection.tenant = self.tenant;
            connection.claims = self.claims;
            for (group, role) in self.group_roles {
                connection = connection.group_role(group, role);
            }
            connection
        }
    }

    /// The largest organisation document read.
    const MAX_ORGANIZATION_BODY: usize = 256 * 1024;

    /// An RFC 9457 problem document, naming the field that is wrong when one is.
    struct Problem {
        status: StatusCode,
        code: &'static str,
        field: String,
        detail: String,
    }

    impl Problem {
        fn new(status: StatusCode, code: &'static str, field: &str, detail: &str) -> Self {
            Self {
                status,
                code,
                field: field.to_owned(),
                detail: detail.to_owned(),
            }
        }

        fn not_found() -> Self {
            Self::new(StatusCode::NOT_FOUND, "not_found", "", "no such connection")
        }
    }

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            let mut body = json!({
                "type": "about:blank",
                "title": self.code,
                "status": self.status.as_u16(),
                "detail": self.detail,
            });
            if !self.field.is_empty() {
                body["field"] = Value::from(self.field);
            }
            let mut response = (self.status, Json(body)).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/problem+json"),
            );
            response
        }
    }

    /// A 400 problem document naming the field that is wrong.
    fn bad_field(field: &str, detail: &str) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_organization",
            field,
            detail,
        )
    }

    /// `body` read as `T`, or the 400 that names the field that is wrong.
    fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // serde's message says what was expected; never the value that was sent.
            let detail = error.inner().to_string();
            let detail = detail.split(" at line").next().unwrap_or_default();
            // A missing field is named by the message, below the object that lacks it.
            let missing = detail
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match missing {
                Some(name) if path.is_empty() => name.to_owned(),
                Some(name) => format!("{path}.{name}"),
                None => path,
            };
            bad_field(&field, detail)
        })
    }

    /// A store's refusal as the answer it deserves.
    fn store_refusal(refusal: &StoreError) -> Response {
        match refusal {
            StoreError::Duplicate("domain") => Problem::new(
                StatusCode::CONFLICT,
                "domain_taken",
                "domains",
                "a domain belongs to another organization",
            )
            .into_response(),
            StoreError::Duplicate(_) => Problem::new(
                StatusCode::CONFLICT,
                "connection_taken",
                "connections",
                "a connection (issuer and tenant) belongs to another organization",
            )
            .into_response(),
            StoreError::NotFound => error(StatusCode::NOT_FOUND, "not_found"),
            StoreError::Conflict => error(StatusCode::CONFLICT, "changed_concurrently"),
            _ => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    /// `input` as an organisation (`id` for a replacement), validated.
    fn organization(
        input: OrganizationInput,
        id: Option<uuid::Uuid>,
    ) -> Result<Organization, Problem> {
        let mut organization = Organization::new(input.name).domains(input.domains);
        if let Some(id) = id {
            organization.id = id;
        }
        for connection in input.connections {
            organization = organization.connection(connection.connection());
        }
        organization
            .validate()
            .map_err(|invalid| bad_field(&invalid.field, invalid.reason))
    }

    fn created(organization: &Organization) -> Response {
        (StatusCode::CREATED, Json(shown(organization))).into_response()
    }

    /// An organisation as the admin API shows it: its connections' client secrets left out
    /// (`client_secret_set` says whether there is one).
    fn shown(organization: &Organization) -> Value {
        let mut shown = serde_json::to_value(organization).unwrap_or_default();
        if let Some(connections) = shown["connections"].as_array_mut() {
            for connection in connections.iter_mut().filter_map(Value::as_object_mut) {
                let set = connection.remove("client_secret").is_some();
                connection.insert("client_secret_set".into(), Value::from(set));
            }
        }
        shown
    }

    async fn list_organizations<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
    ) -> Response {
        match store.list_organizations().await {
            Ok(organizations) => {
                let shown: Vec<Value> = organizations.iter().map(shown).collect();
                Json(json!({ "organizations": shown })).into_response()
            }
            Err(e) => store_refusal(&e),
        }
    }

    async fn create_organization<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
        body: Bytes,
    ) -> Response {
        let organization = match read(&body).and_then(|input| organization(input, None)) {
            Ok(organization) => organization,
            Err(refused) => return refused.into_response(),
        };
        match store.create_organization(organization).await {
            Ok(organization) => created(&organization),
            Err(e) => store_refusal(&e),
        }
    }

    /// An organisation's id from the path; anything that is not a UUID names none (404).
    struct OrganizationId(uuid::Uuid);

    impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OrganizationId {
        type Rejection = Response;

        async fn from_request_parts(
            parts: &mut http::request::Parts,
            state: &S,
        ) -> Result<Self, Response> {
            let Path(id) = Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
            uuid::Uuid::parse_str(&id)
                .map(Self)
                .map_err(|_| error(StatusCode::NOT_FOUND, "not_found"))
        }
    }

    async fn get_organization<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
        OrganizationId(id): OrganizationId,
    ) -> Response {
        match store.get_organization(id).await {
            Ok(Some(organization)) => Json(shown(&organization)).into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, "not_found"),
            Err(e) => store_refusal(&e),
        }
    }

    async fn replace_organization<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
        OrganizationId(id): OrganizationId,
        body: Bytes,
    ) -> Response {
        let mut organization = match read(&body).and_then(|input| organization(input, Some(id))) {
            Ok(organization) => organization,
            Err(refused) => return refused.into_response(),
        };
        // The admin API never shows a client secret, so a replacement that names a
        // connection's client without one keeps the secret it has.
        if let Ok(Some(current)) = store.get_organization(id).await {
            for connection in &mut organization.connections {
                let kept = current.find_connection(connection.id).filter(|kept| {
                    connection.client_secret.is_none() && kept.client_id == connection.client_id
                });
                if let Some(kept) = kept {
                    connection.client_secret.clone_from(&kept.client_secret);
                }
            }
        }
        match store.update_organization(organization, None).await {
            Ok(organization) => Json(shown(&organization)).into_response(),
            Err(e) => store_refusal(&e),
        }
    }

    async fn delete_organization<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
        OrganizationId(id): OrganizationId,
    ) -> Response {
        match store.delete_organization(id).await {
            Ok(true) => StatusCode::NO_CONTENT.into_response(),
            Ok(false) => error(StatusCode::NOT_FOUND, "not_found"),
            Err(e) => store_refusal(&e),
        }
    }

    /// Changes an organisation by `change`, read-modify-write on its version, retried when
    /// another write landed in between.
    async fn change_organization<S: UserStore + Clone>(
        store: &S,
        id: uuid::Uuid,
        change: impl Fn(&mut Organization) -> Result<(), Problem>,
    ) -> Response {
        for _ in 0..5 {
            let mut organization = match store.get_organization(id).await {
                Ok(Some(organization)) => organization,
                Ok(None) => return error(StatusCode::NOT_FOUND, "not_found"),
                Err(e) => return store_refusal(&e),
            };
            let version = organization.version;
            if let Err(refused) = change(&mut organization) {
                return refused.into_response();
            }
            let organization = match organization.validate() {
                Ok(organization) => organization,
                Err(invalid) => return bad_field(&invalid.field, invalid.reason).into_response(),
            };
            match store.update_organization(organization, Some(version)).await {
                Ok(organization) => return created(&organization),
                Err(StoreError::Conflict) => {}
                Err(e) => return store_refusal(&e),
            }
        }
        error(StatusCode::CONFLICT, "changed_concurrently")
    }

    async fn add_connection<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
        OrganizationId(id): OrganizationId,
        body: Bytes,
    ) -> Response {
        let input: ConnectionInput = match read(&body) {
            Ok(input) => input,
            Err(refused) => return refused.into_response(),
        };
        let connection = input.connection();
        change_organization(&store, id, move |organization| {
            organization.connections.push(connection.clone());
            Ok(())
        })
        .await
    }

    async fn remove_connection<S: UserStore + Clone>(
        State(Organizations(store)): State<Organizations<S>>,
        Path((id, connection)): Path<(String, String)>,
    ) -> Response {
        let (Ok(id), Ok(connection)) = (
            uuid::Uuid::parse_str(&id),
            uuid::Uuid::parse_str(&connection),
        ) else {
            return error(StatusCode::NOT_FOUND, "not_found");
        };
        let changed = change_organization(&store, id, |organization| {
            let before = organization.connections.len();
            organization.connections.retain(|c| c.id != connection);
            if organization.connections.len() == before {
                return Err(Problem::not_found());
            }
            Ok(())
        })
        .await;
        if changed.status() == StatusCode::CREATED {
            StatusCode::NO_CONTENT.into_response()
        } else {
            changed
        }
    }

    async fn pending<S: UserStore + Clone>(State(approvals): State<Approvals<S>>) -> Response {
        match approvals.pending(None, 1000).await {
            Ok(users) => Json(json!({
                "pending": users
                    .iter()
                    .map(|u| json!({
                        "id": u.id,
                        "email": u.email,
                        "display_name": u.display_name,
                        "created_at": u.created_at,
                    }))
                    .collect::<Vec<_>>()
            }))
            .into_response(),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    async fn approve<S: UserStore + Clone>(
        State(approvals): State<Approvals<S>>,
        Path(id): Path<String>,
    ) -> Response {
        decide(&approvals, &id, true).await
    }

    async fn refuse<S: UserStore + Clone>(
        State(approvals): State<Approvals<S>>,
        Path(id): Path<String>,
    ) -> Response {
        decide(&approvals, &id, false).await
    }

    async fn decide<S: UserStore + Clone>(
        approvals: &Approvals<S>,
        id: &str,
        approve: bool,
    ) -> Response {
        let Ok(id) = uuid::Uuid::parse_str(id) else {
            return error(StatusCode::NOT_FOUND, "not_found");
        };
        let decided = if approve {
            approvals.approve(id, APPROVER).await
        } else {
            approvals.refuse(id, APPROVER).await
        };
        match decided {
            Ok(user) => {
                Json(json!({"id": user.id, "status": user.status.as_str()})).into_response()
            }
            Err(ApprovalError::NotFound) => error(StatusCode::NOT_FOUND, "not_found"),
            Err(ApprovalError::NotPending(status)) => (
                StatusCode::CONFLICT,
                Json(json!({"error": "not_pending", "status": status.as_str()})),
            )
                .into_response(),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }
}
