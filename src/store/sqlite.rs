//! [`SqliteStore`]: users in an SQLite file (or in memory), through `sqlx`.
//!
//! - WAL journal, `synchronous = NORMAL`, foreign keys on, a 5 s busy timeout.
//! - Writes run in `BEGIN IMMEDIATE` transactions: the write lock is taken before the first
//!   read, so "look up, then insert" cannot interleave with another writer, in this process or
//!   any other on the same file. The unique `(issuer, subject)` key backs that up.
//! - Audit events are persisted in the transaction of the write they describe.
//! - Migrations are embedded, applied by [`SqliteStore::migrate`], and tracked in their own table,
//!   `_jit_provisioning_migrations`, so they never collide with the application's own sqlx
//!   migrations in the same database.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, Sqlite, Transaction};
use uuid::Uuid;

use super::{ChangeFeed, Resolved, StoreError, StoreEvent, UserStore, sql};
use crate::audit::{Actor, Audit, AuditEvent, AuditKind};
use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, RoleGrant, User, UserUpdate,
};

/// A [`UserStore`] on SQLite. Cheap to clone: clones share one connection pool.
///
/// ```
/// use tower_jit_provisioning::store::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_jit_provisioning::store::StoreError> {
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    feed: ChangeFeed,
    audit: Audit,
    persist_audit: bool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`: `sqlite://path/to/file.db`, or
    /// `sqlite::memory:` for a private in-memory database.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the file cannot be opened; [`StoreError::Backend`] for
    /// a malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::Backend(Box::new(err)))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database exists per connection: one connection keeps it one database.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(store_error)?;
        Ok(Self::from_pool(pool))
    }

    /// A store on an existing pool. The pool should enable foreign keys (sqlx does by
    /// default) and WAL.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            feed: ChangeFeed::new(),
            audit: Audit::new(),
            persist_audit: true,
        }
    }

    /// Sends audit events to `audit`'s sinks as well as to `tracing`.
    #[must_use]
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Whether audit events are persisted in `jit_audit_events` (default: yes). `token_rejected`
    /// events never are: anyone can cause them.
    #[must_use]
    pub fn persist_audit(mut self, persist: bool) -> Self {
        self.persist_audit = persist;
        self
    }

    /// Applies the embedded migrations (`migrations/sqlite/`). Run it once at start-up.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a migration fails or the database holds migrations this
    /// version does not know.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("migrations/sqlite");
        migrator.dangerous_set_table_name(sql::MIGRATIONS_TABLE);
        migrator
            .run(&self.pool)
            .await
            .map_err(|err| StoreError::Backend(Box::new(err)))
    }

    /// The connection pool, for the application's own queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool; every later operation fails with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The persisted audit events, oldest first; only those of `user_id` when given.
    ///
    /// # Errors
    ///
    /// As for any read.
    pub async fn audit_events(&self, user_id: Option<Uuid>) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = match user_id {
            Some(id) => {
                sqlx::query_as(concat!(
                    "SELECT at, kind, actor, issuer, subject, user_id, reason, fields ",
                    "FROM jit_audit_events WHERE user_id = ? ORDER BY id"
                ))
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_as(concat!(
                    "SELECT at, kind, actor, issuer, subject, user_id, reason, fields ",
                    "FROM jit_audit_events ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(store_error)?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)
    }

    async fn persist(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        if !self.persist_audit {
            return Ok(());
        }
        sqlx::query(concat!(
            "INSERT INTO jit_audit_events (at, kind, actor, issuer, subject, user_id, reason, fields) ",
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(event.at)
        .bind(event.kind.as_str())
        .bind(json(&event.actor))
        .bind(event.issuer.as_deref())
        .bind(event.subject.as_deref())
        .bind(event.user_id.map(|id| id.to_string()))
        .bind(event.reason.as_deref())
        .bind(json(&event.fields))
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    /// The identity's current owner (the insert-or-get "get"), or an error if it was deleted;
    /// `None` when the identity is free to be written.
    async fn taken(
        tx: &mut Transaction<'static, Sqlite>,
        key: &IdentityKey,
    ) -> Result<Option<Resolved>, StoreError> {
        if let Some((user, identity)) = Self::find_in(tx, key).await? {
            return Ok(Some(Resolved {
                user,
                identity,
                written: false,
            }));
        }
        if Self::tombstoned(tx, key).await? {
            return Err(StoreError::IdentityDeleted);
        }
        Ok(None)
    }

    async fn find_in(
        tx: &mut Transaction<'static, Sqlite>,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        let row: Option<IdentityUserRow> = sqlx::query_as(FIND_BY_IDENTITY)
            .bind(key.issuer())
            .bind(key.subject())
            .fetch_optional(&mut **tx)
            .await
            .map_err(store_error)?;
        row.map(IdentityUserRow::into_parts).transpose()
    }

    async fn tombstoned(
        tx: &mut Transaction<'static, Sqlite>,
        key: &IdentityKey,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM jit_identity_tombstones WHERE issuer = ? AND subject = ?",
        )
        .bind(key.issuer())
        .bind(key.subject())
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(found.is_some())
    }

    /// Inserts the identity, signed in now.
    async fn insert_identity(
        tx: &mut Transaction<'static, Sqlite>,
        key: &IdentityKey,
        user_id: Uuid,
        fingerprint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Identity, StoreError> {
        sqlx::query(concat!(
            "INSERT INTO jit_identities (issuer, subject, user_id, claims_fingerprint, ",
            "created_at, updated_at, last_login_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(key.issuer())
        .bind(key.subject())
        .bind(user_id.to_string())
        .bind(fingerprint)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(Identity {
            key: key.clone(),
            user_id,
            created_at: now,
            last_login_at: Some(now),
            claims_fingerprint: fingerprint.map(str::to_owned),
        })
    }

    fn emit_committed(&self, event: &AuditEvent) {
        self.audit.emit(event);
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("connections", &self.pool.size())
            .field("persist_audit", &self.persist_audit)
            .finish_non_exhaustive()
    }
}

macro_rules! user_columns {
    () => {
        "u.id, u.email, u.email_verified, u.user_name, u.display_name, u.given_name, \
         u.family_name, u.picture, u.locale, u.roles, u.groups, u.attributes, u.status, \
         u.external_id, u.scim_attributes, u.scim_managed, u.version, u.created_at, \
         u.updated_at, u.last_login_at"
    };
}

const FIND_BY_IDENTITY: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", i.issuer, i.subject, i.created_at AS identity_created_at, ",
    "i.last_login_at AS identity_last_login_at, i.claims_fingerprint ",
    "FROM jit_identities i JOIN jit_users u ON u.id = i.user_id ",
    "WHERE i.issuer = ? AND i.subject = ?"
);

const SELECT_USER: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM jit_users u WHERE u.id = ?"
);

#[derive(FromRow)]
struct UserRow {
    id: String,
    email: Option<String>,
    email_verified: bool,
    user_name: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    picture: Option<String>,
    locale: Option<String>,
    roles: String,
    groups: String,
    attributes: String,
    status: String,
    external_id: Option<String>,
    scim_attributes: String,
    scim_managed: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        Ok(User {
            id: parse_uuid(&self.id)?,
            email: self.email,
            email_verified: self.email_verified,
            user_name: self.user_name,
            display_name: self.display_name,
            given_name: self.given_name,
            family_name: self.family_name,
            picture: self.picture,
            locale: self.locale,
            roles: from_json::<Vec<RoleGrant>>(&self.roles)?,
            groups: from_json::<Vec<String>>(&self.groups)?,
            attributes: from_json::<Map<String, Value>>(&self.attributes)?,
            status: sql::status(&self.status)?,
            external_id: self.external_id,
            scim_attributes: from_json(&self.scim_attributes)?,
            scim_managed: from_json(&self.scim_managed)?,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_login_at: self.last_login_at,
        })
    }
}

#[derive(FromRow)]
struct IdentityUserRow {
    #[sqlx(flatten)]
    user: UserRow,
    issuer: String,
    subject: String,
    identity_created_at: DateTime<Utc>,
    identity_last_login_at: Option<DateTime<Utc>>,
    claims_fingerprint: Option<String>,
}

impl IdentityUserRow {
    fn into_parts(self) -> Result<(User, Identity), StoreError> {
        let user = self.user.into_user()?;
        let identity = Identity {
            key: IdentityKey::new(self.issuer, self.subject),
            user_id: user.id,
            created_at: self.identity_created_at,
            last_login_at: self.identity_last_login_at,
            claims_fingerprint: self.claims_fingerprint,
        };
        Ok((user, identity))
    }
}

#[derive(FromRow)]
struct IdentityRow {
    issuer: String,
    subject: String,
    user_id: String,
    created_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
    claims_fingerprint: Option<String>,
}

#[derive(FromRow)]
struct AuditRow {
    at: DateTime<Utc>,
    kind: String,
    actor: String,
    issuer: Option<String>,
    subject: Option<String>,
    user_id: Option<String>,
    reason: Option<String>,
    fields: String,
}

impl AuditRow {
    fn into_event(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            at: self.at,
            kind: sql::audit_kind(&self.kind)?,
            actor: from_json::<Actor>(&self.actor)?,
            issuer: self.issuer,
            subject: self.subject,
            user_id: self.user_id.as_deref().map(parse_uuid).transpose()?,
            reason: self.reason,
            fields: from_json(&self.fields)?,
        })
    }
}

fn parse_uuid(value: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(value).map_err(|err| StoreError::Backend(Box::new(err)))
}

fn from_json<T: serde::de::DeserializeOwned>(value: &str) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|err| StoreError::Backend(Box::new(err)))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializing plain data")
}

/// Sorts sqlx errors into "try again later" (503) and "broken" (500).
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    // SQLite primary result codes (the low byte of extended codes): BUSY, LOCKED, IOERR, FULL,
    // CANTOPEN are conditions that pass.
    sql::classify(err, |code| {
        code.parse::<i64>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13 | 14))
    })
}

async fn write_user(
    tx: &mut Transaction<'static, Sqlite>,
    user: &User,
    insert: bool,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let query = if insert {
        concat!(
            "INSERT INTO jit_users (email, email_verified, user_name, display_name, given_name, ",
            "family_name, picture, locale, roles, groups, attributes, status, external_id, ",
            "scim_attributes, scim_managed, version, created_at, updated_at, last_login_at, id) ",
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    } else {
        concat!(
            "UPDATE jit_users SET email = ?, email_verified = ?, user_name = ?, ",
            "display_name = ?, given_name = ?, family_name = ?, picture = ?, locale = ?, ",
            "roles = ?, groups = ?, attributes = ?, status = ?, external_id = ?, ",
            "scim_attributes = ?, scim_managed = ?, version = ?, created_at = ?, updated_at = ?, ",
            "last_login_at = ? WHERE id = ? AND version = ?"
        )
    };
    let result = sqlx::query(query)
        .bind(user.email.as_deref())
        .bind(user.email_verified)
        .bind(user.user_name.as_deref())
        .bind(user.display_name.as_deref())
        .bind(user.given_name.as_deref())
        .bind(user.family_name.as_deref())
        .bind(user.picture.as_deref())
        .bind(user.locale.as_deref())
        .bind(json(&user.roles))
        .bind(json(&user.groups))
        .bind(json(&user.attributes))
        .bind(user.status.as_str())
        .bind(user.external_id.as_deref())
        .bind(json(&user.scim_attributes))
        .bind(json(&user.scim_managed))
        .bind(user.version)
        .bind(user.created_at)
        .bind(user.updated_at)
        .bind(user.last_login_at)
        .bind(user.id.to_string())
        .bind(expected_version)
        .execute(&mut **tx)
        .await;
    match result {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(err) => Err(unique_or(
            err,
            &[("user_name", "user_name"), ("external_id", "external_id")],
        )),
    }
}

/// A unique violation as [`StoreError::Duplicate`] naming the column, else a store error.
/// SQLite names the column in its message: `UNIQUE constraint failed: jit_users.user_name`.
fn unique_or(err: sqlx::Error, columns: &[(&str, &'static str)]) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        let message = db.message();
        for (column, name) in columns {
            if message.contains(&format!(".{column}")) {
                return StoreError::Duplicate(name);
            }
        }
    }
    store_error(err)
}

const GROUP_COLUMNS: &str = concat!(
    "g.id, g.display_name, g.external_id, g.scim_attributes, g.version, g.created_at, ",
    "g.updated_at, (SELECT json_group_array(user_id) FROM (SELECT user_id FROM ",
    "jit_group_members m WHERE m.group_id = g.id ORDER BY user_id)) AS members"
);

#[derive(FromRow)]
struct GroupRow {
    id: String,
    display_name: String,
    external_id: Option<String>,
    scim_attributes: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    members: String,
}

impl GroupRow {
    fn into_group(self) -> Result<Group, StoreError> {
        let members: Vec<String> = from_json(&self.members)?;
        Ok(Group {
            id: parse_uuid(&self.id)?,
            display_name: self.display_name,
            external_id: self.external_id,
            members: members
                .iter()
                .map(|m| parse_uuid(m))
                .collect::<Result<_, _>>()?,
            scim_attributes: from_json(&self.scim_attributes)?,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

async fn write_group(
    tx: &mut Transaction<'static, Sqlite>,
    group: &Group,
    insert: bool,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let query = if insert {
        concat!(
            "INSERT INTO jit_groups (display_name, external_id, scim_attributes, version, ",
            "created_at, updated_at, id) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
    } else {
        concat!(
            "UPDATE jit_groups SET display_name = ?, external_id = ?, scim_attributes = ?, ",
            "version = ?, created_at = ?, updated_at = ? WHERE id = ? AND version = ?"
        )
    };
    let done = sqlx::query(query)
        .bind(&group.display_name)
        .bind(group.external_id.as_deref())
        .bind(json(&group.scim_attributes))
        .bind(group.version)
        .bind(group.created_at)
        .bind(group.updated_at)
        .bind(group.id.to_string())
        .bind(expected_version)
        .execute(&mut **tx)
        .await
        .map_err(|err| {
            unique_or(
                err,
                &[
                    ("display_name", "display_name"),
                    ("external_id", "external_id"),
                ],
            )
        })?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM jit_group_members WHERE group_id = ?")
        .bind(group.id.to_string())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    for member in &group.members {
        sqlx::query(
            "INSERT INTO jit_group_members (group_id, user_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(group.id.to_string())
        .bind(member.to_string())
        .bind(group.updated_at)
        .execute(&mut **tx)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => store_error(err),
        })?;
    }
    Ok(true)
}

impl UserStore for SqliteStore {
    async fn find_by_identity(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        let row: Option<IdentityUserRow> = sqlx::query_as(FIND_BY_IDENTITY)
            .bind(key.issuer())
            .bind(key.subject())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.map(IdentityUserRow::into_parts).transpose()
    }

    async fn create_user(
        &self,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(existing) = Self::taken(&mut tx, key).await? {
            return Ok(existing);
        }
        let now = crate::user::now();
        let mut user = User::from_new(user, now);
        user.last_login_at = Some(now);
        write_user(&mut tx, &user, true, 0).await?;
        let identity = Self::insert_identity(&mut tx, key, user.id, fingerprint, now).await?;
        let event = audit.identity(key).user(user.id);
        self.persist(&mut tx, &event).await?;
        tx.commit().await.map_err(store_error)?;
        self.emit_committed(&event);
        self.feed.publish(StoreEvent::Changed {
            user_id: user.id,
            version: user.version,
        });
        Ok(Resolved {
            user,
            identity,
            written: true,
        })
    }

    async fn link_identity(
        &self,
        user_id: Uuid,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(existing) = Self::taken(&mut tx, key).await? {
            return Ok(existing);
        }
        let row: Option<UserRow> = sqlx::query_as(SELECT_USER)
            .bind(user_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut user = row.ok_or(StoreError::NotFound)?.into_user()?;
        let now = crate::user::now();
        sqlx::query("UPDATE jit_users SET last_login_at = ? WHERE id = ?")
            .bind(now)
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        user.last_login_at = Some(now);
        let identity = Self::insert_identity(&mut tx, key, user_id, fingerprint, now).await?;
        let event = audit.identity(key).user(user_id);
        self.persist(&mut tx, &event).await?;
        tx.commit().await.map_err(store_error)?;
        self.emit_committed(&event);
        Ok(Resolved {
            user,
            identity,
            written: true,
        })
    }

    async fn find_by_external_id(&self, external_id: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.external_id = ?"
        ))
        .bind(external_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.map(UserRow::into_user).transpose()
    }

    async fn find_by_verified_email(
        &self,
        email: &str,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.email_lower = lower(?) AND u.email_verified = 1 ",
            "ORDER BY u.id LIMIT ?"
        ))
        .bind(email)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    async fn find_by_user_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.user_name = ? COLLATE NOCASE"
        ))
        .bind(user_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.map(UserRow::into_user).transpose()
    }

    async fn insert_user(&self, user: NewUser, audit: AuditEvent) -> Result<User, StoreError> {
        let mut tx = self.begin().await?;
        let user = User::from_new(user, crate::user::now());
        write_user(&mut tx, &user, true, 0).await?;
        let event = audit.user(user.id);
        self.persist(&mut tx, &event).await?;
        tx.commit().await.map_err(store_error)?;
        self.emit_committed(&event);
        self.feed.publish(StoreEvent::Changed {
            user_id: user.id,
            version: user.version,
        });
        Ok(user)
    }

    async fn list_users(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<User>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE (?1 IS NULL OR u.id > ?1) ORDER BY u.id LIMIT ?2"
        ))
        .bind(after.map(|id| id.to_string()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    async fn insert_group(&self, group: NewGroup) -> Result<Group, StoreError> {
        let mut tx = self.begin().await?;
        let group = Group::from_new(group, crate::user::now());
        write_group(&mut tx, &group, true, 0).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(group)
    }

    async fn get_group(&self, id: Uuid) -> Result<Option<Group>, StoreError> {
        let row: Option<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE g.id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.map(GroupRow::into_group).transpose()
    }

    async fn list_groups(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Group>, StoreError> {
        let rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE (?1 IS NULL OR g.id > ?1) \
             ORDER BY g.id LIMIT ?2"
        )))
        .bind(after.map(|id| id.to_string()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(GroupRow::into_group).collect()
    }

    async fn update_group(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        update: GroupUpdate,
    ) -> Result<(Group, Vec<Uuid>), StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE g.id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut group = row.ok_or(StoreError::NotFound)?.into_group()?;
        if expected_version.is_some_and(|v| v != group.version) {
            return Err(StoreError::Conflict);
        }
        let read_version = group.version;
        let affected = group.apply(update, crate::user::now());
        if !write_group(&mut tx, &group, false, read_version).await? {
            return Err(StoreError::Conflict);
        }
        tx.commit().await.map_err(store_error)?;
        Ok((group, affected))
    }

    async fn delete_group(&self, id: Uuid) -> Result<Option<Vec<Uuid>>, StoreError> {
        let mut tx = self.begin().await?;
        let members: Vec<String> =
            sqlx::query_scalar("SELECT user_id FROM jit_group_members WHERE group_id = ?")
                .bind(id.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        let deleted = sqlx::query("DELETE FROM jit_groups WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected()
            == 1;
        tx.commit().await.map_err(store_error)?;
        if !deleted {
            return Ok(None);
        }
        members
            .iter()
            .map(|m| parse_uuid(m))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn groups_of(&self, user_id: Uuid) -> Result<Vec<Group>, StoreError> {
        let rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE g.id IN \
             (SELECT group_id FROM jit_group_members WHERE user_id = ?) ORDER BY g.id"
        )))
        .bind(user_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(GroupRow::into_group).collect()
    }

    async fn identities(&self, user_id: Uuid) -> Result<Vec<Identity>, StoreError> {
        let rows: Vec<IdentityRow> = sqlx::query_as(concat!(
            "SELECT issuer, subject, user_id, created_at, last_login_at, claims_fingerprint ",
            "FROM jit_identities WHERE user_id = ? ORDER BY issuer, subject"
        ))
        .bind(user_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter()
            .map(|row| {
                Ok(Identity {
                    key: IdentityKey::new(row.issuer, row.subject),
                    user_id: parse_uuid(&row.user_id)?,
                    created_at: row.created_at,
                    last_login_at: row.last_login_at,
                    claims_fingerprint: row.claims_fingerprint,
                })
            })
            .collect()
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(SELECT_USER)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.map(UserRow::into_user).transpose()
    }

    async fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> Result<User, StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<UserRow> = sqlx::query_as(SELECT_USER)
            .bind(user_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut user = row.ok_or(StoreError::NotFound)?.into_user()?;
        if expected_version.is_some_and(|v| v != user.version) {
            return Err(StoreError::Conflict);
        }
        let read_version = user.version;
        user.apply(update, crate::user::now());
        if !write_user(&mut tx, &user, false, read_version).await? {
            return Err(StoreError::Conflict);
        }
        let event = audit.map(|event| event.user(user_id));
        if let Some(event) = &event {
            self.persist(&mut tx, event).await?;
        }
        tx.commit().await.map_err(store_error)?;
        if let Some(event) = &event {
            self.emit_committed(event);
        }
        self.feed.publish(StoreEvent::Changed {
            user_id,
            version: user.version,
        });
        Ok(user)
    }

    async fn record_login(
        &self,
        key: &IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let user_id: Option<String> = sqlx::query_scalar(concat!(
            "UPDATE jit_identities SET last_login_at = ?, ",
            "claims_fingerprint = COALESCE(?, claims_fingerprint), updated_at = ? ",
            "WHERE issuer = ? AND subject = ? RETURNING user_id"
        ))
        .bind(at)
        .bind(fingerprint)
        .bind(at)
        .bind(key.issuer())
        .bind(key.subject())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let user_id = user_id.ok_or(StoreError::NotFound)?;
        sqlx::query("UPDATE jit_users SET last_login_at = ? WHERE id = ?")
            .bind(at)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn delete_user(&self, user_id: Uuid, audit: AuditEvent) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let id = user_id.to_string();
        sqlx::query(concat!(
            "INSERT OR IGNORE INTO jit_identity_tombstones (issuer, subject, user_id, deleted_at) ",
            "SELECT issuer, subject, user_id, ? FROM jit_identities WHERE user_id = ?"
        ))
        .bind(crate::user::now())
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let deleted = sqlx::query("DELETE FROM jit_users WHERE id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected()
            == 1;
        if !deleted {
            return Ok(false);
        }
        let event = audit.user(user_id);
        self.persist(&mut tx, &event).await?;
        tx.commit().await.map_err(store_error)?;
        self.emit_committed(&event);
        self.feed.publish(StoreEvent::Deleted { user_id });
        Ok(true)
    }

    async fn record_audit(&self, event: AuditEvent) {
        // Anyone can send a bad token: persisting those refusals would let anyone make the
        // database write. They go to `tracing` and the sinks only.
        if self.persist_audit && event.kind != AuditKind::TokenRejected {
            let persisted = async {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                self.persist(&mut tx, &event).await?;
                tx.commit().await.map_err(store_error)
            }
            .await;
            if let Err(error) = persisted {
                tracing::warn!(
                    target: "tower_jit_provisioning::store",
                    error = %crate::error::ErrorChain(&error),
                    kind = event.kind.as_str(),
                    "audit event not persisted"
                );
            }
        }
        self.audit.emit(&event);
    }

    fn changes(&self) -> &ChangeFeed {
        &self.feed
    }
}
