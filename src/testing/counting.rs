//! [`CountingStore`]: a store wrapper that counts what the layer asks of the store.
//!
//! Stage: test support; uses the store contract and the records.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::store::{ChangeFeed, Resolved, StoreError, UserStore};
use crate::user::{Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, User, UserUpdate};

/// Wraps a store and counts identity lookups and account creations, to prove in tests and
/// benchmarks what the caches save: one lookup for a crowd of first requests, none for a
/// cached user. Clones share the counters.
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    lookups: Arc<AtomicUsize>,
    creates: Arc<AtomicUsize>,
}

impl<S> CountingStore<S> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            lookups: Arc::default(),
            creates: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many times an identity was looked up (`find_by_identity`).
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// How many times an account creation was attempted (`create_user`, or
    /// `adopt_legacy_account`).
    pub fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    /// Sets both counters back to zero.
    pub fn reset(&self) {
        self.lookups.store(0, Ordering::SeqCst);
        self.creates.store(0, Ordering::SeqCst);
    }
}

impl<S: UserStore> UserStore for CountingStore<S> {
    async fn find_by_identity(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_identity(key).await
    }
    async fn is_identity_deleted(&self, key: &IdentityKey) -> Result<bool, StoreError> {
        self.inner.is_identity_deleted(key).await
    }
    async fn create_user(
        &self,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create_user(user, key, fingerprint, audit).await
    }
    async fn link_identity(
        &self,
        user_id: Uuid,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        self.inner
            .link_identity(user_id, key, fingerprint, audit)
            .await
    }
    async fn adopt_legacy_account(
        &self,
        legacy_id: &str,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner
            .adopt_legacy_account(legacy_id, user, key, fingerprint, audit)
            .await
    }
    async fn find_by_legacy_id(&self, legacy_id: &str) -> Result<Option<User>, StoreError> {
        self.inner.find_by_legacy_id(legacy_id).await
    }
    async fn find_by_external_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.inner.find_by_external_id(id).await
    }
    async fn find_by_verified_email(
        &self,
        email: &str,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        self.inner.find_by_verified_email(email, limit).await
    }
    async fn identities(&self, user_id: Uuid) -> Result<Vec<Identity>, StoreError> {
        self.inner.identities(user_id).await
    }
    async fn find_by_user_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.inner.find_by_user_name(name).await
    }
    async fn insert_user(&self, user: NewUser, audit: AuditEvent) -> Result<User, StoreError> {
        self.inner.insert_user(user, audit).await
    }
    async fn list_users(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<User>, StoreError> {
        self.inner.list_users(after, limit).await
    }
    async fn insert_group(&self, group: NewGroup) -> Result<Group, StoreError> {
        self.inner.insert_group(group).await
    }
    async fn get_group(&self, id: Uuid) -> Result<Option<Group>, StoreError> {
        self.inner.get_group(id).await
    }
    async fn list_groups(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Group>, StoreError> {
        self.inner.list_groups(after, limit).await
    }
    async fn update_group(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        update: GroupUpdate,
    ) -> Result<(Group, Vec<Uuid>), StoreError> {
        self.inner.update_group(id, expected_version, update).await
    }
    async fn delete_group(&self, id: Uuid) -> Result<Option<Vec<Uuid>>, StoreError> {
        self.inner.delete_group(id).await
    }
    async fn groups_of(&self, user_id: Uuid) -> Result<Vec<Group>, StoreError> {
        self.inner.groups_of(user_id).await
    }
    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.inner.get_user(id).await
    }
    async fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> Result<User, StoreError> {
        self.inner
            .update_user(user_id, expected_version, update, audit)
            .await
    }
    async fn record_login(
        &self,
        key: &IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.record_login(key, at, fingerprint).await
    }
    async fn delete_user(&self, user_id: Uuid, audit: AuditEvent) -> Result<bool, StoreError> {
        self.inner.delete_user(user_id, audit).await
    }
    async fn record_audit(&self, event: AuditEvent) {
        self.inner.record_audit(event).await
    }
    fn changes(&self) -> &ChangeFeed {
        self.inner.changes()
    }
}
