//! Migration: a first sign-in that adopts the person's account in the system being migrated
//! from, instead of creating a second one.
//!
//! Stage: the pipeline, between linking and creation. Uses `crate::sign_in` and
//! `crate::user`; the store write is the provisioner's.
//!
//! The application's [`LegacyAccounts`] hook is asked once per identity, at its first sign-in,
//! after admission let it in and after linking found no account here. What it answers becomes
//! the new account, and the store records, in the same transaction, that this legacy account
//! was adopted: a second identity that the hook names the same legacy account for is refused
//! (403 `legacy_account_claimed`), for as long as the store exists.
//!
//! The hook decides who a person was in the old system, so it must not be fooled by what a
//! person can claim about themselves. [`LegacyLookup::trusted_email`] is the address only when
//! the sign-in verified it *and* its issuer is trusted for its domain, as for linking by
//! e-mail; an issuer that lets anyone assert any address (the "nOAuth" class) never gives one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::sign_in::SignIn;
use crate::user::{NewUser, RoleGrant, RoleSource};

/// Why a [`LegacyAccounts`] hook could not answer (its database is down, say). The sign-in is
/// answered 503 and nothing is written: creating an account instead would make the second
/// account a migration is there to avoid.
pub type LegacyError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`LegacyAccounts`] hook answers.
pub type LegacyAnswer<'a> =
    Pin<Box<dyn Future<Output = Result<Option<LegacyAccount>, LegacyError>> + Send + 'a>>;

/// Finds the account a person had in the system being migrated from, at their first sign-in.
pub trait LegacyAccounts: fmt::Debug + Send + Sync + 'static {
    /// A short name for audit records and traces (`legacy-db`): adoptions are audited as
    /// `linked` with the reason `legacy:<name>`.
    fn name(&self) -> &str;

    /// The legacy account of the person signing in, if there is exactly one; `Ok(None)` to
    /// create an account as usual (or refuse, where creation is off).
    fn find<'a>(&'a self, lookup: &'a LegacyLookup) -> LegacyAnswer<'a>;
}

/// What a [`LegacyAccounts`] hook is asked about: a first sign-in that admission let in.
#[derive(Clone, Debug)]
pub struct LegacyLookup {
    sign_in: SignIn,
    trusted_email: Option<String>,
}

impl LegacyLookup {
    pub(crate) fn new(sign_in: SignIn, trusted_email: Option<String>) -> Self {
        Self {
            sign_in,
            trusted_email,
        }
    }

    /// The sign-in: issuer, subject, source and every attribute.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// The sign-in's e-mail address, only when it is verified and its issuer is trusted for
    /// its domain (see [`Issuer::trust_email_domains`](crate::Issuer::trust_email_domains)):
    /// the only address safe to find a legacy account by. Its domain is in lower case; compare
    /// the local part case-insensitively if the old system did.
    pub fn trusted_email(&self) -> Option<&str> {
        self.trusted_email.as_deref()
    }
}

/// An account of the system being migrated from, to be adopted by a first sign-in.
///
/// The new account is built from the sign-in as any new account is (mapped profile, default
/// roles, mapped roles), and then:
/// - `roles` are added as roles the application granted ([`RoleSource::Manual`]), which a
///   later sign-in never revokes;
/// - `attributes` are added where the mapping set none of the same name, and
///   `attributes["legacy_id"]` holds [`id`](Self::id), so handlers can find the person's
///   history;
/// - `user_name` and `display_name`, when given, replace what the sign-in mapped.
///
/// The account is active: it existed before, so approval rules for new accounts do not apply.
#[derive(Clone, Debug, PartialEq)]
pub struct LegacyAccount {
    id: String,
    roles: Vec<String>,
    attributes: Map<String, Value>,
    user_name: Option<String>,
    display_name: Option<String>,
}

/// The attribute that holds an adopted account's legacy id.
pub const LEGACY_ID_ATTRIBUTE: &str = "legacy_id";

impl LegacyAccount {
    /// The legacy account `id` (its key in the old system): adopted at most once.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            roles: Vec::new(),
            attributes: Map::new(),
            user_name: None,
            display_name: None,
        }
    }

    /// Gives the adopted account this role.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Gives the adopted account these roles.
    #[must_use]
    pub fn roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Sets `attributes[name]` on the adopted account, unless the mapping set it.
    #[must_use]
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// The adopted account's login name.
    #[must_use]
    pub fn user_name(mut self, user_name: impl Into<String>) -> Self {
        self.user_name = Some(user_name.into());
        self
    }

    /// The adopted account's display name.
    #[must_use]
    pub fn display_name(mut self, display_name: impl Into<String>) -> Self {
        self.display_name = Some(display_name.into());
        self
    }

    /// The legacy id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `new_user`, as this account adopted.
    pub(crate) fn adopt_into(&self, mut new_user: NewUser) -> NewUser {
        for role in &self.roles {
            let role = role.trim();
            if !role.is_empty() {
                new_user
                    .roles
                    .push(RoleGrant::new(role, RoleSource::Manual));
            }
        }
        new_user.roles = crate::user::normalize_roles(std::mem::take(&mut new_user.roles));
        for (name, value) in &self.attributes {
            if !value.is_null() && !new_user.attributes.contains_key(name) {
                new_user.attributes.insert(name.clone(), value.clone());
            }
        }
        new_user
            .attributes
            .insert(LEGACY_ID_ATTRIBUTE.into(), Value::String(self.id.clone()));
        if let Some(user_name) = &self.user_name {
            new_user.user_name = Some(user_name.clone());
        }
        if let Some(display_name) = &self.display_name {
            new_user.display_name = Some(display_name.clone());
        }
        new_user
    }
}

/// A [`LegacyAccounts`] hook made of a name and an async function, from
/// [`legacy_accounts_fn`].
pub struct LegacyAccountsFn<F> {
    name: String,
    find: F,
}

/// A [`LegacyAccounts`] hook from an async function of the lookup:
///
/// ```
/// use tower_jit_provisioning::provision::migration::{legacy_accounts_fn, LegacyAccount};
///
/// let hook = legacy_accounts_fn("crm", |lookup| async move {
///     Ok(match lookup.trusted_email() {
///         Some("ada@example.com") => Some(LegacyAccount::new("42").role("editor")),
///         _ => None,
///     })
/// });
/// ```
pub fn legacy_accounts_fn<F, Fut>(name: impl Into<String>, find: F) -> LegacyAccountsFn<F>
where
    F: Fn(LegacyLookup) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<LegacyAccount>, LegacyError>> + Send + 'static,
{
    LegacyAccountsFn {
        name: name.into(),
        find,
    }
}

impl<F> fmt::Debug for LegacyAccountsFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyAccountsFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> LegacyAccounts for LegacyAccountsFn<F>
where
    F: Fn(LegacyLookup) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<LegacyAccount>, LegacyError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn find<'a>(&'a self, lookup: &'a LegacyLookup) -> LegacyAnswer<'a> {
        Box::pin((self.find)(lookup.clone()))
    }
}

/// The configured hook, shared.
pub(crate) type SharedLegacyAccounts = Arc<dyn LegacyAccounts>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::UserStatus;

    #[test]
    fn adoption_adds_roles_and_attributes_without_overriding_the_mapping() {
        let mapped = NewUser {
            user_name: Some("ada@example.com".into()),
            roles: vec![RoleGrant::new("member", RoleSource::Default)],
            attributes: Map::from_iter([("plan".to_owned(), Value::from("claims"))]),
            status: UserStatus::Active,
            ..NewUser::default()
        };
        let adopted = LegacyAccount::new("42")
            .roles(["editor", " ", "member"])
            .attribute("plan", "legacy")
            .attribute("since", 2019)
            .attribute("gone", Value::Null)
            .user_name("ada")
            .adopt_into(mapped);
        assert_eq!(adopted.user_name.as_deref(), Some("ada"));
        assert!(
            adopted
                .roles
                .contains(&RoleGrant::new("editor", RoleSource::Manual))
        );
        assert!(
            adopted
                .roles
                .contains(&RoleGrant::new("member", RoleSource::Default))
        );
        assert!(
            !adopted
                .roles
                .iter()
                .any(|grant| grant.role.trim().is_empty())
        );
        assert_eq!(adopted.attributes["plan"], "claims");
        assert_eq!(adopted.attributes["since"], 2019);
        assert_eq!(adopted.attributes[LEGACY_ID_ATTRIBUTE], "42");
        assert!(!adopted.attributes.contains_key("gone"));
    }
}
