//! Accounts: [`User`], the [`Identity`]s that sign in to it, and what a store is asked to write.
//!
//! Stage: records shared by every stage; uses nothing else of the crate.
//!
//! A person is known to the application as one [`User`]. Each way they sign in is an
//! [`Identity`]: an issuer and the subject that issuer gives them, keyed by [`IdentityKey`].
//! Several identities can belong to one user (linking, several providers); the same `sub` at two
//! issuers is two identities and, unless linked, two users. An e-mail address is profile data,
//! never a key.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The current time, at the microsecond precision every store keeps, so that a record compares
/// equal to itself read back.
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// The key of an identity: `(issuer, subject)`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentityKey {
    issuer: Arc<str>,
    subject: Arc<str>,
}

impl IdentityKey {
    /// The identity `subject` at `issuer`.
    pub fn new(issuer: impl Into<Arc<str>>, subject: impl Into<Arc<str>>) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
        }
    }

    /// The issuer, exactly as configured.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's subject identifier.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:?}, {:?})", &*self.issuer, &*self.subject)
    }
}

/// Whether an account may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// Created, waiting for the application to approve it; refused with `pending_approval`.
    PendingApproval,
    /// Switched off; refused with `deactivated`, and never switched back on by a login unless
    /// reactivate-on-login is configured.
    Deactivated,
}

impl UserStatus {
    /// `active`, `pending_approval` or `deactivated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PendingApproval => "pending_approval",
            Self::Deactivated => "deactivated",
        }
    }

    /// The status named by [`as_str`](Self::as_str).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Self::Active),
            "pending_approval" => Some(Self::PendingApproval),
            "deactivated" => Some(Self::Deactivated),
            _ => None,
        }
    }
}

/// Where a role grant came from. A login's sync revokes only [`Mapping`](Self::Mapping) grants
/// that the current rules no longer justify; every other grant is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "rule", rename_all = "snake_case")]
pub enum RoleSource {
    /// A default role given to every new account.
    Default,
    /// A mapping rule, by its identifier (e.g. `group:admins`).
    Mapping(String),
    /// Granted by the application.
    Manual,
    /// Granted through SCIM.
    Scim,
}

impl fmt::Display for RoleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Mapping(rule) => write!(f, "mapping:{rule}"),
            Self::Manual => f.write_str("manual"),
            Self::Scim => f.write_str("scim"),
        }
    }
}

/// One role, granted by one source. A user may hold the same role from several sources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleGrant {
    /// The role's name.
    pub role: String,
    /// Who granted it.
    pub source: RoleSource,
}

impl RoleGrant {
    /// `role`, granted by `source`.
    pub fn new(role: impl Into<String>, source: RoleSource) -> Self {
        Self {
            role: role.into(),
            source,
        }
    }
}

/// An account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Stable identifier, a UUID v7 (time-ordered).
    pub id: Uuid,
    /// E-mail address, as last mapped (lower-cased domain). Not a key.
    pub email: Option<String>,
    /// Whether an issuer asserted the address was verified.
    pub email_verified: bool,
    /// A unique login name for SCIM clients, filled from a verified e-mail by default.
    pub user_name: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// Picture URL.
    pub picture: Option<String>,
    /// Locale.
    pub locale: Option<String>,
    /// Role grants, each with its source.
    pub roles: Vec<RoleGrant>,
    /// Group names, as last mapped or pushed.
    pub groups: Vec<String>,
    /// Mapped extras.
    pub attributes: Map<String, Value>,
    /// Whether the account may be used.
    pub status: UserStatus,
    /// An identifier the identity provider's provisioning system (SCIM) knows the user by.
    pub external_id: Option<String>,
    /// SCIM attributes that have no field of their own (`title`, `phoneNumbers`, the enterprise
    /// extension, …), as the SCIM client last sent them.
    pub scim_attributes: Map<String, Value>,
    /// The fields SCIM has set (`user_name`, `email`, `display_name`, `given_name`,
    /// `family_name`, `locale`, `groups`): a login's sync leaves them alone unless the field's
    /// policy is [`SyncPolicy::Override`](crate::SyncPolicy::Override).
    pub scim_managed: Vec<String>,
    /// Incremented by every change; writes that expect an older version fail with a conflict.
    pub version: i64,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account last changed.
    pub updated_at: DateTime<Utc>,
    /// When one of the account's identities last signed in.
    pub last_login_at: Option<DateTime<Utc>>,
    /// The [organisation](crate::organization) the account belongs to, for good: only that
    /// organisation's connections sign in to it. `None`: an account of the layer's own
    /// issuers.
    #[serde(default)]
    pub organization_id: Option<Uuid>,
}

impl User {
    /// The distinct role names, sorted.
    pub fn role_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.roles.iter().map(|g| g.role.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Whether the user holds `role` from any source.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|g| g.role == role)
    }

    /// Builds a new user's record from `new`, as stores do on insert.
    pub fn from_new(new: NewUser, now: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7(),
            email: new.email,
            email_verified: new.email_verified,
            user_name: new.user_name,
            display_name: new.display_name,
            given_name: new.given_name,
            family_name: new.family_name,
            picture: new.picture,
            locale: new.locale,
            roles: normalize_roles(new.roles),
            groups: new.groups,
            attributes: new.attributes,
            status: new.status,
            external_id: new.external_id,
            scim_attributes: new.scim_attributes,
            scim_managed: new.scim_managed,
            version: 1,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            organization_id: new.organization_id,
        }
    }

    /// Applies `update` to this record, as stores do: bumps the version and `updated_at`.
    pub fn apply(&mut self, update: UserUpdate, now: DateTime<Utc>) {
        let UserUpdate {
            email,
            email_verified,
            user_name,
            display_name,
            given_name,
            family_name,
            picture,
            locale,
            roles,
            groups,
            attributes,
            status,
            external_id,
            scim_attributes,
            scim_managed,
        } = update;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(value) = $field { self.$field = value; } )* };
        }
        set!(
            email,
            email_verified,
            user_name,
            display_name,
            given_name,
            family_name,
            picture,
            locale,
            groups,
            attributes,
            status,
            external_id,
            scim_attributes,
            scim_managed
        );
        if let Some(roles) = roles {
            self.roles = normalize_roles(roles);
        }
        self.version += 1;
        self.updated_at = now;
    }
}

/// Sorted and without duplicates, so that equal grant sets compare equal.
pub(crate) fn normalize_roles(mut roles: Vec<RoleGrant>) -> Vec<RoleGrant> {
    roles.sort();
    roles.dedup();
    roles
}

/// A group of users, as a SCIM client manages it. Members' [`User::groups`] list its
/// display name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable identifier, a UUID v7.
    pub id: Uuid,
    /// Its name, unique (compared case-insensitively); what members' `groups` hold and what
    /// group-to-role rules match.
    pub display_name: String,
    /// The identifier the SCIM client knows it by.
    pub external_id: Option<String>,
    /// The members, by user id, sorted.
    pub members: Vec<Uuid>,
    /// Other SCIM attributes, as last sent.
    pub scim_attributes: Map<String, Value>,
    /// Incremented by every change.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The organisation whose SCIM client created it; `None` for the application's own.
    #[serde(default)]
    pub organization_id: Option<Uuid>,
}

/// A group a store is asked to create.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewGroup {
    /// See [`Group::display_name`].
    pub display_name: String,
    /// See [`Group::external_id`].
    pub external_id: Option<String>,
    /// See [`Group::members`].
    pub members: Vec<Uuid>,
    /// See [`Group::scim_attributes`].
    pub scim_attributes: Map<String, Value>,
    /// See [`Group::organization_id`].
    pub organization_id: Option<Uuid>,
}

/// A change to a group: each `Some` field is replaced.
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(clippy::option_option)]
pub struct GroupUpdate {
    /// New [`Group::display_name`].
    pub display_name: Option<String>,
    /// New [`Group::external_id`].
    pub external_id: Option<Option<String>>,
    /// New [`Group::members`], the whole set.
    pub members: Option<Vec<Uuid>>,
    /// New [`Group::scim_attributes`].
    pub scim_attributes: Option<Map<String, Value>>,
}

impl Group {
    /// Builds a new group's record, as stores do on insert.
    pub fn from_new(new: NewGroup, now: DateTime<Utc>) -> Self {
        let mut members = new.members;
        members.sort_unstable();
        members.dedup();
        Self {
            id: Uuid::now_v7(),
            display_name: new.display_name,
            external_id: new.external_id,
            members,
            scim_attributes: new.scim_attributes,
            version: 1,
            created_at: now,
            updated_at: now,
            organization_id: new.organization_id,
        }
    }

    /// Applies `update`, as stores do; returns the users whose membership changed.
    pub fn apply(&mut self, update: GroupUpdate, now: DateTime<Utc>) -> Vec<Uuid> {
        let mut affected = Vec::new();
        if let Some(name) = update.display_name {
            if name != self.display_name {
                affected.extend(self.members.iter().copied());
            }
            self.display_name = name;
        }
        if let Some(external_id) = update.external_id {
            self.external_id = external_id;
        }
        if let Some(attributes) = update.scim_attributes {
            self.scim_attributes = attributes;
        }
        if let Some(mut members) = update.members {
            members.sort_unstable();
            members.dedup();
            affected.extend(members.iter().filter(|m| !self.members.contains(m)));
            affected.extend(self.members.iter().filter(|m| !members.contains(m)));
            self.members = members;
        }
        affected.sort_unstable();
        affected.dedup();
        self.version += 1;
        self.updated_at = now;
        affected
    }
}

/// A sign-in method of a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `(issuer, subject)`.
    pub key: IdentityKey,
    /// The user it signs in to.
    pub user_id: Uuid,
    /// When it was first seen (or linked).
    pub created_at: DateTime<Utc>,
    /// When it last signed in.
    pub last_login_at: Option<DateTime<Utc>>,
    /// A digest of the claims last mapped for it; a login whose mapped claims have the same
    /// digest needs no sync.
    pub claims_fingerprint: Option<String>,
}

/// What a store is asked to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewUser {
    /// See [`User::email`].
    pub email: Option<String>,
    /// See [`User::email_verified`].
    pub email_verified: bool,
    /// See [`User::user_name`].
    pub user_name: Option<String>,
    /// See [`User::display_name`].
    pub display_name: Option<String>,
    /// See [`User::given_name`].
    pub given_name: Option<String>,
    /// See [`User::family_name`].
    pub family_name: Option<String>,
    /// See [`User::picture`].
    pub picture: Option<String>,
    /// See [`User::locale`].
    pub locale: Option<String>,
    /// See [`User::roles`].
    pub roles: Vec<RoleGrant>,
    /// See [`User::groups`].
    pub groups: Vec<String>,
    /// See [`User::attributes`].
    pub attributes: Map<String, Value>,
    /// See [`User::status`].
    pub status: UserStatus,
    /// See [`User::external_id`].
    pub external_id: Option<String>,
    /// See [`User::scim_attributes`].
    pub scim_attributes: Map<String, Value>,
    /// See [`User::scim_managed`].
    pub scim_managed: Vec<String>,
    /// See [`User::organization_id`].
    pub organization_id: Option<Uuid>,
}

impl Default for NewUser {
    fn default() -> Self {
        Self {
            email: None,
            email_verified: false,
            user_name: None,
            display_name: None,
            given_name: None,
            family_name: None,
            picture: None,
            locale: None,
            roles: Vec::new(),
            groups: Vec::new(),
            attributes: Map::new(),
            status: UserStatus::Active,
            external_id: None,
            scim_attributes: Map::new(),
            scim_managed: Vec::new(),
            organization_id: None,
        }
    }
}

/// A change to a user: each `Some` field is replaced, each `None` left as it is.
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(clippy::option_option)]
pub struct UserUpdate {
    /// New [`User::email`].
    pub email: Option<Option<String>>,
    /// New [`User::email_verified`].
    pub email_verified: Option<bool>,
    /// New [`User::user_name`].
    pub user_name: Option<Option<String>>,
    /// New [`User::display_name`].
    pub display_name: Option<Option<String>>,
    /// New [`User::given_name`].
    pub given_name: Option<Option<String>>,
    /// New [`User::family_name`].
    pub family_name: Option<Option<String>>,
    /// New [`User::picture`].
    pub picture: Option<Option<String>>,
    /// New [`User::locale`].
    pub locale: Option<Option<String>>,
    /// New [`User::roles`], the whole set.
    pub roles: Option<Vec<RoleGrant>>,
    /// New [`User::groups`].
    pub groups: Option<Vec<String>>,
    /// New [`User::attributes`], the whole object.
    pub attributes: Option<Map<String, Value>>,
    /// New [`User::status`].
    pub status: Option<UserStatus>,
    /// New [`User::external_id`].
    pub external_id: Option<Option<String>>,
    /// New [`User::scim_attributes`], the whole object.
    pub scim_attributes: Option<Map<String, Value>>,
    /// New [`User::scim_managed`].
    pub scim_managed: Option<Vec<String>>,
}

impl UserUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Only a status change.
    pub fn status(status: UserStatus) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_replaces_only_given_fields_and_bumps_the_version() {
        let now = Utc::now();
        let mut user = User::from_new(
            NewUser {
                email: Some("a@example.com".into()),
                display_name: Some("A".into()),
                ..NewUser::default()
            },
            now,
        );
        user.apply(
            UserUpdate {
                display_name: Some(Some("B".into())),
                picture: Some(None),
                ..UserUpdate::default()
            },
            now,
        );
        assert_eq!(user.display_name.as_deref(), Some("B"));
        assert_eq!(user.email.as_deref(), Some("a@example.com"));
        assert_eq!(user.version, 2);
        assert!(UserUpdate::default().is_empty());
    }

    #[test]
    fn role_grants_are_kept_per_source() {
        let user = User::from_new(
            NewUser {
                roles: vec![
                    RoleGrant::new("admin", RoleSource::Manual),
                    RoleGrant::new("admin", RoleSource::Mapping("group:ops".into())),
                    RoleGrant::new("admin", RoleSource::Manual),
                    RoleGrant::new("member", RoleSource::Default),
                ],
                ..NewUser::default()
            },
            Utc::now(),
        );
        assert_eq!(user.roles.len(), 3);
        assert_eq!(user.role_names(), ["admin", "member"]);
        assert!(user.has_role("member"));
    }
}
