//! Row mapping, once for every SQL backend: records to statement parameters, result rows to
//! records. Backends only say how a [`Param`] is bound and how a [`SqlRow`] column is read.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditKind};
use crate::organization::Organization;
use crate::session::{LoginFlow, Session, SessionHash};
use crate::store::StoreError;
use crate::user::{Group, Identity, IdentityKey, User, UserStatus};

/// One statement parameter, in the few shapes the schema uses.
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Text(Option<String>),
    Flag(bool),
    Int(i64),
    Time(Option<DateTime<Utc>>),
    Id(Option<Uuid>),
    /// A JSON document: `TEXT` on SQLite, `JSONB` on PostgreSQL.
    Json(Value),
}

impl Param {
    pub(crate) fn text(value: &str) -> Self {
        Self::Text(Some(value.to_owned()))
    }

    pub(crate) fn opt_text(value: Option<&str>) -> Self {
        Self::Text(value.map(str::to_owned))
    }

    pub(crate) fn id(id: Uuid) -> Self {
        Self::Id(Some(id))
    }

    pub(crate) fn time(at: DateTime<Utc>) -> Self {
        Self::Time(Some(at))
    }

    pub(crate) fn json<T: serde::Serialize>(value: &T) -> Self {
        Self::Json(serde_json::to_value(value).expect("serializing plain data"))
    }
}

/// A result row, read by column name.
pub(crate) trait SqlRow {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn id(&self, column: &str) -> Result<Option<Uuid>, StoreError>;
    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError>;

    /// A column that must not be `NULL`.
    fn required<T>(
        &self,
        column: &str,
        read: impl FnOnce(&Self, &str) -> Result<Option<T>, StoreError>,
    ) -> Result<T, StoreError> {
        read(self, column)?.ok_or_else(|| StoreError::Backend(format!("`{column}` is NULL").into()))
    }
}

pub(crate) fn user(row: &impl SqlRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.required("id", SqlRow::id)?,
        email: row.text("email")?,
        email_verified: row.flag("email_verified")?,
        user_name: row.text("user_name")?,
        display_name: row.text("display_name")?,
        given_name: row.text("given_name")?,
        family_name: row.text("family_name")?,
        picture: row.text("picture")?,
        locale: row.text("locale")?,
        roles: row.json("roles")?,
        groups: row.json("groups")?,
        attributes: row.json("attributes")?,
        status: status(&row.required("status", SqlRow::text)?)?,
        external_id: row.text("external_id")?,
        scim_attributes: row.json("scim_attributes")?,
        scim_managed: row.json("scim_managed")?,
        version: row.int("version")?,
        created_at: row.required("created_at", SqlRow::time)?,
        updated_at: row.required("updated_at", SqlRow::time)?,
        last_login_at: row.time("last_login_at")?,
        organization_id: row.id("organization_id")?,
    })
}

/// A row of [`find_by_identity`](super::queries::Queries::find_by_identity).
pub(crate) fn user_and_identity(row: &impl SqlRow) -> Result<(User, Identity), StoreError> {
    let user = user(row)?;
    let identity = Identity {
        key: IdentityKey::new(
            row.required("issuer", SqlRow::text)?,
            row.required("subject", SqlRow::text)?,
        ),
        user_id: user.id,
        created_at: row.required("identity_created_at", SqlRow::time)?,
        last_login_at: row.time("identity_last_login_at")?,
        claims_fingerprint: row.text("claims_fingerprint")?,
    };
    Ok((user, identity))
}

pub(crate) fn identity(row: &impl SqlRow) -> Result<Identity, StoreError> {
    Ok(Identity {
        key: IdentityKey::new(
            row.required("issuer", SqlRow::text)?,
            row.required("subject", SqlRow::text)?,
        ),
        user_id: row.required("user_id", SqlRow::id)?,
        created_at: row.required("created_at", SqlRow::time)?,
        last_login_at: row.time("last_login_at")?,
        claims_fingerprint: row.text("claims_fingerprint")?,
    })
}

pub(crate) fn group(row: &impl SqlRow) -> Result<Group, StoreError> {
    Ok(Group {
        id: row.required("id", SqlRow::id)?,
        display_name: row.required("display_name", SqlRow::text)?,
        external_id: row.text("external_id")?,
        members: row.json("members")?,
        scim_attributes: row.json("scim_attributes")?,
        version: row.int("version")?,
        created_at: row.required("created_at", SqlRow::time)?,
        updated_at: row.required("updated_at", SqlRow::time)?,
        organization_id: row.id("organization_id")?,
    })
}

pub(crate) fn audit_event(row: &impl SqlRow) -> Result<AuditEvent, StoreError> {
    let kind = row.required("kind", SqlRow::text)?;
    let mut event = AuditEvent::new(
        AuditKind::from_name(&kind)
            .ok_or_else(|| StoreError::Backend(format!("unknown audit kind `{kind}`").into()))?,
        row.json("actor")?,
    );
    event.at = row.required("at", SqlRow::time)?;
    event.issuer = row.text("issuer")?;
    event.subject = row.text("subject")?;
    event.user_id = row.id("user_id")?;
    event.reason = row.text("reason")?;
    event.fields = row.json("fields")?;
    event.source = row.text("source")?;
    event.trace = row.json("trace")?;
    Ok(event)
}

fn status(name: &str) -> Result<UserStatus, StoreError> {
    UserStatus::from_name(name)
        .ok_or_else(|| StoreError::Backend(format!("unknown status `{name}`").into()))
}

/// A user's columns in the order of [`INSERT_USER`](super::queries::INSERT_USER) and
/// [`UPDATE_USER`](super::queries::UPDATE_USER): the id, then the profile.
pub(crate) fn user_params(user: &User) -> Vec<Param> {
    vec![
        Param::id(user.id),
        Param::opt_text(user.email.as_deref()),
        Param::Flag(user.email_verified),
        Param::opt_text(user.user_name.as_deref()),
        Param::opt_text(user.display_name.as_deref()),
        Param::opt_text(user.given_name.as_deref()),
        Param::opt_text(user.family_name.as_deref()),
        Param::opt_text(user.picture.as_deref()),
        Param::opt_text(user.locale.as_deref()),
        Param::json(&user.roles),
        Param::json(&user.groups),
        Param::json(&user.attributes),
        Param::text(user.status.as_str()),
        Param::opt_text(user.external_id.as_deref()),
        Param::json(&user.scim_attributes),
        Param::json(&user.scim_managed),
        Param::Int(user.version),
        Param::time(user.created_at),
        Param::time(user.updated_at),
        Param::Time(user.last_login_at),
        Param::Id(user.organization_id),
    ]
}

/// An organisation's columns in the order of
/// [`INSERT_ORGANIZATION`](super::queries::INSERT_ORGANIZATION) and
/// [`UPDATE_ORGANIZATION`](super::queries::UPDATE_ORGANIZATION).
pub(crate) fn organization_params(organization: &Organization) -> Vec<Param> {
    vec![
        Param::id(organization.id),
        Param::text(&organization.name),
        Param::json(organization),
        Param::Int(organization.version),
        Param::time(organization.created_at),
        Param::time(organization.updated_at),
    ]
}

/// A group's columns in the order of [`INSERT_GROUP`](super::queries::INSERT_GROUP) and
/// [`UPDATE_GROUP`](super::queries::UPDATE_GROUP).
pub(crate) fn group_params(group: &Group) -> Vec<Param> {
    vec![
        Param::id(group.id),
        Param::text(&group.display_name),
        Param::opt_text(group.external_id.as_deref()),
        Param::json(&group.scim_attributes),
        Param::Int(group.version),
        Param::time(group.created_at),
        Param::time(group.updated_at),
        Param::Id(group.organization_id),
    ]
}

/// An audit record's columns in the order of [`INSERT_AUDIT`](super::queries::INSERT_AUDIT).
pub(crate) fn audit_params(event: &AuditEvent) -> Vec<Param> {
    vec![
        Param::time(event.at),
        Param::text(event.kind.as_str()),
        Param::json(&event.actor),
        Param::opt_text(event.issuer.as_deref()),
        Param::opt_text(event.subject.as_deref()),
        Param::Id(event.user_id),
        Param::opt_text(event.reason.as_deref()),
        Param::json(&event.fields),
        Param::opt_text(event.source.as_deref()),
        Param::json(&event.trace),
    ]
}

pub(crate) fn session(row: &impl SqlRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: hash(&row.required("id_hash", SqlRow::text)?)?,
        user_id: row.required("user_id", SqlRow::id)?,
        issuer: row.required("issuer", SqlRow::text)?,
        subject: row.required("subject", SqlRow::text)?,
        sid: row.text("sid")?,
        source: row.required("source", SqlRow::text)?,
        created_at: row.required("created_at", SqlRow::time)?,
        expires_at: row.required("expires_at", SqlRow::time)?,
        idle_secs: row.int("idle_secs")?,
        last_seen_at: row.required("last_seen_at", SqlRow::time)?,
    })
}

/// A session's columns in the order of [`INSERT_SESSION`](super::queries::INSERT_SESSION).
pub(crate) fn session_params(session: &Session) -> Vec<Param> {
    vec![
        Param::text(&session.id.to_hex()),
        Param::id(session.user_id),
        Param::text(&session.issuer),
        Param::text(&session.subject),
        Param::opt_text(session.sid.as_deref()),
        Param::text(&session.source),
        Param::time(session.created_at),
        Param::time(session.expires_at),
        Param::Int(session.idle_secs),
        Param::time(session.last_seen_at),
    ]
}

pub(crate) fn flow(row: &impl SqlRow) -> Result<LoginFlow, StoreError> {
    Ok(LoginFlow {
        key: hash(&row.required("key_hash", SqlRow::text)?)?,
        binding: hash(&row.required("binding_hash", SqlRow::text)?)?,
        kind: row.required("kind", SqlRow::text)?,
        data: row.json("data")?,
        created_at: row.required("created_at", SqlRow::time)?,
        expires_at: row.required("expires_at", SqlRow::time)?,
    })
}

/// A flow's columns in the order of [`INSERT_FLOW`](super::queries::INSERT_FLOW).
pub(crate) fn flow_params(flow: &LoginFlow) -> Vec<Param> {
    vec![
        Param::text(&flow.key.to_hex()),
        Param::text(&flow.binding.to_hex()),
        Param::text(&flow.kind),
        Param::Json(flow.data.clone()),
        Param::time(flow.created_at),
        Param::time(flow.expires_at),
    ]
}

fn hash(hex: &str) -> Result<SessionHash, StoreError> {
    SessionHash::from_hex(hex).ok_or_else(|| StoreError::Backend("a malformed hash".into()))
}

/// Sorts sqlx errors into "try again later" (503) and "broken" (500); `transient` says which
/// database error codes are conditions that pass.
pub(crate) fn classify(err: sqlx::Error, transient: fn(&str) -> bool) -> StoreError {
    if passes(&err, transient) {
        StoreError::Unavailable(Box::new(err))
    } else {
        StoreError::Backend(Box::new(err))
    }
}

/// Whether `err` is a condition that passes (see [`classify`]).
pub(crate) fn passes(err: &sqlx::Error, transient: fn(&str) -> bool) -> bool {
    use sqlx::Error as E;
    match err {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::WorkerCrashed | E::Tls(_) => true,
        E::Database(db) => db.code().is_some_and(|code| transient(&code)),
        _ => false,
    }
}

/// The column of `table` a unique violation is about, among `columns`. PostgreSQL names the
/// index (`jit_users_user_name`), SQLite the column in its message (`jit_users.user_name`);
/// the schema names every unique index `<table>_<column>` so both read the same.
pub(crate) fn duplicate(
    err: &sqlx::Error,
    table: &str,
    columns: &[&'static str],
) -> Option<&'static str> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    if !db.is_unique_violation() {
        return None;
    }
    // A table keyed by its one unique column names the key's index `<table>_pkey`.
    if let [key] = columns
        && db.constraint() == Some(format!("{table}_pkey").as_str())
    {
        return Some(key);
    }
    columns.iter().copied().find(|column| {
        db.constraint() == Some(&format!("{table}_{column}"))
            || db.message().contains(&format!("{table}.{column}"))
    })
}

/// Whether `err` is a foreign key violation: a reference to a row that does not exist.
pub(crate) fn is_missing_reference(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
