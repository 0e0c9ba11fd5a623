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
    use sqlx::Error as E;
    let passes = match &err {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::WorkerCrashed | E::Tls(_) => true,
        E::Database(db) => db.code().is_some_and(|code| transient(&code)),
        _ => false,
    };
    if passes {
        StoreError::Unavailable(Box::new(err))
    } else {
        StoreError::Backend(Box::new(err))
    }
}

pub(crate) fn status(name: &str) -> Result<UserStatus, StoreError> {
    UserStatus::from_name(name)
        .ok_or_else(|| StoreError::Backend(format!("unknown status `{name}`").into()))
}

pub(crate) fn audit_kind(name: &str) -> Result<AuditKind, StoreError> {
    AuditKind::from_name(name)
        .ok_or_else(|| StoreError::Backend(format!("unknown audit kind `{name}`").into()))
}
