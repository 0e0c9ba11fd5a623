//! Attribute mapping: how verified claims become a user's profile, groups and roles, and how
//! later logins keep them current.
//!
//! Stage: the pipeline. Reads a [`SignIn`]; uses `crate::sign_in` and
//! `crate::user`.
//!
//! ```
//! use tower_jit_provisioning::provision::{AttributeMapping, Field, SyncPolicy};
//!
//! let mapping = AttributeMapping::new()
//!     .groups_from("realm_access.roles")            // Keycloak realm roles as groups
//!     .attribute("department", "employee.department")
//!     .group_role("staff-admins", "admin")
//!     .claim_role("resource_access.orders.roles", "editor", "editor")
//!     .default_roles(["member"])
//!     .sync(Field::DisplayName, SyncPolicy::IfEmpty)
//!     .hook(|claims, profile| {
//!         if claims.claim("acr").and_then(|v| v.as_str()) == Some("mfa") {
//!             profile.attributes.insert("mfa".into(), true.into());
//!         }
//!     });
//! # drop(mapping);
//! ```
//!
//! # Roles and where they come from
//!
//! Every grant records its [`RoleSource`]. Default roles are granted once, when the account is
//! created. Mapping rules (`group_role`, `claim_role`, and roles the hook adds) are re-evaluated at
//! every login: a grant a rule made and no longer justifies — because the claims changed or the
//! rule itself was removed — is revoked; grants made by hand, by SCIM or as defaults never are.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use serde::Serialize;
use serde_json::{Map, Value};

use super::policy::EmailAddress;
use crate::sign_in::{SignIn, lookup, strings};
use crate::trace::{Stage, TraceStep, Tracer, Verdict};
use crate::user::{NewUser, RoleGrant, RoleSource, User, UserStatus, UserUpdate};

/// A profile field filled from claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `email` (with `email_verified`). Default source: `email`.
    Email,
    /// `user_name`. Default: the e-mail address, when verified.
    UserName,
    /// `display_name`. Default source: `name`.
    DisplayName,
    /// `given_name`. Default source: `given_name`.
    GivenName,
    /// `family_name`. Default source: `family_name`.
    FamilyName,
    /// `picture`. Default source: `picture`.
    Picture,
    /// `locale`. Default source: `locale`.
    Locale,
    /// `groups`: the issuer's groups claim plus every [`groups_from`](AttributeMapping::groups_from) path.
    Groups,
}

impl Field {
    const ALL: [Self; 8] = [
        Self::Email,
        Self::UserName,
        Self::DisplayName,
        Self::GivenName,
        Self::FamilyName,
        Self::Picture,
        Self::Locale,
        Self::Groups,
    ];

    /// The field's name, as listed in `updated` audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::UserName => "user_name",
            Self::DisplayName => "display_name",
            Self::GivenName => "given_name",
            Self::FamilyName => "family_name",
            Self::Picture => "picture",
            Self::Locale => "locale",
            Self::Groups => "groups",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|f| *f == self)
            .expect("every field is listed")
    }

    fn default_source(self) -> Option<&'static str> {
        match self {
            Self::Email => Some("email"),
            Self::UserName | Self::Groups => None,
            Self::DisplayName => Some("name"),
            Self::GivenName => Some("given_name"),
            Self::FamilyName => Some("family_name"),
            Self::Picture => Some("picture"),
            Self::Locale => Some("locale"),
        }
    }
}

/// When a later login overwrites a field. A login whose token lacks the field's claim never
/// writes it.
///
/// A field SCIM has set (see [`User::scim_managed`]) belongs to the SCIM client: `Always` leaves
/// it alone, and only `Override` lets the token's value replace it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Every login writes the value from the token when it differs, except into a field SCIM
    /// has set. The default.
    #[default]
    Always,
    /// Every login writes the value from the token when it differs, even over a value SCIM
    /// set.
    Override,
    /// A login writes the value only when the field is empty.
    IfEmpty,
    /// Set when the account is created, never by a login after.
    Never,
}

impl SyncPolicy {
    /// The policy's snake-case name, as traces show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Override => "override",
            Self::IfEmpty => "if_empty",
            Self::Never => "never",
        }
    }

    /// Whether a login may write a field holding `current` (empty or not), which SCIM has set
    /// (`scim`) or not, with a different value.
    fn writes(self, current_is_empty: bool, scim: bool) -> bool {
        match self {
            Self::Always => !scim,
            Self::Override => true,
            Self::IfEmpty => current_is_empty,
            Self::Never => false,
        }
    }
}

/// The profile mapped from one token's claims.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MappedProfile {
    /// E-mail address, domain normalised.
    pub email: Option<String>,
    /// Whether the issuer verified it.
    pub email_verified: bool,
    /// Login name for SCIM clients.
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
    /// Groups, sorted, without duplicates.
    pub groups: Vec<String>,
    /// Whether the token carried any groups claim at all (an empty one included): a token
    /// without one says nothing about groups, and a login's sync leaves them alone.
    pub groups_asserted: bool,
    /// Mapped extras.
    pub attributes: Map<String, Value>,
    /// Role grants from mapping rules ([`RoleSource::Mapping`]).
    pub roles: Vec<RoleGrant>,
}

type Hook = Arc<dyn Fn(&SignIn, &mut MappedProfile) + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum RoleRule {
    Group {
        group: String,
        role: String,
    },
    Claim {
        claim: String,
        value: String,
        role: String,
    },
}

impl RoleRule {
    fn id(&self) -> String {
        match self {
            Self::Group { group, .. } => format!("group:{group}"),
            Self::Claim { claim, value, .. } => format!("claim:{claim}={value}"),
        }
    }
}

/// How claims become profile fields, groups, attributes and roles.
#[derive(Clone)]
#[must_use]
pub struct AttributeMapping {
    sources: [Option<String>; 8],
    policies: [SyncPolicy; 8],
    group_claims: Vec<String>,
    attributes: Vec<(String, String, SyncPolicy)>,
    role_rules: Vec<RoleRule>,
    default_roles: Vec<String>,
    strict_roles: bool,
    hook: Option<Hook>,
}

impl Default for AttributeMapping {
    fn default() -> Self {
        Self::new()
    }
}

impl AttributeMapping {
    /// Standard claims to their fields, every field synced always, no roles.
    pub fn new() -> Self {
        Self {
            sources: Field::ALL.map(|f| f.default_source().map(str::to_owned)),
            policies: [SyncPolicy::Always; 8],
            group_claims: Vec::new(),
            attributes: Vec::new(),
            role_rules: Vec::new(),
            default_roles: Vec::new(),
            strict_roles: false,
            hook: None,
        }
    }

    /// Fills `field` from the claim at `path` (a name, or a dotted path into nested objects).
    /// Not for [`Field::Groups`]: use [`groups_from`](Self::groups_from).
    pub fn field(mut self, field: Field, path: impl Into<String>) -> Self {
        if field != Field::Groups {
            self.sources[field.index()] = Some(path.into());
        }
        self
    }

    /// When later logins overwrite `field`.
    pub fn sync(mut self, field: Field, policy: SyncPolicy) -> Self {
        self.policies[field.index()] = policy;
        self
    }

    /// Adds the strings at claim `path` (e.g. `realm_access.roles`) to the user's groups.
    pub fn groups_from(mut self, path: impl Into<String>) -> Self {
        self.group_claims.push(path.into());
        self
    }

    /// Copies the claim at `path` into `attributes[name]`, synced always.
    pub fn attribute(self, name: impl Into<String>, path: impl Into<String>) -> Self {
        self.attribute_with(name, path, SyncPolicy::Always)
    }

    /// Copies the claim at `path` into `attributes[name]`, synced by `policy`.
    pub fn attribute_with(
        mut self,
        name: impl Into<String>,
        path: impl Into<String>,
        policy: SyncPolicy,
    ) -> Self {
        self.attributes.push((name.into(), path.into(), policy));
        self
    }

    /// Grants `role` to members of `group` (rule `group:<group>`).
    pub fn group_role(mut self, group: impl Into<String>, role: impl Into<String>) -> Self {
        self.role_rules.push(RoleRule::Group {
            group: group.into(),
            role: role.into(),
        });
        self
    }

    /// Grants `role` when the claim at `path` is `value` or an array containing it (rule
    /// `claim:<path>=<value>`).
    pub fn claim_role(
        mut self,
        path: impl Into<String>,
        value: impl Into<String>,
        role: impl Into<String>,
    ) -> Self {
        self.role_rules.push(RoleRule::Claim {
            claim: path.into(),
            value: value.into(),
            role: role.into(),
        });
        self
    }

    /// Roles every new account gets ([`RoleSource::Default`]).
    pub fn default_roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.default_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses a login (403 `no_matching_role`) when no role rule matches it.
    pub fn strict_roles(mut self, strict: bool) -> Self {
        self.strict_roles = strict;
        self
    }

    /// Runs after the rules, to change the mapped profile in any way. Roles it adds should use
    /// [`RoleSource::Mapping`], so later logins can revoke them.
    pub fn hook<F>(mut self, hook: F) -> Self
    where
        F: Fn(&SignIn, &mut MappedProfile) + Send + Sync + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    pub(crate) fn is_strict(&self) -> bool {
        self.strict_roles
    }

    pub(crate) fn policy(&self, field: Field) -> SyncPolicy {
        self.policies[field.index()]
    }

    fn source(&self, field: Field) -> Option<&str> {
        self.sources[field.index()].as_deref()
    }

    /// Maps one sign-in's attributes.
    #[cfg(test)]
    pub(crate) fn map(&self, claims: &SignIn) -> MappedProfile {
        self.map_traced(claims, &mut Tracer::decisions())
    }

    /// Maps one sign-in's attributes, recording (when explaining) which claim filled which
    /// field and which rule granted which role.
    pub(crate) fn map_traced(&self, claims: &SignIn, tracer: &mut Tracer) -> MappedProfile {
        let text = |field: Field| {
            self.source(field)
                .and_then(|path| claims.claim_str(path))
                .map(str::to_owned)
        };
        // The address is stored in the same normal form the domain rules checked; an address
        // that does not parse is kept as sent but never counts as verified.
        let raw_email = text(Field::Email);
        let parsed = raw_email.as_deref().and_then(EmailAddress::parse);
        let from_standard_claim = self.source(Field::Email) == Some("email");
        let email_verified = parsed.is_some() && from_standard_claim && claims.email_verified();
        let email = parsed.as_ref().map(EmailAddress::normalized).or(raw_email);
        let user_name = match self.source(Field::UserName) {
            Some(_) => text(Field::UserName),
            None => email.clone().filter(|_| email_verified),
        };

        let mut groups: Vec<String> = claims.groups().to_vec();
        let mut groups_asserted = claims.groups_asserted();
        for path in &self.group_claims {
            if let Some(value) = lookup(claims.attributes(), path) {
                groups.extend(strings(value));
                groups_asserted = true;
            }
        }
        groups.sort();
        groups.dedup();

        let mut attributes = Map::new();
        for (name, path, _) in &self.attributes {
            if let Some(value) = lookup(claims.attributes(), path) {
                attributes.insert(name.clone(), value.clone());
            }
        }

        let mut profile = MappedProfile {
            email,
            email_verified,
            user_name,
            display_name: text(Field::DisplayName),
            given_name: text(Field::GivenName),
            family_name: text(Field::FamilyName),
            picture: text(Field::Picture),
            locale: text(Field::Locale),
            groups,
            groups_asserted,
            attributes,
            roles: Vec::new(),
        };
        if tracer.is_detailed() {
            self.trace_fields(&profile, tracer);
        }
        profile.roles = self.role_grants(claims, &profile.groups, tracer);
        if let Some(hook) = &self.hook {
            let before = tracer.is_detailed().then(|| profile.clone());
            hook(claims, &mut profile);
            profile.groups.sort();
            profile.groups.dedup();
            tracer.detail(|| {
                let step = TraceStep::new(Stage::Mapping, "hook", Verdict::Mapped);
                if before.as_ref() == Some(&profile) {
                    step.note("the application's hook changed nothing")
                } else {
                    step.note("the application's hook changed the profile")
                }
            });
        }
        profile.roles = crate::user::normalize_roles(std::mem::take(&mut profile.roles));
        profile
    }

    /// Records which claim filled each field, the groups and each attribute.
    fn trace_fields(&self, profile: &MappedProfile, tracer: &mut Tracer) {
        let step = |rule: String, value: Option<Value>, from: Option<&str>| {
            let verdict = if value.is_some() {
                Verdict::Mapped
            } else {
                Verdict::Absent
            };
            let mut step = TraceStep::new(Stage::Mapping, rule, verdict);
            if let Some(value) = value {
                step = step.seen(value);
            }
            if let Some(from) = from {
                step = step.note(format!("from claim {from}"));
            }
            step
        };
        let texts = [
            (Field::Email, &profile.email),
            (Field::UserName, &profile.user_name),
            (Field::DisplayName, &profile.display_name),
            (Field::GivenName, &profile.given_name),
            (Field::FamilyName, &profile.family_name),
            (Field::Picture, &profile.picture),
            (Field::Locale, &profile.locale),
        ];
        for (field, value) in texts {
            let mut traced = step(
                format!("field:{}", field.as_str()),
                value.clone().map(Value::from),
                self.source(field),
            );
            match field {
                Field::Email if value.is_some() => {
                    let from = self.source(field).unwrap_or_default();
                    traced = traced.note(if profile.email_verified {
                        format!("from claim {from}, verified")
                    } else {
                        format!("from claim {from}, not verified")
                    });
                }
                Field::UserName if self.source(field).is_none() => {
                    traced = traced.note("from the e-mail address, when verified");
                }
                _ => {}
            }
            tracer.detail(|| traced);
        }
        let groups = profile
            .groups_asserted
            .then(|| Value::from(profile.groups.clone()));
        let mut traced = step("groups".into(), groups, None);
        if !profile.groups_asserted {
            traced = traced.note("no groups claim: the account's groups are left as they are");
        }
        tracer.detail(|| traced);
        for (name, path, _) in &self.attributes {
            let value = profile.attributes.get(name).cloned();
            tracer.detail(|| step(format!("attribute:{name}"), value, Some(path)));
        }
    }

    /// The grants the rules make for these claims and groups, each rule recorded (when
    /// explaining) with the value it saw.
    fn role_grants(
        &self,
        claims: &SignIn,
        groups: &[String],
        tracer: &mut Tracer,
    ) -> Vec<RoleGrant> {
        let mut grants = Vec::new();
        for rule in &self.role_rules {
            let (matched, role) = match rule {
                RoleRule::Group { group, role } => (groups.iter().any(|g| g == group), role),
                RoleRule::Claim { claim, value, role } => (
                    lookup(claims.attributes(), claim)
                        .is_some_and(|v| strings(v).iter().any(|s| s == value)),
                    role,
                ),
            };
            tracer.detail(|| {
                let seen = match rule {
                    RoleRule::Group { .. } => Value::from(groups.to_vec()),
                    RoleRule::Claim { claim, .. } => lookup(claims.attributes(), claim)
                        .cloned()
                        .unwrap_or(Value::Null),
                };
                let verdict = if matched {
                    Verdict::Granted
                } else {
                    Verdict::NotMatched
                };
                TraceStep::new(Stage::Roles, rule.id(), verdict)
                    .seen(seen)
                    .target(role.clone())
            });
            if matched {
                grants.push(RoleGrant::new(role.clone(), RoleSource::Mapping(rule.id())));
            }
        }
        grants
    }

    /// The grants of the default roles, for a new account.
    pub(crate) fn default_role_grants(&self) -> Vec<RoleGrant> {
        self.default_roles
            .iter()
            .map(|role| RoleGrant::new(role.clone(), RoleSource::Default))
            .collect()
    }

    /// The record of a new account for `profile`.
    pub(crate) fn new_user(&self, profile: &MappedProfile, status: UserStatus) -> NewUser {
        let mut roles = self.default_role_grants();
        roles.extend(profile.roles.iter().cloned());
        NewUser {
            email: profile.email.clone(),
            email_verified: profile.email_verified,
            user_name: profile.user_name.clone(),
            display_name: profile.display_name.clone(),
            given_name: profile.given_name.clone(),
            family_name: profile.family_name.clone(),
            picture: profile.picture.clone(),
            locale: profile.locale.clone(),
            roles,
            groups: profile.groups.clone(),
            attributes: profile.attributes.clone(),
            status,
            external_id: None,
            scim_attributes: Map::new(),
            scim_managed: Vec::new(),
            organization_id: None,
        }
    }

    /// What a login with `profile` changes on `user`, by each field's policy, and the names of
    /// the fields it changes, recording (when explaining) what each policy decided and which
    /// role was granted, revoked or kept. A login whose roles are not trusted
    /// (`roles_trusted: false`) neither grants nor revokes one.
    pub(crate) fn changes(
        &self,
        user: &User,
        profile: &MappedProfile,
        roles_trusted: bool,
        tracer: &mut Tracer,
    ) -> (UserUpdate, Vec<&'static str>) {
        let mut update = UserUpdate::default();
        let mut changed = Vec::new();

        macro_rules! sync_text {
            ($field:expr, $name:ident) => {{
                let written = self.decide(user, $field, &user.$name, &profile.$name);
                tracer.detail(|| {
                    self.sync_step(
                        user,
                        $field,
                        profile.$name.clone().map(Value::from),
                        user.$name == profile.$name,
                        written.is_some(),
                    )
                });
                if let Some(value) = written {
                    update.$name = Some(value);
                    changed.push($field.as_str());
                }
            }};
        }
        let written = self.decide(user, Field::Email, &user.email, &profile.email);
        tracer.detail(|| {
            self.sync_step(
                user,
                Field::Email,
                profile.email.clone().map(Value::from),
                user.email == profile.email && user.email_verified == profile.email_verified,
                written.is_some(),
            )
        });
        if let Some(email) = written {
            update.email = Some(email);
            update.email_verified = Some(profile.email_verified);
            changed.push(Field::Email.as_str());
        } else if user.email == profile.email
            && user.email_verified != profile.email_verified
            && self
                .policy(Field::Email)
                .writes(false, is_scim(user, Field::Email))
        {
            update.email_verified = Some(profile.email_verified);
            changed.push("email_verified");
        }
        sync_text!(Field::UserName, user_name);
        sync_text!(Field::DisplayName, display_name);
        sync_text!(Field::GivenName, given_name);
        sync_text!(Field::FamilyName, family_name);
        sync_text!(Field::Picture, picture);
        sync_text!(Field::Locale, locale);

        let apply_groups = profile.groups_asserted
            && user.groups != profile.groups
            && self
                .policy(Field::Groups)
                .writes(user.groups.is_empty(), is_scim(user, Field::Groups));
        tracer.detail(|| {
            self.sync_step(
                user,
                Field::Groups,
                profile
                    .groups_asserted
                    .then(|| Value::from(profile.groups.clone())),
                user.groups == profile.groups,
                apply_groups,
            )
        });
        if apply_groups {
            update.groups = Some(profile.groups.clone());
            changed.push(Field::Groups.as_str());
        }

        let mut attributes = user.attributes.clone();
        for (name, _, policy) in &self.attributes {
            let current = attributes.get(name);
            let mapped = profile.attributes.get(name);
            let write = current != mapped
                && (!matches!(policy, SyncPolicy::IfEmpty) || mapped.is_some())
                && policy.writes(current.is_none_or(Value::is_null), false);
            tracer.detail(|| {
                let verdict = if current == mapped {
                    Verdict::Unchanged
                } else if write {
                    Verdict::Written
                } else {
                    Verdict::Preserved
                };
                let step = TraceStep::new(Stage::Sync, format!("sync:attribute:{name}"), verdict)
                    .note(format!("policy {}", policy.as_str()));
                match mapped {
                    Some(value) => step.seen(value.clone()),
                    None => step,
                }
            });
            if write {
                match mapped {
                    Some(value) => attributes.insert(name.clone(), value.clone()),
                    None => attributes.remove(name),
                };
            }
        }
        // What the hook put in attributes, beyond the configured ones, is synced always.
        for (name, value) in &profile.attributes {
            if !self.attributes.iter().any(|(n, _, _)| n == name)
                && attributes.get(name) != Some(value)
            {
                attributes.insert(name.clone(), value.clone());
            }
        }
        if attributes != user.attributes {
            update.attributes = Some(attributes);
            changed.push("attributes");
        }

        if !roles_trusted {
            return (update, changed);
        }
        // Mapping grants are replaced by what the rules justify now; every other grant stays.
        // Group rules follow the groups the user holds after this sync, which are SCIM's when
        // SCIM manages them, so either path to a group grants the same roles.
        let groups = update.groups.as_ref().unwrap_or(&user.groups);
        let mut roles: Vec<RoleGrant> = user
            .roles
            .iter()
            .filter(|g| !matches!(g.source, RoleSource::Mapping(_)))
            .cloned()
            .collect();
        roles.extend(
            profile
                .roles
                .iter()
                .filter(|g| !is_group_rule(&g.source))
                .cloned(),
        );
        roles.extend(self.group_grants(groups));
        let roles = crate::user::normalize_roles(roles);
        if tracer.is_detailed() {
            trace_roles(&user.roles, &roles, tracer);
        }
        if roles != user.roles {
            update.roles = Some(roles);
            changed.push("roles");
        }
        (update, changed)
    }

    /// What a field's sync decided, for a trace.
    fn sync_step(
        &self,
        user: &User,
        field: Field,
        mapped: Option<Value>,
        unchanged: bool,
        written: bool,
    ) -> TraceStep {
        let policy = self.policy(field);
        let rule = format!("sync:{}", field.as_str());
        let Some(mapped) = mapped else {
            return TraceStep::new(Stage::Sync, rule, Verdict::Absent)
                .note("the sign-in does not carry it: left as it is");
        };
        let verdict = if unchanged {
            Verdict::Unchanged
        } else if written {
            Verdict::Written
        } else {
            Verdict::Preserved
        };
        let note = if verdict == Verdict::Preserved && is_scim(user, field) {
            format!("policy {}; SCIM set this field", policy.as_str())
        } else {
            format!("policy {}", policy.as_str())
        };
        TraceStep::new(Stage::Sync, rule, verdict)
            .seen(mapped)
            .note(note)
    }

    /// The value to write for a text field, if the policy says to write one.
    #[allow(clippy::option_option)]
    fn decide(
        &self,
        user: &User,
        field: Field,
        current: &Option<String>,
        mapped: &Option<String>,
    ) -> Option<Option<String>> {
        let empty = current.as_deref().is_none_or(str::is_empty);
        let policy = self.policy(field);
        // A claim the token does not carry says nothing: the field is left as it is (an access
        // token without `name` must not erase the name an ID token gave).
        let write =
            mapped.is_some() && current != mapped && policy.writes(empty, is_scim(user, field));
        write.then(|| mapped.clone())
    }

    /// The grants the group rules make for `groups`.
    pub(crate) fn group_grants(&self, groups: &[String]) -> Vec<RoleGrant> {
        self.role_rules
            .iter()
            .filter_map(|rule| match rule {
                RoleRule::Group { group, role } if groups.iter().any(|g| g == group) => {
                    Some(RoleGrant::new(role.clone(), RoleSource::Mapping(rule.id())))
                }
                _ => None,
            })
            .collect()
    }

    /// `roles` with the group-rule grants replaced by what `groups` justify now: for a
    /// membership change made by SCIM, or groups an organisation's connection read.
    pub(crate) fn regrant_for_groups(
        &self,
        roles: &[RoleGrant],
        groups: &[String],
    ) -> Vec<RoleGrant> {
        let mut roles: Vec<RoleGrant> = roles
            .iter()
            .filter(|g| !is_group_rule(&g.source))
            .cloned()
            .collect();
        roles.extend(self.group_grants(groups));
        crate::user::normalize_roles(roles)
    }
}

/// Records which grants a sync adds (granted), drops (revoked) and keeps.
fn trace_roles(before: &[RoleGrant], after: &[RoleGrant], tracer: &mut Tracer) {
    let step = |grant: &RoleGrant, verdict| {
        TraceStep::new(Stage::Roles, grant.source.to_string(), verdict).target(grant.role.clone())
    };
    for grant in after {
        let verdict = if before.contains(grant) {
            Verdict::Kept
        } else {
            Verdict::Granted
        };
        tracer.detail(|| step(grant, verdict));
    }
    for grant in before.iter().filter(|g| !after.contains(g)) {
        tracer.detail(|| step(grant, Verdict::Revoked));
    }
}

/// Whether SCIM has set `field` on `user`.
fn is_scim(user: &User, field: Field) -> bool {
    user.scim_managed.iter().any(|f| f == field.as_str())
}

/// Whether a grant comes from a group-to-role rule.
fn is_group_rule(source: &RoleSource) -> bool {
    matches!(source, RoleSource::Mapping(rule) if rule.starts_with("group:"))
}

/// A digest of a mapped profile: equal profiles, equal fingerprints. Collision-resistant
/// (SHA-256, 128 bits kept): a person who controls some of their claims cannot make a changed
/// profile — lost groups and roles included — look unchanged.
pub(crate) fn fingerprint(profile: &MappedProfile) -> String {
    fn bytes(context: &mut digest::Context, data: &[u8]) {
        context.update(&(data.len() as u64).to_le_bytes());
        context.update(data);
    }
    let mut context = digest::Context::new(&digest::SHA256);
    for text in [
        &profile.email,
        &profile.user_name,
        &profile.display_name,
        &profile.given_name,
        &profile.family_name,
        &profile.picture,
        &profile.locale,
    ] {
        match text {
            Some(text) => bytes(&mut context, text.as_bytes()),
            // A length no string has marks an absent value.
            None => context.update(&u64::MAX.to_le_bytes()),
        }
    }
    context.update(&[
        u8::from(profile.email_verified),
        u8::from(profile.groups_asserted),
    ]);
    context.update(&(profile.groups.len() as u64).to_le_bytes());
    for group in &profile.groups {
        bytes(&mut context, group.as_bytes());
    }
    context.update(&(profile.roles.len() as u64).to_le_bytes());
    for grant in &profile.roles {
        bytes(&mut context, grant.role.as_bytes());
        bytes(&mut context, grant.source.to_string().as_bytes());
    }
    if !profile.attributes.is_empty() {
        bytes(
            &mut context,
            &serde_json::to_vec(&profile.attributes).expect("serializing plain data"),
        );
    }
    let digest = context.finish();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(32);
    for byte in &digest.as_ref()[..16] {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

impl fmt::Debug for AttributeMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttributeMapping")
            .field("sources", &self.sources)
            .field("policies", &self.policies)
            .field("group_claims", &self.group_claims)
            .field("attributes", &self.attributes)
            .field("role_rules", &self.role_rules)
            .field("default_roles", &self.default_roles)
            .field("strict_roles", &self.strict_roles)
            .field("hook", &self.hook.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::SignInSource;
    use chrono::Utc;
    use serde_json::json;

    /// A sign-in with these attributes, its e-mail vouched for as a token's `email_verified`
    /// says.
    fn claims(value: Value) -> SignIn {
        let Value::Object(map) = value else { panic!() };
        let verified = map.get("email_verified") == Some(&Value::Bool(true));
        let email = map.get("email").and_then(Value::as_str).map(str::to_owned);
        let mut builder = SignIn::builder(SignInSource::BearerToken, "https://idp", "s");
        if let Some(email) = email {
            builder = builder.email(email, verified);
        }
        builder.attributes(map).build().unwrap()
    }

    #[test]
    fn an_unverified_or_unparseable_address_is_never_verified_nor_a_user_name() {
        let mapping = AttributeMapping::new();
        let verified = mapping.map(&claims(json!({"email": "A@B.COM", "email_verified": true})));
        assert_eq!(verified.email.as_deref(), Some("A@b.com"));
        assert!(verified.email_verified);
        assert_eq!(verified.user_name.as_deref(), Some("A@b.com"));

        let unverified = mapping.map(&claims(
            json!({"email": "a@b.com", "email_verified": false}),
        ));
        assert!(!unverified.email_verified);
        assert_eq!(unverified.user_name, None);

        let odd = mapping.map(&claims(
            json!({"email": "not an address", "email_verified": true}),
        ));
        assert_eq!(odd.email.as_deref(), Some("not an address"));
        assert!(!odd.email_verified);

        // An address taken from another claim carries no verification.
        let other = AttributeMapping::new()
            .field(Field::Email, "upn")
            .map(&claims(json!({"upn": "x@y.com", "email_verified": true})));
        assert!(!other.email_verified);
    }

    #[test]
    fn sync_policies_and_role_sources() {
        let mapping = AttributeMapping::new()
            .group_role("admins", "admin")
            .sync(Field::DisplayName, SyncPolicy::Never)
            .sync(Field::Locale, SyncPolicy::IfEmpty);
        let first = mapping.map(&claims(
            json!({"name": "A", "locale": "en", "groups": ["admins"]}),
        ));
        let mut user = User::from_new(mapping.new_user(&first, UserStatus::Active), Utc::now());
        user.roles.push(RoleGrant::new("admin", RoleSource::Manual));
        user.roles.push(RoleGrant::new("x", RoleSource::Scim));

        let second = mapping.map(&claims(json!({"name": "B", "locale": "fr", "groups": []})));
        let (update, fields) = mapping.changes(&user, &second, true, &mut Tracer::decisions());
        assert_eq!(update.display_name, None, "never");
        assert_eq!(update.locale, None, "if empty: it is not");
        assert_eq!(fields, ["groups", "roles"]);
        let roles = update.roles.unwrap();
        assert!(roles.contains(&RoleGrant::new("admin", RoleSource::Manual)));
        assert!(roles.contains(&RoleGrant::new("x", RoleSource::Scim)));
        assert!(
            !roles
                .iter()
                .any(|g| matches!(g.source, RoleSource::Mapping(_)))
        );

        user.locale = None;
        let (update, _) = mapping.changes(&user, &second, true, &mut Tracer::decisions());
        assert_eq!(
            update.locale,
            Some(Some("fr".into())),
            "if empty: now it is"
        );
    }

    #[test]
    fn fingerprints_follow_the_mapped_profile() {
        let mapping = AttributeMapping::new();
        let a = mapping.map(&claims(json!({"name": "A"})));
        let b = mapping.map(&claims(json!({"name": "A", "unmapped": 1})));
        let c = mapping.map(&claims(json!({"name": "C"})));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
