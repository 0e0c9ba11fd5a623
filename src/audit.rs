//! Audit events: every decision about an account, as structured `tracing` events and through
//! any [`AuditSink`].
//!
//! Stage: records shared by every stage. Uses only `crate::user` (the identity key) and
//! `crate::trace` (a refusal's decision trace).
//!
//! Events are emitted with target `tower_jit_provisioning::audit` at `INFO`, with the fields
//! `kind`, `actor`, `source` (the [`SignInSource`](crate::SignInSource) of a sign-in's
//! events), `issuer`, `subject`, `user_id`, `reason` and `fields` (the fields an `updated` event
//! changed) and `trace` (a refusal's [`DecisionTrace`], as JSON). Field names are part of the API.
//! Events never hold a token.
//!
//! Stores are the hub: every write a store performs is audited by the store itself, after the
//! write commits (and, for the SQL stores, persisted in the same transaction); decisions that
//! write nothing (`denied`, `token_rejected`) reach the store through
//! [`UserStore::record_audit`](crate::store::UserStore::record_audit).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::trace::DecisionTrace;
use crate::user::IdentityKey;

/// Writes a value as one line of JSON, for a log field.
struct Json<'a, T>(&'a T);

impl<T: Serialize> fmt::Display for Json<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self.0).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// An account was created for a first login (or by SCIM).
    Provisioned,
    /// An identity was linked to an existing account.
    Linked,
    /// An account's profile, groups or roles changed; `fields` lists what.
    Updated,
    /// A login was refused by policy or account state; `reason` says why.
    Denied,
    /// A token was refused; `reason` says why.
    TokenRejected,
    /// An account was deactivated.
    Deactivated,
    /// A deactivated account was reactivated.
    Reactivated,
    /// An account held for approval was approved.
    Approved,
    /// An account held for approval was refused: it is deactivated.
    Refused,
    /// An account was deleted.
    Deleted,
    /// Sessions were ended by a logout (the issuer's back-channel logout); `fields` says how
    /// many.
    LoggedOut,
}

impl AuditKind {
    /// The snake-case name used in logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioned => "provisioned",
            Self::Linked => "linked",
            Self::Updated => "updated",
            Self::Denied => "denied",
            Self::TokenRejected => "token_rejected",
            Self::Deactivated => "deactivated",
            Self::Reactivated => "reactivated",
            Self::Approved => "approved",
            Self::Refused => "refused",
            Self::Deleted => "deleted",
            Self::LoggedOut => "logged_out",
        }
    }

    /// The kind named by [`as_str`](Self::as_str).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Provisioned,
            Self::Linked,
            Self::Updated,
            Self::Denied,
            Self::TokenRejected,
            Self::Deactivated,
            Self::Reactivated,
            Self::Approved,
            Self::Refused,
            Self::Deleted,
            Self::LoggedOut,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// Who caused it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Actor {
    /// A sign-in through the layer.
    Login,
    /// A SCIM client, by the name its secret was configured with.
    Scim(String),
    /// The application, through the store API.
    Application,
    /// A person deciding on accounts held for approval, by the name the application gives
    /// ([`Approvals`](crate::approval::Approvals)).
    Approver(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Login => f.write_str("login"),
            Self::Scim(client) => write!(f, "scim:{client}"),
            Self::Application => f.write_str("application"),
            Self::Approver(name) => write!(f, "approver:{name}"),
        }
    }
}

/// One audited decision. Built with [`AuditEvent::new`] and its setters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: AuditKind,
    /// Who.
    pub actor: Actor,
    /// Through which sign-in source, for events a sign-in caused (`bearer_jwt`, `saml`, …).
    #[serde(default)]
    pub source: Option<String>,
    /// The issuer of the identity involved, if any.
    pub issuer: Option<String>,
    /// The subject of the identity involved, if any.
    pub subject: Option<String>,
    /// The account involved, if any.
    pub user_id: Option<Uuid>,
    /// A reason code, for refusals.
    pub reason: Option<String>,
    /// The fields changed, for `updated`.
    pub fields: Vec<String>,
    /// For a refusal of a sign-in (`denied`): the rules that decided it, ending in the one
    /// that refused. Claim values it saw, bounded; never a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<DecisionTrace>,
}

impl AuditEvent {
    /// An event of `kind` by `actor`, now.
    pub fn new(kind: AuditKind, actor: Actor) -> Self {
        Self {
            at: Utc::now(),
            kind,
            actor,
            source: None,
            issuer: None,
            subject: None,
            user_id: None,
            reason: None,
            fields: Vec::new(),
            trace: None,
        }
    }

    /// Names the sign-in source involved.
    #[must_use]
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Names the identity involved.
    #[must_use]
    pub fn identity(mut self, key: &IdentityKey) -> Self {
        self.issuer = Some(key.issuer().to_owned());
        self.subject = Some(key.subject().to_owned());
        self
    }

    /// Names the account involved.
    #[must_use]
    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// Gives the reason code.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Lists the changed fields.
    #[must_use]
    pub fn fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Attaches the trace of the decision.
    #[must_use]
    pub fn trace(mut self, trace: DecisionTrace) -> Self {
        self.trace = Some(trace);
        self
    }
}

/// Receives every audit event a store emits, after `tracing` has.
///
/// Implemented for closures `Fn(&AuditEvent)`. `record` is called on the request path: hand
/// the event off (to a channel, a buffer) rather than doing I/O in it.
pub trait AuditSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &AuditEvent);
}

impl<F> AuditSink for F
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent) {
        self(event)
    }
}

/// Where a store sends its events: `tracing`, then every sink added.
#[derive(Clone, Default)]
pub struct Audit {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl Audit {
    /// Tracing only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also sends every event to `sink`.
    #[must_use]
    pub fn with_sink(mut self, sink: impl AuditSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Emits `event` to `tracing` and every sink.
    pub fn emit(&self, event: &AuditEvent) {
        tracing::info!(
            target: "tower_jit_provisioning::audit",
            kind = event.kind.as_str(),
            actor = %event.actor,
            source = event.source.as_deref(),
            issuer = event.issuer.as_deref(),
            subject = event.subject.as_deref(),
            user_id = event.user_id.map(tracing::field::display),
            reason = event.reason.as_deref(),
            fields = ?event.fields,
            trace = event.trace.as_ref().map(|trace| tracing::field::display(Json(trace))),
            "audit"
        );
        for sink in &self.sinks {
            sink.record(event);
        }
    }
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}
