//! [`SqliteStore`]: users in an SQLite file (or in memory), through `sqlx`. The SQLite
//! dialect of the [SQL core](super::sql).
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
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use uuid::Uuid;

use super::sql::batch::{Created, Creation};
use super::sql::driver::decode;
use super::sql::queries::{Fragments, Queries};
use super::sql::{self, Dialect, Driver, Exec, Param, SqlCore};
use super::{ChangeFeed, StoreError};

/// A [`UserStore`](super::UserStore) on SQLite. Cheap to clone: clones share one connection
/// pool.
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
    core: SqlCore<SqliteDialect>,
}

/// The SQLite side of the core: pools, the writer's turn, checkpoints.
#[derive(Clone)]
pub(crate) struct SqliteDialect {
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
        let mut dialect = SqliteDialect::new(pool);
        if !in_memory {
            dialect.writes = pool_options(1).connect_lazy_with(options);
            let (wrote, commits) = watch::channel(());
            tokio::spawn(checkpoint_in_background(dialect.pool.clone(), commits));
            dialect.wrote = Some(Arc::new(wrote));
        }
        Ok(Self {
            core: SqlCore::new(dialect, ChangeFeed::new()),
        })
    }

    /// A store on an existing pool. The pool should enable foreign keys (sqlx does by
    /// default) and WAL.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            core: SqlCore::new(SqliteDialect::new(pool), ChangeFeed::new()),
        }
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
            .run(&self.core.db.dialect.writes)
            .await
            .map_err(|err| StoreError::Backend(Box::new(err)))
    }

    /// The connection pool, for the application's own queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.core.db.dialect.pool
    }

    /// Closes the pool; every later operation fails with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.core.db.dialect.pool.close().await;
        self.core.db.dialect.writes.close().await;
    }
}

sql::sql_store!(SqliteStore);

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("connections", &self.core.db.dialect.pool.size())
            .field("persist_audit", &self.core.db.persist_audit)
            .finish_non_exhaustive()
    }
}

impl SqliteDialect {
    fn new(pool: SqlitePool) -> Self {
        Self {
            writes: pool.clone(),
            pool,
            writer: Arc::new(Mutex::new(())),
            wrote: None,
        }
    }

    fn committed(&self) {
        if let Some(wrote) = &self.wrote {
            wrote.send_replace(());
        }
    }
}

static FRAGMENTS: Fragments = Fragments {
    // `BEGIN IMMEDIATE` holds the database's one write lock for the whole transaction.
    lock_row: "",
    user_name_is: "u.user_name = $1 COLLATE NOCASE",
    verified_email_is: "u.email_lower = lower($1) AND u.email_verified = 1",
    group_members: "(SELECT json_group_array(user_id) FROM (SELECT user_id \
        FROM jit_group_members m WHERE m.group_id = g.id ORDER BY user_id))",
    members_from_json: "SELECT $1, value, $3 FROM json_each($2)",
};

impl Dialect for SqliteDialect {
    type Row = SqliteRow;
    type Reader = SqlitePool;
    type Tx = WriteTx;

    /// 56 parameters each: far below SQLite's limit of 32,766.
    const MAX_BATCH: usize = 32;

    fn queries() -> &'static Queries {
        static QUERIES: LazyLock<Queries> = LazyLock::new(|| Queries::new(&FRAGMENTS));
        &QUERIES
    }

    /// SQLite primary result codes (the low byte of extended codes): BUSY, LOCKED, IOERR,
    /// FULL, CANTOPEN are conditions that pass.
    fn transient(code: &str) -> bool {
        code.parse::<i64>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13 | 14))
    }

    fn reader(&self) -> SqlitePool {
        self.pool.clone()
    }

    async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = Arc::clone(&self.writer).lock_owned().await;
        let tx = self.writes.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    async fn commit(&self, tx: WriteTx) -> Result<(), sqlx::Error> {
        tx.tx.commit().await?;
        self.committed();
        Ok(())
    }

    /// The batch is one statement script (see [`creation_script`]): a single round trip to the
    /// connection's thread and a single commit.
    async fn write_creations(
        &self,
        jobs: &[Creation],
        persist_audit: bool,
    ) -> Result<Vec<Created>, sqlx::Error> {
        let _turn = self.writer.lock().await;
        let mut conn = self.writes.acquire().await?;
        let mut query = sqlx::query(AssertSqlSafe(creation_script(jobs.len())));
        // Positional parameters, in the order the statements of the script use them.
        for job in jobs {
            let (id, key) = (job.user.id, &job.key);
            let identity = [Param::text(key.issuer()), Param::text(key.subject())];
            let mut params = sql::rows::user_params(&job.user);
            params.extend(identity.iter().cloned().chain(identity.iter().cloned()));
            params.extend(identity.iter().cloned());
            params.extend([
                Param::id(id),
                Param::Text(job.fingerprint.clone()),
                Param::time(job.user.created_at),
                Param::time(job.user.created_at),
                Param::time(job.user.created_at),
                Param::id(id),
            ]);
            params.extend(sql::rows::audit_params(&job.event));
            params.extend([Param::Flag(persist_audit), Param::id(id)]);
            params.extend(identity.iter().cloned());
            params.push(Param::id(id));
            params.extend(identity.iter().cloned());
            params.extend(identity.iter().cloned());
            params.push(Param::id(id));
            params.extend([Param::Text(job.user.user_name.clone()), Param::id(id)]);
            params.extend([Param::Text(job.user.external_id.clone()), Param::id(id)]);
            query = sql::driver::bind_all(query, params);
        }
        let rows = match query.fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(err) => {
                // The script stopped at the failing statement, inside its transaction.
                if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await
                    && !rollback.to_string().contains("no transaction is active")
                {
                    // Never hand back a connection that may still be in a transaction.
                    conn.close_on_drop();
                }
                return Err(err);
            }
        };
        self.committed();
        debug_assert_eq!(rows.len(), jobs.len(), "one outcome row per creation");
        rows.iter()
            .map(|row| Created::from_flags(row).map_err(|err| sqlx::Error::Decode(Box::new(err))))
            .collect()
    }
}

/// `BEGIN IMMEDIATE`, then for each of `count` creations: the user (unless the identity is
/// taken or tombstoned, or a unique value is someone else's), its identity and audit event
/// (if the user went in), and a row of the flags [`Created::from_flags`] reads; then `COMMIT`.
/// Nothing in it fails on a conflict, so one creation's conflict never costs the others theirs.
///
/// Parameters are positional (sqlx numbers `?` across the whole script), 57 per creation,
/// bound by [`SqliteDialect::write_creations`] in this order.
fn creation_script(count: usize) -> Arc<str> {
    const CREATION: &str = "\
        INSERT INTO jit_users (id, email, email_verified, user_name, display_name, given_name, \
        family_name, picture, locale, roles, groups, attributes, status, external_id, \
        scim_attributes, scim_managed, version, created_at, updated_at, last_login_at, \
        organization_id) \
        SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
        WHERE NOT EXISTS (SELECT 1 FROM jit_identities WHERE issuer = ? AND subject = ?) \
        AND NOT EXISTS (SELECT 1 FROM jit_identity_tombstones WHERE issuer = ? AND subject = ?) \
        ON CONFLICT DO NOTHING;
        INSERT INTO jit_identities (issuer, subject, user_id, claims_fingerprint, created_at, \
        updated_at, last_login_at) SELECT ?, ?, ?, ?, ?, ?, ? \
        WHERE EXISTS (SELECT 1 FROM jit_users WHERE id = ?);
        INSERT INTO jit_audit_events (at, kind, actor, issuer, subject, user_id, reason, fields, \
        source, trace) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
        WHERE ? AND EXISTS (SELECT 1 FROM jit_users WHERE id = ?);
        SELECT \
        EXISTS (SELECT 1 FROM jit_identities WHERE issuer = ? AND subject = ? AND user_id = ?) \
            AS written, \
        EXISTS (SELECT 1 FROM jit_identity_tombstones WHERE issuer = ? AND subject = ?) \
            AS tombstoned, \
        EXISTS (SELECT 1 FROM jit_identities WHERE issuer = ? AND subject = ? AND user_id <> ?) \
            AS taken, \
        EXISTS (SELECT 1 FROM jit_users WHERE user_name = ? COLLATE NOCASE AND id <> ?) \
            AS user_name_taken, \
        EXISTS (SELECT 1 FROM jit_users WHERE external_id = ? AND id <> ?) \
            AS external_id_taken;
    ";
    static CACHE: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
        (1..=SqliteDialect::MAX_BATCH)
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
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl Driver for Sqlite {
    /// Ids are hyphenated text.
    fn bind_id(
        query: Query<'_, Self, SqliteArguments>,
        id: Option<Uuid>,
    ) -> Query<'_, Self, SqliteArguments> {
        query.bind(id.map(|id| id.to_string()))
    }

    /// JSON is text.
    fn bind_json(
        query: Query<'_, Self, SqliteArguments>,
        value: Value,
    ) -> Query<'_, Self, SqliteArguments> {
        query.bind(value.to_string())
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn read_id(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, StoreError> {
        let text: Option<String> = row.try_get(column).map_err(decode)?;
        text.map(|text| Uuid::parse_str(&text).map_err(decode))
            .transpose()
    }

    fn read_json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, StoreError> {
        let text: String = row.try_get(column).map_err(decode)?;
        serde_json::from_str(&text).map_err(decode)
    }
}

/// Statements in a write transaction run on the transaction; the turn just rides along.
impl Exec for WriteTx {
    type Row = SqliteRow;

    fn fetch_all(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Vec<SqliteRow>, sqlx::Error>> + Send {
        self.tx.fetch_all(sql, params)
    }

    fn fetch_optional(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Option<SqliteRow>, sqlx::Error>> + Send {
        self.tx.fetch_optional(sql, params)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        self.tx.execute(sql, params)
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

/// Sorts sqlx errors into "try again later" (503) and "broken" (500).
fn store_error(err: sqlx::Error) -> StoreError {
    sql::rows::classify(err, SqliteDialect::transient)
}
