//! `/Users`: accounts as SCIM User resources (core schema and enterprise extension).
//!
//! Stage: SCIM. Uses `crate::store`, `crate::user` and `crate::audit`.
//!
//! A user's SCIM form is built from its fields (`userName`, `name.givenName`,
//! `name.familyName`, `displayName`, `emails`, `locale`, `active`, `externalId`, `roles`, its
//! `/Groups` memberships) and, for every other attribute a client sent (`title`,
//! `phoneNumbers`, the enterprise extension, …), from what the client last sent. A write is the
//! reverse: fields are taken out, the rest is kept as sent. PATCH works on the SCIM form, so
//! any path a `GET` shows can be patched.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::OriginalUri;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::ScimError;
use super::filter::{Lookup, as_lookup, get_ci, matches};
use super::schema::{is_primary, keep_declared, one_primary_each};
use super::version::{Preconditions, etag};
use super::{
    ClientName, ListParams, ScimState, actor, created, not_modified, parse_id, patch as patching,
    read_json, respond, scim_time,
};
use crate::audit::{AuditEvent, AuditKind};
use crate::store::{StoreError, UserStore};
use crate::user::{Group, NewUser, RoleGrant, RoleSource, User, UserStatus, UserUpdate};

/// The core User schema.
pub(crate) const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The enterprise User extension.
pub(crate) const ENTERPRISE_USER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Attributes a client cannot set: ignored in PUT bodies, refused as PATCH targets.
const READ_ONLY: [&str; 3] = ["id", "meta", "groups"];
/// Attributes with a field of their own, or that are never kept (`password`). `roles` are
/// also kept as sent, for their sub-attributes.
const PROJECTED: [&str; 12] = [
    "schemas",
    "id",
    "meta",
    "groups",
    "password",
    "userName",
    "externalId",
    "displayName",
    "active",
    "locale",
    "roles",
    "name",
];
/// How often a write that lost a race with a concurrent change is retried.
const RETRIES: usize = 5;

/// A user in SCIM form.
pub(crate) fn view(user: &User, groups: &[&Group], base: &str) -> Value {
    let mut resource = user.scim_attributes.clone();
    let mut schemas = vec![Value::from(CORE_USER)];
    if resource
        .keys()
        .any(|k| k.eq_ignore_ascii_case(ENTERPRISE_USER))
    {
        schemas.push(Value::from(ENTERPRISE_USER));
    }
    resource.insert("schemas".into(), Value::Array(schemas));
    resource.insert("id".into(), Value::from(user.id.to_string()));
    if let Some(external_id) = &user.external_id {
        resource.insert("externalId".into(), Value::from(external_id.as_str()));
    }
    let user_name = user
        .user_name
        .clone()
        .or_else(|| user.email.clone())
        .unwrap_or_else(|| user.id.to_string());
    resource.insert("userName".into(), Value::from(user_name));

    let mut name = match resource.remove("name") {
        Some(Value::Object(name)) => name,
        _ => Map::new(),
    };
    if let Some(given) = &user.given_name {
        name.insert("givenName".into(), Value::from(given.as_str()));
    }
    if let Some(family) = &user.family_name {
        name.insert("familyName".into(), Value::from(family.as_str()));
    }
    if !name.is_empty() {
        resource.insert("name".into(), Value::Object(name));
    }
    if let Some(display_name) = &user.display_name {
        resource.insert("displayName".into(), Value::from(display_name.as_str()));
    }
    sync_emails(&mut resource, user.email.as_deref());
    if let Some(locale) = &user.locale {
        resource.insert("locale".into(), Value::from(locale.as_str()));
    }
    let unasserted = matches!(resource.remove("active"), Some(Value::Null));
    if !(unasserted && user.status == UserStatus::Active) {
        resource.insert(
            "active".into(),
            Value::Bool(user.status == UserStatus::Active),
        );
    }
    if !groups.is_empty() {
        let groups: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "value": g.id.to_string(),
                    "display": g.display_name,
                    "$ref": format!("{base}/Groups/{}", g.id),
                    "type": "direct",
                })
            })
            .collect();
        resource.insert("groups".into(), Value::Array(groups));
    }
    let sent = match resource.remove("roles") {
        Some(Value::Array(sent)) => sent,
        _ => Vec::new(),
    };
    let roles: Vec<Value> = user
        .role_names()
        .into_iter()
        .map(|role| {
            sent.iter()
                .find(|entry| entry.get("value").and_then(Value::as_str) == Some(role))
                .cloned()
                .unwrap_or_else(|| json!({"value": role}))
        })
        .collect();
    if !roles.is_empty() {
        resource.insert("roles".into(), Value::Array(roles));
    }
    resource.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": scim_time(user.created_at),
            "lastModified": scim_time(user.updated_at),
            "location": format!("{base}/Users/{}", user.id),
            "version": etag(user.version),
        }),
    );
    Value::Object(resource)
}

/// Makes the stored `emails` agree with the account's address: the primary (or first) entry
/// carries it; without a stored list, one work address is shown.
fn sync_emails(resource: &mut Map<String, Value>, email: Option<&str>) {
    let Some(email) = email else {
        return;
    };
    if let Some(Value::Array(emails)) = resource.get_mut("emails")
        && let Some(index) = primary_index(emails)
    {
        if let Some(entry) = emails[index].as_object_mut() {
            entry.insert("value".into(), Value::from(email));
        }
        return;
    }
    resource.insert(
        "emails".into(),
        json!([{"value": email, "type": "work", "primary": true}]),
    );
}

/// The entry marked primary, else the first entry with a value.
fn primary_index(emails: &[Value]) -> Option<usize> {
    emails
        .iter()
        .position(is_primary)
        .or_else(|| emails.iter().position(|e| e.get("value").is_some()))
}

/// What a user's SCIM form says about its fields.
#[derive(Debug, Clone, PartialEq)]
struct Projected {
    user_name: String,
    external_id: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    email: Option<String>,
    locale: Option<String>,
    active: Option<bool>,
    roles: Option<Vec<String>>,
    extras: Map<String, Value>,
}

fn text(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ScimError> {
    match get_ci(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(_) => Err(ScimError::invalid_value(
            "a string attribute has another type",
        )),
    }
}

fn project(resource: &Value) -> Result<Projected, ScimError> {
    let object = resource
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a User is a JSON object"))?;
    let user_name = text(object, "userName")?
        .ok_or_else(|| ScimError::invalid_value("userName is required"))?;
    let active = match get_ci(object, "active") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
        Some(_) => return Err(ScimError::invalid_value("active is a boolean")),
    };
    let roles = match get_ci(object, "roles") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => get_ci(o, "value")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                })
                .collect(),
        ),
        Some(_) => return Err(ScimError::invalid_value("roles is a list")),
    };
    let (given_name, family_name) = match get_ci(object, "name") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(name)) => (text(name, "givenName")?, text(name, "familyName")?),
        Some(_) => return Err(ScimError::invalid_value("name is a complex attribute")),
    };
    let email = match get_ci(object, "emails") {
        None | Some(Value::Null) => None,
        Some(Value::Array(emails)) => primary_index(emails)
            .and_then(|i| emails[i].get("value"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        Some(_) => return Err(ScimError::invalid_value("emails is a list")),
    };
    one_primary_each(object)?;
    let mut declared = object.clone();
    keep_declared(&mut declared, CORE_USER, &[ENTERPRISE_USER]);
    let mut extras = declared.clone();
    extras.retain(|k, _| !PROJECTED.iter().any(|p| p.eq_ignore_ascii_case(k)));
    if let Some(Value::Object(name)) = declared.get("name") {
        let mut rest = name.clone();
        rest.retain(|k, _| k != "givenName" && k != "familyName");
        if !rest.is_empty() {
            extras.insert("name".into(), Value::Object(rest));
        }
    }
    // Kept for their sub-attributes; the grants themselves are `roles` above.
    if let Some(roles) = declared.get("roles") {
        extras.insert("roles".into(), roles.clone());
    }
    Ok(Projected {
        user_name,
        external_id: text(object, "externalId")?,
        display_name: text(object, "displayName")?,
        given_name,
        family_name,
        email,
        locale: text(object, "locale")?,
        active,
        roles,
        extras,
    })
}

impl Projected {
    /// The fields this form sets, for [`User::scim_managed`].
    fn managed(&self) -> Vec<String> {
        let mut managed = vec!["user_name".to_owned()];
        for (field, present) in [
            ("email", self.email.is_some()),
            ("display_name", self.display_name.is_some()),
            ("given_name", self.given_name.is_some()),
            ("family_name", self.family_name.is_some()),
            ("locale", self.locale.is_some()),
        ] {
            if present {
                managed.push(field.to_owned());
            }
        }
        managed
    }

    /// SCIM's grants: the listed roles not held from another source.
    fn scim_grants(&self, user: &User) -> Option<Vec<RoleGrant>> {
        let roles = self.roles.as_ref()?;
        Some(
            roles
                .iter()
                .filter(|role| {
                    !user
                        .roles
                        .iter()
                        .any(|g| &g.role == *role && g.source != RoleSource::Scim)
                })
                .map(|role| RoleGrant::new(role.clone(), RoleSource::Scim))
                .collect(),
        )
    }

    /// The change that makes `user` what this form says; `managed` names the fields SCIM now
    /// owns.
    fn update_for(&self, user: &User, managed: Vec<String>) -> UserUpdate {
        let roles = self.scim_grants(user).map(|scim| {
            let mut roles: Vec<RoleGrant> = user
                .roles
                .iter()
                .filter(|g| g.source != RoleSource::Scim)
                .cloned()
                .collect();
            roles.extend(scim);
            roles
        });
        let mut extras = self.extras.clone();
        if self.active.is_none() && matches!(user.scim_attributes.get("active"), Some(Value::Null))
        {
            // `active` stays unasserted until a client sets it.
            extras.insert("active".into(), Value::Null);
        }
        UserUpdate {
            email: Some(self.email.clone()),
            email_verified: Some(self.email.is_some()),
            user_name: Some(Some(self.user_name.clone())),
            display_name: Some(self.display_name.clone()),
            given_name: Some(self.given_name.clone()),
            family_name: Some(self.family_name.clone()),
            locale: Some(self.locale.clone()),
            roles,
            status: self.active.map(|active| {
                if active {
                    UserStatus::Active
                } else {
                    UserStatus::Deactivated
                }
            }),
            external_id: Some(self.external_id.clone()),
            scim_attributes: Some(extras),
            scim_managed: Some(managed),
            ..UserUpdate::default()
        }
    }
}

/// The audit event for a write that turns `before` into `after`, and whether it changes
/// anything at all.
fn audit_for(before: &User, after: &User, client: &ClientName) -> Option<AuditEvent> {
    let mut fields = Vec::new();
    macro_rules! compare {
        ($($field:ident),*) => { $( if before.$field != after.$field { fields.push(stringify!($field)); } )* };
    }
    compare!(
        email,
        email_verified,
        user_name,
        display_name,
        given_name,
        family_name,
        locale,
        roles,
        status,
        external_id,
        scim_attributes
    );
    if fields.is_empty() {
        return None;
    }
    let kind = match (before.status, after.status) {
        (UserStatus::Deactivated, UserStatus::Deactivated) => AuditKind::Updated,
        (_, UserStatus::Deactivated) => AuditKind::Deactivated,
        (UserStatus::Deactivated, UserStatus::Active) => AuditKind::Reactivated,
        (UserStatus::PendingApproval, UserStatus::Active) => AuditKind::Approved,
        _ => AuditKind::Updated,
    };
    Some(
        AuditEvent::new(kind, actor(client))
            .user(after.id)
            .fields(fields),
    )
}

impl<S: UserStore + Clone> ScimState<S> {
    /// Every group membership, by user.
    async fn memberships(&self) -> Result<HashMap<Uuid, Vec<Group>>, ScimError> {
        let mut by_user: HashMap<Uuid, Vec<Group>> = HashMap::new();
        let mut after = None;
        loop {
            let page = self.store.list_groups(after, 500).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            for group in page {
                for member in &group.members {
                    by_user.entry(*member).or_default().push(group.clone());
                }
            }
        }
        Ok(by_user)
    }

    /// The users a filter can match: one lookup when it is a lookup, else every user.
    async fn candidate_users(
        &self,
        filter: Option<&scim_v2::filter::Filter>,
        client: &ClientName,
    ) -> Result<Vec<User>, ScimError> {
        let mut users = self.unscoped_candidates(filter).await?;
        users.retain(|user| client.sees(user.organization_id));
        Ok(users)
    }

    async fn unscoped_candidates(
        &self,
        filter: Option<&scim_v2::filter::Filter>,
    ) -> Result<Vec<User>, ScimError> {
        let lookup = filter.and_then(as_lookup);
        let one = |user: Option<User>| Ok(user.into_iter().collect());
        match lookup {
            Some(Lookup::Id(id)) => match Uuid::parse_str(id) {
                Ok(id) => one(self.store.get_user(id).await?),
                Err(_) => Ok(Vec::new()),
            },
            Some(Lookup::UserName(name)) => one(self.store.find_by_user_name(name).await?),
            Some(Lookup::ExternalId(id)) => one(self.store.find_by_external_id(id).await?),
            None => {
                let mut users = Vec::new();
                let mut after = None;
                loop {
                    let page = self.store.list_users(after, 500).await?;
                    let Some(last) = page.last() else {
                        break;
                    };
                    after = Some(last.id);
                    users.extend(page);
                }
                Ok(users)
            }
        }
    }

    async fn list_users(
        &self,
        params: &ListParams,
        base: &str,
        client: &ClientName,
    ) -> Result<Response, ScimError> {
        Ok(params.respond(self.users_matching(params, base, client).await?))
    }

    /// Every user the request's filter matches, in SCIM form.
    pub(super) async fn users_matching(
        &self,
        params: &ListParams,
        base: &str,
        client: &ClientName,
    ) -> Result<Vec<Value>, ScimError> {
        let users = self.candidate_users(params.filter.as_ref(), client).await?;
        let memberships = self.memberships().await?;
        let resources: Vec<Value> = users
            .iter()
            .map(|user| {
                let groups: Vec<&Group> = memberships
                    .get(&user.id)
                    .map(|g| g.iter().collect())
                    .unwrap_or_default();
                view(user, &groups, base)
            })
            .filter(|resource| params.filter.as_ref().is_none_or(|f| matches(f, resource)))
            .collect();
        Ok(resources)
    }

    /// The user `id`, or a 404 (also when `client` may not see it).
    async fn user(&self, id: Uuid, client: &ClientName) -> Result<User, ScimError> {
        self.store
            .get_user(id)
            .await?
            .filter(|user| client.sees(user.organization_id))
            .ok_or_else(ScimError::not_found)
    }

    async fn user_view(&self, user: &User, base: &str) -> Result<Value, ScimError> {
        let groups = self.store.groups_of(user.id).await?;
        let groups: Vec<&Group> = groups.iter().collect();
        Ok(view(user, &groups, base))
    }

    /// Reads the user, lets `change` compute its new form, writes it; retried when a
    /// concurrent change intervened.
    async fn rewrite<F>(
        &self,
        id: Uuid,
        client: &ClientName,
        preconditions: &Preconditions,
        change: F,
    ) -> Result<User, ScimError>
    where
        F: Fn(&User, &Value) -> Result<UserUpdate, ScimError>,
    {
        for _ in 0..RETRIES {
            let user = self.user(id, client).await?;
            preconditions.check_write(user.version)?;
            let current = self.user_view(&user, "").await?;
            let update = change(&user, &current)?;
            let mut after = user.clone();
            after.apply(update.clone(), user.updated_at);
            let Some(audit) = audit_for(&user, &after, client) else {
                return Ok(user);
            };
            match self
                .store
                .update_user(id, Some(user.version), update, Some(audit))
                .await
            {
                Err(StoreError::Conflict) => continue,
                other => return Ok(other?),
            }
        }
        Err(StoreError::Conflict.into())
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
    let base = state.base(&headers, &uri, "/Users");
    state.list_users(&params, &base, &client).await
}

pub(crate) async fn search<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ScimError> {
    let params = ListParams::read_search(&headers, body).await?;
    let base = state.base(&headers, &uri, "/Users/.search");
    state.list_users(&params, &base, &client).await
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
    let user = state.user(parse_id(&id)?, &client).await?;
    if Preconditions::from_headers(&headers).not_modified(user.version) {
        return Ok(not_modified(user.version));
    }
    let base = state.base(&headers, &uri, "/Users");
    let resource = state.user_view(&user, &base).await?;
    Ok(respond(StatusCode::OK, &params.select(resource)))
}

pub(crate) async fn create<S: UserStore + Clone>(
    State(state): State<Arc<ScimState<S>>>,
    Extension(client): Extension<ClientName>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ScimError> {
    let resource = read_json(&headers, body).await?;
    let projected = project(&resource)?;
    let mut roles = state.mapping.default_role_grants();
    roles.extend(
        projected
            .roles
            .iter()
            .flatten()
            .map(|role| RoleGrant::new(role.clone(), RoleSource::Scim)),
    );
    let new = NewUser {
        email: projected.email.clone(),
        email_verified: projected.email.is_some(),
        user_name: Some(projected.user_name.clone()),
        display_name: projected.display_name.clone(),
        given_name: projected.given_name.clone(),
        family_name: projected.family_name.clone(),
        locale: projected.locale.clone(),
        roles,
        status: if projected.active == Some(false) {
            UserStatus::Deactivated
        } else {
            UserStatus::Active
        },
        external_id: projected.external_id.clone(),
        scim_attributes: projected.extras.clone(),
        scim_managed: projected.managed(),
        organization_id: client.organization,
        ..NewUser::default()
    };
    let user = state
        .store
        .insert_user(new, AuditEvent::new(AuditKind::Provisioned, actor(&client)))
        .await?;
    let base = state.base(&headers, &uri, "/Users");
    Ok(created(&view(&user, &[], &base)))
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
    // Read-only attributes echoed back (`id`, `meta`, `groups`) are ignored.
    let projected = project(&resource)?;
    let preconditions = Preconditions::from_headers(&headers);
    let user = state
        .rewrite(id, &client, &preconditions, |user, _| {
            let mut managed = projected.managed();
            if user.scim_managed.iter().any(|f| f == "groups") {
                managed.push("groups".to_owned());
            }
            Ok(projected.update_for(user, managed))
        })
        .await?;
    let base = state.base(&headers, &uri, "/Users");
    Ok(respond(
        StatusCode::OK,
        &state.user_view(&user, &base).await?,
    ))
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
    let user = state
        .rewrite(id, &client, &preconditions, |user, current| {
            let mut patched = current.clone();
            patching::apply(&mut patched, &operations, &READ_ONLY)?;
            let before = project(current)?;
            let mut after = project(&patched)?;
            match (&before.roles, &after.roles) {
                // Roles untouched: leave every grant as it is.
                (b, a) if a == b => after.roles = None,
                // All removed: SCIM's grants go; grants from other sources stay.
                (Some(_), None) => after.roles = Some(Vec::new()),
                _ => {}
            }
            if before.active.is_some() && after.active.is_none() {
                // `active` removed: back to its default, left out of the form until set again.
                after.active = Some(true);
                after.extras.insert("active".into(), Value::Null);
            }
            // SCIM takes over the fields this patch changed.
            let mut managed = user.scim_managed.clone();
            for (field, changed) in [
                ("user_name", after.user_name != before.user_name),
                ("email", after.email != before.email),
                ("display_name", after.display_name != before.display_name),
                ("given_name", after.given_name != before.given_name),
                ("family_name", after.family_name != before.family_name),
                ("locale", after.locale != before.locale),
            ] {
                if changed && !managed.iter().any(|m| m == field) {
                    managed.push(field.to_owned());
                }
            }
            Ok(after.update_for(user, managed))
        })
        .await?;
    let base = state.base(&headers, &uri, "/Users");
    Ok(respond(
        StatusCode::OK,
        &state.user_view(&user, &base).await?,
    ))
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
        let user = state.user(id, &client).await?;
        preconditions.check_write(user.version)?;
    }
    let audit = AuditEvent::new(AuditKind::Deleted, actor(&client));
    if state.store.delete_user(id, audit).await? {
        Ok(axum::response::IntoResponse::into_response(
            StatusCode::NO_CONTENT,
        ))
    } else {
        Err(ScimError::not_found())
    }
}
