//! The approval queue: accounts held by `require_approval` wait here until a person approves
//! or refuses them.
//!
//! Stage: a door into the store beside the sign-in pipeline, like SCIM. Uses `crate::store`,
//! `crate::user` and `crate::audit`.
//!
//! A decision is one versioned write to the store, audited with the approver as the actor.
//! Every server sharing the store hears of it through the store's change feed, so the
//! person's next request on any of them sees it.
//!
//! ```
//! use tower_jit_provisioning::approval::Approvals;
//! use tower_jit_provisioning::MemoryStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let approvals = Approvals::new(MemoryStore::new());
//! for user in approvals.pending(None, 50).await? {
//!     approvals.approve(user.id, "ada@example.com").await?;
//! }
//! # Ok(())
//! # }
//! ```

use uuid::Uuid;

use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::store::{StoreError, UserStore};
use crate::user::{User, UserStatus, UserUpdate};

/// How often a decision that lost a race with another write is tried again.
const RETRIES: usize = 5;
/// Users read per store page while looking for pending ones.
const PAGE: usize = 500;

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No account has this id.
    #[error("no such account")]
    NotFound,
    /// The account is not waiting for approval (already decided, or never held).
    #[error("the account is not pending approval (it is {})", .0.as_str())]
    NotPending(UserStatus),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The accounts waiting for approval, and the decisions on them.
#[derive(Clone, Debug)]
pub struct Approvals<S> {
    store: S,
}

impl<S: UserStore> Approvals<S> {
    /// The queue of the accounts in `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// Up to `limit` accounts waiting for approval with ids after `after`, in id order (the
    /// oldest first: ids are time-ordered). Pass the last id of a page to read the next.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn pending(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let mut pending = Vec::new();
        let mut after = after;
        while pending.len() < limit {
            let page = self.store.list_users(after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            let full = page.len() == PAGE;
            pending.extend(
                page.into_iter()
                    .filter(|user| user.status == UserStatus::PendingApproval),
            );
            if !full {
                break;
            }
        }
        pending.truncate(limit);
        Ok(pending)
    }

    /// Lets the account in: it is active from its owner's next request, on every server.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::NotFound`], [`ApprovalError::NotPending`], or the store's.
    pub async fn approve(
        &self,
        id: Uuid,
        approver: impl Into<String>,
    ) -> Result<User, ApprovalError> {
        self.decide(id, approver.into(), UserStatus::Active, AuditKind::Approved)
            .await
    }

    /// Keeps the account out: it is deactivated (403 `deactivated` from its owner's next
    /// request), and stays on record.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::NotFound`], [`ApprovalError::NotPending`], or the store's.
    pub async fn refuse(
        &self,
        id: Uuid,
        approver: impl Into<String>,
    ) -> Result<User, ApprovalError> {
        self.decide(
            id,
            approver.into(),
            UserStatus::Deactivated,
            AuditKind::Refused,
        )
        .await
    }

    async fn decide(
        &self,
        id: Uuid,
        approver: String,
        status: UserStatus,
        kind: AuditKind,
    ) -> Result<User, ApprovalError> {
        for _ in 0..RETRIES {
            let user = self
                .store
                .get_user(id)
                .await?
                .ok_or(ApprovalError::NotFound)?;
            if user.status != UserStatus::PendingApproval {
                return Err(ApprovalError::NotPending(user.status));
            }
            let audit = AuditEvent::new(kind, Actor::Approver(approver.clone()))
                .user(id)
                .fields(["status"]);
            match self
                .store
                .update_user(
                    id,
                    Some(user.version),
                    UserUpdate::status(status),
                    Some(audit),
                )
                .await
            {
                // Changed meanwhile: decide on what it is now.
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(ApprovalError::NotFound),
                other => return Ok(other?),
            }
        }
        Err(StoreError::Conflict.into())
    }
}
