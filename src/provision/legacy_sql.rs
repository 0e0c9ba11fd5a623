//! [`SqlLegacyAccounts`]: the [`LegacyAccounts`] hook that finds a person's legacy account in
//! the old system's own database (SQLite or PostgreSQL) by their trusted e-mail address.
//!
//! Stage: migration (a hook of the pipeline). Uses `crate::provision::migration` and sqlx.
//!
//! The database is only read: SQLite is opened read-only, and PostgreSQL sessions are
//! read-only (`default_transaction_read_only`), so a query that writes fails instead.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::{Column, Row};

use super::migration::{LegacyAccount, LegacyAccounts, LegacyAnswer, LegacyError, LegacyLookup};
use crate::error::ConfigError;

/// The longest a query waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds legacy accounts with one SQL query against the old system's database.
///
/// The query takes the sign-in's [trusted e-mail address](LegacyLookup::trusted_email) as `$1`
/// and returns the person's row; a sign-in without a trusted address is not looked up. Its
/// columns, by name:
/// - `id` (required; text or a number): the legacy id, adopted at most once;
/// - `roles` (optional): a comma-separated list, or on PostgreSQL a `text[]`;
/// - `user_name`, `display_name` (optional): replace what the sign-in mapped;
/// - any other column: an attribute of the account of the same name (text, numbers, booleans,
///   on PostgreSQL also `json`/`jsonb`, `uuid` and timestamps); `NULL`s are left out.
///
/// No row: nothing to adopt. More than one row: nothing is adopted (an address that names
/// two legacy accounts names neither), and a warning is logged.
///
/// ```no_run
/// # fn main() -> Result<(), tower_jit_provisioning::ConfigError> {
/// use tower_jit_provisioning::provision::legacy_sql::SqlLegacyAccounts;
///
/// let legacy = SqlLegacyAccounts::new(
///     "postgres://reader@old-db/crm",
///     "SELECT id, full_name AS display_name, roles FROM accounts WHERE lower(email) = lower($1)",
/// )?;
/// # Ok(()) }
/// ```
pub struct SqlLegacyAccounts {
    pool: Pool,
    query: String,
    name: String,
}

enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl fmt::Debug for SqlLegacyAccounts {
    // No URL: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let driver = match self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => "postgres",
        };
        f.debug_struct("SqlLegacyAccounts")
            .field("name", &self.name)
            .field("driver", &driver)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl SqlLegacyAccounts {
    /// Reads legacy accounts from the database at `url` (`sqlite://…` or `postgres://…`, as
    /// the crate's features allow) with `query`. Connections are opened on first use: a
    /// legacy database that is down delays first sign-ins (503), never the server's start.
    /// Named `sql` in audit records until [`name`](Self::name) says otherwise.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a URL of no enabled driver or one it cannot read,
    /// and for a query without the `$1` parameter.
    pub fn new(url: &str, query: impl Into<String>) -> Result<Self, ConfigError> {
        let query = query.into();
        if !query.contains("$1") {
            return Err(invalid(
                "legacy accounts query",
                "it must take the e-mail as `$1`",
            ));
        }
        let pool = connect(url)?;
        Ok(Self {
            pool,
            query,
            name: "sql".to_owned(),
        })
    }

    /// The name audit records give the hook (`legacy:<name>`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The configured query: the operator's own SQL, with the one untrusted value bound as a
    /// parameter.
    fn sql(&self) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(self.query.clone())
    }

    /// The rows `query` returns for `email`, at most two.
    async fn rows(&self, email: &str) -> Result<Vec<Map<String, Value>>, sqlx::Error> {
        // The first two rows, each read as JSON by `$read`.
        macro_rules! first_two {
            ($pool:expr, $read:expr) => {{
                let mut rows = sqlx::query(self.sql()).bind(email).fetch($pool);
                let mut read = Vec::new();
                while read.len() < 2
                    && let Some(row) = rows.try_next().await?
                {
                    read.push($read(&row));
                }
                Ok(read)
            }};
        }
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => first_two!(pool, sqlite_row),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => first_two!(pool, postgres_row),
        }
    }

    async fn lookup(&self, lookup: &LegacyLookup) -> Result<Option<LegacyAccount>, LegacyError> {
        let Some(email) = lookup.trusted_email() else {
            return Ok(None);
        };
        let mut rows = self.rows(email).await?;
        if rows.len() > 1 {
            tracing::warn!(
                target: "tower_jit_provisioning::migration",
                hook = %self.name,
                "the legacy accounts query found more than one account for an address: none \
                 is adopted"
            );
            return Ok(None);
        }
        rows.pop().map_or(Ok(None), account)
    }
}

impl LegacyAccounts for SqlLegacyAccounts {
    fn name(&self) -> &str {
        &self.name
    }

    fn find<'a>(&'a self, lookup: &'a LegacyLookup) -> LegacyAnswer<'a> {
        Box::pin(self.lookup(lookup))
    }
}

fn invalid(setting: &str, reason: &'static str) -> ConfigError {
    ConfigError::InvalidSetting {
        setting: setting.to_owned(),
        reason,
    }
}

fn connect(url: &str) -> Result<Pool, ConfigError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|_| invalid("legacy database URL", "not an SQLite URL sqlx can read"))?
                .read_only(true)
                .busy_timeout(ACQUIRE_TIMEOUT);
            Ok(Pool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options),
            ))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .map_err(|_| invalid("legacy database URL", "not a PostgreSQL URL sqlx can read"))?
                .options([
                    ("default_transaction_read_only", "on"),
                    ("statement_timeout", "5s"),
                ]);
            Ok(Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options),
            ))
        }
        _ => Err(invalid(
            "legacy database URL",
            "not a database URL of an enabled driver (`sqlite://`, `postgres://`)",
        )),
    }
}

/// A row as the legacy account it describes.
fn account(mut row: Map<String, Value>) -> Result<Option<LegacyAccount>, LegacyError> {
    let id = match row.remove("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id,
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err("the legacy accounts query returned no `id`".into()),
    };
    let mut legacy = LegacyAccount::new(id);
    match row.remove("roles") {
        Some(Value::String(roles)) => {
            legacy = legacy.roles(roles.split(',').map(str::trim).filter(|r| !r.is_empty()));
        }
        Some(Value::Array(roles)) => {
            legacy = legacy.roles(roles.iter().filter_map(Value::as_str));
        }
        _ => {}
    }
    if let Some(Value::String(user_name)) = row.remove("user_name") {
        legacy = legacy.user_name(user_name);
    }
    if let Some(Value::String(display_name)) = row.remove("display_name") {
        legacy = legacy.display_name(display_name);
    }
    for (name, value) in row {
        legacy = legacy.attribute(name, value);
    }
    Ok(Some(legacy))
}

/// Tries each type in turn on column `$i` of `$row`, the first that decodes as JSON.
macro_rules! decode_column {
    ($row:expr, $i:expr, $($ty:ty => $to_json:expr),+ $(,)?) => {{
        $(
            if let Ok(value) = $row.try_get::<Option<$ty>, _>($i) {
                return value.map_or(Value::Null, $to_json);
            }
        )+
        Value::Null
    }};
}

#[cfg(feature = "sqlite")]
fn sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Map<String, Value> {
    fn value(row: &sqlx::sqlite::SqliteRow, i: usize) -> Value {
        decode_column!(row, i,
            i64 => Value::from,
            f64 => Value::from,
            String => Value::from,
            bool => Value::from,
        )
    }
    row.columns()
        .iter()
        .map(|column| (column.name().to_owned(), value(row, column.ordinal())))
        .collect()
}

#[cfg(feature = "postgres")]
fn postgres_row(row: &sqlx::postgres::PgRow) -> Map<String, Value> {
    fn value(row: &sqlx::postgres::PgRow, i: usize) -> Value {
        decode_column!(row, i,
            String => Value::from,
            i64 => Value::from,
            i32 => Value::from,
            i16 => Value::from,
            f64 => Value::from,
            f32 => Value::from,
            bool => Value::from,
            uuid::Uuid => |id: uuid::Uuid| Value::from(id.to_string()),
            Value => |json| json,
            Vec<String> => Value::from,
            chrono::DateTime<chrono::Utc> => |at: chrono::DateTime<chrono::Utc>| Value::from(at.to_rfc3339()),
            chrono::NaiveDateTime => |at: chrono::NaiveDateTime| Value::from(at.to_string()),
            chrono::NaiveDate => |at: chrono::NaiveDate| Value::from(at.to_string()),
        )
    }
    row.columns()
        .iter()
        .map(|column| (column.name().to_owned(), value(row, column.ordinal())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_becomes_an_account() {
        let row = serde_json::json!({
            "id": 42, "roles": "editor, ,admin", "display_name": "Ada L.",
            "plan": "pro", "email": "ada@example.com"
        });
        let Value::Object(row) = row else {
            unreachable!()
        };
        let account = account(row).unwrap().unwrap();
        let expected = LegacyAccount::new("42")
            .roles(["editor", "admin"])
            .display_name("Ada L.")
            .attribute("email", "ada@example.com")
            .attribute("plan", "pro");
        assert_eq!(account, expected);
    }

    #[test]
    fn a_row_without_an_id_is_an_error() {
        for row in [
            serde_json::json!({"name": "x"}),
            serde_json::json!({"id": null}),
            serde_json::json!({"id": " "}),
        ] {
            let Value::Object(row) = row else {
                unreachable!()
            };
            assert!(account(row).is_err());
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(SqlLegacyAccounts::new("sqlite://legacy.db", "SELECT id FROM users").is_err());
        assert!(SqlLegacyAccounts::new("mysql://x/y", "SELECT id FROM u WHERE e = $1").is_err());
    }
}
