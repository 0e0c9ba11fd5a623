//! [`PostgresStore`]: users in PostgreSQL, shared by any number of application servers. The
//! PostgreSQL dialect of the [SQL core](super::sql).
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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgQueryResult, PgRow,
};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::sql::batch::{Created, Creation};
use super::sql::driver::decode;
use super::sql::queries::{Fragments, Queries};
use super::sql::{self, Dialect, Driver, SqlCore};
use super::{ChangeFeed, StoreError, StoreEvent};
use crate::error::ErrorChain;

/// The channel changes are broadcast on.
const CHANNEL: &str = "jit_user_changes";

/// A [`UserStore`](super::UserStore) on PostgreSQL. Cheap to clone: clones share one pool and
/// one listener. The listener stops when the last clone is dropped.
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
    core: SqlCore<PgDialect>,
}

/// The PostgreSQL side of the core: the pool and the change listener.
#[derive(Clone)]
pub(crate) struct PgDialect {
    pool: PgPool,
    listener: Arc<Listener>,
}

/// The change listener's task, stopped when the last store sharing it is dropped.
struct Listener {
    task: tokio::task::AbortHandle,
    listening: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
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
        let task = tokio::spawn(listen(listener_pool, feed.clone(), Arc::clone(&listening)))
            .abort_handle();
        let dialect = PgDialect {
            pool,
            listener: Arc::new(Listener { task, listening }),
        };
        Self {
            core: SqlCore::new(dialect, feed),
        }
    }

    /// Whether the change listener is subscribed now: changes made through other servers reach
    /// this one's caches at once. While it is not (at start, or after a lost connection), they
    /// reach it when it resubscribes (which drops everything cached) or when the cache
    /// time-to-live runs out. For readiness checks.
    pub fn is_listening(&self) -> bool {
        self.core
            .db
            .dialect
            .listener
            .listening
            .load(Ordering::Acquire)
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
        migrator.run(self.pool()).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(err) => store_error(err),
            other => StoreError::Backend(Box::new(other)),
        })
    }

    /// The connection pool, for the application's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.core.db.dialect.pool
    }

    /// Closes the pool; every later operation fails with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool().close().await;
    }
}

sql::sql_store!(PostgresStore);

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool().size())
            .field("persist_audit", &self.core.db.persist_audit)
            .finish_non_exhaustive()
    }
}

static FRAGMENTS: Fragments = Fragments {
    lock_row: " FOR UPDATE",
    user_name_is: "lower(u.user_name) = lower($1)",
    verified_email_is: "lower(u.email) = lower($1) AND u.email_verified",
    group_members: "COALESCE((SELECT json_agg(m.user_id ORDER BY m.user_id) \
        FROM jit_group_members m WHERE m.group_id = g.id), '[]'::json)",
    members_from_json: "SELECT $1, value::uuid, $3 FROM jsonb_array_elements_text($2)",
};

impl Dialect for PgDialect {
    type Row = PgRow;
    type Reader = PgPool;
    type Tx = Transaction<'static, Postgres>;

    const MAX_BATCH: usize = 64;

    fn queries() -> &'static Queries {
        static QUERIES: LazyLock<Queries> = LazyLock::new(|| Queries::new(&FRAGMENTS));
        &QUERIES
    }

    /// SQLSTATE classes and codes that pass: connection exceptions (08), insufficient
    /// resources (53), operator intervention such as a shutdown or a cancelled statement (57),
    /// and serialization failures, deadlocks and lock timeouts.
    fn transient(code: &str) -> bool {
        code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57")
            || is_race_code(code)
            || code == "55P03"
    }

    fn reader(&self) -> PgPool {
        self.pool.clone()
    }

    async fn begin(&self) -> Result<Self::Tx, sqlx::Error> {
        self.pool.begin().await
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.commit().await
    }

    /// One statement (see [`CREATE_BATCH`]); a batch the database aborted to break a deadlock
    /// or serialization conflict with another server's wrote nothing and goes again.
    async fn write_creations(
        &self,
        jobs: &[Creation],
        persist_audit: bool,
    ) -> Result<Vec<Created>, sqlx::Error> {
        let mut outcome = self.write_batch(jobs, persist_audit).await;
        for _ in 0..RACE_RETRIES {
            match &outcome {
                Err(err) if lost_a_race(err) => {
                    outcome = self.write_batch(jobs, persist_audit).await;
                }
                _ => break,
            }
        }
        outcome
    }

    /// `NOTIFY`, which PostgreSQL delivers when the transaction commits.
    async fn broadcast(&self, tx: &mut Self::Tx, event: StoreEvent) -> Result<(), sqlx::Error> {
        let Some(payload) = change_payload(event) else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

impl PgDialect {
    async fn write_batch(
        &self,
        jobs: &[Creation],
        persist_audit: bool,
    ) -> Result<Vec<Created>, sqlx::Error> {
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
            .bind(column(jobs, |j| json_text(&j.user.roles)))
            .bind(column(jobs, |j| json_text(&j.user.groups)))
            .bind(column(jobs, |j| json_text(&j.user.attributes)))
            .bind(column(jobs, |j| j.user.status.as_str().to_owned()))
            .bind(column(jobs, |j| j.user.external_id.clone()))
            .bind(column(jobs, |j| json_text(&j.user.scim_attributes)))
            .bind(column(jobs, |j| json_text(&j.user.scim_managed)))
            .bind(column(jobs, |j| j.user.created_at))
            .bind(column(jobs, |j| j.event.at))
            .bind(column(jobs, |j| j.event.kind.as_str().to_owned()))
            .bind(column(jobs, |j| json_text(&j.event.actor)))
            .bind(column(jobs, |j| j.event.reason.clone()))
            .bind(column(jobs, |j| json_text(&j.event.fields)))
            .bind(persist_audit)
            .bind(CHANNEL)
            .bind(column(jobs, |j| j.event.source.clone()))
            .bind(column(jobs, |j| j.user.organization_id))
            .fetch_all(&self.pool)
            .await?;
        debug_assert_eq!(rows.len(), jobs.len(), "one outcome row per creation");
        rows.iter()
            .map(|row| Created::from_flags(row).map_err(|err| sqlx::Error::Decode(Box::new(err))))
            .collect()
    }
}

/// Every creation of a batch in one statement, so one round trip and one commit (one flush of
/// the log to disk) serve them all. Each creation's identity is claimed with `ON CONFLICT DO
/// NOTHING` (a concurrent claim by another server waits, then loses) in (issuer, subject) order,
/// so that the batches of several servers claiming the same people queue behind each other
/// instead of deadlocking; its user and audit event are written only if the claim held, its
/// change broadcast; one row per creation gives the flags [`Created::from_flags`] reads. Values
/// taken per the statement's snapshot are skipped rather than tried; one taken in a race makes
/// the statement fail, and the core then writes the creations one by one.
///
/// The checks are scalar subqueries with `LIMIT 1`, not `EXISTS`: PostgreSQL may plan an
/// `EXISTS` in a select list as a hashed subplan, reading the whole table for every batch, and
/// does so while a table grows faster than its statistics (a first sign-in storm); a scalar
/// subquery is always one index probe per creation.
const CREATE_BATCH: &str = r"
WITH job AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
        $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
        $19::text[], $20::timestamptz[], $21::timestamptz[], $22::text[], $23::text[],
        $24::text[], $25::text[], $28::text[], $29::uuid[])
    WITH ORDINALITY AS j(id, issuer, subject, fingerprint, email, email_verified, user_name,
        display_name, given_name, family_name, picture, locale, roles, groups, attributes,
        status, external_id, scim_attributes, scim_managed, now, audit_at, audit_kind, audit_actor,
        audit_reason, audit_fields, audit_source, organization_id, n)
), checked AS (
    SELECT job.*,
        (SELECT true FROM jit_identity_tombstones t
                WHERE t.issuer = job.issuer AND t.subject = job.subject LIMIT 1)
            IS NOT NULL AS tombstoned,
        (SELECT true FROM jit_identities i
                WHERE i.issuer = job.issuer AND i.subject = job.subject LIMIT 1)
            IS NOT NULL AS taken,
        job.user_name IS NOT NULL AND (SELECT true FROM jit_users u
                WHERE lower(u.user_name) = lower(job.user_name) LIMIT 1) IS NOT NULL
            AS user_name_taken,
        job.external_id IS NOT NULL AND (SELECT true FROM jit_users u
                WHERE u.external_id = job.external_id LIMIT 1) IS NOT NULL AS external_id_taken
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
        scim_attributes, scim_managed, version, created_at, updated_at, last_login_at,
        organization_id)
    SELECT c.id, email, email_verified, user_name, display_name, given_name, family_name,
        picture, locale, roles::jsonb, groups::jsonb, attributes::jsonb, status, external_id,
        scim_attributes::jsonb, scim_managed::jsonb, 1, now, now, now, organization_id
    FROM checked c JOIN claimed ON claimed.user_id = c.id
    RETURNING id
), audit AS (
    INSERT INTO jit_audit_events (at, kind, actor, issuer, subject, user_id, reason, fields,
        source)
    SELECT audit_at, audit_kind, audit_actor::jsonb, issuer, subject, c.id, audit_reason,
        audit_fields::jsonb, audit_source
    FROM checked c JOIN users ON users.id = c.id
    WHERE $26
)
SELECT users.id IS NOT NULL AS written, tombstoned, taken, user_name_taken, external_id_taken,
    CASE WHEN users.id IS NOT NULL THEN pg_notify($27, c.id::text || ':1') END
FROM checked c LEFT JOIN users ON users.id = c.id
ORDER BY c.n
";

/// A value as JSON text, for the batch's `text[]` columns cast to `jsonb`.
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializing plain data")
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
    sql::rows::classify(err, PgDialect::transient)
}

impl Driver for Postgres {
    fn bind_id(
        query: Query<'_, Self, PgArguments>,
        id: Option<Uuid>,
    ) -> Query<'_, Self, PgArguments> {
        query.bind(id)
    }

    /// JSON is `JSONB`.
    fn bind_json(
        query: Query<'_, Self, PgArguments>,
        value: Value,
    ) -> Query<'_, Self, PgArguments> {
        query.bind(Json(value))
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn read_id(row: &PgRow, column: &str) -> Result<Option<Uuid>, StoreError> {
        row.try_get(column).map_err(decode)
    }

    fn read_json<T: DeserializeOwned>(row: &PgRow, column: &str) -> Result<T, StoreError> {
        let Json(value) = row.try_get(column).map_err(decode)?;
        Ok(value)
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

/// The `NOTIFY` payload of an event: `<user id>:<version>`, `:deleted` or `:sessions`, or
/// `organizations`.
fn change_payload(event: StoreEvent) -> Option<String> {
    Some(match event {
        StoreEvent::Changed { user_id, version } => format!("{user_id}:{version}"),
        StoreEvent::Deleted { user_id } => format!("{user_id}:deleted"),
        StoreEvent::SessionsEnded { user_id } => format!("{user_id}:sessions"),
        StoreEvent::OrganizationsChanged => "organizations".to_owned(),
        _ => return None,
    })
}

fn parse_change(payload: &str) -> Option<StoreEvent> {
    if payload == "organizations" {
        return Some(StoreEvent::OrganizationsChanged);
    }
    let (user_id, change) = payload.split_once(':')?;
    let user_id = Uuid::parse_str(user_id).ok()?;
    match change {
        "deleted" => return Some(StoreEvent::Deleted { user_id }),
        "sessions" => return Some(StoreEvent::SessionsEnded { user_id }),
        _ => {}
    }
    let version = change.parse().ok()?;
    Some(StoreEvent::Changed { user_id, version })
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
        assert_eq!(
            parse_change(&format!("{id}:sessions")),
            Some(StoreEvent::SessionsEnded { user_id: id })
        );
        for event in [
            StoreEvent::Changed {
                user_id: id,
                version: 3,
            },
            StoreEvent::Deleted { user_id: id },
            StoreEvent::SessionsEnded { user_id: id },
            StoreEvent::OrganizationsChanged,
        ] {
            assert_eq!(parse_change(&change_payload(event).unwrap()), Some(event));
        }
        assert_eq!(parse_change("nonsense"), None);
        assert_eq!(parse_change(&format!("{id}:x")), None);
    }
}
