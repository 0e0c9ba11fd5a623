//! What the SQL stores share: error classification, decoding of enumerations, the migrations
//! table.

use super::StoreError;
use crate::audit::AuditKind;
use crate::user::UserStatus;

/// The table sqlx records this crate's applied migrations in, apart from the application's
/// `_sqlx_migrations`, so both can migrate one database without tripping over each other.
pub(crate) const MIGRATIONS_TABLE: &str = "_jit_provisioning_migrations";

/// Sorts sqlx errors into "try again later" (503) and "broken" (500). `transient` says which
/// database error codes are conditions that pass.
pub(crate) fn classify(err: sqlx::Error, transient: impl Fn(&str) -> bool) -> StoreError {
    if passes(&err, transient) {
        StoreError::Unavailable(Box::new(err))
    } else {
        StoreError::Backend(Box::new(err))
    }
}

/// Whether `err` is a condition that passes (see [`classify`]).
pub(crate) fn passes(err: &sqlx::Error, transient: impl Fn(&str) -> bool) -> bool {
    use sqlx::Error as E;
    match err {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::WorkerCrashed | E::Tls(_) => true,
        E::Database(db) => db.code().is_some_and(|code| transient(&code)),
        _ => false,
    }
}

/// One transient error as the answer of each of `count` batched operations.
pub(crate) fn shared_unavailable<T>(err: sqlx::Error, count: usize) -> Vec<Result<T, StoreError>> {
    let err = std::sync::Arc::new(err);
    (0..count)
        .map(|_| {
            Err(StoreError::Unavailable(Box::new(std::sync::Arc::clone(
                &err,
            ))))
        })
        .collect()
}

pub(crate) fn status(name: &str) -> Result<UserStatus, StoreError> {
    UserStatus::from_name(name)
        .ok_or_else(|| StoreError::Backend(format!("unknown status `{name}`").into()))
}

pub(crate) fn audit_kind(name: &str) -> Result<AuditKind, StoreError> {
    AuditKind::from_name(name)
        .ok_or_else(|| StoreError::Backend(format!("unknown audit kind `{name}`").into()))
}

/// A value as JSON text, for columns that hold JSON.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializing plain data")
}
