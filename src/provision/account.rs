//! What provisioning hands over and remembers: [`ProvisionedUser`], the cached [`Account`], and
//! the [`SignInMemo`] a source keeps beside a credential it may see again.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use std::sync::OnceLock;
use uuid::Uuid;

use super::Admitted;
use crate::sign_in::{SignIn, SignInSource};
use crate::user::{Identity, User};

/// The user a request was made by, with the identity it signed in with and the sign-in itself.
/// Put into the request extensions by a layer with a store; an extractor with the `axum`
/// feature. Cheap to clone.
#[derive(Clone)]
pub struct ProvisionedUser {
    account: Arc<Account>,
    sign_in: SignIn,
}

/// A user and the identity a request signed in with; what the user cache holds.
#[derive(Debug)]
pub(crate) struct Account {
    pub(crate) user: User,
    pub(crate) identity: Identity,
    /// The change epoch when the user was read from the store.
    pub(crate) read_epoch: u64,
    /// When the user was read from the store: past the cache's time-to-live it is read again.
    pub(crate) read_at: Instant,
    /// When a sign-in was last recorded for it, in milliseconds after `read_at`.
    pub(crate) login_noted: AtomicU64,
}

impl ProvisionedUser {
    pub(crate) fn new(account: Arc<Account>, sign_in: SignIn) -> Self {
        Self { account, sign_in }
    }

    /// The account.
    pub fn user(&self) -> &User {
        &self.account.user
    }

    /// The account's identifier.
    pub fn id(&self) -> Uuid {
        self.account.user.id
    }

    /// The [organisation](crate::organization) the account belongs to, if any: the one whose
    /// connection signed this request in.
    pub fn organization_id(&self) -> Option<Uuid> {
        self.account.user.organization_id
    }

    /// The identity this request signed in with.
    pub fn identity(&self) -> &Identity {
        &self.account.identity
    }

    /// The sign-in this request was made with: its source, issuer, subject and attributes.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// Through which source the person signed in.
    pub fn source(&self) -> SignInSource {
        self.sign_in.source()
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.account.user.has_role(role)
    }
}

impl fmt::Debug for ProvisionedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionedUser")
            .field("id", &self.account.user.id)
            .field("identity", &self.account.identity.key)
            .field("source", &self.sign_in.source())
            .field("status", &self.account.user.status)
            .field("roles", &self.account.user.role_names())
            .finish_non_exhaustive()
    }
}

/// What provisioning learned about one sign-in, kept by a source beside a credential it will
/// see again (the token cache keeps one per token), so the next request with it costs no
/// mapping and, while the account is current, no lookup.
#[derive(Default)]
pub(crate) struct SignInMemo {
    /// The admission of the sign-in, computed once.
    pub(crate) admitted: OnceLock<Arc<Admitted>>,
    /// The account the sign-in resolved to last, for the hot path to reuse while current.
    pub(crate) account: ArcSwapOption<Account>,
    /// Whether a refusal of the sign-in was audited already.
    pub(crate) denial_audited: AtomicBool,
}

impl fmt::Debug for SignInMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInMemo")
            .field("admitted", &self.admitted.get().is_some())
            .finish_non_exhaustive()
    }
}
