//! Provisioning: from a verified [`SignIn`] to an account, creating it on first
//! sign-in.
//!
//! Stage: the pipeline every source ends in. Consumes only [`SignIn`]; uses
//! `crate::sign_in`, `crate::store`, `crate::user`, `crate::audit` and `crate::error`, and never
//! a source (`token/` or any other).
//!
//! ```text
//! sign-in ► map ─► admit ─► user cache ─┬─► hit, current ─────────────────────► account
//!          (mapping) (policy)            └─► miss: store ─┬─► found: reactivate? sync ─┘
//!                                          (one per        ├─► link (external id, e-mail)
//!                                           identity)      └─► create (insert-or-get)
//! ```
//!
//! - [`mapping`]: attributes to profile fields, groups, attributes, roles; what a login syncs.
//! - [`policy`]: who may have an account at all; refusal reasons.
//! - [`migration`]: a first sign-in that adopts the person's account in the system being
//!   migrated from.
//!
//! # Concurrency
//!
//! Resolution is keyed by `(issuer, subject)`. However many requests for one identity miss the
//! cache at once, one of them resolves it (moka's `try_get_with`) and the others wait for its
//! result: one store lookup, at most one insert. Across processes, the store's insert-or-get
//! gives the same guarantee.
//!
//! # Cache freshness
//!
//! Every store write publishes a change event, delivered synchronously to each layer sharing the
//! store. A cached account whose user changed after it was read is never served again: the next
//! request resolves it from the store. The cache's time-to-live is the backstop.

mod account;
mod explain;
pub mod groups;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod legacy_sql;
pub mod mapping;
pub mod migration;
pub mod policy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use uuid::Uuid;

pub use self::account::ProvisionedUser;
pub(crate) use self::account::{Account, SignInMemo};
pub use self::explain::{AccountAction, Explanation};
pub use self::mapping::{AttributeMapping, Field, MappedProfile, SyncPolicy};
use self::migration::{LegacyAccount, LegacyLookup, SharedLegacyAccounts};
pub use self::policy::DenyReason;
use self::policy::{
    Admission, DomainPattern, EmailAddress, PendingHook, Predicate, domain_matches,
};
use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::error::{Error, ErrorChain};
use crate::sign_in::{SignIn, SignInSource};
use crate::store::{DynStore, Resolved, StoreError, StoreEvent, Subscription};
use crate::trace::{DecisionTrace, Stage, TraceStep, Tracer, Verdict};
use crate::user::{Identity, IdentityKey, User, UserStatus};

/// How long a client is asked to wait when the store is unreachable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest a legacy-account hook is waited for before the sign-in is answered 503.
const LEGACY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a write that lost a race with a concurrent change is retried.
const CONFLICT_RETRIES: usize = 5;

/// Which issuers are trusted to vouch for e-mail addresses when linking by verified e-mail.
#[derive(Clone, Debug, Default)]
pub(crate) enum EmailTrust {
    /// Not trusted: never links by e-mail.
    #[default]
    None,
    /// Trusted for every domain.
    Any,
    /// Trusted for these domains.
    Domains(Vec<DomainPattern>),
}

impl EmailTrust {
    fn covers(&self, domain: &str) -> bool {
        match self {
            Self::None => false,
            Self::Any => true,
            Self::Domains(patterns) => domain_matches(patterns, domain),
        }
    }
}

/// Which first sign-ins may create an account.
#[derive(Clone, Debug, Default)]
pub(crate) enum Creation {
    /// Every one.
    #[default]
    Any,
    /// None: only accounts that exist (created by SCIM or the application, or linked) sign in.
    Never,
    /// Those arriving through these sources.
    From(Vec<SignInSource>),
}

impl Creation {
    fn allows(&self, source: SignInSource) -> bool {
        match self {
            Self::Any => true,
            Self::Never => false,
            Self::From(sources) => sources.contains(&source),
        }
    }
}

/// One issuer's provisioning rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct IssuerProvisioning {
    pub(crate) admission: Admission,
    /// Asked for the groups of a token whose groups did not fit (Entra ID's overage).
    pub(crate) group_resolver: Option<Arc<dyn groups::GroupResolver>>,
    pub(crate) creation: Creation,
    pub(crate) require_approval: bool,
    pub(crate) email_trust: EmailTrust,
    pub(crate) role_trust: RoleTrust,
}

/// Whether an issuer's tokens may earn roles through the mapping's rules.
#[derive(Clone, Debug, Default)]
pub(crate) enum RoleTrust {
    /// Every token of the issuer.
    #[default]
    All,
    /// No token of the issuer: default roles only.
    None,
    /// Tokens whose claim at this path equals this value.
    When(String, serde_json::Value),
}

impl RoleTrust {
    fn trusts(&self, sign_in: &SignIn) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::When(path, value) => sign_in.claim(path) == Some(value),
        }
    }
}

/// How an identity seen for the first time may be linked to an existing account.
#[derive(Clone, Debug, Default)]
pub(crate) struct Linking {
    /// A claim whose value is matched against users' `external_id`.
    pub(crate) by_claim: Option<String>,
    /// Linking by claim picks only accounts nobody has signed in to yet.
    pub(crate) by_claim_unused_only: bool,
    /// Link by verified e-mail, for issuers trusted for the address's domain.
    pub(crate) by_verified_email: bool,
}

/// An organisation's connection's provisioning rules, as the layer holds them while it runs.
#[derive(Debug)]
pub(crate) struct ConnectionProvisioning {
    pub(crate) organization: Uuid,
    /// The organisation's verified domains: an address outside them is never verified.
    pub(crate) domains: Vec<String>,
    pub(crate) rules: IssuerProvisioning,
    pub(crate) default_roles: Vec<String>,
    pub(crate) group_roles: Vec<(String, String)>,
    /// Field or `attributes.<name>` → claim path.
    pub(crate) claims: std::collections::BTreeMap<String, String>,
}

impl ConnectionProvisioning {
    /// Fills `profile` from the claims the connection names, recording what it read.
    fn map_claims(&self, sign_in: &SignIn, profile: &mut MappedProfile, tracer: &mut Tracer) {
        for (target, path) in &self.claims {
            let Some(value) = sign_in.claim(path) else {
                continue;
            };
            let text = value.as_str().map(str::to_owned);
            match target.as_str() {
                "user_name" => profile.user_name = text.or(profile.user_name.take()),
                "display_name" => profile.display_name = text.or(profile.display_name.take()),
                "given_name" => profile.given_name = text.or(profile.given_name.take()),
                "family_name" => profile.family_name = text.or(profile.family_name.take()),
                "picture" => profile.picture = text.or(profile.picture.take()),
                "locale" => profile.locale = text.or(profile.locale.take()),
                "groups" => {
                    profile.groups.extend(crate::sign_in::strings(value));
                    profile.groups.sort();
                    profile.groups.dedup();
                    profile.groups_asserted = true;
                }
                other => {
                    if let Some(name) = other.strip_prefix("attributes.") {
                        profile.attributes.insert(name.to_owned(), value.clone());
                    }
                }
            }
            tracer.detail(|| {
                TraceStep::new(
                    Stage::Mapping,
                    format!("connection:{target}"),
                    Verdict::Mapped,
                )
                .seen(path.clone())
            });
        }
    }

    /// The grants its group rules give `groups`, under rule ids of their own (`connection:…`),
    /// which a sync keeps while the sign-in justifies them.
    fn group_grants(&self, groups: &[String]) -> Vec<crate::user::RoleGrant> {
        self.group_roles
            .iter()
            .filter(|(group, _)| groups.contains(group))
            .map(|(group, role)| {
                crate::user::RoleGrant::new(
                    role.clone(),
                    crate::user::RoleSource::Mapping(format!("connection:{group}")),
                )
            })
            .collect()
    }
}

/// Where the rules of organisations' connections are found while the layer runs.
pub(crate) trait ConnectionRules: Send + Sync + 'static {
    /// The rules of the connection `id`, if it still exists.
    fn connection(&self, id: Uuid) -> Option<Arc<ConnectionProvisioning>>;
}

/// The provisioning rules a sign-in comes under.
enum Rules<'a> {
    /// Its issuer has none.
    None,
    /// A configured issuer's.
    Issuer(&'a IssuerProvisioning),
    /// An organisation's connection's.
    Connection(Arc<ConnectionProvisioning>),
    /// An organisation's connection that is gone since it vouched for the sign-in.
    Gone,
}

impl Rules<'_> {
    fn get(&self) -> Option<&IssuerProvisioning> {
        match self {
            Self::Issuer(rules) => Some(rules),
            Self::Connection(connection) => Some(&connection.rules),
            Self::None | Self::Gone => None,
        }
    }
}

/// Everything the provisioner needs, validated by the builder.
pub(crate) struct ProvisionerConfig {
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) mapping: AttributeMapping,
    pub(crate) issuers: Vec<(Arc<str>, IssuerProvisioning)>,
    pub(crate) approval_domains: Vec<DomainPattern>,
    /// Layer-wide: whether first sign-ins may create accounts at all.
    pub(crate) create_accounts: bool,
    /// Layer-wide: every new account waits for approval.
    pub(crate) require_approval: bool,
    pub(crate) on_pending: Option<PendingHook>,
    pub(crate) linking: Linking,
    /// Asked at a first sign-in that linking found no account for.
    pub(crate) legacy: Option<SharedLegacyAccounts>,
    /// The rules of organisations' connections, when organisations are on.
    pub(crate) connections: Option<Arc<dyn ConnectionRules>>,
    pub(crate) reactivate_on_login: bool,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) cache_capacity: u64,
    pub(crate) cache_ttl: Duration,
    pub(crate) login_interval: Duration,
}

/// What admission made of one sign-in; computed once per credential and kept with it.
#[derive(Debug)]
pub(crate) struct Admitted {
    key: IdentityKey,
    profile: MappedProfile,
    fingerprint: String,
    /// Whether the issuer is trusted for roles in this sign-in: if not, the login neither
    /// grants nor revokes a role.
    roles_trusted: bool,
    /// The admission steps that let it in, for the trace of a later refusal (empty when
    /// explaining, whose tracer holds them).
    trace: DecisionTrace,
}

/// Tracks which users changed, so cached accounts read before a change are not served.
struct Freshness {
    /// Bumped by every change event. An account read at an older epoch may be stale.
    epoch: AtomicU64,
    /// The epoch of the last reset: an account read before it is stale, whoever it is.
    reset_epoch: AtomicU64,
    /// The newest version each recently changed user reached (`i64::MAX`: deleted).
    changed: moka::sync::Cache<Uuid, i64>,
    /// How long an account read from the store may be served without reading it again.
    ttl: Duration,
}

impl Freshness {
    fn observe(&self, event: &StoreEvent, users: &moka::future::Cache<IdentityKey, Arc<Account>>) {
        match *event {
            StoreEvent::Changed { user_id, version } => {
                let newest = self
                    .changed
                    .get(&user_id)
                    .map_or(version, |v| v.max(version));
                self.changed.insert(user_id, newest);
            }
            StoreEvent::Deleted { user_id } => self.changed.insert(user_id, i64::MAX),
            StoreEvent::Reset => users.invalidate_all(),
            // Sessions and organisations are not accounts: nothing cached here changed.
            StoreEvent::SessionsEnded { .. } | StoreEvent::OrganizationsChanged => return,
        }
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if matches!(event, StoreEvent::Reset) {
            self.reset_epoch.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    /// Whether `account` may be served at `now`: read within the time-to-live, after the last
    /// reset, and either nothing changed since it was read or its user did not.
    fn is_current(&self, account: &Account, now: Instant) -> bool {
        if now.saturating_duration_since(account.read_at) > self.ttl
            || account.read_epoch < self.reset_epoch.load(Ordering::Acquire)
        {
            return false;
        }
        account.read_epoch >= self.epoch.load(Ordering::Acquire)
            || self
                .changed
                .get(&account.user.id)
                .is_none_or(|version| version <= account.user.version)
    }
}

/// Resolves sign-ins to accounts.
pub(crate) struct Provisioner {
    config: ProvisionerConfig,
    users: moka::future::Cache<IdentityKey, Arc<Account>>,
    freshness: Arc<Freshness>,
    _subscription: Subscription,
}

/// Why a resolution failed; cloneable, because moka shares one failure with every waiter.
#[derive(Clone, Debug)]
enum Failure {
    Denied(DenyReason),
    Unavailable,
    Broken,
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Denied(reason) => Self::Denied(reason),
            Failure::Unavailable => Self::StoreUnavailable {
                retry_after: STORE_RETRY_AFTER,
            },
            Failure::Broken => Self::StoreFailure,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        let failure = match error {
            StoreError::IdentityDeleted => return Self::Denied(DenyReason::Deleted),
            StoreError::Unavailable(_) => Self::Unavailable,
            _ => Self::Broken,
        };
        crate::metrics::store_error(match failure {
            Self::Unavailable => "unavailable",
            _ => "failed",
        });
        tracing::warn!(
            target: "tower_jit_provisioning::store",
            error = %ErrorChain(&error),
            "store operation failed"
        );
        failure
    }
}

impl Provisioner {
    pub(crate) fn new(config: ProvisionerConfig) -> Self {
        let users = moka::future::Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(config.cache_ttl)
            .build();
        let freshness = Arc::new(Freshness {
            epoch: AtomicU64::new(0),
            reset_epoch: AtomicU64::new(0),
            ttl: config.cache_ttl,
            // Four times the accounts cached, so a change record outlives every account it
            // could make stale (both expire with the same time-to-live).
            changed: moka::sync::Cache::builder()
                .max_capacity(config.cache_capacity.saturating_mul(4).max(4096))
                .time_to_live(config.cache_ttl)
                .build(),
        });
        let subscription = {
            let freshness = Arc::clone(&freshness);
            let users = users.clone();
            config
                .store
                .changes()
                .subscribe(move |event| freshness.observe(event, &users))
        };
        Self {
            config,
            users,
            freshness,
            _subscription: subscription,
        }
    }

    /// The rules `sign_in` comes under: its connection's, or its configured issuer's.
    fn rules(&self, sign_in: &SignIn) -> Rules<'_> {
        if let Some(id) = sign_in.connection_id() {
            return match self
                .config
                .connections
                .as_ref()
                .and_then(|c| c.connection(id))
            {
                Some(connection) => Rules::Connection(connection),
                None => Rules::Gone,
            };
        }
        let issuer = sign_in.issuer();
        self.config
            .issuers
            .iter()
            .find(|(name, _)| &**name == issuer)
            .map_or(Rules::None, |(_, rules)| Rules::Issuer(rules))
    }

    /// How many accounts the user cache holds, after pending evictions ran.
    pub(crate) async fn cached_count(&self) -> u64 {
        self.users.run_pending_tasks().await;
        self.users.entry_count()
    }

    /// The account behind a credential seen before, if it is cached, current, synced with the
    /// sign-in's attributes and active: the whole hot path, synchronous, with no store access.
    pub(crate) fn cached(
        &self,
        sign_in: &SignIn,
        memo: &SignInMemo,
        now: Instant,
    ) -> Option<ProvisionedUser> {
        let admitted = memo.admitted.get()?;
        let usable = |account: &Account| {
            account.user.status == UserStatus::Active
                && account.user.organization_id == sign_in.organization_id()
                && account.identity.claims_fingerprint.as_deref() == Some(&admitted.fingerprint)
                && self.freshness.is_current(account, now)
        };
        // The account this credential resolved to last, if still current: no lookup at all.
        let held = memo.account.load();
        let account = match held.as_ref().filter(|account| usable(account)) {
            Some(account) => Arc::clone(account),
            None => {
                let account = self
                    .users
                    .get(&admitted.key)
                    .now_or_never()
                    .flatten()
                    .filter(|account| usable(account))?;
                memo.account.store(Some(Arc::clone(&account)));
                account
            }
        };
        self.note_login(&account, admitted, now);
        Some(ProvisionedUser::new(account, sign_in.clone()))
    }

    /// The cached account of an identity, if current and active: the hot path of a request
    /// made with a session, synchronous, with no store access.
    #[cfg(feature = "login")]
    pub(crate) fn cached_account(&self, key: &IdentityKey, now: Instant) -> Option<Arc<Account>> {
        self.users
            .get(key)
            .now_or_never()
            .flatten()
            .filter(|account| {
                account.user.status == UserStatus::Active && self.freshness.is_current(account, now)
            })
    }

    /// The account of an identity that signed in before (a session's), from the cache if
    /// current, else read from the store once however many requests wait for it. `None` when
    /// the identity has no account any more; the caller decides what a status other than
    /// active means.
    #[cfg(feature = "login")]
    pub(crate) async fn existing_account(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<Arc<Account>>, Error> {
        if let Some(account) = self.users.get(key).await {
            if self.freshness.is_current(&account, Instant::now()) {
                return Ok(Some(account));
            }
            self.users.invalidate(key).await;
        }
        let read = async {
            let read_epoch = self.freshness.epoch.load(Ordering::Acquire);
            match self.config.store.find_by_identity(key).await {
                Ok(Some((user, identity))) => Ok(Arc::new(Account {
                    user,
                    identity,
                    read_epoch,
                    read_at: Instant::now(),
                    login_noted: AtomicU64::new(0),
                })),
                Ok(None) => Err(None),
                Err(error) => Err(Some(Failure::from(error))),
            }
        };
        match self.users.try_get_with(key.clone(), read).await {
            Ok(account) => Ok(Some(account)),
            Err(shared) => match &*shared {
                None => Ok(None),
                Some(failure) => Err(failure.clone().into()),
            },
        }
    }

    /// The account behind a verified sign-in, created if this is its first.
    pub(crate) async fn provision(
        &self,
        sign_in: &SignIn,
        memo: &SignInMemo,
    ) -> Result<ProvisionedUser, Error> {
        let admitted = match memo.admitted.get() {
            Some(admitted) => Arc::clone(admitted),
            None => {
                let mut tracer = Tracer::decisions();
                match self.admit(sign_in, &mut tracer).await {
                    Ok(mut admitted) => {
                        admitted.trace = tracer.finish();
                        Arc::clone(memo.admitted.get_or_init(|| Arc::new(admitted)))
                    }
                    Err(reason) => {
                        let denial = Denial::new(reason, tracer.finish());
                        return Err(self.deny(sign_in, memo, denial).await);
                    }
                }
            }
        };
        let account = self.account(&admitted, sign_in).await.map_err(Error::from);
        let account = match account {
            Ok(account) => account,
            Err(Error::Denied(reason)) => {
                let denial = Denial::after(&admitted, reason, None);
                return Err(self.deny(sign_in, memo, denial).await);
            }
            Err(error) => return Err(error),
        };
        let refusal = if account.user.organization_id == sign_in.organization_id() {
            refusal_of(account.user.status)
        } else {
            // An identity that another organisation's account holds: no sign-in crosses.
            Some(DenyReason::OtherOrganization)
        };
        if let Some(refusal) = refusal {
            let denial = Denial::after(&admitted, refusal, Some(&account.user));
            return Err(self.deny(sign_in, memo, denial).await);
        }
        self.note_login(&account, &admitted, Instant::now());
        memo.account.store(Some(Arc::clone(&account)));
        Ok(ProvisionedUser::new(account, sign_in.clone()))
    }

    /// Emits an event that comes with no write, through the store.
    pub(crate) async fn record_audit(&self, event: AuditEvent) {
        self.config.store.record_audit(event).await;
    }

    /// Audits a refusal with its trace, once per credential however often it is retried.
    async fn deny(&self, sign_in: &SignIn, memo: &SignInMemo, denial: Denial) -> Error {
        let Denial {
            reason,
            user_id,
            trace,
        } = denial;
        if !memo.denial_audited.swap(true, Ordering::AcqRel) {
            crate::metrics::refusal(reason.code());
            let mut event = login_event(AuditKind::Denied, sign_in)
                .identity(&sign_in.identity())
                .reason(reason.code())
                .trace(trace);
            if let Some(user_id) = user_id {
                event = event.user(user_id);
            }
            self.config.store.record_audit(event).await;
        }
        Error::Denied(reason)
    }

    /// Maps and admits a sign-in, recording each rule consulted. Writes nothing.
    async fn admit(&self, sign_in: &SignIn, tracer: &mut Tracer) -> Result<Admitted, DenyReason> {
        let mut profile = self.config.mapping.map_traced(sign_in, tracer);
        let mut roles_trusted = true;
        let all_rules = self.rules(sign_in);
        if let Rules::Gone = all_rules {
            tracer.decision(
                TraceStep::new(Stage::Admission, "connection", Verdict::Refused)
                    .note("the organisation's connection was removed"),
            );
            return Err(DenyReason::NotProvisioned);
        }
        if let Rules::Connection(connection) = &all_rules {
            connection.map_claims(sign_in, &mut profile, tracer);
            // Groups read from the connection's own claim earn the mapping's group rules too.
            profile.roles = self
                .config
                .mapping
                .regrant_for_groups(&profile.roles, &profile.groups);
            confine_to_organization(&mut profile, connection, tracer);
        }
        let rules = all_rules.get();
        if let Some(resolver) = rules.and_then(|rules| rules.group_resolver.as_ref())
            && groups::is_overage(sign_in)
        {
            let step = |verdict| TraceStep::new(Stage::Groups, "group_overage", verdict);
            if let Some(resolved) = resolver.groups(sign_in).await {
                tracer.decision(step(Verdict::Resolved).seen(resolved.clone()));
                // Known now: the groups, and what the group rules grant for them.
                profile.groups.extend(resolved);
                profile.groups.sort();
                profile.groups.dedup();
                profile.groups_asserted = true;
                let mut roles = std::mem::take(&mut profile.roles);
                roles.extend(self.config.mapping.group_grants(&profile.groups));
                profile.roles = crate::user::normalize_roles(roles);
            } else {
                // Unresolved, they stay unknown (not asserted), and a login's sync leaves them
                // as they were.
                tracer.decision(
                    step(Verdict::Unresolved)
                        .note("groups unknown: the account's groups and roles are kept"),
                );
            }
        }
        if let Some(rules) = rules {
            rules.admission.check(sign_in, &profile.groups, tracer)?;
            roles_trusted = rules.role_trust.trusts(sign_in);
            if let RoleTrust::When(path, expected) = &rules.role_trust {
                let verdict = if roles_trusted {
                    Verdict::Passed
                } else {
                    Verdict::Untrusted
                };
                let mut step = TraceStep::new(Stage::Roles, format!("role_trust:{path}"), verdict)
                    .seen(sign_in.claim(path).cloned().unwrap_or_default());
                if !roles_trusted {
                    step = step.note(format!("requires {expected}: the mapping grants no role"));
                }
                tracer.decision(step);
            } else if !roles_trusted {
                tracer.decision(
                    TraceStep::new(Stage::Roles, "role_trust", Verdict::Untrusted)
                        .note("the issuer is not trusted for roles: the mapping grants none"),
                );
            }
        }
        if !roles_trusted {
            // Groups stay as asserted (they are data); they just earn no roles.
            profile.roles.clear();
        }
        if self.config.mapping.is_strict() {
            let matched = !profile.roles.is_empty();
            let step = TraceStep::new(Stage::Admission, "strict_roles", Verdict::held(matched));
            tracer.decision(if matched {
                step
            } else {
                step.note("no role rule matched")
            });
            if !matched {
                return Err(DenyReason::NoMatchingRole);
            }
        }
        if let Some(predicate) = &self.config.predicate {
            let checked = predicate.check(sign_in.clone()).await;
            let step = TraceStep::new(
                Stage::Admission,
                "predicate",
                Verdict::held(checked.is_ok()),
            );
            tracer.decision(match checked {
                Ok(()) => step,
                Err(reason) => step.target(reason.code()),
            });
            checked?;
        }
        let fingerprint = mapping::fingerprint(&profile);
        Ok(Admitted {
            key: sign_in.identity(),
            roles_trusted,
            profile,
            fingerprint,
            // The caller keeps the steps it wants: a sign-in keeps them for a later refusal.
            trace: DecisionTrace::default(),
        })
    }

    /// The cached account if it is current and synced with the sign-in; else a resolution.
    async fn account(
        &self,
        admitted: &Arc<Admitted>,
        sign_in: &SignIn,
    ) -> Result<Arc<Account>, Failure> {
        if let Some(account) = self.users.get(&admitted.key).await {
            let current = self.freshness.is_current(&account, Instant::now());
            let synced = match account.user.status {
                UserStatus::Active => {
                    account.identity.claims_fingerprint.as_deref() == Some(&admitted.fingerprint)
                }
                UserStatus::Deactivated => !self.config.reactivate_on_login,
                UserStatus::PendingApproval => true,
            };
            if current && synced {
                crate::metrics::user_cache(true);
                return Ok(account);
            }
            self.users.invalidate(&admitted.key).await;
        }
        crate::metrics::user_cache(false);
        let resolve = self.resolve(Arc::clone(admitted), sign_in.clone());
        self.users
            .try_get_with(admitted.key.clone(), resolve)
            .await
            .map_err(|shared| (*shared).clone())
    }

    /// One resolution against the store; see the module docs.
    async fn resolve(
        &self,
        admitted: Arc<Admitted>,
        sign_in: SignIn,
    ) -> Result<Arc<Account>, Failure> {
        // Read the epoch before the store: a change landing after this read marks what we read
        // as possibly stale.
        let read_epoch = self.freshness.epoch.load(Ordering::Acquire);
        let store = &self.config.store;
        let found =
            crate::metrics::store("find_by_identity", store.find_by_identity(&admitted.key));
        let (user, identity) = match found.await? {
            Some(found) => found,
            None => {
                let resolved = self.first_login(&admitted, &sign_in).await?;
                (resolved.user, resolved.identity)
            }
        };
        if user.organization_id != sign_in.organization_id() {
            // An identity that another organisation's account holds: nothing of this sign-in
            // is synced into it, and it is refused.
            return Err(Failure::Denied(DenyReason::OtherOrganization));
        }
        let (user, mut identity) = self
            .bring_current(user, identity, &admitted, &sign_in)
            .await?;
        // The key the store answered for is the one asked: sharing the cache key's strings
        // saves the cached account a copy of the issuer and the subject.
        if identity.key == admitted.key {
            identity.key = admitted.key.clone();
        }
        Ok(Arc::new(Account {
            user,
            identity,
            read_epoch,
            read_at: Instant::now(),
            login_noted: AtomicU64::new(0),
        }))
    }

    /// Links the identity to an existing account if configured and possible, else creates one.
    async fn first_login(
        &self,
        admitted: &Admitted,
        sign_in: &SignIn,
    ) -> Result<Resolved, Failure> {
        let store = &self.config.store;
        // Linking's steps explain, and decide nothing a refusal's trace needs.
        let untraced = &mut Tracer::decisions();
        if let Some(target) = self.claim_target(sign_in, untraced).await?
            && let Some(linked) = self.link(target, "external_id", admitted, sign_in).await?
        {
            return Ok(linked);
        }
        if let Some(target) = self.email_target(admitted, sign_in, untraced).await?
            && let Some(linked) = self
                .link(target, "verified_email", admitted, sign_in)
                .await?
        {
            return Ok(linked);
        }
        if let Some(legacy) = self.legacy_account(admitted, sign_in, untraced).await? {
            return self.adopt(&legacy, admitted, sign_in).await;
        }
        if !self.may_create(sign_in) {
            // Nothing is written: the refusal is audited by the caller.
            return Err(Failure::Denied(DenyReason::NotProvisioned));
        }
        let fingerprint = Some(admitted.fingerprint.as_str());
        let status = if self.needs_approval(sign_in, &admitted.profile) {
            UserStatus::PendingApproval
        } else {
            UserStatus::Active
        };
        let mut new_user = self.new_user(admitted, sign_in, status);
        let audit = login_event(AuditKind::Provisioned, sign_in);
        let created =
            store.create_user(new_user.clone(), &admitted.key, fingerprint, audit.clone());
        let resolved = match crate::metrics::store("create_user", created).await {
            // The login name is someone else's (the same address at another issuer, or an
            // account SCIM created): the account goes without one rather than fail.
            Err(StoreError::Duplicate("user_name")) => {
                new_user.user_name = None;
                let created = store.create_user(new_user, &admitted.key, fingerprint, audit);
                crate::metrics::store("create_user", created).await?
            }
            other => other?,
        };
        crate::metrics::account("provisioned");
        if resolved.user.status == UserStatus::PendingApproval
            && let Some(hook) = &self.config.on_pending
        {
            hook.notify(&resolved.user);
        }
        Ok(resolved)
    }

    /// The legacy account the configured hook finds for this first sign-in, if any.
    async fn legacy_account(
        &self,
        admitted: &Admitted,
        sign_in: &SignIn,
        tracer: &mut Tracer,
    ) -> Result<Option<LegacyAccount>, Failure> {
        let Some(hook) = &self.config.legacy else {
            return Ok(None);
        };
        let rule = || format!("legacy:{}", hook.name());
        let email = self
            .trusted_email(admitted, sign_in)
            .ok()
            .map(str::to_owned);
        let lookup = LegacyLookup::new(sign_in.clone(), email);
        let found = match tokio::time::timeout(LEGACY_TIMEOUT, hook.find(&lookup)).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                tracing::warn!(
                    target: "tower_jit_provisioning::migration",
                    hook = hook.name(),
                    error = %ErrorChain(&*error),
                    "the legacy account hook failed: the sign-in waits for it"
                );
                return Err(Failure::Unavailable);
            }
            Err(_) => {
                tracing::warn!(
                    target: "tower_jit_provisioning::migration",
                    hook = hook.name(),
                    timeout_secs = LEGACY_TIMEOUT.as_secs(),
                    "the legacy account hook did not answer in time: the sign-in waits for it"
                );
                return Err(Failure::Unavailable);
            }
        };
        tracer.decision(match &found {
            Some(legacy) => TraceStep::new(Stage::Linking, rule(), Verdict::Found)
                .target(legacy.id())
                .note("adopted, unless another identity adopted it first"),
            None => TraceStep::new(Stage::Linking, rule(), Verdict::Skipped)
                .note("the hook found no legacy account"),
        });
        Ok(found)
    }

    /// Creates the account as the adoption of `legacy`; refused when another identity adopted
    /// it first.
    async fn adopt(
        &self,
        legacy: &LegacyAccount,
        admitted: &Admitted,
        sign_in: &SignIn,
    ) -> Result<Resolved, Failure> {
        let store = &self.config.store;
        let name = self.config.legacy.as_ref().map_or("", |hook| hook.name());
        let audit = login_event(AuditKind::Linked, sign_in).reason(format!("legacy:{name}"));
        let fingerprint = Some(admitted.fingerprint.as_str());
        let mut new_user = self.adopted_user(legacy, admitted, sign_in);
        let adopted = store.adopt_legacy_account(
            legacy.id(),
            new_user.clone(),
            &admitted.key,
            fingerprint,
            audit.clone(),
        );
        let adopted = match crate::metrics::store("adopt_legacy_account", adopted).await {
            // As at creation: the login name is someone else's, so the account goes without.
            Err(StoreError::Duplicate("user_name")) => {
                new_user.user_name = None;
                let adopted = store.adopt_legacy_account(
                    legacy.id(),
                    new_user,
                    &admitted.key,
                    fingerprint,
                    audit,
                );
                crate::metrics::store("adopt_legacy_account", adopted).await
            }
            other => other,
        };
        match adopted {
            Ok(resolved) => {
                crate::metrics::account("adopted");
                Ok(resolved)
            }
            Err(StoreError::Duplicate("legacy_id")) => {
                Err(Failure::Denied(DenyReason::LegacyAccountClaimed))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The account `legacy` becomes for this sign-in: mapped as a new account, then adopted.
    fn adopted_user(
        &self,
        legacy: &LegacyAccount,
        admitted: &Admitted,
        sign_in: &SignIn,
    ) -> crate::user::NewUser {
        legacy.adopt_into(self.new_user(admitted, sign_in, UserStatus::Active))
    }

    /// The record of a new account for this sign-in: mapped, with the default roles, in the
    /// organisation (and with the default roles) of its connection.
    fn new_user(
        &self,
        admitted: &Admitted,
        sign_in: &SignIn,
        status: UserStatus,
    ) -> crate::user::NewUser {
        let mut new_user = self.config.mapping.new_user(&admitted.profile, status);
        if let Rules::Connection(connection) = self.rules(sign_in) {
            new_user.organization_id = Some(connection.organization);
            new_user.roles.extend(
                connection.default_roles.iter().map(|role| {
                    crate::user::RoleGrant::new(role, crate::user::RoleSource::Default)
                }),
            );
            new_user.roles = crate::user::normalize_roles(std::mem::take(&mut new_user.roles));
        }
        new_user
    }

    /// Whether this sign-in may create an account: the layer allows creation, and so does
    /// its issuer's policy for its source.
    fn may_create(&self, sign_in: &SignIn) -> bool {
        self.config.create_accounts
            && self
                .rules(sign_in)
                .get()
                .is_none_or(|rules| rules.creation.allows(sign_in.source()))
    }

    fn needs_approval(&self, sign_in: &SignIn, profile: &MappedProfile) -> bool {
        let by_issuer = self
            .rules(sign_in)
            .get()
            .is_some_and(|rules| rules.require_approval);
        let by_layer = self.config.require_approval;
        let by_domain = !self.config.approval_domains.is_empty()
            && profile
                .email
                .as_deref()
                .and_then(EmailAddress::parse)
                .is_some_and(|address| {
                    domain_matches(&self.config.approval_domains, &address.domain)
                });
        by_layer || by_issuer || by_domain
    }

    /// Links the identity to the account `target`, found `how`. `None` when the account
    /// already has an identity at this issuer: a person has one subject per issuer, so another
    /// subject there is another person. The store checks that in the link's own transaction,
    /// so two people racing for one account cannot both get it.
    async fn link(
        &self,
        target: Uuid,
        how: &'static str,
        admitted: &Admitted,
        sign_in: &SignIn,
    ) -> Result<Option<Resolved>, Failure> {
        let audit = login_event(AuditKind::Linked, sign_in).reason(how);
        // No fingerprint: the linked account was not built from these claims, so the sync
        // that follows compares it with them.
        let linked = self
            .config
            .store
            .link_identity(target, &admitted.key, None, audit);
        match crate::metrics::store("link_identity", linked).await {
            Err(StoreError::IssuerAlreadyLinked) => Ok(None),
            other => {
                let linked = other?;
                crate::metrics::account("linked");
                Ok(Some(linked))
            }
        }
    }

    /// The account whose `external_id` is the value of the configured linking claim; with
    /// `by_claim_unused_only`, only while nobody has signed in to it yet.
    async fn claim_target(
        &self,
        sign_in: &SignIn,
        tracer: &mut Tracer,
    ) -> Result<Option<Uuid>, Failure> {
        let Some(claim) = &self.config.linking.by_claim else {
            return Ok(None);
        };
        let rule = || format!("link_by_claim:{claim}");
        let Some(value) = sign_in.claim_str(claim).filter(|v| !v.is_empty()) else {
            tracer.detail(|| {
                TraceStep::new(Stage::Linking, rule(), Verdict::Skipped)
                    .note("the sign-in does not carry the claim")
            });
            return Ok(None);
        };
        let step = |verdict| TraceStep::new(Stage::Linking, rule(), verdict).seen(value);
        let store = &self.config.store;
        let Some(user) = store
            .find_by_external_id(value)
            .await?
            .filter(|user| user.organization_id == sign_in.organization_id())
        else {
            tracer.detail(|| {
                step(Verdict::Skipped).note("no account of this organisation has this external id")
            });
            return Ok(None);
        };
        if self.config.linking.by_claim_unused_only && !store.identities(user.id).await?.is_empty()
        {
            tracer.detail(|| {
                step(Verdict::Skipped)
                    .target(user.id.to_string())
                    .note("the account has been signed in to: only unused accounts are linked")
            });
            return Ok(None);
        }
        tracer.detail(|| step(Verdict::Taken).target(user.id.to_string()));
        Ok(Some(user.id))
    }

    /// The one account holding the token's verified address, when linking by e-mail is on
    /// and the issuer is trusted for the address's domain.
    async fn email_target(
        &self,
        admitted: &Admitted,
        sign_in: &SignIn,
        tracer: &mut Tracer,
    ) -> Result<Option<Uuid>, Failure> {
        if !self.config.linking.by_verified_email {
            return Ok(None);
        }
        let step = |verdict| TraceStep::new(Stage::Linking, "link_by_verified_email", verdict);
        let email = match self.trusted_email(admitted, sign_in) {
            Ok(email) => email,
            Err(untrusted) => {
                tracer.detail(|| untrusted.step(step(Verdict::Skipped)));
                return Ok(None);
            }
        };
        let store = &self.config.store;
        // Accounts holding the address verified, or as their login name (as SCIM clients
        // create them). Exactly one candidate, or none: an ambiguous address links nobody.
        let mut candidates = store.find_by_verified_email(email, 2).await?;
        if let Some(user) = store.find_by_user_name(email).await?
            && !candidates.iter().any(|c| c.id == user.id)
        {
            candidates.push(user);
        }
        // An account of another organisation (or of none, for an organisation's sign-in) is
        // never a candidate, whatever address it holds.
        candidates.retain(|user| user.organization_id == sign_in.organization_id());
        tracer.detail(|| {
            let step = step(match candidates.len() {
                1 => Verdict::Taken,
                _ => Verdict::Skipped,
            })
            .seen(email);
            match candidates.as_slice() {
                [user] => step.target(user.id.to_string()),
                [] => step.note("no account holds the address"),
                _ => step.note("more than one account holds the address: none is linked"),
            }
        });
        Ok(match candidates.as_slice() {
            [user] => Some(user.id),
            _ => None,
        })
    }

    /// The sign-in's e-mail address if it may identify the person to an account of another
    /// origin: verified, and vouched for by an issuer trusted for its domain.
    fn trusted_email<'a>(
        &self,
        admitted: &'a Admitted,
        sign_in: &SignIn,
    ) -> Result<&'a str, Untrusted> {
        let email = match admitted.profile.email.as_deref() {
            Some(email) if admitted.profile.email_verified => email,
            _ => return Err(Untrusted::Unverified),
        };
        let domain = EmailAddress::parse(email).map(|address| address.domain);
        let trusted = self.rules(sign_in).get().is_some_and(|rules| {
            domain
                .as_deref()
                .is_some_and(|domain| rules.email_trust.covers(domain))
        });
        if trusted {
            Ok(email)
        } else {
            Err(Untrusted::Domain(domain.unwrap_or_default()))
        }
    }

    /// Reactivates if configured, and syncs an active account with the token's claims.
    async fn bring_current(
        &self,
        mut user: User,
        mut identity: Identity,
        admitted: &Admitted,
        sign_in: &SignIn,
    ) -> Result<(User, Identity), Failure> {
        let store = &self.config.store;
        if user.status == UserStatus::Deactivated && self.config.reactivate_on_login {
            let audit = login_event(AuditKind::Reactivated, sign_in)
                .identity(&admitted.key)
                .fields(["status"]);
            user = store
                .update_user(
                    user.id,
                    Some(user.version),
                    crate::user::UserUpdate::status(UserStatus::Active),
                    Some(audit),
                )
                .await?;
        }
        if user.status != UserStatus::Active
            || identity.claims_fingerprint.as_deref() == Some(&admitted.fingerprint)
        {
            return Ok((user, identity));
        }
        let mut keep_user_name = false;
        for _ in 0..CONFLICT_RETRIES {
            let (mut update, mut fields) = self.config.mapping.changes(
                &user,
                &admitted.profile,
                admitted.roles_trusted,
                &mut Tracer::decisions(),
            );
            if keep_user_name {
                update.user_name = None;
                fields.retain(|f| *f != "user_name");
            }
            if update.is_empty() {
                break;
            }
            let audit = login_event(AuditKind::Updated, sign_in)
                .identity(&admitted.key)
                .fields(fields);
            let written = store.update_user(user.id, Some(user.version), update, Some(audit));
            match crate::metrics::store("update_user", written).await {
                Ok(updated) => {
                    user = updated;
                    crate::metrics::account("updated");
                    break;
                }
                Err(StoreError::Conflict) => {
                    // Someone else changed the user meanwhile: sync against what they wrote.
                    user = store
                        .find_by_identity(&admitted.key)
                        .await?
                        .map(|(user, _)| user)
                        .ok_or(Failure::Broken)?;
                }
                // The new login name is taken: sync everything else.
                Err(StoreError::Duplicate("user_name")) if !keep_user_name => {
                    keep_user_name = true;
                }
                Err(other) => return Err(other.into()),
            }
        }
        let now = Utc::now();
        store
            .record_login(&admitted.key, now, Some(&admitted.fingerprint))
            .await?;
        identity.claims_fingerprint = Some(admitted.fingerprint.clone());
        identity.last_login_at = Some(now);
        user.last_login_at = Some(now);
        Ok((user, identity))
    }

    /// Records a sign-in of a cached account in the background, at most once per interval.
    /// The resolution that cached the account recorded one when it read it.
    fn note_login(&self, account: &Account, admitted: &Arc<Admitted>, now: Instant) {
        let elapsed = u64::try_from(now.saturating_duration_since(account.read_at).as_millis())
            .unwrap_or(u64::MAX);
        let interval = u64::try_from(self.config.login_interval.as_millis()).unwrap_or(u64::MAX);
        let last = account.login_noted.load(Ordering::Relaxed);
        if elapsed.saturating_sub(last) < interval
            || account
                .login_noted
                .compare_exchange(last, elapsed, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = Arc::clone(&self.config.store);
        let admitted = Arc::clone(admitted);
        tokio::spawn(async move {
            let at = Utc::now();
            if let Err(error) = store.record_login(&admitted.key, at, None).await {
                tracing::debug!(
                    target: "tower_jit_provisioning::store",
                    error = %ErrorChain(&error),
                    "last login not recorded"
                );
            }
        });
    }
}

/// A refusal on its way to the audit: why, of which account, and the trace that decided it.
struct Denial {
    reason: DenyReason,
    user_id: Option<Uuid>,
    trace: DecisionTrace,
}

impl Denial {
    /// A refusal by admission, whose trace ends in the refusing rule.
    fn new(reason: DenyReason, trace: DecisionTrace) -> Self {
        Self {
            reason,
            user_id: None,
            trace,
        }
    }

    /// A refusal after admission, by the account's state (or its absence): the admission
    /// steps, then the one that refused.
    fn after(admitted: &Admitted, reason: DenyReason, user: Option<&User>) -> Self {
        let mut trace = admitted.trace.clone();
        trace.steps.push(refusal_step(reason, user));
        Self {
            reason,
            user_id: user.map(|user| user.id),
            trace,
        }
    }
}

/// What an organisation's connection changes in a mapped profile: an address outside the
/// organisation's domains is not verified (for domain rules, linking or anything else), and
/// the connection's group rules grant their roles.
fn confine_to_organization(
    profile: &mut MappedProfile,
    connection: &ConnectionProvisioning,
    tracer: &mut Tracer,
) {
    let domain = profile
        .email
        .as_deref()
        .and_then(EmailAddress::parse)
        .map(|address| address.domain);
    let owned = domain
        .as_deref()
        .is_some_and(|domain| connection.domains.iter().any(|d| d == domain));
    if profile.email_verified && !owned {
        profile.email_verified = false;
        tracer.decision(
            TraceStep::new(Stage::Admission, "organization_domains", Verdict::Untrusted)
                .seen(domain.unwrap_or_default())
                .note("not a domain of the organisation: the address counts as unverified"),
        );
    }
    let grants = connection.group_grants(&profile.groups);
    if !grants.is_empty() {
        profile.roles.extend(grants);
        profile.roles = crate::user::normalize_roles(std::mem::take(&mut profile.roles));
    }
}

/// Why a sign-in's e-mail address may not identify the person.
enum Untrusted {
    /// There is none, or it is not verified.
    Unverified,
    /// Its issuer is not trusted for this domain.
    Domain(String),
}

impl Untrusted {
    /// `step`, saying why.
    fn step(self, step: TraceStep) -> TraceStep {
        match self {
            Self::Unverified => step.note("no verified e-mail address"),
            Self::Domain(domain) => step
                .seen(domain)
                .note("the issuer is not trusted for this e-mail domain"),
        }
    }
}

/// Why an account in `status` may not be signed in to, if it may not.
fn refusal_of(status: UserStatus) -> Option<DenyReason> {
    match status {
        UserStatus::Active => None,
        UserStatus::PendingApproval => Some(DenyReason::PendingApproval),
        UserStatus::Deactivated => Some(DenyReason::Deactivated),
    }
}

/// The step that refuses a sign-in admission let through.
fn refusal_step(reason: DenyReason, user: Option<&User>) -> TraceStep {
    let (rule, note) = match reason {
        DenyReason::NotProvisioned => (
            "create_accounts",
            "no account, and this sign-in may not create one",
        ),
        DenyReason::Deleted => ("identity", "the identity's account was deleted"),
        DenyReason::LegacyAccountClaimed => (
            "legacy_account",
            "another identity adopted this legacy account",
        ),
        DenyReason::OtherOrganization => (
            "organization",
            "the account belongs to another organisation",
        ),
        DenyReason::PendingApproval => ("status", "the account is waiting for approval"),
        DenyReason::Deactivated => ("status", "the account is deactivated"),
        _ => ("account", "refused"),
    };
    let step = TraceStep::new(Stage::Account, rule, Verdict::Refused).note(note);
    match user {
        Some(user) => step.target(user.id.to_string()).seen(user.status.as_str()),
        None => step,
    }
}

/// An event of `kind` caused by a sign-in, naming its source.
fn login_event(kind: AuditKind, sign_in: &SignIn) -> AuditEvent {
    AuditEvent::new(kind, Actor::Login).source(sign_in.source().as_str())
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("store", self.config.store.debug())
            .field("mapping", &self.config.mapping)
            .field("cached_users", &self.users.entry_count())
            .finish_non_exhaustive()
    }
}
