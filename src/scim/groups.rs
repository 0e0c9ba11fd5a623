//! `/Groups`: groups and their members. A membership change rewrites the members' `groups`
//! and re-applies the mapping's group-to-role rules, so roles follow groups whichever path
//! (a token's claim, or SCIM) set them.
//!
//! A member whose `value` names no user (a made-up id, a deleted user, a nested group) is
//! dropped, not refused: RFC 7644 does not ask a service provider to refuse it, clients
//! (scim-sanity, eventual-consistency provisioning) expect the write to succeed, and the
//! answered resource shows the members actually kept.
//!
//! Stage: SCIM. Uses `crate::store`, `crate::user` and `crate::audit`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::OriginalUri;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::ScimError;
use super::filter::{get_ci, matches};
use super::schema::keep_declared;
use super::version::{Preconditions, etag};
use super::{
    ClientName, ListParams, ScimState, actor, created, not_modified, parse_id, patch as patching,
    read_json, respond, scim_time,
};
use crate::audit::{AuditEvent, AuditKind};
use crate::store::{StoreError, UserStore};
use crate::user::{Group, GroupUpdate, NewGroup, UserUpdate};

/// The core Group schema.
pub(crate) const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

const READ_ONLY: [&str; 2] = ["id", "meta"];
const PROJECTED: [&str; 6] = [
    "schemas",
    "id",
    "meta",
    "displayName",
    "externalId",
    "members",
];
const RETRIES: usize = 5;

/// A group in SCIM form.
pub(crate) fn view(group: &Group, base: &str) -> Value {
    let mut resource = group.scim_attributes.clone();
    resource.insert("schemas".into(), json!([CORE_GROUP]));
    resource.insert("id".into(), Value::from(group.id.to_string()));
    resource.insert(
        "displayName".into(),
        Value::from(group.display_name.as_str()),
    );
    if let Some(external_id) = &group.external_id {
        resource.insert("externalId".into(), Value::from(external_id.as_str()));
    }
    let members: Vec<Value> = group
        .members
        .iter()
        .map(|m| json!({"value": m.to_string(), "type": "User", "$ref": format!("{base}/Users/{m}")}))
        .collect();
    resource.insert("members".into(), Value::Array(members));
    resource.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": scim_time(group.created_at),
            "lastModified": scim_time(group.updated_at),
            "location": format!("{base}/Groups/{}", group.id),
            "version": etag(group.version),
        }),
    );
    Value::Object(resource)
}

struct Projected {
    display_name: String,
    external_id: Option<String>,
    members: Vec<Uuid>,
    extras: Map<String, Value>,
}

fn project(resource: &Value) -> Result<Projected, ScimError> {
    let object = resource
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a Group is a JSON object"))?;
    let display_name = get_ci(object, "displayName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?
        .to_owned();
    let external_id = match get_ci(object, "externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::invalid_value("externalId is a string")),
    };
    let members = match get_ci(object, "members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut members = Vec::with_capacity(items.len());
            let mut seen = HashSet::with_capacity(items.len());
            for item in items {
                let value = item
                    .as_object()
                    .and_then(|o| get_ci(o, "value"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ScimError::invalid_value("a member needs a string value"))?;
                // Not an id this server gives out: it names no user (see the module docs).
                if let Ok(id) = Uuid::parse_str(value)
                    && seen.insert(id)
                {
                    members.push(id);
                }
            }
            members
        }
        Some(_) => return Err(ScimError::invalid_value("members is a list")),
    };
    let mut extras = object.clone();
    keep_declared(&mut extras, CORE_GROUP, &[]);
    extras.retain(|k, _| !PROJECTED.iter().any(|p| p.eq_ignore_ascii_case(k)));
    Ok(Projected {
        display_name,
        external_id,
        members,
        extras,
    })
}

impl Projected {
    fn update(&self) -> GroupUpdate {
        GroupUpdate {
            display_name: Some(self.display_name.clone()),
            external_id: Some(self.external_id.clone()),
            members: Some(self.members.clone()),
            scim_attributes: Some(self.extras.clone()),
        }
    }
}

/// A member deleted between the check and the write: the client may simply try again.
fn member_error(error: StoreError) -> ScimError {
    match error {
        StoreError::NotFound => ScimError::from(StoreError::Conflict),
        other => other.into(),
    }
}

impl<S: UserStore + Clone> ScimState<S> {
    /// The group `id`, or a 404 (also when `client` may not see it).
    async fn group(&self, id: Uuid, client: &ClientName) -> Result<Group, ScimError> {
        self.store
            .get_group(id)
            .await?
            .filter(|group| client.sees(group.organization_id))
            .ok_or_else(ScimError::not_found)
    }

    /// `proposed` without the members that name no user. Members already in `current` are
    /// known; only the new ones are looked up, so adding one member to a large group costs
    /// one lookup.
    async fn known_members(
        &self,
        current: &[Uuid],
        proposed: Vec<Uuid>,
        client: &ClientName,
    ) -> Result<Vec<Uuid>, ScimError> {
        let current: HashSet<&Uuid> = current.iter().collect();
        let mut known = Vec::with_capacity(proposed.len());
        let mut dropped = 0_usize;
        for id in proposed {
            let visible = || async {
                let user = self.store.get_user(id).await?;
                Ok::<_, ScimError>(user.is_some_and(|user| client.sees(user.organization_id)))
            };
            if current.contains(&id) || visible().await? {
                known.push(id);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "SCIM group members that name no user were dropped");
        }
        Ok(known)
    }

    /// Brings the `groups` (and the group-derived roles) of each user in `affected` in line
    /// with their memberships; SCIM owns their groups from now on.
    async fn sync_members(&self, affected: &[Uuid], client: &ClientName) -> Result<(), ScimError> {
        for &user_id in affected {
            for attempt in 0..RETRIES {
                let Some(user) = self.store.get_user(user_id).await? else {
                    break;
                };
                let mut groups: Vec<String> = self
                    .store
                    .groups_of(user_id)
                    .await?
                    .into_iter()
                    .map(|g| g.display_name)
                    .collect();
                groups.sort();
                let roles = self.mapping.regrant_for_groups(&user.roles, &groups);
                let mut managed = user.scim_managed.clone();
                if !managed.iter().any(|m| m == "groups") {
                    managed.push("groups".to_owned());
                }
                if groups == user.groups && roles == user.roles && managed == user.scim_managed {
                    break;
                }
                let mut fields = vec!["groups"];
                if roles != user.roles {
                    fields.push("roles");
                }
                let update = UserUpdate {
                    groups: Some(groups),
                    roles: Some(roles),
                    scim_managed: Some(managed),
                    ..UserUpdate::default()
                };
                let audit = AuditEvent::new(AuditKind::Updated, actor(client)).fields(fields);
                match self
                    .store
                    .update_user(user_id, Some(user.version), update, Some(audit))
                    .await
                {
                    Err(StoreError::Conflict) if attempt + 1 < RETRIES => continue,
                    Err(StoreError::NotFound) => break,
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn all_groups(&self) -> Result<Vec<Group>, ScimError> {
        let mut groups = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list_groups(after, 500).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            groups.extend(page);
        }
        Ok(groups)
    }

    async fn list_groups(
        &self,
        params: &ListParams,
        base: &str,
        client: &ClientName,
    ) -> Result<Response, ScimError> {
        Ok(params.respond(self.groups_matching(params, base, client).await?))
    }

    /// Every group the request's filter matches, in SCIM form.
    pub(super) async fn groups_matching(
        &self,
        params: &ListParams,
        base: &str,
        client: &ClientName,
    ) -> Result<Vec<Value>, ScimError> {
        Ok(self
            .all_groups()
            .await?
            .iter()
            .filter(|group| client.sees(group.organization_id))
            .map(|group| view(group, base))
            .filter(|resource| params.filter.as_ref().is_none_or(|f| matches(f, resource)))
            .collect())
    }
}

pub(crate) async fn list<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let params = ListParams::from_query(query.as_deref())?;
    let base = state.base(&headers, &uri, "/Groups");
    state.list_groups(&params, &base, &client).await
}

pub(crate) async fn search<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ScimError> {
    let params = ListParams::read_search(&headers, body).await?;
    let base = state.base(&headers, &uri, "/Groups/.search");
    state.list_groups(&params, &base, &client).await
}

pub(crate) async fn fetch<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let params = ListParams::from_query(query.as_deref())?;
    let group = state.group(parse_id(&id)?, &client).await?;
    if Preconditions::from_headers(&headers).not_modified(group.version) {
        return Ok(not_modified(group.version));
    }
    let base = state.base(&headers, &uri, "/Groups");
    Ok(respond(StatusCode::OK, &params.select(view(&group, &base))))
}

pub(crate) async fn create<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ScimError> {
    let resource = read_json(&headers, body).await?;
    let mut projected = project(&resource)?;
    projected.members = state.known_members(&[], projected.members, &client).await?;
    let group = state
        .store
        .insert_group(NewGroup {
            display_name: projected.display_name,
            external_id: projected.external_id,
            members: projected.members,
            scim_attributes: projected.extras,
            organization_id: client.organization,
        })
        .await
        .map_err(member_error)?;
    state.sync_members(&group.members, &client).await?;
    let base = state.base(&headers, &uri, "/Groups");
    Ok(created(&view(&group, &base)))
}

pub(crate) async fn replace<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let resource = read_json(&headers, body).await?;
    let mut projected = project(&resource)?;
    let current = state.group(id, &client).await?;
    let preconditions = Preconditions::from_headers(&headers);
    preconditions.check_write(current.version)?;
    projected.members = state
        .known_members(&current.members, projected.members, &client)
        .await?;
    // Pinned by If-Match, the write must land on the version checked.
    let expected = preconditions.pins_version().then_some(current.version);
    let (group, affected) = state
        .store
        .update_group(id, expected, projected.update())
        .await
        .map_err(|error| match error {
            StoreError::NotFound => ScimError::not_found(),
            StoreError::Conflict if expected.is_some() => ScimError::precondition_failed(),
            other => member_error(other),
        })?;
    state.sync_members(&affected, &client).await?;
    let base = state.base(&headers, &uri, "/Groups");
    Ok(respond(StatusCode::OK, &view(&group, &base)))
}

pub(crate) async fn patch<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let body = read_json(&headers, body).await?;
    let operations = patching::parse(&body)?;
    let preconditions = Preconditions::from_headers(&headers);
    let mut result = Err(ScimError::from(StoreError::Conflict));
    for _ in 0..RETRIES {
        let group = state.group(id, &client).await?;
        preconditions.check_write(group.version)?;
        let mut resource = view(&group, "");
        patching::apply(&mut resource, &operations, &READ_ONLY)?;
        let mut projected = project(&resource)?;
        projected.members = state
            .known_members(&group.members, projected.members, &client)
            .await?;
        match state
            .store
            .update_group(id, Some(group.version), projected.update())
            .await
        {
            Err(StoreError::Conflict) => continue,
            other => {
                result = other.map_err(member_error);
                break;
            }
        }
    }
    let (group, affected) = result?;
    state.sync_members(&affected, &client).await?;
    let base = state.base(&headers, &uri, "/Groups");
    Ok(respond(StatusCode::OK, &view(&group, &base)))
}

pub(crate) async fn delete<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let preconditions = Preconditions::from_headers(&headers);
    if preconditions.pins_version() || client.organization.is_some() {
        let group = state.group(id, &client).await?;
        preconditions.check_write(group.version)?;
    }
    match state.store.delete_group(id).await? {
        Some(members) => {
            state.sync_members(&members, &client).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        None => Err(ScimError::not_found()),
    }
}
