//! The reference server: an axum app behind `ProvisioningLayer`, configured from the
//! environment. Each person's first request creates their account; `/me` shows it.
//!
//! Run with `cargo run --example server`. With no settings it starts a built-in development
//! issuer on loopback, keeps accounts in the SQLite file `jit.db`, listens on
//! `127.0.0.1:3000` and prints a `curl` command carrying a freshly minted token.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `JIT_ISSUERS` | comma-separated issuer URLs; when set, no development issuer | development issuer |
//! | `JIT_AUDIENCES` | comma-separated accepted audiences | `test-client` with the development issuer |
//! | `JIT_TOKEN_KINDS` | `id`, `access` or `id,access` | `id,access` |
//! | `JIT_ALLOWED_DOMAINS` | comma-separated e-mail domains (`*.example.com` for sub-domains); empty: any | any |
//! | `JIT_DEFAULT_ROLES` | comma-separated roles for every new account | none |
//! | `JIT_GROUP_ROLES` | `group=role,group=role` | none |
//! | `JIT_DATABASE_URL` | `sqlite://…`, or `postgres://…` for several servers sharing one database | `sqlite://jit.db` |
//! | `JIT_LISTEN` | address to listen on | `127.0.0.1:3000` |
//! | `JIT_ALLOW_HTTP_ISSUERS` | `1`: plain-http issuers allowed, on loopback addresses only | off |
//! | `JIT_LINK_BY_VERIFIED_EMAIL` | `1`: link first sign-ins to accounts with the same verified e-mail; issuers are trusted for `JIT_ALLOWED_DOMAINS` (or any domain when empty) | off |
//! | `JIT_SCIM_TOKEN` | mounts the SCIM 2.0 service provider at `/scim/v2` behind this bearer secret (16 characters at least) | no SCIM |
//!
//! Routes: `GET /me` answers the provisioned user as JSON; `GET /healthz` answers 200 without
//! a token; `/scim/v2/…` when `JIT_SCIM_TOKEN` is set. SCIM and the layer share the store and
//! the mapping, so SCIM group memberships grant the same roles as token groups, and a SCIM
//! deactivation refuses the user's next request.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_jit_provisioning::scim::Scim;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    AttributeMapping, ConfigError, Issuer, PostgresStore, ProvisionedUser, ProvisioningLayer,
    ProvisioningLayerBuilder, SqliteStore, StoreError, TokenKind, UserStore,
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
    issuers: Vec<String>,
    audiences: Vec<String>,
    kinds: Vec<TokenKind>,
    allowed_domains: Vec<String>,
    default_roles: Vec<String>,
    group_roles: Vec<(String, String)>,
    database_url: String,
    listen: SocketAddr,
    allow_http: bool,
    link_by_verified_email: bool,
    scim_token: Option<String>,
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

fn settings() -> Result<Settings, BadSetting> {
    let issuers = list("JIT_ISSUERS");
    let audiences = list("JIT_AUDIENCES");
    if !issuers.is_empty() && audiences.is_empty() {
        return Err(bad("JIT_AUDIENCES", "required when JIT_ISSUERS is set"));
    }
    let kinds = match var("JIT_TOKEN_KINDS") {
        None => vec![TokenKind::Id, TokenKind::Access],
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
            .collect::<Result<Vec<_>, _>>()?,
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
    let listen = var("JIT_LISTEN")
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
        .parse()
        .map_err(|e| bad("JIT_LISTEN", format!("not a socket address: {e}")))?;
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
        scim_token: var("JIT_SCIM_TOKEN"),
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
        _ => "JIT_ISSUERS",
    }
}

fn issuer(settings: &Settings, base: Issuer) -> Issuer {
    let mut issuer = base
        .token_kinds(settings.kinds.clone())
        .allowed_domains(settings.allowed_domains.clone());
    if settings.link_by_verified_email {
        issuer = if settings.allowed_domains.is_empty() {
            issuer.trust_any_email_domain()
        } else {
            issuer.trust_email_domains(settings.allowed_domains.clone())
        };
    }
    issuer
}

async fn me(user: ProvisionedUser) -> Json<Value> {
    let u = user.user();
    Json(json!({
        "id": u.id,
        "email": u.email,
        "email_verified": u.email_verified,
        "user_name": u.user_name,
        "display_name": u.display_name,
        "given_name": u.given_name,
        "family_name": u.family_name,
        "picture": u.picture,
        "locale": u.locale,
        "roles": u.role_names(),
        "groups": u.groups,
        "attributes": u.attributes,
        "status": u.status,
        "external_id": u.external_id,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
        "last_login_at": u.last_login_at,
        "identity": {
            "issuer": user.identity().key.issuer(),
            "subject": user.identity().key.subject(),
        },
    }))
}

/// A layer builder with the store `url` names, migrated, and the SCIM router on the same
/// store when a SCIM secret is set.
async fn open_store(
    url: &str,
    mapping: &AttributeMapping,
    scim_token: Option<&str>,
) -> Result<(ProvisioningLayerBuilder, Option<Router>), String> {
    fn scim<S: UserStore + Clone>(
        store: &S,
        mapping: &AttributeMapping,
        token: Option<&str>,
    ) -> Result<Option<Router>, String> {
        token
            .map(|token| {
                Scim::new(store.clone())
                    .bearer_token("scim", token)
                    .mapping(mapping.clone())
                    .router()
                    .map_err(|e| format!("JIT_SCIM_TOKEN: {e}"))
            })
            .transpose()
    }
    let database = |e: StoreError| format!("JIT_DATABASE_URL: cannot open the database: {e}");
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url).await.map_err(database)?;
        store.migrate().await.map_err(database)?;
        let router = scim(&store, mapping, scim_token)?;
        Ok((ProvisioningLayer::builder().store(store), router))
    } else {
        let store = PostgresStore::connect(url).await.map_err(database)?;
        store.migrate().await.map_err(database)?;
        let router = scim(&store, mapping, scim_token)?;
        Ok((ProvisioningLayer::builder().store(store), router))
    }
}

async fn run() -> Result<(), String> {
    let settings = settings().map_err(|e| format!("{}: {}", e.variable, e.message))?;

    let mut mapping = AttributeMapping::new().default_roles(settings.default_roles.clone());
    for (group, role) in &settings.group_roles {
        mapping = mapping.group_role(group, role);
    }
    let (builder, scim) = open_store(
        &settings.database_url,
        &mapping,
        settings.scim_token.as_deref(),
    )
    .await?;

    // With no issuer configured, a development issuer on loopback stands in for one.
    let dev_issuer = if settings.issuers.is_empty() {
        Some(TestIssuer::start().await)
    } else {
        None
    };
    let mut builder = builder
        .mapping(mapping)
        .link_by_verified_email(settings.link_by_verified_email);
    match &dev_issuer {
        Some(idp) => builder = builder.issuer(issuer(&settings, idp.issuer())),
        None => {
            for url in &settings.issuers {
                let base = Issuer::new(url)
                    .audiences(settings.audiences.clone())
                    .allow_http_loopback(settings.allow_http);
                builder = builder.issuer(issuer(&settings, base));
            }
        }
    }
    let layer = builder
        .build()
        .map_err(|e| format!("{}: {e}", variable_of(&e)))?;
    if let Err(unreachable) = layer.fetch_keys().await {
        tracing::warn!("{unreachable}; requests get 503 until they can be reached");
    }

    let mut app = Router::new()
        .route("/me", get(me).layer(layer))
        .route("/healthz", get(|| async { "ok" }));
    if let Some(scim) = scim {
        app = app.nest("/scim/v2", scim);
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("JIT_LISTEN: cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    if let Some(idp) = &dev_issuer {
        let token = idp
            .id_token()
            .subject("dev-user-1")
            .email("dev@example.com", true)
            .claim("name", "Dev User")
            .claim("given_name", "Dev")
            .claim("family_name", "User")
            .sign();
        println!("development issuer at {}; try:\n", idp.url());
        println!("curl -s -H 'Authorization: Bearer {token}' http://{addr}/me\n");
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
