//! Every scenario on every store: the backends a browser sign-in test runs on, one test
//! database of each, and the macro that runs a scenario once per backend.

use tower_jit_provisioning::{
    Actor, AuditEvent, AuditKind, PostgresStore, SqliteStore, User, UserStore,
};

use super::PgDatabase;

/// Where a test's accounts and sessions live: every scenario runs on SQLite and on PostgreSQL.
#[derive(Clone, Copy)]
pub enum Backend {
    Sqlite,
    /// PostgreSQL, with the test's name for its database.
    Postgres(&'static str),
}

/// One test database and a migrated store on it.
pub enum Db {
    Sqlite(SqliteStore, tempfile::TempDir),
    Postgres(PostgresStore, PgDatabase),
}

/// Runs `$body` with `$store` bound to the database's store, whichever backend it is.
#[macro_export]
macro_rules! with_store {
    ($db:expr, $store:ident => $body:expr) => {
        match $db {
            $crate::common::stores::Db::Sqlite($store, _) => $body,
            $crate::common::stores::Db::Postgres($store, _) => $body,
        }
    };
}

/// Runs each named scenario twice: on SQLite, and on PostgreSQL where the test machine has it.
/// `$prefix` names the test file, for the PostgreSQL databases.
#[macro_export]
macro_rules! on_every_store {
    ($prefix:literal; $($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::stores::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(
                    not(jit_test_postgres),
                    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
                )]
                async fn $scenario() {
                    super::$scenario($crate::common::stores::Backend::Postgres(concat!(
                        $prefix,
                        "::",
                        stringify!($scenario)
                    )))
                    .await;
                }
            )*
        }
    };
}

impl Db {
    pub async fn open(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let (store, dir) = super::sqlite_store().await;
                Self::Sqlite(store, dir)
            }
            Backend::Postgres(test) => {
                let db = PgDatabase::create(test).await;
                Self::Postgres(db.store().await, db)
            }
        }
    }

    /// The same database through a new store, as a restarted server opens it.
    pub async fn reopened(self) -> Self {
        match self {
            Self::Sqlite(_, dir) => {
                let store = SqliteStore::connect(&super::sqlite_url(&dir))
                    .await
                    .unwrap();
                store.migrate().await.unwrap();
                Self::Sqlite(store, dir)
            }
            Self::Postgres(_, db) => Self::Postgres(db.store().await, db),
        }
    }

    pub async fn users(&self) -> Vec<User> {
        with_store!(self, store => store.list_users(None, 100).await.unwrap())
    }

    pub async fn audit(&self) -> Vec<AuditEvent> {
        with_store!(self, store => store.audit_events(None).await.unwrap())
    }

    pub async fn deactivate(&self, id: uuid::Uuid) {
        with_store!(self, store => store.deactivate(id).await.unwrap());
    }

    pub async fn reactivate(&self, id: uuid::Uuid) {
        with_store!(self, store => store.reactivate(id).await.unwrap());
    }

    pub async fn delete(&self, id: uuid::Uuid) {
        let event = AuditEvent::new(AuditKind::Deleted, Actor::Application);
        with_store!(self, store => store.delete_user(id, event).await.unwrap());
    }

    /// What the store keeps of each session's id.
    pub async fn session_hashes(&self) -> Vec<String> {
        let sql = "SELECT id_hash FROM jit_sessions";
        match self {
            Self::Sqlite(store, _) => sqlx::query_scalar(sql).fetch_all(store.pool()).await,
            Self::Postgres(store, _) => sqlx::query_scalar(sql).fetch_all(store.pool()).await,
        }
        .unwrap()
    }

    /// Users, sessions and audit events: what a refused sign-in must not change.
    pub async fn written(&self) -> (usize, usize, usize) {
        (
            self.users().await.len(),
            self.session_hashes().await.len(),
            self.audit().await.len(),
        )
    }
}
