//! A SCIM 2.0 service provider (RFC 7643/7644) on the same store as the layer (feature `scim`).
//!
//! Stage: the other door into the store, beside the sign-in pipeline. Uses `crate::store`,
//! `crate::user`, `crate::audit`, `crate::error`, and the mapping's group-to-role rules from
//! `crate::provision`.
//!
//! JIT provisioning creates accounts when people sign in; SCIM is how the identity provider
//! keeps them current and takes access away. [`Scim`] builds an [`axum::Router`] serving
//! `/Users`, `/Groups`, `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas`, guarded by
//! one or more bearer secrets; nest it under any prefix.
//!
//! ```
//! use axum::Router;
//! use tower_jit_provisioning::scim::Scim;
//! use tower_jit_provisioning::{AttributeMapping, MemoryStore};
//!
//! let store = MemoryStore::new();
//! let mapping = AttributeMapping::new().group_role("Admins", "admin");
//! let scim = Scim::new(store.clone())
//!     .bearer_token("entra", "a-long-random-secret-from-your-vault")
//!     .mapping(mapping)
//!     .router()?;
//! let app: Router = Router::new().nest("/scim/v2", scim);
//! # Ok::<(), tower_jit_provisioning::ConfigError>(())
//! ```
//!
//! # One account, two paths
//!
//! - A user SCIM creates has no identity until its first sign-in, when the layer links it by the
//!   configured correlation (`link_by_claim("oid")` against `externalId`, or a verified e-mail
//!   against `emails`/`userName`).
//! - A user JIT created is found by `userName eq "…"` (JIT fills `userName` from a verified
//!   e-mail, and `name` and `emails` from the token).
//! - Fields SCIM sets belong to SCIM: a later sign-in does not overwrite them unless the field's
//!   [`SyncPolicy`](crate::SyncPolicy) is `Override`. E-mail addresses SCIM pushes count as
//!   verified: the identity provider vouches for them.
//! - Group membership set through `/Groups` becomes the members' `groups`, and the mapping's
//!   group-to-role rules grant the same roles whichever path set the group.
//! - A deactivation (PATCH or PUT `active: false`) or a DELETE refuses the user's very next
//!   request on every server sharing the store; no sign-in undoes it unless reactivate-on-login
//!   is configured. A deleted user's identities are never provisioned again.
//! - Every change is audited like JIT's, with the SCIM client (by the name its secret was given)
//!   as the actor.
//!
//! # What real clients send
//!
//! `op` values in any case, `"True"`/`"False"` strings for booleans, path-less operations with
//! dotted or URN-prefixed keys, `Add` on `emails[type eq "work"].value` creating the address,
//! member removal by a list of values (Entra); PUT for every update, a PUT without `active`
//! leaving the status alone, `password` and `groups` in bodies (Okta); read-only attributes
//! echoed back in PUT bodies and in path-less PATCH values (Okta), and whole-schema paths
//! (`"path": "urn:…:enterprise:2.0:User"`). Passwords are never stored or echoed.
//!
//! # What is kept, and what discovery says
//!
//! Writes keep what the published `/Schemas` declare, under the schema's spelling; the rest
//! is ignored. Multi-valued attributes keep every sub-attribute, with one `primary` value at
//! most. Group members that name no user are dropped, not refused. `/ServiceProviderConfig`
//! says what the endpoint does: PATCH, filters (also across users and groups at `/.search`),
//! sorting (`sortBy`, `sortOrder`) and ETags
//! (`If-Match` answers 412 on a stale version, `If-None-Match` 304); no bulk operations, no
//! password changes. The public testers `scim2-tester` and `scim-sanity` pass with none
//! failed (`.ci/scim-conformance`).
//!
//! # Filters and PATCH paths
//!
//! Parsed by the `scim_v2` crate, whose grammar bounds nesting and term counts; evaluated here
//! against the resources' JSON form. Lookups of one `id`, `userName` or `externalId` are
//! answered by the store directly; other filters scan.

mod error;
pub(crate) mod filter;
mod groups;
pub(crate) mod patch;
mod schema;
mod users;
mod version;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::{constant_time, digest};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::OriginalUri;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HOST, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use scim_v2::filter::{AttrPath, Filter, PatchPath};
use serde_json::{Map, Value, json};

use self::error::{SCIM_JSON, ScimError};
use crate::audit::Actor;
use crate::error::ConfigError;
use crate::provision::AttributeMapping;
use crate::store::UserStore;

/// The most resources one list response holds.
const MAX_RESULTS: usize = 1000;
/// The largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// The shortest bearer secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// Builds the SCIM service provider. See the [module docs](self).
#[must_use]
pub struct Scim<S> {
    store: S,
    clients: Vec<(String, String, Option<uuid::Uuid>)>,
    mapping: AttributeMapping,
    base_url: Option<String>,
}

impl<S: fmt::Debug> fmt::Debug for Scim<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients: Vec<&str> = self
            .clients
            .iter()
            .map(|(name, ..)| name.as_str())
            .collect();
        f.debug_struct("Scim")
            .field("store", &self.store)
            .field("clients", &clients)
            .field("secrets", &"<redacted>")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl<S: UserStore + Clone> Scim<S> {
    /// A service provider on `store`, with no client yet.
    pub fn new(store: S) -> Self {
        Self {
            store,
            clients: Vec::new(),
            mapping: AttributeMapping::new(),
            base_url: None,
        }
    }

    /// Accepts requests bearing `secret`, auditing them as the client `name`. May be given
    /// several times (several clients, or a secret being rotated). Secrets are compared in
    /// constant time and kept only as digests once the router is built.
    pub fn bearer_token(mut self, name: impl Into<String>, secret: impl Into<String>) -> Self {
        self.clients.push((name.into(), secret.into(), None));
        self
    }

    /// Accepts requests bearing `secret` from a client that manages one
    /// [organisation](crate::organization) only: it sees, changes and deletes that
    /// organisation's users and groups and no others (another organisation's are answered
    /// 404, as if they did not exist), and the users and groups it creates are that
    /// organisation's, found by its connections' first sign-ins.
    pub fn organization_token(
        mut self,
        name: impl Into<String>,
        secret: impl Into<String>,
        organization: uuid::Uuid,
    ) -> Self {
        self.clients
            .push((name.into(), secret.into(), Some(organization)));
        self
    }

    /// The mapping whose default roles new SCIM users get and whose group-to-role rules apply
    /// to SCIM group memberships: pass the layer's, so both paths grant the same roles.
    pub fn mapping(mut self, mapping: AttributeMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// The absolute URL the router is mounted at (`https://app.example.com/scim/v2`), for
    /// `meta.location` and `Location`. Without it they are derived from each request's `Host`
    /// and path.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// The router. Nest it wherever SCIM is served (`Router::nest("/scim/v2", …)`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when no client is configured, a client has no name, or a secret is
    /// shorter than 16 characters.
    pub fn router(self) -> Result<Router, ConfigError> {
        if self.clients.is_empty() {
            return Err(ConfigError::InvalidSetting {
                setting: "scim bearer_token".to_owned(),
                reason: "at least one client secret is required",
            });
        }
        let mut clients = Vec::with_capacity(self.clients.len());
        for (name, secret, organization) in self.clients {
            if name.is_empty() {
                return Err(ConfigError::InvalidSetting {
                    setting: "scim bearer_token".to_owned(),
                    reason: "the client name must not be empty",
                });
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::InvalidSetting {
                    setting: format!("scim bearer_token for `{name}`"),
                    reason: "the secret must be at least 16 characters",
                });
            }
            clients.push(Client {
                name,
                digest: sha256(secret.as_bytes()),
                organization,
            });
        }
        let state = Arc::new(ScimState {
            store: self.store,
            clients,
            mapping: self.mapping,
            base_url: self.base_url,
        });
        let method_not_allowed = || async { ScimError::method_not_allowed() };
        let route = |router: MethodRouter<Arc<ScimState<S>>>| router.fallback(method_not_allowed);
        let router = Router::new()
            .route(
                "/ServiceProviderConfig",
                route(get(service_provider_config::<S>)),
            )
            .route("/ResourceTypes", route(get(resource_types::<S>)))
            .route("/ResourceTypes/{id}", route(get(resource_type::<S>)))
            .route("/Schemas", route(get(schemas::<S>)))
            .route("/Schemas/{id}", route(get(schema::<S>)))
            .route(
                "/Users",
                route(get(users::list::<S>).post(users::create::<S>)),
            )
            .route(
                "/Users/.search",
                route(axum::routing::post(users::search::<S>)),
            )
            .route(
                "/Users/{id}",
                route(
                    get(users::fetch::<S>)
                        .put(users::replace::<S>)
                        .patch(users::patch::<S>)
                        .delete(users::delete::<S>),
                ),
            )
            .route(
                "/Groups",
                route(get(groups::list::<S>).post(groups::create::<S>)),
            )
            .route(
                "/Groups/.search",
                route(axum::routing::post(groups::search::<S>)),
            )
            .route(
                "/Groups/{id}",
                route(
                    get(groups::fetch::<S>)
                        .put(groups::replace::<S>)
                        .patch(groups::patch::<S>)
                        .delete(groups::delete::<S>),
                ),
            )
            .route("/.search", route(axum::routing::post(search_all::<S>)))
            .route(
                "/Bulk",
                any(|| async { ScimError::not_implemented("bulk operations are not supported") }),
            )
            .route(
                "/Me",
                any(|| async { ScimError::not_implemented("/Me is not supported") }),
            )
            .fallback(|| async { ScimError::not_found() })
            .layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                authenticate::<S>,
            ))
            .layer(middleware::from_fn(count))
            .with_state(state);
        Ok(router)
    }
}

/// `POST /.search` (RFC 7644 §3.4.3): users and groups alike, users first, one list.
async fn search_all<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    axum::Extension(client): axum::Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ScimError> {
    let params = ListParams::read_search(&headers, body).await?;
    let base = state.base(&headers, &uri, "/.search");
    let mut resources = state.users_matching(&params, &base, &client).await?;
    resources.extend(state.groups_matching(&params, &base, &client).await?);
    Ok(params.respond(resources))
}

/// Counts each SCIM request by method, resource and status class (refusals included).
async fn count(request: Request, next: Next) -> Response {
    let method = match *request.method() {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "other",
    };
    let first = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let resource = match first {
        "Users" => "Users",
        "Groups" => "Groups",
        "ServiceProviderConfig" | "Schemas" | "ResourceTypes" => "discovery",
        _ => "other",
    };
    let response = next.run(request).await;
    crate::metrics::scim(method, resource, response.status().as_u16());
    response
}

struct Client {
    name: String,
    digest: [u8; 32],
    /// The one organisation the client manages, if it is scoped.
    organization: Option<uuid::Uuid>,
}

pub(crate) struct ScimState<S> {
    store: S,
    clients: Vec<Client>,
    mapping: AttributeMapping,
    base_url: Option<String>,
}

/// The authenticated client, put into the request extensions.
#[derive(Clone, Debug)]
struct ClientName {
    name: String,
    /// The one organisation it sees, if it is scoped: every other account and group is, to
    /// it, not there.
    organization: Option<uuid::Uuid>,
}

impl ClientName {
    /// Whether a resource of `organization` is visible to this client.
    fn sees(&self, organization: Option<uuid::Uuid>) -> bool {
        self.organization
            .is_none_or(|own| organization == Some(own))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Checks the bearer secret: the digest of the presented secret is compared with every
/// client's digest in constant time, so neither the secret's content nor its length leaks.
async fn authenticate<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .map(|token| sha256(token.as_bytes()));
    let Some(presented) = presented else {
        return ScimError::unauthorized().into_response();
    };
    let mut matched = None;
    for client in &state.clients {
        if constant_time::verify_slices_are_equal(&client.digest, &presented).is_ok() {
            matched = Some(ClientName {
                name: client.name.clone(),
                organization: client.organization,
            });
        }
    }
    match matched {
        Some(client) => {
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        None => {
            tracing::debug!(
                target: "tower_jit_provisioning::scim",
                "request with an unknown bearer secret refused"
            );
            ScimError::unauthorized().into_response()
        }
    }
}

impl<S> ScimState<S> {
    /// The base URL resources live under: configured, or derived from the request.
    fn base(&self, headers: &HeaderMap, uri: &Uri, endpoint: &str) -> String {
        if let Some(base) = &self.base_url {
            return base.clone();
        }
        let path = uri.path();
        let prefix = path
            .rfind(endpoint)
            .map_or("", |at| &path[..at])
            .trim_end_matches('/');
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "http" || *p == "https")
            .unwrap_or(if is_loopback_host(host) {
                "http"
            } else {
                "https"
            });
        format!("{scheme}://{host}{prefix}")
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// A resource id from the path; anything that is not a UUID names no resource.
fn parse_id(id: &str) -> Result<uuid::Uuid, ScimError> {
    uuid::Uuid::parse_str(id).map_err(|_| ScimError::not_found())
}

fn actor(request_client: &ClientName) -> Actor {
    Actor::Scim(request_client.name.clone())
}

/// A SCIM JSON response.
/// A SCIM JSON answer; a single resource's `meta.version` is also its `ETag`.
fn respond(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(tag) = body
        .pointer("/meta/version")
        .and_then(Value::as_str)
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(ETAG, tag);
    }
    response
}

/// A 304 for a read whose version the client holds (`If-None-Match`).
fn not_modified(version: i64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(tag) = HeaderValue::from_str(&version::etag(version)) {
        response.headers_mut().insert(ETAG, tag);
    }
    response
}

/// A 201 with `Location`.
fn created(body: &Value) -> Response {
    let mut response = respond(StatusCode::CREATED, body);
    if let Some(location) = body
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Reads a JSON request body sent as `application/scim+json` or `application/json`.
async fn read_json(headers: &HeaderMap, body: Body) -> Result<Value, ScimError> {
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let media = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media != "application/scim+json" && media != "application/json" {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send application/scim+json or application/json",
            ));
        }
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "request body too large",
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ScimError::invalid_syntax("the body is not JSON"))?;
    if !value.is_object() {
        return Err(ScimError::invalid_syntax("the body is not a JSON object"));
    }
    Ok(value)
}

/// Parsed list parameters: from the query string, or a `.search` body.
struct ListParams {
    filter: Option<Filter>,
    /// `sortBy`, and whether `sortOrder` is `descending`.
    sort: Option<(AttrPath, bool)>,
    start_index: usize,
    count: usize,
    attributes: Vec<AttrPath>,
    excluded: Vec<AttrPath>,
}

impl ListParams {
    fn from_query(query: Option<&str>) -> Result<Self, ScimError> {
        let mut raw = Map::new();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            raw.insert(key.to_ascii_lowercase(), Value::String(value.into_owned()));
        }
        Self::from_map(&raw)
    }

    /// The parameters of a `POST …/.search` request: its JSON body, read as
    /// [`from_search`](Self::from_search) reads it.
    async fn read_search(headers: &HeaderMap, body: Body) -> Result<Self, ScimError> {
        Self::from_search(&read_json(headers, body).await?)
    }

    fn from_search(body: &Value) -> Result<Self, ScimError> {
        let mut raw = Map::new();
        for (key, value) in body.as_object().into_iter().flatten() {
            let value = match value {
                Value::Array(items) => Value::String(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            };
            raw.insert(key.to_ascii_lowercase(), value);
        }
        Self::from_map(&raw)
    }

    fn from_map(raw: &Map<String, Value>) -> Result<Self, ScimError> {
        let text = |key: &str| raw.get(key).and_then(Value::as_str);
        let filter = match text("filter").map(str::trim) {
            None | Some("") => None,
            Some(filter) => Some(Filter::from_str(filter).map_err(|_| {
                ScimError::bad_request("invalidFilter", "the filter does not parse")
            })?),
        };
        let integer = |key: &str| -> Result<Option<i64>, ScimError> {
            text(key)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| ScimError::invalid_value("startIndex and count are integers"))
                })
                .transpose()
        };
        let start_index = integer("startindex")?.unwrap_or(1).max(1) as usize;
        let count = integer("count")?.map_or(100, |c| c.clamp(0, MAX_RESULTS as i64) as usize);
        let paths = |key: &str| -> Vec<AttrPath> {
            text(key)
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| match PatchPath::from_str(p.trim()) {
                    Ok(PatchPath::Attr(attr)) => Some(attr),
                    _ => None,
                })
                .collect()
        };
        let sort = match text("sortby").map(str::trim) {
            None | Some("") => None,
            Some(path) => match PatchPath::from_str(path) {
                Ok(PatchPath::Attr(attr)) => Some(attr),
                _ => return Err(ScimError::invalid_value("sortBy is an attribute path")),
            },
        };
        let descending = match text("sortorder").map(str::trim) {
            None | Some("") => false,
            Some(order) if order.eq_ignore_ascii_case("ascending") => false,
            Some(order) if order.eq_ignore_ascii_case("descending") => true,
            Some(_) => {
                return Err(ScimError::invalid_value(
                    "sortOrder is ascending or descending",
                ));
            }
        };
        Ok(Self {
            filter,
            sort: sort.map(|path| (path, descending)),
            start_index,
            count,
            attributes: paths("attributes"),
            excluded: paths("excludedattributes"),
        })
    }

    /// The `ListResponse` for `resources` (already filtered): the requested page, each
    /// resource reduced to the requested attributes.
    fn respond(&self, mut resources: Vec<Value>) -> Response {
        if let Some((path, descending)) = &self.sort {
            // Each key computed once; stable: resources that compare equal keep their id order.
            let mut keyed: Vec<(Option<Value>, Value)> = resources
                .into_iter()
                .map(|resource| (filter::sort_key(&resource, path), resource))
                .collect();
            keyed.sort_by(|(a, _), (b, _)| {
                let order = filter::compare_sort_keys(a.as_ref(), b.as_ref());
                if *descending { order.reverse() } else { order }
            });
            resources = keyed.into_iter().map(|(_, resource)| resource).collect();
        }
        let total = resources.len();
        let page: Vec<Value> = resources
            .into_iter()
            .skip(self.start_index - 1)
            .take(self.count)
            .map(|r| self.select(r))
            .collect();
        respond(
            StatusCode::OK,
            &json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": total,
                "startIndex": self.start_index,
                "itemsPerPage": page.len(),
                "Resources": page,
            }),
        )
    }

    /// `attributes` / `excludedAttributes` applied to one resource; `id` and `schemas` are
    /// always returned.
    fn select(&self, resource: Value) -> Value {
        select(resource, &self.attributes, &self.excluded)
    }
}

/// Reduces `resource` to `attributes` (when given) minus `excluded`; `id` and `schemas` stay.
pub(crate) fn select(resource: Value, attributes: &[AttrPath], excluded: &[AttrPath]) -> Value {
    let Value::Object(mut object) = resource else {
        return resource;
    };
    let always = |key: &str| key == "id" || key == "schemas";
    if !attributes.is_empty() {
        let mut kept = Map::new();
        for (key, value) in &object {
            if always(key) {
                kept.insert(key.clone(), value.clone());
            }
        }
        for path in attributes {
            copy_path(&object, &mut kept, path);
        }
        object = kept;
    }
    for path in excluded {
        remove_path(&mut object, path);
    }
    // An extension left without attributes is not returned at all.
    object.retain(|key, value| {
        !(key.starts_with("urn:") && value.as_object().is_some_and(Map::is_empty))
    });
    Value::Object(object)
}

fn copy_path(from: &Map<String, Value>, to: &mut Map<String, Value>, path: &AttrPath) {
    let (source, target) = match path.uri.as_deref().filter(|u| !filter::is_core_urn(u)) {
        Some(uri) => {
            let Some((key, Value::Object(extension))) =
                from.iter().find(|(k, _)| k.eq_ignore_ascii_case(uri))
            else {
                return;
            };
            let target = to
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(target) = target else {
                return;
            };
            (extension, target)
        }
        None => (from, to),
    };
    let Some((key, value)) = source
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&path.name))
    else {
        return;
    };
    match (&path.sub_attr, value) {
        (None, value) => {
            target.insert(key.clone(), value.clone());
        }
        (Some(sub), Value::Object(object)) => {
            if let Some((sub_key, sub_value)) =
                object.iter().find(|(k, _)| k.eq_ignore_ascii_case(sub))
            {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(entry) = entry {
                    entry.insert(sub_key.clone(), sub_value.clone());
                }
            }
        }
        (Some(sub), Value::Array(items)) => {
            let reduced: Vec<Value> = items
                .iter()
                .filter_map(|item| {
                    let object = item.as_object()?;
                    let (sub_key, sub_value) =
                        object.iter().find(|(k, _)| k.eq_ignore_ascii_case(sub))?;
                    let mut reduced = Map::new();
                    reduced.insert(sub_key.clone(), sub_value.clone());
                    Some(Value::Object(reduced))
                })
                .collect();
            target.insert(key.clone(), Value::Array(reduced));
        }
        _ => {}
    }
}

fn remove_path(object: &mut Map<String, Value>, path: &AttrPath) {
    let container = match path.uri.as_deref().filter(|u| !filter::is_core_urn(u)) {
        Some(uri) => match object.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(uri)) {
            Some((_, Value::Object(extension))) => extension,
            _ => return,
        },
        None => object,
    };
    let Some(key) = container
        .keys()
        .find(|k| k.eq_ignore_ascii_case(&path.name))
        .cloned()
    else {
        return;
    };
    if key == "id" || key == "schemas" {
        return;
    }
    match (&path.sub_attr, container.get_mut(&key)) {
        (None, _) => {
            container.remove(&key);
        }
        (Some(sub), Some(Value::Object(inner))) => {
            inner.retain(|k, _| !k.eq_ignore_ascii_case(sub));
        }
        (Some(sub), Some(Value::Array(items))) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.retain(|k, _| !k.eq_ignore_ascii_case(sub));
            }
        }
        _ => {}
    }
}

use schema::SCHEMAS;

fn with_location(mut document: Value, base: &str, path: &str) -> Value {
    if let Some(meta) = document.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert("location".into(), Value::String(format!("{base}{path}")));
    }
    document
}

async fn service_provider_config<S>(
    State(state): State<Arc<ScimState<S>>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let base = state.base(&headers, &uri, "/ServiceProviderConfig");
    respond(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://docs.rs/tower-jit-provisioning",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer secret shared with the SCIM client",
                "primary": true
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig")
            }
        }),
    )
}

fn resource_type_documents(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User accounts",
            "schema": users::CORE_USER,
            "schemaExtensions": [{"schema": users::ENTERPRISE_USER, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Groups of users",
            "schema": groups::CORE_GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
        }),
    ]
}

fn discovery_list(resources: &[Value]) -> Response {
    let total = resources.len();
    respond(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": 1,
            "itemsPerPage": total,
            "Resources": resources,
        }),
    )
}

async fn resource_types<S>(
    State(state): State<Arc<ScimState<S>>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let base = state.base(&headers, &uri, "/ResourceTypes");
    discovery_list(&resource_type_documents(&base))
}

async fn resource_type<S>(
    State(state): State<Arc<ScimState<S>>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let base = state.base(&headers, &uri, "/ResourceTypes");
    match resource_type_documents(&base)
        .into_iter()
        .find(|d| d["id"] == id.as_str())
    {
        Some(document) => respond(StatusCode::OK, &document),
        None => ScimError::not_found().into_response(),
    }
}

fn schema_documents(base: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_json::from_str(SCHEMAS).expect("embedded schemas are JSON");
    documents
        .into_iter()
        .map(|document| {
            let id = document["id"].as_str().unwrap_or_default().to_owned();
            with_location(document, base, &format!("/Schemas/{id}"))
        })
        .collect()
}

async fn schemas<S>(
    State(state): State<Arc<ScimState<S>>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let base = state.base(&headers, &uri, "/Schemas");
    discovery_list(&schema_documents(&base))
}

async fn schema<S>(
    State(state): State<Arc<ScimState<S>>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let base = state.base(&headers, &uri, "/Schemas");
    match schema_documents(&base).into_iter().find(|d| {
        d["id"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(&id))
    }) {
        Some(document) => respond(StatusCode::OK, &document),
        None => ScimError::not_found().into_response(),
    }
}

/// Formats a timestamp as SCIM's `meta` dates: RFC 3339, UTC, milliseconds.
fn scim_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_selection() {
        let resource = json!({
            "schemas": ["s"], "id": "1", "userName": "u", "displayName": "d",
            "name": {"givenName": "g", "familyName": "f"},
            "emails": [{"value": "a@b.c", "type": "work"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "x", "costCenter": "y"}
        });
        let paths = |list: &str| {
            ListParams::from_query(Some(&format!("attributes={list}")))
                .unwrap()
                .attributes
        };
        let selected = select(
            resource.clone(),
            &paths(
                "userName,name.givenName,emails.value,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            ),
            &[],
        );
        assert_eq!(
            selected,
            json!({
                "schemas": ["s"], "id": "1", "userName": "u", "name": {"givenName": "g"},
                "emails": [{"value": "a@b.c"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "x"}
            })
        );
        let excluded = ListParams::from_query(Some("excludedAttributes=emails,name.familyName,id"))
            .unwrap()
            .excluded;
        let selected = select(resource, &[], &excluded);
        assert!(selected.get("emails").is_none());
        assert_eq!(selected["name"], json!({"givenName": "g"}));
        assert_eq!(selected["id"], "1", "id is always returned");
    }

    #[test]
    fn list_parameters() {
        let p =
            ListParams::from_query(Some("filter=userName+eq+%22a+b%22&startIndex=0&count=5000"))
                .unwrap();
        assert!(p.filter.is_some());
        assert_eq!(p.start_index, 1);
        assert_eq!(p.count, MAX_RESULTS);
        assert!(ListParams::from_query(Some("filter=userName+zz+1")).is_err());
        assert!(ListParams::from_query(Some("count=many")).is_err());
        let p = ListParams::from_query(Some("COUNT=-3")).unwrap();
        assert_eq!(p.count, 0);
    }
}
