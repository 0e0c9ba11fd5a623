//! [`SqliteStore`]: users in an SQLite file (or in memory), through `sqlx`.
//!
//! - WAL journal, `synchronous = NORMAL`, foreign keys on, a 5 s busy timeout.
//! - Writes run in `BEGIN IMMEDIATE` transactions: the write lock is taken before the first
//!   read, so "look up, then insert" cannot interleave with another writer, in this process or
//!   any other on the same file. The unique `(issuer, subject)` key backs that up.
//! - Audit events are persisted in the transaction of the write they describe.
//! - Writes of this process take turns on an async lock and (with [`SqliteStore::connect`]) one
//!   connection of their own, instead of meeting on SQLite's sleeping busy handler.
//! - First sign-ins arriving together are written in one transaction (group commit): one
//!   round trip to the connection's thread and one commit for the lot.
//! - With [`SqliteStore::connect`], WAL checkpoints (which sync the files to disk) run in a
//!   background task shortly after writes, never on a request's path.
//! - Migrations are embedded, applied by [`SqliteStore::migrate`], and tracked in their own table,
//!   `_jit_provisioning_migrations`, so they never collide with the application's own sqlx
//!   migrations in the same database.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, Row, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use uuid::Uuid;

use super::batch::{Created, Creation, CreationResult, Creations, GroupCommit, announce};
use super::sql::{self, json};
use super::{ChangeFeed, Resolved, StoreError, StoreEvent, UserStore};
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
    /// Reads, and the application's own queries.
    pool: SqlitePool,
    /// Writes. [`SqliteStore::connect`] gives them a connection of their own: a connection's
    /// page cache survives its own writes but not another connection's, so a lone writer
    /// keeps its cache warm. A store made [`SqliteStore::from_pool`] writes through that pool.
    writes: SqlitePool,
    /// Taken by every write transaction of this process. SQLite admits one writer at a time
    /// and makes the others retry on a sleeping busy handler (1 ms, then longer); queueing
    /// them here instead hands the lock over the moment it is free. Other processes on the
    /// same file still meet the busy timeout.
    writer: Arc<Mutex<()>>,
    feed: ChangeFeed,
    audit: Audit,
    persist_audit: bool,
    /// First sign-ins, written in batches; started on first use with the settings then in
    /// force.
    creations: Arc<OnceLock<Creations>>,
    /// Told of every commit, when a background task checkpoints the WAL for this store.
    wrote: Option<Arc<watch::Sender<()>>>,
}

/// How long commits gather before the background checkpoint that follows them.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(100);

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
        // A checkpoint copies the WAL into the database and syncs both files to disk: on the
        // request path, one commit in a few hundred would wait for two fsyncs. They run in a
        // background task instead; durability is that of `synchronous = NORMAL` either way.
        let options = if in_memory {
            options
        } else {
            options.pragma("wal_autocheckpoint", "0")
        };
        let pool_options = |max| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(5))
                // A connection to a local file does not go stale; a ping per acquire would
                // cost a round trip to the connection's thread on every query.
                .test_before_acquire(false)
        };
        let pool = pool_options(if in_memory { 1 } else { 4 })
            .connect_with(options.clone())
            .await
            .map_err(store_error)?;
        let mut store = Self::from_pool(pool);
        if !in_memory {
            store.writes = pool_options(1).connect_lazy_with(options);
            let (wrote, commits) = watch::channel(());
            tokio::spawn(checkpoint_in_background(store.pool.clone(), commits));
            store.wrote = Some(Arc::new(wrote));
        }
        Ok(store)
    }

    /// A store on an existing pool. The pool should enable foreign keys (sqlx does by
    /// default) and WAL.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            writes: pool.clone(),
            pool,
            writer: Arc::new(Mutex::new(())),
            feed: ChangeFeed::new(),
            audit: Audit::new(),
            persist_audit: true,
            creations: Arc::new(OnceLock::new()),
            wrote: None,
        }
    }

    /// Sends audit events to `audit`'s sinks as well as to `tracing`.
    #[must_use]
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self.creations = Arc::new(OnceLock::new());
        self
    }

    /// Whether audit events are persisted in `jit_audit_events` (default: yes). `token_rejected`
    /// events never are: anyone can cause them.
    #[must_use]
    pub fn persist_audit(mut self, persist: bool) -> Self {
        self.persist_audit = persist;
        self.creations = Arc::new(OnceLock::new());
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
            .run(&self.writes)
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
        self.writes.close().await;
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

    async fn begin(&self) -> Result<WriteTx, StoreError> {
        let turn = Arc::clone(&self.writer).lock_owned().await;
        let tx = self
            .writes
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        Ok(WriteTx {
            tx,
            wrote: self.wrote.clone(),
            _turn: turn,
        })
    }

    async fn persist(&self, tx: &mut WriteTx, event: &AuditEvent) -> Result<(), StoreError> {
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
    async fn taken(tx: &mut WriteTx, key: &IdentityKey) -> Result<Option<Resolved>, StoreError> {
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
        tx: &mut WriteTx,
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

    async fn tombstoned(tx: &mut WriteTx, key: &IdentityKey) -> Result<bool, StoreError> {
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
        tx: &mut WriteTx,
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

    fn creations(&self) -> &Creations {
        self.creations.get_or_init(|| {
            let writer = CreationWriter {
                pool: self.writes.clone(),
                turn: Arc::clone(&self.writer),
                feed: self.feed.clone(),
                audit: self.audit.clone(),
                persist_audit: self.persist_audit,
                wrote: self.wrote.clone(),
            };
            GroupCommit::new(MAX_CREATION_BATCH, move |jobs| {
                let writer = writer.clone();
                async move { writer.create_all(jobs).await }
            })
        })
    }
}

/// The most first sign-ins written in one transaction (48 parameters each, far below SQLite's
/// limit of 32,766).
const MAX_CREATION_BATCH: usize = 32;

/// What the creation writer needs of its store (not the store itself, which owns the writer).
#[derive(Clone)]
struct CreationWriter {
    pool: SqlitePool,
    turn: Arc<Mutex<()>>,
    feed: ChangeFeed,
    audit: Audit,
    persist_audit: bool,
    wrote: Option<Arc<watch::Sender<()>>>,
}

impl CreationWriter {
    async fn create_all(&self, jobs: Vec<Creation>) -> Vec<CreationResult> {
        let results: Vec<Result<Created, StoreError>> = match self.write(&jobs).await {
            Ok(created) => created.into_iter().map(Ok).collect(),
            Err(err) if jobs.len() == 1 => vec![Err(store_error(err))],
            Err(err) if is_transient(&err) => sql::shared_unavailable(err, jobs.len()),
            // The batch failed as a whole and wrote nothing: each on its own, so that each
            // gets its own answer.
            Err(_) => {
                let mut results = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    results.push(match self.write(std::slice::from_ref(job)).await {
                        Ok(created) => Ok(created[0]),
                        Err(err) => Err(store_error(err)),
                    });
                }
                results
            }
        };
        announce(jobs, results, &self.audit, &self.feed)
    }

    /// Writes `jobs` in one transaction, one statement batch: a single round trip to the
    /// connection's thread and a single commit.
    async fn write(&self, jobs: &[Creation]) -> Result<Vec<Created>, sqlx::Error> {
        let _turn = self.turn.lock().await;
        let mut conn = self.pool.acquire().await?;
        let mut query = sqlx::query(AssertSqlSafe(creation_sql(jobs.len())));
        // Positional parameters, in the order the statements of `creation_sql` use them.
        for job in jobs {
            let user = &job.user;
            let event = &job.event;
            let (id, issuer, subject) = (
                user.id.to_string(),
                job.key.issuer().to_owned(),
                job.key.subject().to_owned(),
            );
            query = bind_user(query, user)
                .bind(issuer.clone())
                .bind(subject.clone())
                .bind(issuer.clone())
                .bind(subject.clone());
            query = query
                .bind(issuer.clone())
                .bind(subject.clone())
                .bind(id.clone())
                .bind(job.fingerprint.clone())
                .bind(user.created_at)
                .bind(user.created_at)
                .bind(user.created_at)
                .bind(id.clone());
            query = query
                .bind(event.at)
                .bind(event.kind.as_str())
                .bind(json(&event.actor))
                .bind(issuer.clone())
                .bind(subject.clone())
                .bind(id.clone())
                .bind(event.reason.clone())
                .bind(json(&event.fields))
                .bind(self.persist_audit)
                .bind(id.clone());
            query = query
                .bind(issuer.clone())
                .bind(subject.clone())
                .bind(issuer)
                .bind(subject)
                .bind(user.user_name.clone())
                .bind(id);
        }
        let rows = match query.fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(err) => {
                // The batch stopped at the failing statement, inside its transaction.
                if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await
                    && !rollback.to_string().contains("no transaction is active")
                {
                    // Never hand back a connection that may still be in a transaction.
                    conn.close_on_drop();
                }
                return Err(err);
            }
        };
        if let Some(wrote) = &self.wrote {
            wrote.send_replace(());
        }
        debug_assert_eq!(rows.len(), jobs.len(), "one outcome row per creation");
        jobs.iter()
            .zip(rows)
            .map(|(job, row)| {
                let owner: Option<String> = row.try_get(0)?;
                Ok(match owner {
                    Some(owner) if owner == job.user.id.to_string() => Created::Written,
                    Some(_) => Created::Taken,
                    None if row.try_get::<bool, _>(1)? => Created::Deleted,
                    None if row.try_get::<bool, _>(2)? => Created::Duplicate("user_name"),
                    None => Created::Duplicate("external_id"),
                })
            })
            .collect()
    }
}

/// `BEGIN IMMEDIATE`, then for each of `count` creations: the user (unless the identity is
/// taken or tombstoned, or a unique value is someone else's), its identity and audit event
/// (if the user went in), and a row saying what happened; then `COMMIT`. Nothing in it fails
/// on a conflict, so one creation's conflict never costs the others theirs.
///
/// Parameters are positional (sqlx numbers `?NNN` per statement, not per batch), 48 per
/// creation, bound by [`CreationWriter::write`] in this order.
fn creation_sql(count: usize) -> Arc<str> {
    const CREATION: &str = "\
        INSERT INTO jit_users (email, email_verified, user_name, display_name, given_name, \
        family_name, picture, locale, roles, groups, attributes, status, external_id, \
        scim_attributes, scim_managed, version, created_at, updated_at, last_login_at, id) \
        SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
        WHERE NOT EXISTS (SELECT 1 FROM jit_identities WHERE issuer = ? AND subject = ?) \
        AND NOT EXISTS (SELECT 1 FROM jit_identity_tombstones WHERE issuer = ? AND subject = ?) \
        ON CONFLICT DO NOTHING;
        INSERT INTO jit_identities (issuer, subject, user_id, claims_fingerprint, created_at, \
        updated_at, last_login_at) SELECT ?, ?, ?, ?, ?, ?, ? \
        WHERE EXISTS (SELECT 1 FROM jit_users WHERE id = ?);
        INSERT INTO jit_audit_events (at, kind, actor, issuer, subject, user_id, reason, fields) \
        SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE ? AND EXISTS (SELECT 1 FROM jit_users WHERE id = ?);
        SELECT (SELECT user_id FROM jit_identities WHERE issuer = ? AND subject = ?), \
        EXISTS (SELECT 1 FROM jit_identity_tombstones WHERE issuer = ? AND subject = ?), \
        EXISTS (SELECT 1 FROM jit_users WHERE user_name = ? COLLATE NOCASE AND id <> ?);
    ";
    static CACHE: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
        (1..=MAX_CREATION_BATCH)
            .map(|count| {
                let mut sql = String::from("BEGIN IMMEDIATE;\n");
                for _ in 0..count {
                    sql.push_str(CREATION);
                }
                sql.push_str("COMMIT;");
                Arc::from(sql)
            })
            .collect()
    });
    Arc::clone(&CACHE[count - 1])
}

/// A write transaction (`BEGIN IMMEDIATE`) holding this process's writer turn. Dropped
/// uncommitted, it rolls back, then gives up the turn.
struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    wrote: Option<Arc<watch::Sender<()>>>,
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(store_error)?;
        if let Some(wrote) = &self.wrote {
            wrote.send_replace(());
        }
        Ok(())
    }
}

/// Checkpoints the WAL after commits, [`CHECKPOINT_DELAY`] after the first of a run, until the
/// store is dropped. `PASSIVE`: it never waits for (nor holds up) readers or writers.
async fn checkpoint_in_background(pool: SqlitePool, mut commits: watch::Receiver<()>) {
    while commits.changed().await.is_ok() {
        tokio::time::sleep(CHECKPOINT_DELAY).await;
        // Commits from here on call for another checkpoint.
        commits.borrow_and_update();
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_optional(&pool)
            .await
        {
            tracing::debug!(
                target: "tower_jit_provisioning::store",
                error = %crate::error::ErrorChain(&error),
                "WAL checkpoint failed; the next commit retries it"
            );
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
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

/// Sorts sqlx errors into "try again later" (503) and "broken" (500).
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    sql::classify(err, transient_code)
}

fn is_transient(err: &sqlx::Error) -> bool {
    sql::passes(err, transient_code)
}

/// SQLite primary result codes (the low byte of extended codes): BUSY, LOCKED, IOERR, FULL,
/// CANTOPEN are conditions that pass.
fn transient_code(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13 | 14))
}

/// Binds a user's columns in the order `write_user` and `creation_sql` list them: the profile,
/// then the id.
fn bind_user<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    user: &User,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(user.email.clone())
        .bind(user.email_verified)
        .bind(user.user_name.clone())
        .bind(user.display_name.clone())
        .bind(user.given_name.clone())
        .bind(user.family_name.clone())
        .bind(user.picture.clone())
        .bind(user.locale.clone())
        .bind(json(&user.roles))
        .bind(json(&user.groups))
        .bind(json(&user.attributes))
        .bind(user.status.as_str())
        .bind(user.external_id.clone())
        .bind(json(&user.scim_attributes))
        .bind(json(&user.scim_managed))
        .bind(user.version)
        .bind(user.created_at)
        .bind(user.updated_at)
        .bind(user.last_login_at)
        .bind(user.id.to_string())
}

async fn write_user(
    tx: &mut WriteTx,
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
    let result = bind_user(sqlx::query(query), user)
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
    tx: &mut WriteTx,
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
        Creation::new(user, key, fingerprint, audit)
            .create(self.creations(), |key| async move {
                match self.find_by_identity(&key).await? {
                    Some((user, identity)) => Ok(Resolved {
                        user,
                        identity,
                        written: false,
                    }),
                    // Deleted between the batch and this read.
                    None => Err(StoreError::IdentityDeleted),
                }
            })
            .await
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
        // The write transaction holds SQLite's one write lock: no other link can commit
        // between this check and the insert.
        let linked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jit_identities WHERE user_id = ? AND issuer = ?)",
        )
        .bind(user_id.to_string())
        .bind(key.issuer())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if linked {
            return Err(StoreError::IssuerAlreadyLinked);
        }
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
        tx.commit().await?;
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
        tx.commit().await?;
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
        tx.commit().await?;
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
        tx.commit().await?;
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
        tx.commit().await?;
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
        tx.commit().await?;
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
        tx.commit().await
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
        tx.commit().await?;
        self.emit_committed(&event);
        self.feed.publish(StoreEvent::Deleted { user_id });
        Ok(true)
    }

    async fn record_audit(&self, event: AuditEvent) {
        // Anyone can send a bad token: persisting those refusals would let anyone make the
        // database write. They go to `tracing` and the sinks only.
        if self.persist_audit && event.kind != AuditKind::TokenRejected {
            let persisted = async {
                let mut tx = self.begin().await?;
                self.persist(&mut tx, &event).await?;
                tx.commit().await
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
