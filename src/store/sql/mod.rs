//! The one SQL core behind `SqliteStore` and `PostgresStore`: every statement, every row
//! mapping, every write plan and the batching of first sign-ins exist here once.
//!
//! Stage: storage. Uses only the record types (`crate::user`, `crate::audit`) and the store's
//! own contract (`crate::store`).
//!
//! A backend supplies a [`Dialect`]: how it opens a write transaction (SQLite takes its one
//! write lock up front, PostgreSQL locks rows), how a [`Param`] is bound and a [`SqlRow`] read
//! (UUIDs and JSON are text on SQLite, native types on PostgreSQL), the few SQL
//! [`Fragments`](queries::Fragments) it writes its own way, how it broadcasts a change to other
//! processes, and how it writes a batch of first sign-ins in one round trip (a statement script
//! on SQLite, data-modifying CTEs over arrays on PostgreSQL). Everything else is [`SqlCore`].
//!
//! The mechanism is a plain trait over our own parameter and row types rather than a trait over
//! `sqlx::Database`: sqlx's executor, encode and decode bounds are higher-ranked and, because
//! Rust does not imply where-clauses of traits, would have to be repeated on every generic
//! function; `sqlx::Any` would lose PostgreSQL's native UUID and JSONB types and its array
//! binding. Seven typed parameter shapes cover the whole schema.

pub(crate) mod batch;
pub(crate) mod driver;
pub(crate) mod queries;
pub(crate) mod rows;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use self::batch::{Created, Creation, CreationResult, Creations, GroupCommit, announce};
pub(crate) use self::driver::{Driver, Exec};
use self::queries::Queries;
pub(crate) use self::rows::{Param, SqlRow};
use super::{ChangeFeed, Resolved, StoreError, StoreEvent};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::organization::Organization;
use crate::session::{LoginFlow, Session, SessionHash, SessionSelector};
use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, User, UserStatus, UserUpdate,
};

/// The table sqlx records this crate's applied migrations in, apart from the application's
/// `_sqlx_migrations`, so both can migrate one database without tripping over each other.
pub(crate) const MIGRATIONS_TABLE: &str = "_jit_provisioning_migrations";

/// What a SQL backend does its own way; see the [module docs](self).
pub(crate) trait Dialect: Clone + Send + Sync + 'static {
    /// A result row.
    type Row: SqlRow + Send;
    /// Reads outside a transaction.
    type Reader: Exec<Row = Self::Row>;
    /// A write transaction; dropped uncommitted, it rolls back.
    type Tx: Exec<Row = Self::Row>;

    /// The most first sign-ins written in one batch.
    const MAX_BATCH: usize;

    /// The statements, completed with this dialect's fragments.
    fn queries() -> &'static Queries;

    /// Whether a database error code names a condition that passes (503, not 500).
    fn transient(code: &str) -> bool;

    fn reader(&self) -> Self::Reader;

    fn begin(&self) -> impl Future<Output = Result<Self::Tx, sqlx::Error>> + Send;

    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Tells other processes sharing the database of `event` when `tx` commits. By default
    /// nothing: no other process caches the users.
    fn broadcast(
        &self,
        _tx: &mut Self::Tx,
        _event: StoreEvent,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async { Ok(()) }
    }

    /// Writes a batch of first sign-ins in one round trip and one commit, each creation's
    /// audit record (when `persist_audit`) and broadcast with it. An error means nothing was
    /// written.
    fn write_creations(
        &self,
        jobs: &[Creation],
        persist_audit: bool,
    ) -> impl Future<Output = Result<Vec<Created>, sqlx::Error>> + Send;
}

/// A store's database and what it tells others when it writes: everything the writer of
/// first sign-ins needs too.
#[derive(Clone)]
pub(crate) struct Db<D> {
    pub(crate) dialect: D,
    pub(crate) feed: ChangeFeed,
    pub(crate) audit: Audit,
    pub(crate) persist_audit: bool,
}

/// A [`UserStore`](super::UserStore) on any [`Dialect`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SqlCore<D> {
    pub(crate) db: Db<D>,
    /// First sign-ins, written in batches; started on first use with the settings then in
    /// force. Not part of [`Db`], which the writer holds: the writer must not keep itself alive.
    creations: Arc<OnceLock<Creations>>,
}

impl<D: Dialect> SqlCore<D> {
    pub(crate) fn new(dialect: D, feed: ChangeFeed) -> Self {
        Self {
            db: Db {
                dialect,
                feed,
                audit: Audit::new(),
                persist_audit: true,
            },
            creations: Arc::new(OnceLock::new()),
        }
    }

    pub(crate) fn with_audit(mut self, audit: Audit) -> Self {
        self.db.audit = audit;
        self.creations = Arc::new(OnceLock::new());
        self
    }

    pub(crate) fn persist_audit(mut self, persist: bool) -> Self {
        self.db.persist_audit = persist;
        self.creations = Arc::new(OnceLock::new());
        self
    }

    fn creations(&self) -> &Creations {
        self.creations.get_or_init(|| {
            let db = self.db.clone();
            GroupCommit::new(D::MAX_BATCH, move |jobs| {
                let db = db.clone();
                async move { db.create_all(jobs).await }
            })
        })
    }

    /// The persisted audit events, oldest first; only those of `user_id` when given.
    pub(crate) async fn audit_events(
        &self,
        user_id: Option<Uuid>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let sql = queries::audit_events(user_id.is_some());
        let params = user_id.map(Param::id).into_iter().collect();
        let rows = self.db.read_all(sql, params).await?;
        rows.iter().map(rows::audit_event).collect()
    }

    pub(crate) async fn find_by_identity(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        self.db.find_in(&mut self.db.dialect.reader(), key).await
    }

    pub(crate) async fn is_identity_deleted(&self, key: &IdentityKey) -> Result<bool, StoreError> {
        let tombstone = self
            .db
            .dialect
            .reader()
            .fetch_optional(queries::TOMBSTONED, key_params(key))
            .await
            .map_err(self.db.error())?;
        Ok(tombstone.is_some())
    }

    pub(crate) async fn create_user(
        &self,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        Creation::new(user, key, fingerprint, audit)
            .create(self.creations(), |key| async move {
                match self.find_by_identity(&key).await? {
                    Some((user, identity)) => Ok(Resolved {
                        user,
                        identity,
                        written: false,
                    }),
                    // Identities disappear only with their user, as tombstones.
                    None => Err(StoreError::IdentityDeleted),
                }
            })
            .await
    }

    pub(crate) async fn link_identity(
        &self,
        user_id: Uuid,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        let q = D::queries();
        let err = self.db.error();
        let mut tx = self.db.begin().await?;
        if let Some(existing) = self.db.taken(&mut tx, key).await? {
            return Ok(existing);
        }
        // Locking the user keeps it from being deleted under the link and makes links to it
        // take turns, so the check below sees every link committed before.
        let row = tx
            .fetch_optional(&q.select_user_for_update, vec![Param::id(user_id)])
            .await
            .map_err(err)?;
        let mut user = rows::user(&row.ok_or(StoreError::NotFound)?)?;
        let linked = tx
            .fetch_optional(
                queries::LINKED_AT_ISSUER,
                vec![Param::id(user_id), Param::text(key.issuer())],
            )
            .await
            .map_err(err)?
            .map(|row| row.flag("linked"))
            .transpose()?;
        if linked == Some(true) {
            return Err(StoreError::IssuerAlreadyLinked);
        }
        let now = crate::user::now();
        if !self
            .db
            .claim_identity(&mut tx, key, user_id, fingerprint, now)
            .await?
        {
            // Another transaction linked or created this identity first: theirs stands.
            drop(tx);
            return self.claimed_elsewhere(key).await;
        }
        tx.execute(
            queries::SET_LAST_LOGIN,
            vec![Param::time(now), Param::id(user_id)],
        )
        .await
        .map_err(err)?;
        user.last_login_at = Some(now);
        let event = audit.identity(key).user(user_id);
        self.db.persist(&mut tx, &event).await?;
        self.db.commit(tx).await?;
        self.db.audit.emit(&event);
        Ok(Resolved {
            user,
            identity: Identity {
                key: key.clone(),
                user_id,
                created_at: now,
                last_login_at: Some(now),
                claims_fingerprint: fingerprint.map(str::to_owned),
            },
            written: true,
        })
    }

    /// A first sign-in adopting a legacy account: `create_one`'s transaction, with the
    /// adoption record written in it first, so a legacy account taken meanwhile writes
    /// nothing. Not batched: adoptions are rare, and each needs its own answer.
    pub(crate) async fn adopt_legacy_account(
        &self,
        legacy_id: &str,
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Result<Resolved, StoreError> {
        let now = crate::user::now();
        let mut user = User::from_new(user, now);
        user.last_login_at = Some(now);
        let mut tx = self.db.begin().await?;
        if let Some(existing) = self.db.taken(&mut tx, key).await? {
            return Ok(existing);
        }
        let params = vec![
            Param::text(legacy_id),
            Param::id(user.id),
            Param::text(key.issuer()),
            Param::text(key.subject()),
            Param::time(now),
        ];
        tx.execute(queries::INSERT_ADOPTION, params)
            .await
            .map_err(|err| self.db.unique(err, "jit_legacy_adoptions", &["legacy_id"]))?;
        self.db.insert_user(&mut tx, &user).await?;
        if !self
            .db
            .claim_identity(&mut tx, key, user.id, fingerprint, now)
            .await?
        {
            // Another transaction created or linked this identity first: theirs stands, and
            // the legacy account stays free.
            drop(tx);
            return self.claimed_elsewhere(key).await;
        }
        self.db
            .commit_user_write(tx, &audit.identity(key).user(user.id), &user)
            .await?;
        Ok(Resolved {
            identity: Identity {
                key: key.clone(),
                user_id: user.id,
                created_at: now,
                last_login_at: Some(now),
                claims_fingerprint: fingerprint.map(str::to_owned),
            },
            user,
            written: true,
        })
    }

    pub(crate) async fn find_by_legacy_id(
        &self,
        legacy_id: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = &D::queries().find_by_legacy_id;
        self.read_user(sql, vec![Param::text(legacy_id)]).await
    }

    pub(crate) async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        let rows = self
            .db
            .dialect
            .reader()
            .fetch_all(queries::LIST_ORGANIZATIONS, Vec::new())
            .await
            .map_err(self.db.error())?;
        rows.iter().map(|row| row.json("document")).collect()
    }

    pub(crate) async fn get_organization(
        &self,
        id: Uuid,
    ) -> Result<Option<Organization>, StoreError> {
        let row = self
            .db
            .dialect
            .reader()
            .fetch_optional(queries::SELECT_ORGANIZATION, vec![Param::id(id)])
            .await
            .map_err(self.db.error())?;
        row.map(|row| row.json("document")).transpose()
    }

    pub(crate) async fn create_organization(
        &self,
        organization: Organization,
    ) -> Result<Organization, StoreError> {
        let organization = organization.first_version();
        let mut tx = self.db.begin().await?;
        tx.execute(
            queries::INSERT_ORGANIZATION,
            rows::organization_params(&organization),
        )
        .await
        .map_err(|err| self.db.unique(err, "jit_organizations", &["id"]))?;
        self.db.index_organization(&mut tx, &organization).await?;
        self.db.commit_organizations(tx).await?;
        Ok(organization)
    }

    pub(crate) async fn update_organization(
        &self,
        organization: Organization,
        expected_version: Option<i64>,
    ) -> Result<Organization, StoreError> {
        let mut tx = self.db.begin().await?;
        let row = tx
            .fetch_optional(
                &D::queries().select_organization_for_update,
                vec![Param::id(organization.id)],
            )
            .await
            .map_err(self.db.error())?
            .ok_or(StoreError::NotFound)?;
        let current: Organization = row.json("document")?;
        let organization = organization
            .next_version_of(&current, expected_version)
            .ok_or(StoreError::Conflict)?;
        tx.execute(
            queries::UPDATE_ORGANIZATION,
            rows::organization_params(&organization),
        )
        .await
        .map_err(self.db.error())?;
        let id = vec![Param::id(organization.id)];
        for sql in [
            queries::DELETE_ORGANIZATION_DOMAINS,
            queries::DELETE_CONNECTIONS,
        ] {
            tx.execute(sql, id.clone()).await.map_err(self.db.error())?;
        }
        self.db.index_organization(&mut tx, &organization).await?;
        self.db.commit_organizations(tx).await?;
        Ok(organization)
    }

    pub(crate) async fn delete_organization(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let deleted = tx
            .execute(queries::DELETE_ORGANIZATION, vec![Param::id(id)])
            .await
            .map_err(self.db.error())?;
        if deleted == 0 {
            return Ok(false);
        }
        self.db.commit_organizations(tx).await?;
        Ok(true)
    }

    /// The user `key` belongs to, after a transaction found another had just claimed it.
    async fn claimed_elsewhere(&self, key: &IdentityKey) -> Result<Resolved, StoreError> {
        match self.find_by_identity(key).await? {
            Some((user, identity)) => Ok(Resolved {
                user,
                identity,
                written: false,
            }),
            None => Err(StoreError::Conflict),
        }
    }

    pub(crate) async fn find_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = &D::queries().find_by_external_id;
        self.read_user(sql, vec![Param::text(external_id)]).await
    }

    pub(crate) async fn find_by_verified_email(
        &self,
        email: &str,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let sql = &D::queries().find_by_verified_email;
        let params = vec![Param::text(email), limit_param(limit)];
        self.read_users(sql, params).await
    }

    pub(crate) async fn find_by_user_name(
        &self,
        user_name: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = &D::queries().find_by_user_name;
        self.read_user(sql, vec![Param::text(user_name)]).await
    }

    pub(crate) async fn insert_user(
        &self,
        user: NewUser,
        audit: AuditEvent,
    ) -> Result<User, StoreError> {
        let mut tx = self.db.begin().await?;
        let user = User::from_new(user, crate::user::now());
        self.db.insert_user(&mut tx, &user).await?;
        self.db
            .commit_user_write(tx, &audit.user(user.id), &user)
            .await?;
        Ok(user)
    }

    pub(crate) async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let params = vec![Param::id(after.unwrap_or(Uuid::nil())), limit_param(limit)];
        self.read_users(&D::queries().list_users, params).await
    }

    pub(crate) async fn insert_group(&self, group: NewGroup) -> Result<Group, StoreError> {
        let mut tx = self.db.begin().await?;
        let group = Group::from_new(group, crate::user::now());
        self.db.write_group(&mut tx, &group, None).await?;
        self.db.commit(tx).await?;
        Ok(group)
    }

    pub(crate) async fn get_group(&self, id: Uuid) -> Result<Option<Group>, StoreError> {
        let sql = &D::queries().select_group;
        let row = self.db.read_one(sql, vec![Param::id(id)]).await?;
        row.as_ref().map(rows::group).transpose()
    }

    pub(crate) async fn list_groups(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Group>, StoreError> {
        let sql = &D::queries().list_groups;
        let params = vec![Param::id(after.unwrap_or(Uuid::nil())), limit_param(limit)];
        let found = self.db.read_all(sql, params).await?;
        found.iter().map(rows::group).collect()
    }

    pub(crate) async fn update_group(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        update: GroupUpdate,
    ) -> Result<(Group, Vec<Uuid>), StoreError> {
        let sql = &D::queries().select_group_for_update;
        let mut tx = self.db.begin().await?;
        let row = tx
            .fetch_optional(sql, vec![Param::id(id)])
            .await
            .map_err(self.db.error())?;
        let mut group = rows::group(&row.ok_or(StoreError::NotFound)?)?;
        if expected_version.is_some_and(|v| v != group.version) {
            return Err(StoreError::Conflict);
        }
        let read_version = group.version;
        let affected = group.apply(update, crate::user::now());
        if !self
            .db
            .write_group(&mut tx, &group, Some(read_version))
            .await?
        {
            return Err(StoreError::Conflict);
        }
        self.db.commit(tx).await?;
        Ok((group, affected))
    }

    pub(crate) async fn delete_group(&self, id: Uuid) -> Result<Option<Vec<Uuid>>, StoreError> {
        let err = self.db.error();
        let mut tx = self.db.begin().await?;
        let members = tx
            .fetch_all(queries::GROUP_MEMBERS, vec![Param::id(id)])
            .await
            .map_err(err)?
            .iter()
            .map(|row| row.required("user_id", SqlRow::id))
            .collect::<Result<Vec<_>, _>>()?;
        let deleted = tx
            .execute(queries::DELETE_GROUP, vec![Param::id(id)])
            .await
            .map_err(err)?
            == 1;
        self.db.commit(tx).await?;
        Ok(deleted.then_some(members))
    }

    pub(crate) async fn groups_of(&self, user_id: Uuid) -> Result<Vec<Group>, StoreError> {
        let sql = &D::queries().groups_of;
        let found = self.db.read_all(sql, vec![Param::id(user_id)]).await?;
        found.iter().map(rows::group).collect()
    }

    pub(crate) async fn identities(&self, user_id: Uuid) -> Result<Vec<Identity>, StoreError> {
        let found = self
            .db
            .read_all(queries::IDENTITIES_OF, vec![Param::id(user_id)])
            .await?;
        found.iter().map(rows::identity).collect()
    }

    pub(crate) async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.read_user(&D::queries().select_user, vec![Param::id(id)])
            .await
    }

    pub(crate) async fn update_user(
        &self,
        user_id: Uuid,
        expected_version: Option<i64>,
        update: UserUpdate,
        audit: Option<AuditEvent>,
    ) -> Result<User, StoreError> {
        let sql = &D::queries().select_user_for_update;
        let mut tx = self.db.begin().await?;
        let row = tx
            .fetch_optional(sql, vec![Param::id(user_id)])
            .await
            .map_err(self.db.error())?;
        let mut user = rows::user(&row.ok_or(StoreError::NotFound)?)?;
        if expected_version.is_some_and(|v| v != user.version) {
            return Err(StoreError::Conflict);
        }
        let read_version = user.version;
        let was_active = user.status == UserStatus::Active;
        user.apply(update, crate::user::now());
        if !self.db.update_user(&mut tx, &user, read_version).await? {
            return Err(StoreError::Conflict);
        }
        // An account that may no longer sign in keeps no session; reactivating it does not
        // bring them back.
        let sessions_ended = was_active
            && user.status != UserStatus::Active
            && tx
                .execute(queries::END_SESSIONS_OF_USER, vec![Param::id(user_id)])
                .await
                .map_err(self.db.error())?
                > 0;
        let event = audit.map(|event| event.user(user_id));
        if let Some(event) = &event {
            self.db.persist(&mut tx, event).await?;
        }
        self.db
            .announce(&mut tx, changed(user_id, user.version))
            .await?;
        if sessions_ended {
            self.db
                .announce(&mut tx, StoreEvent::SessionsEnded { user_id })
                .await?;
        }
        self.db.commit(tx).await?;
        if let Some(event) = &event {
            self.db.audit.emit(event);
        }
        self.db.feed.publish(changed(user_id, user.version));
        if sessions_ended {
            self.db.feed.publish(StoreEvent::SessionsEnded { user_id });
        }
        Ok(user)
    }

    pub(crate) async fn record_login(
        &self,
        key: &IdentityKey,
        at: DateTime<Utc>,
        fingerprint: Option<&str>,
    ) -> Result<(), StoreError> {
        let err = self.db.error();
        let mut tx = self.db.begin().await?;
        let params = vec![
            Param::time(at),
            Param::opt_text(fingerprint),
            Param::text(key.issuer()),
            Param::text(key.subject()),
        ];
        let row = tx
            .fetch_optional(queries::RECORD_IDENTITY_LOGIN, params)
            .await
            .map_err(err)?;
        let user_id = row
            .ok_or(StoreError::NotFound)?
            .required("user_id", SqlRow::id)?;
        tx.execute(
            queries::SET_LAST_LOGIN,
            vec![Param::time(at), Param::id(user_id)],
        )
        .await
        .map_err(err)?;
        self.db.commit(tx).await
    }

    pub(crate) async fn delete_user(
        &self,
        user_id: Uuid,
        audit: AuditEvent,
    ) -> Result<bool, StoreError> {
        let err = self.db.error();
        let mut tx = self.db.begin().await?;
        tx.execute(
            queries::TOMBSTONE_IDENTITIES,
            vec![Param::id(user_id), Param::time(crate::user::now())],
        )
        .await
        .map_err(err)?;
        let deleted = tx
            .execute(queries::DELETE_USER, vec![Param::id(user_id)])
            .await
            .map_err(err)?
            == 1;
        if !deleted {
            return Ok(false);
        }
        let event = audit.user(user_id);
        self.db.persist(&mut tx, &event).await?;
        self.db
            .announce(&mut tx, StoreEvent::Deleted { user_id })
            .await?;
        self.db.commit(tx).await?;
        self.db.audit.emit(&event);
        self.db.feed.publish(StoreEvent::Deleted { user_id });
        Ok(true)
    }

    pub(crate) async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(queries::INSERT_SESSION, rows::session_params(&session))
            .await
            .map_err(|err| {
                if rows::is_missing_reference(&err) {
                    StoreError::NotFound
                } else {
                    self.db.unique(err, "jit_sessions", &["id_hash"])
                }
            })?;
        self.db.commit(tx).await
    }

    pub(crate) async fn find_session(
        &self,
        id: SessionHash,
    ) -> Result<Option<Session>, StoreError> {
        let row = self
            .db
            .read_one(queries::SELECT_SESSION, vec![Param::text(&id.to_hex())])
            .await?;
        row.as_ref().map(rows::session).transpose()
    }

    pub(crate) async fn touch_sessions(
        &self,
        seen: Vec<(SessionHash, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        for (id, at) in seen {
            tx.execute(
                queries::TOUCH_SESSION,
                vec![Param::text(&id.to_hex()), Param::time(at)],
            )
            .await
            .map_err(self.db.error())?;
        }
        self.db.commit(tx).await
    }

    pub(crate) async fn end_sessions(&self, which: SessionSelector) -> Result<u64, StoreError> {
        let (sql, params) = match which {
            SessionSelector::Id(id) => (queries::END_SESSION, vec![Param::text(&id.to_hex())]),
            SessionSelector::IssuerSession { issuer, sid } => (
                queries::END_SESSIONS_OF_SID,
                vec![Param::Text(Some(issuer)), Param::Text(Some(sid))],
            ),
            SessionSelector::Subject { issuer, subject } => (
                queries::END_SESSIONS_OF_SUBJECT,
                vec![Param::Text(Some(issuer)), Param::Text(Some(subject))],
            ),
            SessionSelector::User(user_id) => (
                queries::END_SESSIONS_OF_USER_RETURNING,
                vec![Param::id(user_id)],
            ),
        };
        let mut tx = self.db.begin().await?;
        let ended = tx.fetch_all(sql, params).await.map_err(self.db.error())?;
        let mut users = ended
            .iter()
            .map(|row| row.required("user_id", SqlRow::id))
            .collect::<Result<Vec<_>, _>>()?;
        users.sort();
        users.dedup();
        for user_id in &users {
            self.db
                .announce(&mut tx, StoreEvent::SessionsEnded { user_id: *user_id })
                .await?;
        }
        self.db.commit(tx).await?;
        for user_id in users {
            self.db.feed.publish(StoreEvent::SessionsEnded { user_id });
        }
        Ok(ended.len() as u64)
    }

    pub(crate) async fn put_login_flow(&self, flow: LoginFlow) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(queries::INSERT_FLOW, rows::flow_params(&flow))
            .await
            .map_err(|err| self.db.unique(err, "jit_login_flows", &["key_hash"]))?;
        self.db.commit(tx).await
    }

    pub(crate) async fn take_login_flow(
        &self,
        key: SessionHash,
    ) -> Result<Option<LoginFlow>, StoreError> {
        let mut tx = self.db.begin().await?;
        let row = tx
            .fetch_optional(queries::TAKE_FLOW, vec![Param::text(&key.to_hex())])
            .await
            .map_err(self.db.error())?;
        self.db.commit(tx).await?;
        let flow = row.as_ref().map(rows::flow).transpose()?;
        Ok(flow.filter(|flow| flow.expires_at > Utc::now()))
    }

    pub(crate) async fn consume_once(
        &self,
        kind: &str,
        key: SessionHash,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let params = vec![
            Param::text(kind),
            Param::text(&key.to_hex()),
            Param::time(expires_at),
        ];
        let first = tx
            .fetch_optional(queries::CONSUME_ONCE, params)
            .await
            .map_err(self.db.error())?
            .is_some();
        self.db.commit(tx).await?;
        Ok(first)
    }

    pub(crate) async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut purged = 0;
        for sql in [
            queries::PURGE_SESSIONS,
            queries::PURGE_FLOWS,
            queries::PURGE_ONCE,
        ] {
            purged += tx
                .execute(sql, vec![Param::time(now)])
                .await
                .map_err(self.db.error())?;
        }
        self.db.commit(tx).await?;
        Ok(purged)
    }

    pub(crate) async fn record_audit(&self, event: AuditEvent) {
        // Anyone can send a bad token: persisting those refusals would let anyone make the
        // database write. They go to `tracing` and the sinks only.
        if self.db.persist_audit && event.kind != AuditKind::TokenRejected {
            let persisted = async {
                let mut tx = self.db.begin().await?;
                self.db.persist(&mut tx, &event).await?;
                self.db.commit(tx).await
            }
            .await;
            if let Err(error) = persisted {
                tracing::warn!(
                    target: "tower_jit_provisioning::store",
                    error = %crate::error::ErrorChain(&error),
                    kind = event.kind.as_str(),
                    "audit event not persisted"
                );
            }
        }
        self.db.audit.emit(&event);
    }

    async fn read_user(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<User>, StoreError> {
        let row = self.db.read_one(sql, params).await?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn read_users(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<User>, StoreError> {
        let found = self.db.read_all(sql, params).await?;
        found.iter().map(rows::user).collect()
    }
}

impl<D: Dialect> Db<D> {
    /// Turns a driver error into a [`StoreError`] by this dialect's transient codes.
    fn error(&self) -> impl Fn(sqlx::Error) -> StoreError + Copy {
        |err| rows::classify(err, D::transient)
    }

    /// The rows of one read on the pool.
    async fn read_all(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<D::Row>, StoreError> {
        let mut reader = self.dialect.reader();
        reader.fetch_all(sql, params).await.map_err(self.error())
    }

    /// The row, if any, of one read on the pool.
    async fn read_one(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<D::Row>, StoreError> {
        let mut reader = self.dialect.reader();
        reader
            .fetch_optional(sql, params)
            .await
            .map_err(self.error())
    }

    async fn begin(&self) -> Result<D::Tx, StoreError> {
        self.dialect.begin().await.map_err(self.error())
    }

    async fn commit(&self, tx: D::Tx) -> Result<(), StoreError> {
        self.dialect.commit(tx).await.map_err(self.error())
    }

    /// Queues the broadcast of a change to other processes; it is sent when `tx` commits.
    async fn announce(&self, tx: &mut D::Tx, event: StoreEvent) -> Result<(), StoreError> {
        self.dialect
            .broadcast(tx, event)
            .await
            .map_err(self.error())
    }

    async fn persist(&self, tx: &mut D::Tx, event: &AuditEvent) -> Result<(), StoreError> {
        if !self.persist_audit {
            return Ok(());
        }
        tx.execute(queries::INSERT_AUDIT, rows::audit_params(event))
            .await
            .map_err(self.error())?;
        Ok(())
    }

    /// Claims the organisation's domains and connections, each for it alone.
    async fn index_organization(
        &self,
        tx: &mut D::Tx,
        organization: &Organization,
    ) -> Result<(), StoreError> {
        let id = Param::id(organization.id);
        for domain in &organization.domains {
            tx.execute(
                queries::INSERT_ORGANIZATION_DOMAIN,
                vec![Param::text(domain), id.clone()],
            )
            .await
            .map_err(|err| self.unique(err, "jit_organization_domains", &["domain"]))?;
        }
        for connection in &organization.connections {
            let params = vec![
                Param::id(connection.id),
                id.clone(),
                Param::text(&connection.issuer),
                Param::text(connection.tenant_key()),
            ];
            tx.execute(queries::INSERT_CONNECTION, params)
                .await
                .map_err(
                    |err| match self.unique(err, "jit_connections", &["issuer"]) {
                        StoreError::Duplicate(_) => StoreError::Duplicate("connection"),
                        other => other,
                    },
                )?;
        }
        Ok(())
    }

    /// Commits a change to the organisations and tells every server.
    async fn commit_organizations(&self, mut tx: D::Tx) -> Result<(), StoreError> {
        self.announce(&mut tx, StoreEvent::OrganizationsChanged)
            .await?;
        self.commit(tx).await?;
        self.feed.publish(StoreEvent::OrganizationsChanged);
        Ok(())
    }

    /// Ends a transaction that wrote `user`: persists `event` and announces the change with
    /// it, commits, then emits the event and publishes the change in this process.
    async fn commit_user_write(
        &self,
        mut tx: D::Tx,
        event: &AuditEvent,
        user: &User,
    ) -> Result<(), StoreError> {
        self.persist(&mut tx, event).await?;
        self.announce(&mut tx, changed(user.id, user.version))
            .await?;
        self.commit(tx).await?;
        self.audit.emit(event);
        self.feed.publish(changed(user.id, user.version));
        Ok(())
    }

    /// The user `key` signs in to, with the identity, read through `exec`.
    async fn find_in<E: Exec>(
        &self,
        exec: &mut E,
        key: &IdentityKey,
    ) -> Result<Option<(User, Identity)>, StoreError> {
        let row = exec
            .fetch_optional(queries::find_by_identity(), key_params(key))
            .await
            .map_err(self.error())?;
        row.as_ref().map(rows::user_and_identity).transpose()
    }

    /// The identity's current owner (the insert-or-get "get"), an error if it was deleted,
    /// `None` if it is free to be written.
    async fn taken(
        &self,
        tx: &mut D::Tx,
        key: &IdentityKey,
    ) -> Result<Option<Resolved>, StoreError> {
        if let Some((user, identity)) = self.find_in(tx, key).await? {
            return Ok(Some(Resolved {
                user,
                identity,
                written: false,
            }));
        }
        let tombstone = tx
            .fetch_optional(queries::TOMBSTONED, key_params(key))
            .await
            .map_err(self.error())?;
        if tombstone.is_some() {
            return Err(StoreError::IdentityDeleted);
        }
        Ok(None)
    }

    /// Inserts the identity, signed in `now`, unless another transaction did first; `false`
    /// when it lost.
    async fn claim_identity(
        &self,
        tx: &mut D::Tx,
        key: &IdentityKey,
        user_id: Uuid,
        fingerprint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let params = vec![
            Param::text(key.issuer()),
            Param::text(key.subject()),
            Param::id(user_id),
            Param::opt_text(fingerprint),
            Param::time(now),
        ];
        let claimed = tx
            .fetch_optional(queries::CLAIM_IDENTITY, params)
            .await
            .map_err(self.error())?;
        Ok(claimed.is_some())
    }

    async fn insert_user(&self, tx: &mut D::Tx, user: &User) -> Result<(), StoreError> {
        tx.execute(queries::INSERT_USER, rows::user_params(user))
            .await
            .map_err(|err| self.unique(err, "jit_users", &["user_name", "external_id"]))?;
        Ok(())
    }

    /// Writes `user` over the version read; `false` when the row moved on since.
    async fn update_user(
        &self,
        tx: &mut D::Tx,
        user: &User,
        read_version: i64,
    ) -> Result<bool, StoreError> {
        let mut params = rows::user_params(user);
        params.push(Param::Int(read_version));
        let changed = tx
            .execute(queries::UPDATE_USER, params)
            .await
            .map_err(|err| self.unique(err, "jit_users", &["user_name", "external_id"]))?;
        Ok(changed == 1)
    }

    /// Inserts `group` (`read_version` `None`) or writes it over the version read, with its
    /// members; `false` when the row moved on since.
    async fn write_group(
        &self,
        tx: &mut D::Tx,
        group: &Group,
        read_version: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut params = rows::group_params(group);
        let sql = match read_version {
            None => queries::INSERT_GROUP,
            Some(version) => {
                params.push(Param::Int(version));
                queries::UPDATE_GROUP
            }
        };
        let changed = tx
            .execute(sql, params)
            .await
            .map_err(|err| self.unique(err, "jit_groups", &["display_name", "external_id"]))?;
        if changed != 1 {
            return Ok(false);
        }
        tx.execute(queries::DELETE_MEMBERS, vec![Param::id(group.id)])
            .await
            .map_err(self.error())?;
        let params = vec![
            Param::id(group.id),
            Param::json(&group.members),
            Param::time(group.updated_at),
        ];
        tx.execute(&D::queries().insert_members, params)
            .await
            .map_err(|err| {
                if rows::is_missing_reference(&err) {
                    StoreError::NotFound
                } else {
                    rows::classify(err, D::transient)
                }
            })?;
        Ok(true)
    }

    /// A unique violation on one of `columns` of `table` as [`StoreError::Duplicate`].
    fn unique(&self, err: sqlx::Error, table: &str, columns: &[&'static str]) -> StoreError {
        match rows::duplicate(&err, table, columns) {
            Some(column) => StoreError::Duplicate(column),
            None => rows::classify(err, D::transient),
        }
    }

    /// Writes a batch of first sign-ins, then announces what was written.
    async fn create_all(&self, jobs: Vec<Creation>) -> Vec<CreationResult> {
        let results: Vec<Result<Created, StoreError>> = match self
            .dialect
            .write_creations(&jobs, self.persist_audit)
            .await
        {
            Ok(created) => created.into_iter().map(Ok).collect(),
            Err(err) if rows::passes(&err, D::transient) => {
                let shared = Arc::new(err);
                (0..jobs.len())
                    .map(|_| Err(StoreError::Unavailable(Box::new(Arc::clone(&shared)))))
                    .collect()
            }
            // The batch wrote nothing (a value was taken in a race): each on its own, so
            // that each gets its own answer.
            Err(_) => {
                let mut results = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    results.push(self.create_one(job).await);
                }
                results
            }
        };
        announce(jobs, results, &self.audit, &self.feed)
    }

    /// One first sign-in in a transaction of its own, statement by statement.
    async fn create_one(&self, job: &Creation) -> Result<Created, StoreError> {
        let mut tx = self.begin().await?;
        match self.taken(&mut tx, &job.key).await {
            Ok(Some(_)) => return Ok(Created::Taken),
            Err(StoreError::IdentityDeleted) => return Ok(Created::Deleted),
            Err(other) => return Err(other),
            Ok(None) => {}
        }
        match self.insert_user(&mut tx, &job.user).await {
            Err(StoreError::Duplicate(column)) => return Ok(Created::Duplicate(column)),
            other => other?,
        }
        let (user, fingerprint) = (&job.user, job.fingerprint.as_deref());
        if !self
            .claim_identity(&mut tx, &job.key, user.id, fingerprint, user.created_at)
            .await?
        {
            // Claimed elsewhere meanwhile: the user row goes with the rollback.
            return Ok(Created::Taken);
        }
        self.persist(&mut tx, &job.event).await?;
        self.announce(&mut tx, changed(user.id, user.version))
            .await?;
        self.commit(tx).await?;
        Ok(Created::Written)
    }
}

fn changed(user_id: Uuid, version: i64) -> StoreEvent {
    StoreEvent::Changed { user_id, version }
}

fn key_params(key: &IdentityKey) -> Vec<Param> {
    vec![Param::text(key.issuer()), Param::text(key.subject())]
}

fn limit_param(limit: usize) -> Param {
    Param::Int(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// What every SQL store offers, handed to its `core: SqlCore<_>`: the audit settings, the
/// persisted audit trail and [`UserStore`](crate::store::UserStore).
macro_rules! sql_store {
    ($store:ty) => {
        impl $store {
            /// Sends audit events to `audit`'s sinks as well as to `tracing`. The returned store
            /// shares this one's connections.
            #[must_use]
            pub fn with_audit(self, audit: $crate::audit::Audit) -> Self {
                Self {
                    core: self.core.with_audit(audit),
                }
            }

            /// Whether audit events are persisted in `jit_audit_events` (default: yes).
            /// `token_rejected` events never are: anyone can cause them.
            #[must_use]
            pub fn persist_audit(self, persist: bool) -> Self {
                Self {
                    core: self.core.persist_audit(persist),
                }
            }

            /// The persisted audit events, oldest first; only those of `user_id` when given.
            ///
            /// # Errors
            ///
            /// As for any read.
            pub async fn audit_events(
                &self,
                user_id: Option<uuid::Uuid>,
            ) -> Result<Vec<$crate::audit::AuditEvent>, $crate::store::StoreError> {
                self.core.audit_events(user_id).await
            }
        }

        impl $crate::store::UserStore for $store {
            async fn find_by_identity(
                &self,
                key: &$crate::user::IdentityKey,
            ) -> Result<
                Option<($crate::user::User, $crate::user::Identity)>,
                $crate::store::StoreError,
            > {
                self.core.find_by_identity(key).await
            }

            async fn is_identity_deleted(
                &self,
                key: &$crate::user::IdentityKey,
            ) -> Result<bool, $crate::store::StoreError> {
                self.core.is_identity_deleted(key).await
            }

            async fn create_user(
                &self,
                user: $crate::user::NewUser,
                key: &$crate::user::IdentityKey,
                fingerprint: Option<&str>,
                audit: $crate::audit::AuditEvent,
            ) -> Result<$crate::store::Resolved, $crate::store::StoreError> {
                self.core.create_user(user, key, fingerprint, audit).await
            }

            async fn link_identity(
                &self,
                user_id: uuid::Uuid,
                key: &$crate::user::IdentityKey,
                fingerprint: Option<&str>,
                audit: $crate::audit::AuditEvent,
            ) -> Result<$crate::store::Resolved, $crate::store::StoreError> {
                self.core
                    .link_identity(user_id, key, fingerprint, audit)
                    .await
            }

            async fn adopt_legacy_account(
                &self,
                legacy_id: &str,
                user: $crate::user::NewUser,
                key: &$crate::user::IdentityKey,
                fingerprint: Option<&str>,
                audit: $crate::audit::AuditEvent,
            ) -> Result<$crate::store::Resolved, $crate::store::StoreError> {
                self.core
                    .adopt_legacy_account(legacy_id, user, key, fingerprint, audit)
                    .await
            }

            async fn find_by_legacy_id(
                &self,
                legacy_id: &str,
            ) -> Result<Option<$crate::user::User>, $crate::store::StoreError> {
                self.core.find_by_legacy_id(legacy_id).await
            }

            async fn list_organizations(
                &self,
            ) -> Result<Vec<$crate::organization::Organization>, $crate::store::StoreError> {
                self.core.list_organizations().await
            }

            async fn get_organization(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::organization::Organization>, $crate::store::StoreError> {
                self.core.get_organization(id).await
            }

            async fn create_organization(
                &self,
                organization: $crate::organization::Organization,
            ) -> Result<$crate::organization::Organization, $crate::store::StoreError> {
                self.core.create_organization(organization).await
            }

            async fn update_organization(
                &self,
                organization: $crate::organization::Organization,
                expected_version: Option<i64>,
            ) -> Result<$crate::organization::Organization, $crate::store::StoreError> {
                self.core
                    .update_organization(organization, expected_version)
                    .await
            }

            async fn delete_organization(
                &self,
                id: uuid::Uuid,
            ) -> Result<bool, $crate::store::StoreError> {
                self.core.delete_organization(id).await
            }

            async fn find_by_external_id(
                &self,
                external_id: &str,
            ) -> Result<Option<$crate::user::User>, $crate::store::StoreError> {
                self.core.find_by_external_id(external_id).await
            }

            async fn find_by_verified_email(
                &self,
                email: &str,
                limit: usize,
            ) -> Result<Vec<$crate::user::User>, $crate::store::StoreError> {
                self.core.find_by_verified_email(email, limit).await
            }

            async fn find_by_user_name(
                &self,
                user_name: &str,
            ) -> Result<Option<$crate::user::User>, $crate::store::StoreError> {
                self.core.find_by_user_name(user_name).await
            }

            async fn insert_user(
                &self,
                user: $crate::user::NewUser,
                audit: $crate::audit::AuditEvent,
            ) -> Result<$crate::user::User, $crate::store::StoreError> {
                self.core.insert_user(user, audit).await
            }

            async fn list_users(
                &self,
                after: Option<uuid::Uuid>,
                limit: usize,
            ) -> Result<Vec<$crate::user::User>, $crate::store::StoreError> {
                self.core.list_users(after, limit).await
            }

            async fn insert_group(
                &self,
                group: $crate::user::NewGroup,
            ) -> Result<$crate::user::Group, $crate::store::StoreError> {
                self.core.insert_group(group).await
            }

            async fn get_group(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::user::Group>, $crate::store::StoreError> {
                self.core.get_group(id).await
            }

            async fn list_groups(
                &self,
                after: Option<uuid::Uuid>,
                limit: usize,
            ) -> Result<Vec<$crate::user::Group>, $crate::store::StoreError> {
                self.core.list_groups(after, limit).await
            }

            async fn update_group(
                &self,
                id: uuid::Uuid,
                expected_version: Option<i64>,
                update: $crate::user::GroupUpdate,
            ) -> Result<($crate::user::Group, Vec<uuid::Uuid>), $crate::store::StoreError> {
                self.core.update_group(id, expected_version, update).await
            }

            async fn delete_group(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<Vec<uuid::Uuid>>, $crate::store::StoreError> {
                self.core.delete_group(id).await
            }

            async fn groups_of(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Vec<$crate::user::Group>, $crate::store::StoreError> {
                self.core.groups_of(user_id).await
            }

            async fn identities(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Vec<$crate::user::Identity>, $crate::store::StoreError> {
                self.core.identities(user_id).await
            }

            async fn get_user(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::user::User>, $crate::store::StoreError> {
                self.core.get_user(id).await
            }

            async fn update_user(
                &self,
                user_id: uuid::Uuid,
                expected_version: Option<i64>,
                update: $crate::user::UserUpdate,
                audit: Option<$crate::audit::AuditEvent>,
            ) -> Result<$crate::user::User, $crate::store::StoreError> {
                self.core
                    .update_user(user_id, expected_version, update, audit)
                    .await
            }

            async fn record_login(
                &self,
                key: &$crate::user::IdentityKey,
                at: chrono::DateTime<chrono::Utc>,
                fingerprint: Option<&str>,
            ) -> Result<(), $crate::store::StoreError> {
                self.core.record_login(key, at, fingerprint).await
            }

            async fn delete_user(
                &self,
                user_id: uuid::Uuid,
                audit: $crate::audit::AuditEvent,
            ) -> Result<bool, $crate::store::StoreError> {
                self.core.delete_user(user_id, audit).await
            }

            async fn record_audit(&self, event: $crate::audit::AuditEvent) {
                self.core.record_audit(event).await
            }

            fn changes(&self) -> &$crate::store::ChangeFeed {
                &self.core.db.feed
            }

            async fn create_session(
                &self,
                session: $crate::session::Session,
            ) -> Result<(), $crate::store::StoreError> {
                self.core.create_session(session).await
            }

            async fn find_session(
                &self,
                id: $crate::session::SessionHash,
            ) -> Result<Option<$crate::session::Session>, $crate::store::StoreError> {
                self.core.find_session(id).await
            }

            async fn touch_sessions(
                &self,
                seen: Vec<($crate::session::SessionHash, chrono::DateTime<chrono::Utc>)>,
            ) -> Result<(), $crate::store::StoreError> {
                self.core.touch_sessions(seen).await
            }

            async fn end_sessions(
                &self,
                which: $crate::session::SessionSelector,
            ) -> Result<u64, $crate::store::StoreError> {
                self.core.end_sessions(which).await
            }

            async fn put_login_flow(
                &self,
                flow: $crate::session::LoginFlow,
            ) -> Result<(), $crate::store::StoreError> {
                self.core.put_login_flow(flow).await
            }

            async fn take_login_flow(
                &self,
                key: $crate::session::SessionHash,
            ) -> Result<Option<$crate::session::LoginFlow>, $crate::store::StoreError> {
                self.core.take_login_flow(key).await
            }

            async fn consume_once(
                &self,
                kind: &str,
                key: $crate::session::SessionHash,
                expires_at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::store::StoreError> {
                self.core.consume_once(kind, key, expires_at).await
            }

            async fn purge_expired(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::store::StoreError> {
                self.core.purge_expired(now).await
            }
        }
    };
}
pub(crate) use sql_store;
