//! [`MemoryStore`]: users in a process's memory, for tests and demos.
//!
//! Stage: storage. Uses only the records and the store contract.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ChangeFeed, Resolved, StoreError, StoreEvent, UserStore};
use crate::audit::{Audit, AuditEvent};
use crate::organization::Organization;
use crate::session::{LoginFlow, Session, SessionHash, SessionSelector};
use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, User, UserStatus, UserUpdate,
};

/// How many audit events a [`MemoryStore`] keeps.
const KEPT_EVENTS: usize = 10_000;

/// A [`UserStore`] in memory. Clones share the same users. Everything is lost when the last
/// clone is dropped.
///
/// It keeps the last 10 000 audit events it emitted, for tests to read with
/// [`audit_events`](Self::audit_events).
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    feed: ChangeFeed,
    audit: Audit,
}

#[derive(Default)]
struct State {
    users: HashMap<Uuid, User>,
    /// The users' unique values, so that a write checks them without reading every user:
    /// login names lower-cased (they compare ignoring ASCII case), and external ids.
    user_names: HashMap<String, Uuid>,
    external_ids: HashMap<String, Uuid>,
    identities: HashMap<IdentityKey, Identity>,
    tombstones: HashSet<IdentityKey>,
    /// Adopted legacy accounts, by legacy id: kept when the user is deleted.
    adoptions: HashMap<String, Uuid>,
    organizations: std::collections::BTreeMap<Uuid, Organization>,
    groups: HashMap<Uuid, Group>,
    events: Vec<AuditEvent>,
    sessions: HashMap<SessionHash, Session>,
    flows: HashMap<SessionHash, LoginFlow>,
    once: HashMap<(String, SessionHash), DateTime<Utc>>,
}

impl State {
    /// Refuses an organisation whose domain or connection another organisation holds.
    fn check_organization(&self, organization: &Organization) -> Result<(), StoreError> {
        for other in self.organizations.values() {
            if other.id == organization.id {
                continue;
            }
            if organization.domains.iter().any(|d| other.owns_domain(d)) {
                return Err(StoreError::Duplicate("domain"));
            }
            let taken = organization.connections.iter().any(|c| {
                other.connections.iter().any(|o| {
                    o.id == c.id || (o.issuer == c.issuer && o.tenant_key() == c.tenant_key())
                })
            });
            if taken {
                return Err(StoreError::Duplicate("connection"));
            }
        }
        Ok(())
    }

    /// Refuses a user record whose unique values another user holds.
    fn check_unique(&self, user: &User) -> Result<(), StoreError> {
        let someone_else = |holder: Option<&Uuid>| holder.is_some_and(|id| *id != user.id);
        if let Some(name) = &user.user_name
            && someone_else(self.user_names.get(&name.to_ascii_lowercase()))
        {
            return Err(StoreError::Duplicate("user_name"));
        }
        if let Some(external_id) = &user.external_id
            && someone_else(self.external_ids.get(external_id))
        {
            return Err(StoreError::Duplicate("external_id"));
        }
        Ok(())
    }

    /// Stores `user` (checked by [`check_unique`](Self::check_unique)), its unique values
    /// indexed in place of its previous version's.
    fn put_user(&mut self, user: User) {
        if let Some(previous) = self.users.get(&user.id) {
            let (id, name, external_id) = (
                previous.id,
                previous.user_name.clone(),
                previous.external_id.clone(),
            );
            self.unindex(id, name.as_deref(), external_id.as_deref());
        }
        if let Some(name) = &user.user_name {
            self.user_names.insert(name.to_ascii_lowercase(), user.id);
        }
        if let Some(external_id) = &user.external_id {
            self.external_ids.insert(external_id.clone(), user.id);
        }
        self.users.insert(user.id, user);
    }

    /// Removes the user `id`, and its unique values from the indexes.
    fn take_user(&mut self, id: Uuid) -> Option<User> {
        let user = self.users.remove(&id)?;
        self.unindex(id, user.user_name.as_deref(), user.external_id.as_deref());
        Some(user)
    }

    fn unindex(&mut self, id: Uuid, name: Option<&str>, external_id: Option<&str>) {
        if let Some(name) = name {
            let name = name.to_ascii_lowercase();
            if self.user_names.get(&name) == Some(&id) {
                self.user_names.remove(&name);
            }
        }
        if let Some(external_id) = external_id
            && self.external_ids.get(external_id) == Some(&id)
        {
            self.external_ids.remove(external_id);
        }
    }

    /// Refuses a group record whose unique values another group holds, or unknown members.
    fn check_group(&self, group: &Group) -> Result<(), StoreError> {
        let others = || self.groups.values().filter(|g| g.id != group.id);
        if others().any(|g| g.display_name.eq_ignore_ascii_case(&group.display_name)) {
            return Err(StoreError::Duplicate("display_name"));
        }
        if let Some(external_id) = &group.external_id
            && others().any(|g| g.external_id.as_ref() == Some(external_id))
        {
            return Err(StoreError::Duplicate("external_id"));
        }
        if group.members.iter().any(|m| !self.users.contains_key(m)) {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The identity's current owner (the insert-or-get "get"), or an error if it was deleted;
    /// `None` when the identity is free to be written.
    fn taken(&self, key: &IdentityKey) -> Result<Option<Resolved>, StoreError> {
        if let Some(identity) = self.identities.get(key) {
            return Ok(Some(Resolved {
                user: self.users[&identity.user_id].clone(),
                identity: identity.clone(),
                written: false,
            }));
        }
        if self.tombstones.contains(key) {
            return Err(StoreError::IdentityDeleted);
        }
        Ok(None)
    }
}

impl MemoryStore {
    /// An empty store whose audit events go to `tracing` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose audit events also go to `audit`'s sinks.
    pub fn with_audit(audit: Audit) -> Self {
        Self {
            inner: Arc::new(Inner {
                audit,
                ..Inner::default()
            }),
        }
    }

    /// The audit events emitted so far (the last 10 000).
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        self.state().events.clone()
    }

    /// Every user, in creation order.
    pub fn users(&self) -> Vec<User> {
        let mut users: Vec<User> = self.state().users.values().cloned().collect();
        users.sort_by_key(|u| u.id);
        users
    }

    /// How many identities exist.
    pub fn identity_count(&self) -> usize {
        self.state().identities.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `create_user`, and with `legacy_id` the adoption of that legacy account, in one step.
    fn create(
        &self,
        legacy_id: Option<&str>,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        let now = crate::user::now();
        let mut state = self.state();
        if let Some(existing) = state.taken(key)? {
            return Ok(existing);
        }
        if legacy_id.is_some_and(|id| state.adoptions.contains_key(id)) {
            return Err(StoreError::Duplicate("legacy_id"));
        }
        let mut user = User::from_new(user, now);
        user.last_login_at = Some(now);
        state.check_unique(&user)?;
        let identity = Identity {
            key: key.clone(),
            user_id: user.id,
            created_at: now,
            last_login_at: Some(now),
            claims_fingerprint: fingerprint.map(str::to_owned),
        };
        if let Some(legacy_id) = legacy_id {
            state.adoptions.insert(legacy_id.to_owned(), user.id);
        }
        state.put_user(user.clone());
        state.identities.insert(key.clone(), identity.clone());
        self.emit(&mut state, audit.identity(key).user(user.id));
        drop(state);
        self.inner.feed.publish(StoreEvent::Changed {
            user_id: user.id,
            version: user.version,
        });
        Ok(Resolved {
            user,
            identity,
            written: true,
        })
    }

    fn emit(&self, state: &mut State, event: AuditEvent) {
        self.inner.audit.emit(&event);
        if state.events.len() == KEPT_EVENTS {
            state.events.remove(0);
        }
        state.events.push(event);
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryStore")
            .field("users", &state.users.len())
            .field("identities", &state.identities.len())
            .finish()
    }
}

impl UserStore for MemoryStore {
    async fn is_identity_deleted(&self, key: &IdentityKey) -> Result<bool, StoreError> {
        Ok(self.state().tombstones.contains(key))
    }

    async fn find_by_identity(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        let state = self.state();
        Ok(state.identities.get(key).and_then(|identity| {
            let user = state.users.get(&identity.user_id)?;
            Some((user.clone(), identity.clone()))
        }))
    }

    async fn create_user(
        &self,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        self.create(None, user, key, fingerprint, audit)
    }

    async fn adopt_legacy_account(
        &self,
        legacy_id: &str,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        self.create(Some(legacy_id), user, key, fingerprint, audit)
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        Ok(self.state().organizations.values().cloned().collect())
    }

    async fn get_organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        Ok(self.state().organizations.get(&id).cloned())
    }

    async fn create_organization(
        &self,
        organization: Organization,
    ) -> Result<Organization, StoreError> {
        let organization = organization.first_version();
        let mut state = self.state();
        if state.organizations.contains_key(&organization.id) {
            return Err(StoreError::Duplicate("id"));
        }
        state.check_organization(&organization)?;
        state
            .organizations
            .insert(organization.id, organization.clone());
        drop(state);
        self.inner.feed.publish(StoreEvent::OrganizationsChanged);
        Ok(organization)
    }

    async fn update_organization(
        &self,
        organization: Organization,
        expected_version: Option<i64>,
    ) -> Result<Organization, StoreError> {
        let mut state = self.state();
        let current = state
            .organizations
            .get(&organization.id)
            .ok_or(StoreError::NotFound)?;
        let organization = organization
            .next_version_of(current, expected_version)
            .ok_or(StoreError::Conflict)?;
        state.check_organization(&organization)?;
        state
            .organizations
            .insert(organization.id, organization.clone());
        drop(state);
        self.inner.feed.publish(StoreEvent::OrganizationsChanged);
        Ok(organization)
    }

    async fn delete_organization(&self, id: Uuid) -> Result<bool, StoreError> {
        let removed = self.state().organizations.remove(&id).is_some();
        if removed {
            self.inner.feed.publish(StoreEvent::OrganizationsChanged);
        }
        Ok(removed)
    }

    async fn find_by_legacy_id(&self, legacy_id: &str) -> Result<Option<User>, StoreError> {
        let state = self.state();
        Ok(state
            .adoptions
            .get(legacy_id)
            .and_then(|user_id| state.users.get(user_id))
            .cloned())
    }

    async fn link_identity(
        &self,
        user_id: Uuid,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        let now = crate::user::now();
        let mut state = self.state();
        if let Some(existing) = state.taken(key)? {
            return Ok(existing);
        }
        if !state.users.contains_key(&user_id) {
            return Err(StoreError::NotFound);
        }
        if state
            .identities
            .values()
            .any(|i| i.user_id == user_id && i.key.issuer() == key.issuer())
        {
            return Err(StoreError::IssuerAlreadyLinked);
        }
        let user = state.users.get_mut(&user_id).ok_or(StoreError::NotFound)?;
        user.last_login_at = Some(now);
        let user = user.clone();
        let identity = Identity {
            key: key.clone(),
            user_id,
            created_at: now,
            last_login_at: Some(now),
            claims_fingerprint: fingerprint.map(str::to_owned),
        };
        state.identities.insert(key.clone(), identity.clone());
        self.emit(&mut state, audit.identity(key).user(user_id));
        Ok(Resolved {
            user,
            identity,
            written: true,
        })
    }

    async fn find_by_external_id(&self, external_id: &str) -> Result<Option<User>, StoreError> {
        let state = self.state();
        Ok(state
            .external_ids
            .get(external_id)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn find_by_verified_email(
        &self,
        email: &str,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self
            .state()
            .users
            .values()
            .filter(|u| {
                u.email_verified
                    && u.email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .cloned()
            .collect();
        users.sort_by_key(|u| u.id);
        users.truncate(limit);
        Ok(users)
    }

    async fn find_by_user_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let state = self.state();
        Ok(state
            .user_names
            .get(&user_name.to_ascii_lowercase())
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn insert_user(&self, user: NewUser, audit: AuditEvent) -> Result<User, StoreError> {
        let mut state = self.state();
        let user = User::from_new(user, crate::user::now());
        state.check_unique(&user)?;
        state.put_user(user.clone());
        self.emit(&mut state, audit.user(user.id));
        drop(state);
        self.inner.feed.publish(StoreEvent::Changed {
            user_id: user.id,
            version: user.version,
        });
        Ok(user)
    }

    async fn list_users(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self
            .state()
            .users
            .values()
            .filter(|u| after.is_none_or(|after| u.id > after))
            .cloned()
            .collect();
        users.sort_by_key(|u| u.id);
        users.truncate(limit);
        Ok(users)
    }

    async fn insert_group(&self, group: NewGroup) -> Result<Group, StoreError> {
        let mut state = self.state();
        let group = Group::from_new(group, crate::user::now());
        state.check_group(&group)?;
        state.groups.insert(group.id, group.clone());
        Ok(group)
    }

    async fn get_group(&self, id: Uuid) -> Result<Option<Group>, StoreError> {
        Ok(self.state().groups.get(&id).cloned())
    }

    async fn list_groups(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Group>, StoreError> {
        let mut groups: Vec<Group> = self
            .state()
            .groups
            .values()
            .filter(|g| after.is_none_or(|after| g.id > after))
            .cloned()
            .collect();
        groups.sort_by_key(|g| g.id);
        groups.truncate(limit);
        Ok(groups)
    }

    async fn update_group(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        update: GroupUpdate,
    ) -> Result<(Group, Vec<Uuid>), StoreError> {
        let mut state = self.state();
        let mut group = state.groups.get(&id).cloned().ok_or(StoreError::NotFound)?;
        if expected_version.is_some_and(|v| v != group.version) {
            return Err(StoreError::Conflict);
        }
        let affected = group.apply(update, crate::user::now());
        state.check_group(&group)?;
        state.groups.insert(id, group.clone());
        Ok((group, affected))
    }

    async fn delete_group(&self, id: Uuid) -> Result<Option<Vec<Uuid>>, StoreError> {
        Ok(self.state().groups.remove(&id).map(|g| g.members))
    }

    async fn groups_of(&self, user_id: Uuid) -> Result<Vec<Group>, StoreError> {
        let mut groups: Vec<Group> = self
            .state()
            .groups
            .values()
            .filter(|g| g.members.contains(&user_id))
            .cloned()
            .collect();
        groups.sort_by_key(|g| g.id);
        Ok(groups)
    }

    async fn identities(&self, user_id: Uuid) -> Result<Vec<Identity>, StoreError> {
        let mut identities: Vec<Identity> = self
            .state()
            .identities
            .values()
            .filter(|i| i.user_id == user_id)
            .cloned()
            .collect();
        identities.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(identities)
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(&id).cloned())
    }

    async fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> Result<User, StoreError> {
        let mut state = self.state();
        let mut user = state
            .users
            .get(&user_id)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if expected_version.is_some_and(|v| v != user.version) {
            return Err(StoreError::Conflict);
        }
        let was_active = user.status == UserStatus::Active;
        user.apply(update, crate::user::now());
        state.check_unique(&user)?;
        state.put_user(user.clone());
        // An account that may no longer sign in keeps no session.
        let before = state.sessions.len();
        if was_active && user.status != UserStatus::Active {
            state.sessions.retain(|_, s| s.user_id != user_id);
        }
        let sessions_ended = state.sessions.len() < before;
        if let Some(audit) = audit {
            self.emit(&mut state, audit.user(user_id));
        }
        drop(state);
        self.inner.feed.publish(StoreEvent::Changed {
            user_id,
            version: user.version,
        });
        if sessions_ended {
            self.inner
                .feed
                .publish(StoreEvent::SessionsEnded { user_id });
        }
        Ok(user)
    }

    async fn record_login(
        &self,
        key: &IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let Some(identity) = state.identities.get_mut(key) else {
            return Err(StoreError::NotFound);
        };
        identity.last_login_at = Some(at);
        if let Some(fingerprint) = fingerprint {
            identity.claims_fingerprint = Some(fingerprint.to_owned());
        }
        let user_id = identity.user_id;
        if let Some(user) = state.users.get_mut(&user_id) {
            user.last_login_at = Some(at);
        }
        Ok(())
    }

    async fn delete_user(&self, user_id: Uuid, audit: AuditEvent) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.take_user(user_id).is_none() {
            return Ok(false);
        }
        let keys: Vec<IdentityKey> = state
            .identities
            .values()
            .filter(|i| i.user_id == user_id)
            .map(|i| i.key.clone())
            .collect();
        for key in keys {
            state.identities.remove(&key);
            state.tombstones.insert(key);
        }
        for group in state.groups.values_mut() {
            group.members.retain(|m| *m != user_id);
        }
        state.sessions.retain(|_, s| s.user_id != user_id);
        self.emit(&mut state, audit.user(user_id));
        drop(state);
        self.inner.feed.publish(StoreEvent::Deleted { user_id });
        Ok(true)
    }

    async fn record_audit(&self, event: AuditEvent) {
        let mut state = self.state();
        self.emit(&mut state, event);
    }

    fn changes(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.users.contains_key(&session.user_id) {
            return Err(StoreError::NotFound);
        }
        if state.sessions.contains_key(&session.id) {
            return Err(StoreError::Duplicate("id_hash"));
        }
        state.sessions.insert(session.id, session);
        Ok(())
    }

    async fn find_session(&self, id: SessionHash) -> Result<Option<Session>, StoreError> {
        Ok(self.state().sessions.get(&id).cloned())
    }

    async fn touch_sessions(
        &self,
        seen: Vec<(SessionHash, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for (id, at) in seen {
            if let Some(session) = state.sessions.get_mut(&id) {
                session.last_seen_at = session.last_seen_at.max(at);
            }
        }
        Ok(())
    }

    async fn end_sessions(&self, which: SessionSelector) -> Result<u64, StoreError> {
        let mut state = self.state();
        let matches = |session: &Session| match &which {
            SessionSelector::Id(id) => session.id == *id,
            SessionSelector::IssuerSession { issuer, sid } => {
                session.issuer == *issuer && session.sid.as_deref() == Some(sid)
            }
            SessionSelector::Subject { issuer, subject } => {
                session.issuer == *issuer && session.subject == *subject
            }
            SessionSelector::User(user_id) => session.user_id == *user_id,
        };
        let ended: Vec<SessionHash> = state
            .sessions
            .values()
            .filter(|s| matches(s))
            .map(|s| s.id)
            .collect();
        let mut users: Vec<Uuid> = ended
            .iter()
            .filter_map(|id| state.sessions.remove(id))
            .map(|s| s.user_id)
            .collect();
        drop(state);
        users.sort();
        users.dedup();
        for user_id in users {
            self.inner
                .feed
                .publish(StoreEvent::SessionsEnded { user_id });
        }
        Ok(ended.len() as u64)
    }

    async fn put_login_flow(&self, flow: LoginFlow) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.flows.contains_key(&flow.key) {
            return Err(StoreError::Duplicate("key_hash"));
        }
        state.flows.insert(flow.key, flow);
        Ok(())
    }

    async fn take_login_flow(&self, key: SessionHash) -> Result<Option<LoginFlow>, StoreError> {
        let flow = self.state().flows.remove(&key);
        Ok(flow.filter(|flow| flow.expires_at > Utc::now()))
    }

    async fn consume_once(
        &self,
        kind: &str,
        key: SessionHash,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let entry = (kind.to_owned(), key);
        if state.once.contains_key(&entry) {
            return Ok(false);
        }
        state.once.insert(entry, expires_at);
        Ok(true)
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut state = self.state();
        let before = state.sessions.len() + state.flows.len() + state.once.len();
        state.sessions.retain(|_, s| s.expires_at >= now);
        state.flows.retain(|_, f| f.expires_at >= now);
        state.once.retain(|_, at| *at >= now);
        let after = state.sessions.len() + state.flows.len() + state.once.len();
        Ok((before - after) as u64)
    }
}
