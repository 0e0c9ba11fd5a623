//! Where accounts live: the [`UserStore`] trait and its implementations.
//!
//! Stage: storage, below the pipeline. Uses only the records (`crate::user`, `crate::audit`);
//! knows nothing of sign-ins or of how they are verified.
//!
//! - [`MemoryStore`]: in process, for tests and demos.
//! - `SqliteStore` (feature `sqlite`, on by default): the embedded default.
//! - `PostgresStore` (feature `postgres`): one database shared by several application servers,
//!   with changes broadcast to all of them by `LISTEN`/`NOTIFY`.
//!
//! # Concurrency
//!
//! Every write is atomic. [`UserStore::create_user`] is an insert-or-get on the unique
//! `(issuer, subject)` identity: however many requests, tasks or processes create a user for one
//! identity at once, one user and one identity exist afterwards and exactly one call reports
//! that it created them. [`UserStore::update_user`] takes the version the caller read; a write
//! based on a stale read fails with [`StoreError::Conflict`] instead of overwriting a concurrent
//! change, and the caller reads again.
//!
//! # Change events
//!
//! Every write publishes a [`StoreEvent`] on the store's [`ChangeFeed`]; layers subscribe and
//! drop the changed user from their caches, so a deactivation through the store API takes effect
//! on the very next request.
//!
//! # Audit
//!
//! Writes carry the [`AuditEvent`] that describes them; the store emits it once the write has
//! committed (persisting it in the same transaction where it can). See [`crate::audit`].

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqliteStore;

use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::organization::Organization;
use crate::session::{LoginFlow, Session, SessionHash, SessionSelector};
use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, RoleGrant, RoleSource, User,
    UserStatus, UserUpdate,
};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or is overloaded (connection refused, pool exhausted,
    /// timeout, database locked). Requests that need it get 503 with `Retry-After`.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// The record changed since it was read; read it again and retry.
    #[error("conflicting concurrent change")]
    Conflict,
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// The identity belonged to a deleted user: it is never provisioned again.
    #[error("identity belongs to a deleted user")]
    IdentityDeleted,
    /// A value that must be unique is taken (`external_id`, `user_name`, a group's
    /// `display_name`, an adopted legacy account's `legacy_id`).
    #[error("`{0}` is already taken")]
    Duplicate(&'static str),
    /// The user already has an identity at the issuer an identity was to be linked from: one
    /// account holds at most one identity per issuer, so that a second person at that issuer
    /// can never be linked into it.
    #[error("the user already has an identity at this issuer")]
    IssuerAlreadyLinked,
    /// Anything else the backend reported (a schema that was not migrated, a corrupt row).
    #[error("store error")]
    Backend(#[source] BoxError),
    /// The store does not implement this part of the contract (a store of the application's
    /// own that keeps no sessions, say).
    #[error("the store does not support {0}")]
    Unsupported(&'static str),
}

/// A change to a user, as published on a store's [`ChangeFeed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// The user changed and is now at `version`.
    Changed {
        /// The user.
        user_id: Uuid,
        /// The version after the change.
        version: i64,
    },
    /// The user was deleted.
    Deleted {
        /// The user.
        user_id: Uuid,
    },
    /// Sessions of the user ended (signed out, logged out by the issuer, deactivated): drop
    /// every cached session of theirs.
    SessionsEnded {
        /// The user.
        user_id: Uuid,
    },
    /// Changes may have been missed (a listener reconnected after losing its connection): drop
    /// everything cached.
    Reset,
    /// An organisation was created, changed or deleted: read them again.
    OrganizationsChanged,
}

type Listener = dyn Fn(&StoreEvent) + Send + Sync;

/// Delivers a store's [`StoreEvent`]s to every subscriber in the process.
///
/// Delivery is synchronous: when a write returns, every subscriber has already seen its event,
/// so a layer sharing the store refuses a deactivated user on the very next request. Subscriber
/// callbacks must be quick and must not write to the store.
#[derive(Clone, Default)]
pub struct ChangeFeed {
    listeners: Arc<Mutex<Vec<Weak<Listener>>>>,
}

impl ChangeFeed {
    /// A feed with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Delivers `event` to every live subscriber.
    pub fn publish(&self, event: StoreEvent) {
        let live: Vec<Arc<Listener>> = {
            let mut listeners = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            listeners.retain(|l| l.strong_count() > 0);
            listeners.iter().filter_map(Weak::upgrade).collect()
        };
        for listener in live {
            listener(&event);
        }
    }

    /// Calls `listener` with every event from now on, until the returned [`Subscription`] is
    /// dropped.
    pub fn subscribe(
        &self,
        listener: impl Fn(&StoreEvent) + Send + Sync + 'static,
    ) -> Subscription {
        let listener: Arc<Listener> = Arc::new(listener);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&listener));
        Subscription(listener)
    }
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|l| l.strong_count() > 0)
            .count();
        f.debug_struct("ChangeFeed")
            .field("subscribers", &count)
            .finish()
    }
}

/// Keeps a [`ChangeFeed`] subscription alive; dropping it unsubscribes.
#[must_use = "dropping the subscription unsubscribes"]
pub struct Subscription(#[allow(dead_code)] Arc<Listener>);

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

/// The result of [`UserStore::create_user`] and [`UserStore::link_identity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The user the identity belongs to now.
    pub user: User,
    /// The identity.
    pub identity: Identity,
    /// Whether this call wrote it (false: another call had, first).
    pub written: bool,
}

/// Storage for users and identities. See the [module docs](self) for the guarantees every
/// implementation gives.
pub trait UserStore: fmt::Debug + Send + Sync + 'static {
    /// The user `key` signs in to, with the identity.
    fn find_by_identity(
        &self,
        key: &IdentityKey,
    ) -> impl Future<Output = Result<Option<(User, Identity)>, StoreError>> + Send;

    /// Whether `key` belonged to a user that was deleted: such an identity is never provisioned
    /// again ([`create_user`](Self::create_user) answers [`StoreError::IdentityDeleted`]).
    /// Reads only; [`explain`](crate::ProvisioningLayer::explain) asks it instead of trying
    /// the write.
    ///
    /// The default answers `false`, for a store that keeps no record of deleted identities;
    /// with it, an explanation may say an account would be created where the write would
    /// refuse.
    fn is_identity_deleted(
        &self,
        key: &IdentityKey,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = key;
        std::future::ready(Ok(false))
    }

    /// Creates `user` for a sign-in with the identity `key`, or returns the user `key` already
    /// belongs to. The sign-in is recorded as the user's and the identity's last login, with
    /// `fingerprint` as the identity's claims fingerprint.
    ///
    /// Atomic, and an insert-or-get on the identity: concurrent calls for one `key` end with one
    /// user, and exactly one of them returns `written: true` (and emits `audit`).
    ///
    /// # Errors
    ///
    /// [`StoreError::IdentityDeleted`] when `key` belonged to a deleted user;
    /// [`StoreError::Duplicate`] when `external_id` is taken.
    fn create_user(
        &self,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<Resolved, StoreError>> + Send;

    /// Links the identity `key` to the existing user `user_id` for a sign-in, or returns the
    /// user `key` already belongs to (`written: false`). Atomic like
    /// [`create_user`](Self::create_user), and records the sign-in the same way.
    ///
    /// # Errors
    ///
    /// [`StoreError::IssuerAlreadyLinked`] when the user already has an identity at `key`'s
    /// issuer (checked in the same transaction as the link, so concurrent links of two
    /// subjects cannot both succeed); [`StoreError::NotFound`] when there is no such user.
    fn link_identity(
        &self,
        user_id: Uuid,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<Resolved, StoreError>> + Send;

    /// Creates `user` as the adoption of the account `legacy_id` of a system being migrated
    /// from, for a sign-in with the identity `key`; or returns the user `key` already belongs
    /// to (`written: false`, and nothing about `legacy_id` is recorded). Atomic like
    /// [`create_user`](Self::create_user): the user, the identity and the record that
    /// `legacy_id` was adopted are written together or not at all.
    ///
    /// A legacy account is adopted at most once, ever: the record outlives the user it went
    /// to, so deleting that user does not make the legacy account adoptable again.
    ///
    /// The default answers [`StoreError::Unsupported`], for a store that keeps no adoption
    /// records; a layer with [`legacy_accounts`](crate::ProvisioningLayerBuilder::legacy_accounts)
    /// needs a store that does.
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`]`("legacy_id")` when `legacy_id` was adopted before (by any
    /// identity); otherwise as [`create_user`](Self::create_user).
    fn adopt_legacy_account(
        &self,
        legacy_id: &str,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<Resolved, StoreError>> + Send {
        let _ = (legacy_id, user, key, fingerprint, audit);
        std::future::ready(Err(StoreError::Unsupported("legacy account adoption")))
    }

    /// The user that adopted the legacy account `legacy_id`, if one did and still exists.
    ///
    /// The default answers [`StoreError::Unsupported`], as for
    /// [`adopt_legacy_account`](Self::adopt_legacy_account).
    fn find_by_legacy_id(
        &self,
        legacy_id: &str,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send {
        let _ = legacy_id;
        std::future::ready(Err(StoreError::Unsupported("legacy account adoption")))
    }

    /// The user whose `external_id` is exactly `external_id`.
    fn find_by_external_id(
        &self,
        external_id: &str,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Users whose e-mail address is `email` (compared case-insensitively) *and verified*; at
    /// most `limit` of them.
    fn find_by_verified_email(
        &self,
        email: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<User>, StoreError>> + Send;

    /// The user whose `user_name` is `user_name`, compared case-insensitively (ASCII).
    fn find_by_user_name(
        &self,
        user_name: &str,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Creates a user with no identity yet (as SCIM does, ahead of the first sign-in), and emits
    /// `audit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] when `user_name` or `external_id` is taken.
    fn insert_user(
        &self,
        user: NewUser,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Up to `limit` users with ids after `after` (all, from the first, for `None`), in id
    /// order: a stable order to page through every user.
    fn list_users(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<User>, StoreError>> + Send;

    /// Creates a group.
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] when `display_name` or `external_id` is taken;
    /// [`StoreError::NotFound`] when a member does not exist.
    fn insert_group(
        &self,
        group: NewGroup,
    ) -> impl Future<Output = Result<Group, StoreError>> + Send;

    /// The group `id`.
    fn get_group(&self, id: Uuid)
    -> impl Future<Output = Result<Option<Group>, StoreError>> + Send;

    /// Up to `limit` groups with ids after `after`, in id order.
    fn list_groups(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Group>, StoreError>> + Send;

    /// Applies `update` if the group is at `expected_version` (any for `None`); returns the
    /// group and the users whose memberships changed (whose `groups` the caller should update).
    fn update_group(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        update: GroupUpdate,
    ) -> impl Future<Output = Result<(Group, Vec<Uuid>), StoreError>> + Send;

    /// Deletes the group; returns its former members, or `None` if it did not exist.
    fn delete_group(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Vec<Uuid>>, StoreError>> + Send;

    /// The groups `user_id` is a member of, in id order.
    fn groups_of(
        &self,
        user_id: Uuid,
    ) -> impl Future<Output = Result<Vec<Group>, StoreError>> + Send;

    /// The identities that sign in to `user_id`.
    fn identities(
        &self,
        user_id: Uuid,
    ) -> impl Future<Output = Result<Vec<Identity>, StoreError>> + Send;

    /// The user `id`.
    fn get_user(&self, id: Uuid) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Applies `update` to `user_id` if it is at `expected_version` (at any version for `None`),
    /// emits `audit`, and returns the user as written.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the version moved; [`StoreError::NotFound`].
    fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Records a sign-in of `key` at `at`, and the fingerprint of the claims it mapped. Does not
    /// change the user's version.
    fn record_login(
        &self,
        key: &IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the user. Its identities are kept as tombstones so that they are never
    /// provisioned again. Returns whether the user existed.
    fn delete_user(
        &self,
        user_id: Uuid,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Emits (and, where the store persists audit events, persists) an event that comes with no
    /// write, such as a refusal.
    fn record_audit(&self, event: AuditEvent) -> impl Future<Output = ()> + Send;

    /// The store's change feed.
    fn changes(&self) -> &ChangeFeed;

    /// Every organisation, by id.
    ///
    /// The organisation methods have defaults answering [`StoreError::Unsupported`], for a
    /// store of the application's own that keeps none; the stores of this crate implement them
    /// all, and publish [`StoreEvent::OrganizationsChanged`] with every write (to every server
    /// sharing the database).
    fn list_organizations(
        &self,
    ) -> impl Future<Output = Result<Vec<Organization>, StoreError>> + Send {
        async { Err(StoreError::Unsupported("organizations")) }
    }

    /// The organisation `id`.
    fn get_organization(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Organization>, StoreError>> + Send {
        let _ = id;
        async { Err(StoreError::Unsupported("organizations")) }
    }

    /// Stores a new organisation (its domains lower-cased), at version 1.
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`]: `"id"` when the id is taken, `"domain"` when one of its
    /// domains is another organisation's, `"connection"` when one of its connections (issuer
    /// and tenant) is.
    fn create_organization(
        &self,
        organization: Organization,
    ) -> impl Future<Output = Result<Organization, StoreError>> + Send {
        let _ = organization;
        async { Err(StoreError::Unsupported("organizations")) }
    }

    /// Replaces an organisation: name, domains and connections, as given. With
    /// `expected_version`, only if it is still at that version.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] when it moved on from
    /// `expected_version`; [`StoreError::Duplicate`] as for
    /// [`create_organization`](Self::create_organization).
    fn update_organization(
        &self,
        organization: Organization,
        expected_version: Option<i64>,
    ) -> impl Future<Output = Result<Organization, StoreError>> + Send {
        let _ = (organization, expected_version);
        async { Err(StoreError::Unsupported("organizations")) }
    }

    /// Deletes an organisation and its connections; `false` when there was none. Its accounts
    /// stay, still its (no connection signs in to them any more).
    fn delete_organization(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = id;
        async { Err(StoreError::Unsupported("organizations")) }
    }

    /// Starts a browser session. Its id hash is unique.
    ///
    /// Sessions live beside the users: deleting a user ends theirs, and so does deactivating
    /// one. The stores of this crate implement every session operation; a store of the
    /// application's own that does not answers [`StoreError::Unsupported`], and browser
    /// sign-in cannot be used with it.
    fn create_session(
        &self,
        _session: Session,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Err(StoreError::Unsupported("sessions")) }
    }

    /// The session with this id hash, if it was started and not ended (it may have expired:
    /// see [`Session::is_live`]).
    fn find_session(
        &self,
        _id: SessionHash,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send {
        async { Err(StoreError::Unsupported("sessions")) }
    }

    /// Records when sessions were last used, in one batch; a time earlier than the one recorded
    /// is ignored.
    fn touch_sessions(
        &self,
        _seen: Vec<(SessionHash, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Err(StoreError::Unsupported("sessions")) }
    }

    /// Ends the sessions `which` selects, and publishes [`StoreEvent::SessionsEnded`] for each
    /// user who had one (to every server sharing the store, where the store is shared). Returns
    /// how many ended.
    fn end_sessions(
        &self,
        _which: SessionSelector,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async { Err(StoreError::Unsupported("sessions")) }
    }

    /// Keeps a sign-in flow until it is taken or expires. Its key hash is unique.
    fn put_login_flow(
        &self,
        _flow: LoginFlow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Err(StoreError::Unsupported("sign-in flows")) }
    }

    /// Takes the flow with this key hash: atomically removes it and returns it, unless it
    /// expired. However many calls race for one flow, at most one gets it.
    fn take_login_flow(
        &self,
        _key: SessionHash,
    ) -> impl Future<Output = Result<Option<LoginFlow>, StoreError>> + Send {
        async { Err(StoreError::Unsupported("sign-in flows")) }
    }

    /// Records the first use of a one-time key of `kind` (a logout token's `jti`, a SAML
    /// assertion id), remembered until `expires_at`: `true` the first time, `false` for every
    /// later use, across every server sharing the store.
    fn consume_once(
        &self,
        _kind: &str,
        _key: SessionHash,
        _expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async { Err(StoreError::Unsupported("one-time keys")) }
    }

    /// Removes sessions, flows and one-time keys past their expiry. Returns how many.
    fn purge_expired(
        &self,
        _now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async { Ok(0) }
    }

    /// Approves an account held for approval.
    fn approve(&self, user_id: Uuid) -> impl Future<Output = Result<User, StoreError>> + Send {
        self.set_status(
            user_id,
            UserStatus::Active,
            AuditKind::Approved,
            Actor::Application,
        )
    }

    /// Deactivates an account: its next request is refused, and no login re-activates it
    /// unless reactivate-on-login is configured.
    fn deactivate(&self, user_id: Uuid) -> impl Future<Output = Result<User, StoreError>> + Send {
        self.set_status(
            user_id,
            UserStatus::Deactivated,
            AuditKind::Deactivated,
            Actor::Application,
        )
    }

    /// Reactivates a deactivated account.
    fn reactivate(&self, user_id: Uuid) -> impl Future<Output = Result<User, StoreError>> + Send {
        self.set_status(
            user_id,
            UserStatus::Active,
            AuditKind::Reactivated,
            Actor::Application,
        )
    }

    /// Sets the status and emits an event of `kind` by `actor`.
    fn set_status(
        &self,
        user_id: Uuid,
        status: UserStatus,
        kind: AuditKind,
        actor: Actor,
    ) -> impl Future<Output = Result<User, StoreError>> + Send {
        async move {
            let audit = AuditEvent::new(kind, actor)
                .user(user_id)
                .fields(["status"]);
            self.update_user(user_id, None, UserUpdate::status(status), Some(audit))
                .await
        }
    }

    /// Grants `role` by hand ([`RoleSource::Manual`]). A login's sync never revokes it.
    fn grant_role(
        &self,
        user_id: Uuid,
        role: &str,
    ) -> impl Future<Output = Result<User, StoreError>> + Send {
        let grant = RoleGrant::new(role, RoleSource::Manual);
        self.change_roles(user_id, move |roles| {
            if !roles.contains(&grant) {
                roles.push(grant.clone());
            }
        })
    }

    /// Revokes the hand-granted `role`; grants of the same role by other sources stay.
    fn revoke_role(
        &self,
        user_id: Uuid,
        role: &str,
    ) -> impl Future<Output = Result<User, StoreError>> + Send {
        let grant = RoleGrant::new(role, RoleSource::Manual);
        self.change_roles(user_id, move |roles| roles.retain(|g| *g != grant))
    }

    /// Reads the user's grants, changes them with `change`, and writes them back if they
    /// changed, retrying when a concurrent change intervened.
    fn change_roles<F>(
        &self,
        user_id: Uuid,
        change: F,
    ) -> impl Future<Output = Result<User, StoreError>> + Send
    where
        F: Fn(&mut Vec<RoleGrant>) + Send + Sync,
    {
        async move {
            loop {
                let user = self.get_user(user_id).await?.ok_or(StoreError::NotFound)?;
                let mut roles = user.roles.clone();
                change(&mut roles);
                let roles = crate::user::normalize_roles(roles);
                if roles == user.roles {
                    return Ok(user);
                }
                let update = UserUpdate {
                    roles: Some(roles),
                    ..UserUpdate::default()
                };
                let audit = AuditEvent::new(AuditKind::Updated, Actor::Application)
                    .user(user_id)
                    .fields(["roles"]);
                match self
                    .update_user(user_id, Some(user.version), update, Some(audit))
                    .await
                {
                    Err(StoreError::Conflict) => continue,
                    other => return other,
                }
            }
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The operations the layer needs, object-safe, so the layer has no store type parameter.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn find_by_identity<'a>(
        &'a self,
        key: &'a IdentityKey,
    ) -> BoxFuture<'a, Result<Option<(User, Identity)>, StoreError>>;
    fn is_identity_deleted<'a>(
        &'a self,
        key: &'a IdentityKey,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn create_user<'a>(
        &'a self,
        user: NewUser,
        key: &'a IdentityKey,
        fingerprint: Option<&'a str>,
        audit: AuditEvent,
    ) -> BoxFuture<'a, Result<Resolved, StoreError>>;
    fn link_identity<'a>(
        &'a self,
        user_id: Uuid,
        key: &'a IdentityKey,
        fingerprint: Option<&'a str>,
        audit: AuditEvent,
    ) -> BoxFuture<'a, Result<Resolved, StoreError>>;
    fn find_by_external_id<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
    fn adopt_legacy_account<'a>(
        &'a self,
        legacy_id: &'a str,
        user: NewUser,
        key: &'a IdentityKey,
        fingerprint: Option<&'a str>,
        audit: AuditEvent,
    ) -> BoxFuture<'a, Result<Resolved, StoreError>>;
    fn find_by_legacy_id<'a>(
        &'a self,
        legacy_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
    fn identities(&self, user_id: Uuid) -> BoxFuture<'_, Result<Vec<Identity>, StoreError>>;
    fn get_user(&self, id: Uuid) -> BoxFuture<'_, Result<Option<User>, StoreError>>;
    fn find_by_verified_email<'a>(
        &'a self,
        email: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<User>, StoreError>>;
    fn find_by_user_name<'a>(
        &'a self,
        user_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
    fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> BoxFuture<'_, Result<User, StoreError>>;
    fn record_login<'a>(
        &'a self,
        key: &'a IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn record_audit(&self, event: AuditEvent) -> BoxFuture<'_, ()>;
    fn changes(&self) -> &ChangeFeed;
    fn debug(&self) -> &dyn fmt::Debug;
    #[cfg(feature = "organizations")]
    fn list_organizations(&self) -> BoxFuture<'_, Result<Vec<Organization>, StoreError>>;
    // Sessions, flows and one-time keys, for the browser sign-in stage.
    #[cfg(feature = "login")]
    fn create_session(&self, session: Session) -> BoxFuture<'_, Result<(), StoreError>>;
    #[cfg(feature = "login")]
    fn find_session(&self, id: SessionHash) -> BoxFuture<'_, Result<Option<Session>, StoreError>>;
    #[cfg(feature = "login")]
    fn touch_sessions(
        &self,
        seen: Vec<(SessionHash, DateTime<Utc>)>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    #[cfg(feature = "login")]
    fn end_sessions(&self, which: SessionSelector) -> BoxFuture<'_, Result<u64, StoreError>>;
    #[cfg(feature = "login")]
    fn put_login_flow(&self, flow: LoginFlow) -> BoxFuture<'_, Result<(), StoreError>>;
    #[cfg(feature = "login")]
    fn take_login_flow(
        &self,
        key: SessionHash,
    ) -> BoxFuture<'_, Result<Option<LoginFlow>, StoreError>>;
    #[cfg(feature = "login")]
    fn consume_once<'a>(
        &'a self,
        kind: &'a str,
        key: SessionHash,
        expires_at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    #[cfg(feature = "login")]
    fn purge_expired(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>>;
}

impl<S: UserStore> DynStore for S {
    fn find_by_identity<'a>(
        &'a self,
        key: &'a IdentityKey,
    ) -> BoxFuture<'a, Result<Option<(User, Identity)>, StoreError>> {
        Box::pin(UserStore::find_by_identity(self, key))
    }

    fn is_identity_deleted<'a>(
        &'a self,
        key: &'a IdentityKey,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(UserStore::is_identity_deleted(self, key))
    }

    fn create_user<'a>(
        &'a self,
        user: NewUser,
        key: &'a IdentityKey,
        fingerprint: Option<&'a str>,
        audit: AuditEvent,
    ) -> BoxFuture<'a, Result<Resolved, StoreError>> {
        Box::pin(UserStore::create_user(self, user, key, fingerprint, audit))
    }

    fn link_identity<'a>(
        &'a self,
        user_id: Uuid,
        key: &'a IdentityKey,
        fingerprint: Option<&'a str>,
        audit: AuditEvent,
    ) -> BoxFuture<'a, Result<Resolved, StoreError>> {
        Box::pin(UserStore::link_identity(
            self,
            user_id,
            key,
            fingerprint,
            audit,
        ))
    }

    fn adopt_legacy_account<'a>(
        &'a self,
        legacy_id: &'a str,
        user: NewUser,
        key: &'a IdentityKey,
        fingerprint: Option<&'a str>,
        audit: AuditEvent,
    ) -> BoxFuture<'a, Result<Resolved, StoreError>> {
        Box::pin(UserStore::adopt_legacy_account(
            self,
            legacy_id,
            user,
            key,
            fingerprint,
            audit,
        ))
    }

    fn find_by_legacy_id<'a>(
        &'a self,
        legacy_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(UserStore::find_by_legacy_id(self, legacy_id))
    }

    fn find_by_external_id<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(UserStore::find_by_external_id(self, external_id))
    }

    fn get_user(&self, id: Uuid) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(UserStore::get_user(self, id))
    }

    fn identities(&self, user_id: Uuid) -> BoxFuture<'_, Result<Vec<Identity>, StoreError>> {
        Box::pin(UserStore::identities(self, user_id))
    }

    fn find_by_verified_email<'a>(
        &'a self,
        email: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<User>, StoreError>> {
        Box::pin(UserStore::find_by_verified_email(self, email, limit))
    }

    fn find_by_user_name<'a>(
        &'a self,
        user_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(UserStore::find_by_user_name(self, user_name))
    }

    fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> BoxFuture<'_, Result<User, StoreError>> {
        Box::pin(UserStore::update_user(
            self,
            user_id,
            expected_version,
            update,
            audit,
        ))
    }

    fn record_login<'a>(
        &'a self,
        key: &'a IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(UserStore::record_login(self, key, at, fingerprint))
    }

    fn record_audit(&self, event: AuditEvent) -> BoxFuture<'_, ()> {
        Box::pin(UserStore::record_audit(self, event))
    }

    fn changes(&self) -> &ChangeFeed {
        UserStore::changes(self)
    }

    #[cfg(feature = "organizations")]
    fn list_organizations(&self) -> BoxFuture<'_, Result<Vec<Organization>, StoreError>> {
        Box::pin(UserStore::list_organizations(self))
    }

    fn debug(&self) -> &dyn fmt::Debug {
        self
    }

    #[cfg(feature = "login")]
    fn create_session(&self, session: Session) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(UserStore::create_session(self, session))
    }

    #[cfg(feature = "login")]
    fn find_session(&self, id: SessionHash) -> BoxFuture<'_, Result<Option<Session>, StoreError>> {
        Box::pin(UserStore::find_session(self, id))
    }

    #[cfg(feature = "login")]
    fn touch_sessions(
        &self,
        seen: Vec<(SessionHash, DateTime<Utc>)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(UserStore::touch_sessions(self, seen))
    }

    #[cfg(feature = "login")]
    fn end_sessions(&self, which: SessionSelector) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(UserStore::end_sessions(self, which))
    }

    #[cfg(feature = "login")]
    fn put_login_flow(&self, flow: LoginFlow) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(UserStore::put_login_flow(self, flow))
    }

    #[cfg(feature = "login")]
    fn take_login_flow(
        &self,
        key: SessionHash,
    ) -> BoxFuture<'_, Result<Option<LoginFlow>, StoreError>> {
        Box::pin(UserStore::take_login_flow(self, key))
    }

    #[cfg(feature = "login")]
    fn consume_once<'a>(
        &'a self,
        kind: &'a str,
        key: SessionHash,
        expires_at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(UserStore::consume_once(self, kind, key, expires_at))
    }

    #[cfg(feature = "login")]
    fn purge_expired(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(UserStore::purge_expired(self, now))
    }
}
