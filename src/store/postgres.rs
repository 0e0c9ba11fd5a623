//! [`PostgresStore`]: users in PostgreSQL, shared by any number of application servers.
//!
//! # Concurrency across processes
//!
//! - Creating and linking are an insert-or-get on the `(issuer, subject)` primary key:
//!   `INSERT … ON CONFLICT DO NOTHING` inside the transaction that inserted the user. A
//!   transaction that loses the race rolls back (its user row with it) and returns the winner's
//!   user, so concurrent first logins on any number of servers end with one user and one
//!   identity.
//! - First sign-ins arriving together are created by one statement and one commit (group
//!   commit), the identity claimed with `ON CONFLICT DO NOTHING` before the user is written;
//!   a batch that meets a value taken in a race is written again one creation at a time.
//! - Updates lock the user's row (`SELECT … FOR UPDATE`) and check the version the caller read;
//!   a write based on a stale read fails with [`StoreError::Conflict`] instead of overwriting a
//!   concurrent change, and the caller reads again. No update is lost.
//!
//! # Change broadcast
//!
//! Every write sends `NOTIFY jit_user_changes, '<user id>:<version>'` (or `…:deleted`) in its
//! transaction, so it is delivered exactly when the write commits. Each store runs a listener on
//! its own connection and republishes what it hears on its [`ChangeFeed`]: a deactivation through
//! any server drops the user from every server's caches. When the listener's connection is lost
//! (a database restart, a network cut) it reconnects with backoff and then publishes
//! [`StoreEvent::Reset`], because notifications sent meanwhile are lost; the cache time-to-live
//! stays the backstop.
//!
//! # Faults
//!
//! Acquiring a connection waits at most the pool's acquire timeout (5 s by default), statements at
//! most the statement timeout (10 s): an exhausted pool or a stuck database is a
//! [`StoreError::Unavailable`] (503), never a hang. A connection lost mid-transaction rolls the
//! transaction back on the server: nothing is half-written.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{FromRow, Postgres, Row, Transaction};
use uuid::Uuid;

use super::batch::{Created, Creation, CreationResult, Creations, GroupCommit, announce};
use super::sql::{self, json};
use super::{ChangeFeed, Resolved, StoreError, StoreEvent, UserStore};
use crate::audit::{Actor, Audit, AuditEvent, AuditKind};
use crate::error::ErrorChain;
use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, RoleGrant, User, UserUpdate,
};

/// The channel changes are broadcast on.
const CHANNEL: &str = "jit_user_changes";

/// A [`UserStore`] on PostgreSQL. Cheap to clone: clones share one pool and one listener. The
/// listener stops when the last clone is dropped.
///
/// ```no_run
/// use tower_jit_provisioning::store::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_jit_provisioning::store::StoreError> {
/// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    feed: ChangeFeed,
    audit: Audit,
    persist_audit: bool,
    listener: tokio::task::AbortHandle,
    listening: Arc<AtomicBool>,
    /// First sign-ins, written in batches; started on first use with the settings then in
    /// force.
    creations: OnceLock<Creations>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects to `url` with a pool of 2 to 10 connections (kept warm: opening one costs a
    /// server process), a 5 s acquire timeout and a 10 s statement timeout, and starts the
    /// change listener.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for a malformed URL. The database need not be reachable yet:
    /// connections are opened on demand, and operations fail with
    /// [`StoreError::Unavailable`] until it is.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| StoreError::Backend(Box::new(err)))?
            .options([("statement_timeout", "10s")]);
        let pool = PgPoolOptions::new()
            .min_connections(2)
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Self::from_pool(pool))
    }

    /// A store on an existing pool (its acquire timeout bounds every wait for a connection),
    /// with a change listener on one extra connection made with the same options.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime: the listener is a task.
    pub fn from_pool(pool: PgPool) -> Self {
        let feed = ChangeFeed::new();
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with((*pool.connect_options()).clone());
        let listening = Arc::new(AtomicBool::new(false));
        let listener = tokio::spawn(listen(listener_pool, feed.clone(), Arc::clone(&listening)))
            .abort_handle();
        Self {
            inner: Arc::new(Inner {
                pool,
                feed,
                audit: Audit::new(),
                persist_audit: true,
                listener,
                listening,
                creations: OnceLock::new(),
            }),
        }
    }

    /// Whether the change listener is subscribed now: changes made through other servers reach
    /// this one's caches at once. While it is not (at start, or after a lost connection), they
    /// reach it when it resubscribes (which drops everything cached) or when the cache
    /// time-to-live runs out. For readiness checks.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// Sends audit events to `audit`'s sinks as well as to `tracing`. Call before cloning.
    #[must_use]
    pub fn with_audit(self, audit: Audit) -> Self {
        self.map_inner(|inner| inner.audit = audit)
    }

    /// Whether audit events are persisted in `jit_audit_events` (default: yes). `token_rejected`
    /// events never are: anyone can cause them. Call before cloning.
    #[must_use]
    pub fn persist_audit(self, persist: bool) -> Self {
        self.map_inner(|inner| inner.persist_audit = persist)
    }

    fn map_inner(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => change(inner),
            None => tracing::warn!(
                target: "tower_jit_provisioning::store",
                "PostgresStore settings changed after cloning are ignored"
            ),
        }
        self
    }

    /// Applies the embedded migrations (`migrations/postgres/`), under sqlx's advisory lock, so
    /// servers starting together migrate once.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a migration fails or the database holds migrations this
    /// version does not know; [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("migrations/postgres");
        migrator.dangerous_set_table_name(sql::MIGRATIONS_TABLE);
        migrator
            .run(&self.inner.pool)
            .await
            .map_err(|err| match err {
                sqlx::migrate::MigrateError::Execute(err) => store_error(err),
                other => StoreError::Backend(Box::new(other)),
            })
    }

    /// The connection pool, for the application's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Closes the pool; every later operation fails with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// The persisted audit events, oldest first; only those of `user_id` when given.
    ///
    /// # Errors
    ///
    /// As for any read.
    pub async fn audit_events(&self, user_id: Option<Uuid>) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(concat!(
            "SELECT at, kind, actor, issuer, subject, user_id, reason, fields ",
            "FROM jit_audit_events WHERE ($1::uuid IS NULL OR user_id = $1) ORDER BY id"
        ))
        .bind(user_id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.inner.pool.begin().await.map_err(store_error)
    }

    async fn persist(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        persist_event(tx, event, self.inner.persist_audit).await
    }

    fn creations(&self) -> &Creations {
        self.inner.creations.get_or_init(|| {
            let writer = CreationWriter {
                pool: self.inner.pool.clone(),
                feed: self.inner.feed.clone(),
                audit: self.inner.audit.clone(),
                persist_audit: self.inner.persist_audit,
            };
            GroupCommit::new(MAX_CREATION_BATCH, move |jobs| {
                let writer = writer.clone();
                async move { writer.create_all(jobs).await }
            })
        })
    }

    /// Queues the change broadcast; PostgreSQL delivers it when the transaction commits.
    async fn notify(
        tx: &mut Transaction<'static, Postgres>,
        user_id: Uuid,
        change: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{user_id}:{change}"))
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn find_in(
        tx: &mut Transaction<'static, Postgres>,
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

    /// The identity's owner if it has one, an error if it was deleted, `None` if it is free.
    async fn taken(
        tx: &mut Transaction<'static, Postgres>,
        key: &IdentityKey,
    ) -> Result<Option<Resolved>, StoreError> {
        if let Some((user, identity)) = Self::find_in(tx, key).await? {
            return Ok(Some(Resolved {
                user,
                identity,
                written: false,
            }));
        }
        let tombstoned: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM jit_identity_tombstones WHERE issuer = $1 AND subject = $2",
        )
        .bind(key.issuer())
        .bind(key.subject())
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
        if tombstoned.is_some() {
            return Err(StoreError::IdentityDeleted);
        }
        Ok(None)
    }

    /// Inserts the identity unless another transaction did first; `false` when it lost.
    async fn claim_identity(
        tx: &mut Transaction<'static, Postgres>,
        key: &IdentityKey,
        user_id: Uuid,
        fingerprint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted: Option<Uuid> = sqlx::query_scalar(concat!(
            "INSERT INTO jit_identities (issuer, subject, user_id, claims_fingerprint, ",
            "created_at, updated_at, last_login_at) VALUES ($1, $2, $3, $4, $5, $5, $5) ",
            "ON CONFLICT (issuer, subject) DO NOTHING RETURNING user_id"
        ))
        .bind(key.issuer())
        .bind(key.subject())
        .bind(user_id)
        .bind(fingerprint)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(inserted.is_some())
    }

    /// After losing an insert race: the winner's user, read outside the rolled-back transaction.
    async fn winner(&self, key: &IdentityKey) -> Result<Resolved, StoreError> {
        let (user, identity) = self
            .find_by_identity(key)
            .await?
            .ok_or(StoreError::Conflict)?;
        Ok(Resolved {
            user,
            identity,
            written: false,
        })
    }
}

async fn persist_event(
    tx: &mut Transaction<'static, Postgres>,
    event: &AuditEvent,
    persist: bool,
) -> Result<(), StoreError> {
    if !persist {
        return Ok(());
    }
    sqlx::query(concat!(
        "INSERT INTO jit_audit_events (at, kind, actor, issuer, subject, user_id, reason, fields) ",
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(event.at)
    .bind(event.kind.as_str())
    .bind(Json(&event.actor))
    .bind(event.issuer.as_deref())
    .bind(event.subject.as_deref())
    .bind(event.user_id)
    .bind(event.reason.as_deref())
    .bind(Json(&event.fields))
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// The most first sign-ins written by one statement.
const MAX_CREATION_BATCH: usize = 64;

/// What the creation writer needs of its store (not the store itself, which owns the writer).
#[derive(Clone)]
struct CreationWriter {
    pool: PgPool,
    feed: ChangeFeed,
    audit: Audit,
    persist_audit: bool,
}

/// Every creation of a batch in one statement, so one round trip and one commit (one flush of
/// the log to disk) serve them all. Each creation's identity is claimed with `ON CONFLICT DO
/// NOTHING` (a concurrent claim by another server waits, then loses) in (issuer, subject) order,
/// so that the batches of several servers claiming the same people queue behind each other
/// instead of deadlocking; its user and audit event are written only if the claim held, its
/// change broadcast; one row per creation says what happened. Values taken per the statement's snapshot are skipped rather than tried; one
/// taken in a race makes the statement fail, and the creations are then written one by one.
const CREATE_BATCH: &str = r"
WITH job AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
        $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
        $19::text[], $20::timestamptz[], $21::timestamptz[], $22::text[], $23::text[],
        $24::text[], $25::text[])
    WITH ORDINALITY AS j(id, issuer, subject, fingerprint, email, email_verified, user_name,
        display_name, given_name, family_name, picture, locale, roles, groups, attributes,
        status, external_id, scim_attributes, scim_managed, now, audit_at, audit_kind, audit_actor,
        audit_reason, audit_fields, n)
), checked AS (
    SELECT job.*,
        EXISTS (SELECT 1 FROM jit_identity_tombstones t
                WHERE t.issuer = job.issuer AND t.subject = job.subject) AS tombstoned,
        EXISTS (SELECT 1 FROM jit_identities i
                WHERE i.issuer = job.issuer AND i.subject = job.subject) AS taken,
        job.user_name IS NOT NULL AND EXISTS (SELECT 1 FROM jit_users u
                WHERE lower(u.user_name) = lower(job.user_name)) AS user_name_taken,
        job.external_id IS NOT NULL AND EXISTS (SELECT 1 FROM jit_users u
                WHERE u.external_id = job.external_id) AS external_id_taken
    FROM job
), claimed AS (
    INSERT INTO jit_identities (issuer, subject, user_id, claims_fingerprint, created_at,
        updated_at, last_login_at)
    SELECT issuer, subject, id, fingerprint, now, now, now FROM checked
    WHERE NOT (tombstoned OR taken OR user_name_taken OR external_id_taken)
    ORDER BY issuer, subject
    ON CONFLICT (issuer, subject) DO NOTHING
    RETURNING user_id
), users AS (
    INSERT INTO jit_users (id, email, email_verified, user_name, display_name, given_name,
        family_name, picture, locale, roles, groups, attributes, status, external_id,
        scim_attributes, scim_managed, version, created_at, updated_at, last_login_at)
    SELECT c.id, email, email_verified, user_name, display_name, given_name, family_name,
        picture, locale, roles::jsonb, groups::jsonb, attributes::jsonb, status, external_id,
        scim_attributes::jsonb, scim_managed::jsonb, 1, now, now, now
    FROM checked c JOIN claimed ON claimed.user_id = c.id
    RETURNING id
), audit AS (
    INSERT INTO jit_audit_events (at, kind, actor, issuer, subject, user_id, reason, fields)
    SELECT audit_at, audit_kind, audit_actor::jsonb, issuer, subject, c.id, audit_reason,
        audit_fields::jsonb
    FROM checked c JOIN users ON users.id = c.id
    WHERE $26
)
SELECT users.id IS NOT NULL AS written, tombstoned, taken, user_name_taken, external_id_taken,
    CASE WHEN users.id IS NOT NULL THEN pg_notify($27, c.id::text || ':1') END
FROM checked c LEFT JOIN users ON users.id = c.id
ORDER BY c.n
";

impl CreationWriter {
    async fn create_all(&self, jobs: Vec<Creation>) -> Vec<CreationResult> {
        let mut outcome = self.write(&jobs).await;
        // A deadlock or serialization failure with another writer is resolved by the database
        // aborting one side; the aborted batch wrote nothing and goes again.
        for _ in 0..RACE_RETRIES {
            match &outcome {
                Err(err) if lost_a_race(err) => outcome = self.write(&jobs).await,
                _ => break,
            }
        }
        let results = match outcome {
            Ok(created) => created.into_iter().map(Ok).collect(),
            Err(err) if sql::passes(&err, transient_code) => {
                sql::shared_unavailable(err, jobs.len())
            }
            // The statement wrote nothing (a value was taken in a race): each on its own, so
            // that each gets its own answer.
            Err(_) => {
                let mut results = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    results.push(self.write_one(job).await);
                }
                results
            }
        };
        announce(jobs, results, &self.audit, &self.feed)
    }

    async fn write(&self, jobs: &[Creation]) -> Result<Vec<Created>, sqlx::Error> {
        fn column<T>(jobs: &[Creation], value: impl Fn(&Creation) -> T) -> Vec<T> {
            jobs.iter().map(value).collect()
        }
        let rows = sqlx::query(CREATE_BATCH)
            .bind(column(jobs, |j| j.user.id))
            .bind(column(jobs, |j| j.key.issuer().to_owned()))
            .bind(column(jobs, |j| j.key.subject().to_owned()))
            .bind(column(jobs, |j| j.fingerprint.clone()))
            .bind(column(jobs, |j| j.user.email.clone()))
            .bind(column(jobs, |j| j.user.email_verified))
            .bind(column(jobs, |j| j.user.user_name.clone()))
            .bind(column(jobs, |j| j.user.display_name.clone()))
            .bind(column(jobs, |j| j.user.given_name.clone()))
            .bind(column(jobs, |j| j.user.family_name.clone()))
            .bind(column(jobs, |j| j.user.picture.clone()))
            .bind(column(jobs, |j| j.user.locale.clone()))
            .bind(column(jobs, |j| json(&j.user.roles)))
            .bind(column(jobs, |j| json(&j.user.groups)))
            .bind(column(jobs, |j| json(&j.user.attributes)))
            .bind(column(jobs, |j| j.user.status.as_str().to_owned()))
            .bind(column(jobs, |j| j.user.external_id.clone()))
            .bind(column(jobs, |j| json(&j.user.scim_attributes)))
            .bind(column(jobs, |j| json(&j.user.scim_managed)))
            .bind(column(jobs, |j| j.user.created_at))
            .bind(column(jobs, |j| j.event.at))
            .bind(column(jobs, |j| j.event.kind.as_str().to_owned()))
            .bind(column(jobs, |j| json(&j.event.actor)))
            .bind(column(jobs, |j| j.event.reason.clone()))
            .bind(column(jobs, |j| json(&j.event.fields)))
            .bind(self.persist_audit)
            .bind(CHANNEL)
            .fetch_all(&self.pool)
            .await?;
        debug_assert_eq!(rows.len(), jobs.len(), "one outcome row per creation");
        rows.iter()
            .map(|row| {
                Ok(if row.try_get("written")? {
                    Created::Written
                } else if row.try_get("tombstoned")? {
                    Created::Deleted
                } else if row.try_get("taken")? {
                    Created::Taken
                } else if row.try_get("user_name_taken")? {
                    Created::Duplicate("user_name")
                } else if row.try_get("external_id_taken")? {
                    Created::Duplicate("external_id")
                } else {
                    // Claimed by a concurrent transaction after this statement's snapshot.
                    Created::Taken
                })
            })
            .collect()
    }

    /// One creation in a transaction of its own, statement by statement: the answer for a
    /// creation whose batch failed.
    async fn write_one(&self, job: &Creation) -> Result<Created, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        match PostgresStore::taken(&mut tx, &job.key).await {
            Ok(Some(_)) => return Ok(Created::Taken),
            Err(StoreError::IdentityDeleted) => return Ok(Created::Deleted),
            Err(other) => return Err(other),
            Ok(None) => {}
        }
        match write_user(&mut tx, &job.user, true, 0).await {
            Err(StoreError::Duplicate(column)) => return Ok(Created::Duplicate(column)),
            other => other?,
        };
        let now = job.user.created_at;
        if !PostgresStore::claim_identity(
            &mut tx,
            &job.key,
            job.user.id,
            job.fingerprint.as_deref(),
            now,
        )
        .await?
        {
            // Claimed by another server meanwhile: our user row goes with the rollback.
            return Ok(Created::Taken);
        }
        persist_event(&mut tx, &job.event, self.persist_audit).await?;
        PostgresStore::notify(&mut tx, job.user.id, &job.user.version.to_string()).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(Created::Written)
    }
}

/// Listens for change notifications and republishes them, reconnecting with backoff.
async fn listen(pool: PgPool, feed: ChangeFeed, listening: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::debug!(
                    target: "tower_jit_provisioning::store",
                    error = %ErrorChain(&error),
                    "change listener cannot connect; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::debug!(
                target: "tower_jit_provisioning::store",
                error = %ErrorChain(&error),
                "change listener cannot subscribe; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        // Whatever was broadcast while no listener was subscribed is lost: start clean.
        feed.publish(StoreEvent::Reset);
        listening.store(true, Ordering::Release);
        backoff = Duration::from_millis(100);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(event) = parse_change(notification.payload()) {
                        feed.publish(event);
                    }
                }
                // Lost and already reconnected: notifications may have been missed.
                Ok(None) => feed.publish(StoreEvent::Reset),
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    listening.store(false, Ordering::Release);
                    tracing::warn!(
                        target: "tower_jit_provisioning::store",
                        error = %ErrorChain(&error),
                        "change listener lost its connection; reconnecting"
                    );
                    break;
                }
            }
        }
    }
}

fn parse_change(payload: &str) -> Option<StoreEvent> {
    let (user_id, change) = payload.split_once(':')?;
    let user_id = Uuid::parse_str(user_id).ok()?;
    if change == "deleted" {
        return Some(StoreEvent::Deleted { user_id });
    }
    let version = change.parse().ok()?;
    Some(StoreEvent::Changed { user_id, version })
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("connections", &self.inner.pool.size())
            .field("persist_audit", &self.inner.persist_audit)
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
    "WHERE i.issuer = $1 AND i.subject = $2"
);

#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    email: Option<String>,
    email_verified: bool,
    user_name: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    picture: Option<String>,
    locale: Option<String>,
    roles: Json<Vec<RoleGrant>>,
    groups: Json<Vec<String>>,
    attributes: Json<Map<String, Value>>,
    status: String,
    external_id: Option<String>,
    scim_attributes: Json<Map<String, Value>>,
    scim_managed: Json<Vec<String>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        Ok(User {
            id: self.id,
            email: self.email,
            email_verified: self.email_verified,
            user_name: self.user_name,
            display_name: self.display_name,
            given_name: self.given_name,
            family_name: self.family_name,
            picture: self.picture,
            locale: self.locale,
            roles: self.roles.0,
            groups: self.groups.0,
            attributes: self.attributes.0,
            status: sql::status(&self.status)?,
            external_id: self.external_id,
            scim_attributes: self.scim_attributes.0,
            scim_managed: self.scim_managed.0,
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

/// `(issuer, subject, created_at, last_login_at, claims_fingerprint)`.
type IdentityRow = (
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);

#[derive(FromRow)]
struct AuditRow {
    at: DateTime<Utc>,
    kind: String,
    actor: Json<Actor>,
    issuer: Option<String>,
    subject: Option<String>,
    user_id: Option<Uuid>,
    reason: Option<String>,
    fields: Json<Vec<String>>,
}

impl AuditRow {
    fn into_event(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            at: self.at,
            kind: sql::audit_kind(&self.kind)?,
            actor: self.actor.0,
            issuer: self.issuer,
            subject: self.subject,
            user_id: self.user_id,
            reason: self.reason,
            fields: self.fields.0,
        })
    }
}

/// How often a batch aborted by a deadlock or serialization failure is tried again before its
/// creations are answered 503.
const RACE_RETRIES: usize = 3;

/// Whether the database aborted the statement to break a deadlock or a serialization conflict
/// with a concurrent transaction: retrying it is safe and will usually succeed.
fn lost_a_race(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|code| is_race_code(&code)))
}

/// Serialization failure and deadlock: the database aborted one side of a race.
fn is_race_code(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

/// Sorts sqlx errors into "try again later" (503) and "broken" (500).
fn store_error(err: sqlx::Error) -> StoreError {
    sql::classify(err, transient_code)
}

/// SQLSTATE classes and codes that pass: connection exceptions (08), insufficient resources
/// (53), operator intervention such as a shutdown or a cancelled statement (57), and
/// serialization failures, deadlocks and lock timeouts.
fn transient_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || is_race_code(code)
        || code == "55P03"
}

async fn write_user(
    tx: &mut Transaction<'static, Postgres>,
    user: &User,
    insert: bool,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let query = if insert {
        concat!(
            "INSERT INTO jit_users (email, email_verified, user_name, display_name, given_name, ",
            "family_name, picture, locale, roles, groups, attributes, status, external_id, ",
            "scim_attributes, scim_managed, version, created_at, updated_at, last_login_at, id) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, ",
            "$18, $19, $20)"
        )
    } else {
        concat!(
            "UPDATE jit_users SET email = $1, email_verified = $2, user_name = $3, ",
            "display_name = $4, given_name = $5, family_name = $6, picture = $7, locale = $8, ",
            "roles = $9, groups = $10, attributes = $11, status = $12, external_id = $13, ",
            "scim_attributes = $14, scim_managed = $15, version = $16, created_at = $17, ",
            "updated_at = $18, last_login_at = $19 WHERE id = $20 AND version = $21"
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
        .bind(Json(&user.roles))
        .bind(Json(&user.groups))
        .bind(Json(&user.attributes))
        .bind(user.status.as_str())
        .bind(user.external_id.as_deref())
        .bind(Json(&user.scim_attributes))
        .bind(Json(&user.scim_managed))
        .bind(user.version)
        .bind(user.created_at)
        .bind(user.updated_at)
        .bind(user.last_login_at)
        .bind(user.id)
        .bind(expected_version)
        .execute(&mut **tx)
        .await;
    match result {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(err) => Err(unique_or(
            err,
            &[
                ("jit_users_user_name", "user_name"),
                ("jit_users_external_id", "external_id"),
            ],
        )),
    }
}

/// A unique violation as [`StoreError::Duplicate`] naming the column, else a store error.
fn unique_or(err: sqlx::Error, constraints: &[(&str, &'static str)]) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
        && let Some(constraint) = db.constraint()
        && let Some((_, name)) = constraints.iter().find(|(c, _)| *c == constraint)
    {
        return StoreError::Duplicate(name);
    }
    store_error(err)
}

const GROUP_COLUMNS: &str = concat!(
    "g.id, g.display_name, g.external_id, g.scim_attributes, g.version, g.created_at, ",
    "g.updated_at, COALESCE((SELECT json_agg(m.user_id ORDER BY m.user_id) FROM ",
    "jit_group_members m WHERE m.group_id = g.id), '[]'::json) AS members"
);

#[derive(FromRow)]
struct GroupRow {
    id: Uuid,
    display_name: String,
    external_id: Option<String>,
    scim_attributes: Json<Map<String, Value>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    members: Json<Vec<Uuid>>,
}

impl GroupRow {
    fn into_group(self) -> Group {
        Group {
            id: self.id,
            display_name: self.display_name,
            external_id: self.external_id,
            members: self.members.0,
            scim_attributes: self.scim_attributes.0,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

async fn write_group(
    tx: &mut Transaction<'static, Postgres>,
    group: &Group,
    insert: bool,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let query = if insert {
        concat!(
            "INSERT INTO jit_groups (display_name, external_id, scim_attributes, version, ",
            "created_at, updated_at, id) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
    } else {
        concat!(
            "UPDATE jit_groups SET display_name = $1, external_id = $2, scim_attributes = $3, ",
            "version = $4, created_at = $5, updated_at = $6 WHERE id = $7 AND version = $8"
        )
    };
    let done = sqlx::query(query)
        .bind(&group.display_name)
        .bind(group.external_id.as_deref())
        .bind(Json(&group.scim_attributes))
        .bind(group.version)
        .bind(group.created_at)
        .bind(group.updated_at)
        .bind(group.id)
        .bind(expected_version)
        .execute(&mut **tx)
        .await
        .map_err(|err| {
            unique_or(
                err,
                &[
                    ("jit_groups_display_name", "display_name"),
                    ("jit_groups_external_id", "external_id"),
                ],
            )
        })?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM jit_group_members WHERE group_id = $1")
        .bind(group.id)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    sqlx::query(concat!(
        "INSERT INTO jit_group_members (group_id, user_id, created_at) ",
        "SELECT $1, member, $3 FROM unnest($2::uuid[]) AS member"
    ))
    .bind(group.id)
    .bind(&group.members)
    .bind(group.updated_at)
    .execute(&mut **tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => store_error(err),
    })?;
    Ok(true)
}

impl UserStore for PostgresStore {
    async fn find_by_identity(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        let row: Option<IdentityUserRow> = sqlx::query_as(FIND_BY_IDENTITY)
            .bind(key.issuer())
            .bind(key.subject())
            .fetch_optional(&self.inner.pool)
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
            .create(
                self.creations(),
                |key| async move { self.winner(&key).await },
            )
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
        // The row lock keeps the user from being deleted under the link, and serializes links
        // to it.
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.id = $1 FOR UPDATE"
        ))
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut user = row.ok_or(StoreError::NotFound)?.into_user()?;
        // Links to one user queue on its row lock, so this sees any link committed before.
        let linked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jit_identities WHERE user_id = $1 AND issuer = $2)",
        )
        .bind(user_id)
        .bind(key.issuer())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if linked {
            return Err(StoreError::IssuerAlreadyLinked);
        }
        let now = crate::user::now();
        if !Self::claim_identity(&mut tx, key, user_id, fingerprint, now).await? {
            tx.rollback().await.map_err(store_error)?;
            return self.winner(key).await;
        }
        sqlx::query("UPDATE jit_users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        user.last_login_at = Some(now);
        let event = audit.identity(key).user(user_id);
        self.persist(&mut tx, &event).await?;
        tx.commit().await.map_err(store_error)?;
        self.inner.audit.emit(&event);
        Ok(Resolved {
            user,
            identity: Identity {
                key: key.clone(),
                user_id,
                created_at: now,
                last_login_at: Some(now),
                claims_fingerprint: fingerprint.map(str::to_owned),
            },
            written: true,
        })
    }

    async fn find_by_external_id(&self, external_id: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.external_id = $1"
        ))
        .bind(external_id)
        .fetch_optional(&self.inner.pool)
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
            " FROM jit_users u WHERE lower(u.email) = lower($1) AND u.email_verified ",
            "ORDER BY u.id LIMIT $2"
        ))
        .bind(email)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    async fn find_by_user_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE lower(u.user_name) = lower($1)"
        ))
        .bind(user_name)
        .fetch_optional(&self.inner.pool)
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
        Self::notify(&mut tx, user.id, &user.version.to_string()).await?;
        tx.commit().await.map_err(store_error)?;
        self.inner.audit.emit(&event);
        self.inner.feed.publish(StoreEvent::Changed {
            user_id: user.id,
            version: user.version,
        });
        Ok(user)
    }

    async fn list_users(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<User>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE ($1::uuid IS NULL OR u.id > $1) ORDER BY u.id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
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
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE g.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(row.map(GroupRow::into_group))
    }

    async fn list_groups(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Group>, StoreError> {
        let rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE ($1::uuid IS NULL OR g.id > $1) \
             ORDER BY g.id LIMIT $2"
        )))
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(rows.into_iter().map(GroupRow::into_group).collect())
    }

    async fn update_group(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        update: GroupUpdate,
    ) -> Result<(Group, Vec<Uuid>), StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE g.id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut group = row.ok_or(StoreError::NotFound)?.into_group();
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
        let members: Vec<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM jit_group_members WHERE group_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        let deleted = sqlx::query("DELETE FROM jit_groups WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected()
            == 1;
        tx.commit().await.map_err(store_error)?;
        Ok(deleted.then_some(members))
    }

    async fn groups_of(&self, user_id: Uuid) -> Result<Vec<Group>, StoreError> {
        let rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM jit_groups g WHERE g.id IN \
             (SELECT group_id FROM jit_group_members WHERE user_id = $1) ORDER BY g.id"
        )))
        .bind(user_id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(rows.into_iter().map(GroupRow::into_group).collect())
    }

    async fn identities(&self, user_id: Uuid) -> Result<Vec<Identity>, StoreError> {
        let rows: Vec<IdentityRow> = sqlx::query_as(concat!(
            "SELECT issuer, subject, created_at, last_login_at, claims_fingerprint ",
            "FROM jit_identities WHERE user_id = $1 ORDER BY issuer, subject"
        ))
        .bind(user_id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(
                |(issuer, subject, created_at, last_login_at, claims_fingerprint)| Identity {
                    key: IdentityKey::new(issuer, subject),
                    user_id,
                    created_at,
                    last_login_at,
                    claims_fingerprint,
                },
            )
            .collect())
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.inner.pool)
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
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM jit_users u WHERE u.id = $1 FOR UPDATE"
        ))
        .bind(user_id)
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
        Self::notify(&mut tx, user_id, &user.version.to_string()).await?;
        tx.commit().await.map_err(store_error)?;
        if let Some(event) = &event {
            self.inner.audit.emit(event);
        }
        self.inner.feed.publish(StoreEvent::Changed {
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
        let updated: Option<Uuid> = sqlx::query_scalar(concat!(
            "WITH identity AS (UPDATE jit_identities SET last_login_at = $1, ",
            "claims_fingerprint = COALESCE($2, claims_fingerprint), updated_at = $1 ",
            "WHERE issuer = $3 AND subject = $4 RETURNING user_id) ",
            "UPDATE jit_users SET last_login_at = $1 FROM identity ",
            "WHERE jit_users.id = identity.user_id RETURNING jit_users.id"
        ))
        .bind(at)
        .bind(fingerprint)
        .bind(key.issuer())
        .bind(key.subject())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        updated.map(drop).ok_or(StoreError::NotFound)
    }

    async fn delete_user(&self, user_id: Uuid, audit: AuditEvent) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO jit_identity_tombstones (issuer, subject, user_id, deleted_at) ",
            "SELECT issuer, subject, user_id, $2 FROM jit_identities WHERE user_id = $1 ",
            "ON CONFLICT DO NOTHING"
        ))
        .bind(user_id)
        .bind(crate::user::now())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let deleted = sqlx::query("DELETE FROM jit_users WHERE id = $1")
            .bind(user_id)
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
        Self::notify(&mut tx, user_id, "deleted").await?;
        tx.commit().await.map_err(store_error)?;
        self.inner.audit.emit(&event);
        self.inner.feed.publish(StoreEvent::Deleted { user_id });
        Ok(true)
    }

    async fn record_audit(&self, event: AuditEvent) {
        if self.inner.persist_audit && event.kind != AuditKind::TokenRejected {
            let persisted = async {
                let mut tx = self.begin().await?;
                self.persist(&mut tx, &event).await?;
                tx.commit().await.map_err(store_error)
            }
            .await;
            if let Err(error) = persisted {
                tracing::warn!(
                    target: "tower_jit_provisioning::store",
                    error = %ErrorChain(&error),
                    kind = event.kind.as_str(),
                    "audit event not persisted"
                );
            }
        }
        self.inner.audit.emit(&event);
    }

    fn changes(&self) -> &ChangeFeed {
        &self.inner.feed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_payloads() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse_change(&format!("{id}:7")),
            Some(StoreEvent::Changed {
                user_id: id,
                version: 7
            })
        );
        assert_eq!(
            parse_change(&format!("{id}:deleted")),
            Some(StoreEvent::Deleted { user_id: id })
        );
        assert_eq!(parse_change("nonsense"), None);
        assert_eq!(parse_change(&format!("{id}:x")), None);
    }
}
