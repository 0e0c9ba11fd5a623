//! Explaining: the whole pipeline as a dry run, writing nothing, with the trace of every rule
//! it consulted and the account that would result.
//!
//! Stage: the pipeline, read-only. Uses the provisioner's own steps (mapping, admission,
//! linking, sync) with a detailed tracer; every store call it makes is a read.

use chrono::Utc;
use serde::Serialize;

use super::{Failure, Provisioner, refusal_of, refusal_step};
use crate::error::{DenyReason, Error};
use crate::sign_in::SignIn;
use crate::store::StoreError;
use crate::trace::{DecisionTrace, Stage, TraceStep, Tracer, Verdict};
use crate::user::{Identity, User, UserStatus};

/// How a sign-in would come by its account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AccountAction {
    /// The identity has signed in before: its account.
    Found,
    /// A first sign-in, linked to an account that exists (by a claim or a verified e-mail).
    Linked,
    /// A first sign-in that creates an account.
    Created,
    /// A first sign-in that adopts an account of the system being migrated from
    /// ([`legacy_accounts`](crate::ProvisioningLayerBuilder::legacy_accounts)).
    Adopted,
}

/// What a sign-in would do, from [`ProvisioningLayer::explain`](crate::ProvisioningLayer::explain):
/// computed by the same rules a real sign-in runs, with nothing written.
///
/// Serializes as JSON with `admitted`, `reason` (the refusal's code), `account_action`,
/// `changes` (the fields a sync would write), `account` and `trace`. [`Display`](std::fmt::Display)
/// writes a summary line, then the trace.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// Whether the sign-in would reach the application's handlers.
    pub admitted: bool,
    /// Why not, when it would not.
    #[serde(serialize_with = "reason_code")]
    pub reason: Option<DenyReason>,
    /// How it would come by its account; `None` when it is refused before one is found.
    pub account_action: Option<AccountAction>,
    /// The fields the sign-in would write to the account (`display_name`, `roles`, `status`,
    /// …), as an `updated` audit event would list them.
    pub changes: Vec<String>,
    /// The account as it would be after the sign-in. For an account that would be created,
    /// its `id` is made up for the explanation: the real one is chosen when it is written.
    pub account: Option<User>,
    /// Every rule consulted, in order.
    pub trace: DecisionTrace,
}

fn reason_code<S: serde::Serializer>(
    reason: &Option<DenyReason>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match reason {
        Some(reason) => serializer.serialize_some(reason.code()),
        None => serializer.serialize_none(),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Some(reason) => write!(f, "refused: {}", reason.code())?,
            None => f.write_str("admitted")?,
        }
        if let Some(action) = self.account_action {
            let action = match action {
                AccountAction::Found => "found",
                AccountAction::Linked => "linked",
                AccountAction::Created => "created",
                AccountAction::Adopted => "adopted",
            };
            write!(f, "; account {action}")?;
        }
        if let Some(account) = &self.account {
            write!(f, " ({}, {})", account.id, account.status.as_str())?;
        }
        if !self.changes.is_empty() {
            write!(f, "; writes {}", self.changes.join(", "))?;
        }
        if !self.trace.is_empty() {
            write!(f, "\n{}", self.trace)?;
        }
        Ok(())
    }
}

/// A store read that failed, answered as a sign-in would be.
fn store_failed(error: StoreError) -> Error {
    Error::from(Failure::from(error))
}

/// An explanation being built.
struct Draft {
    tracer: Tracer,
    action: Option<AccountAction>,
    account: Option<User>,
    changes: Vec<String>,
}

impl Draft {
    fn finish(self, reason: Option<DenyReason>) -> Explanation {
        Explanation {
            admitted: reason.is_none(),
            reason,
            account_action: self.action,
            changes: self.changes,
            account: self.account,
            trace: self.tracer.finish(),
        }
    }

    /// Refused after admission, by the account's state or its absence.
    fn refuse(mut self, reason: DenyReason) -> Explanation {
        self.tracer
            .decision(refusal_step(reason, self.account.as_ref()));
        self.finish(Some(reason))
    }
}

impl Provisioner {
    /// Runs the pipeline for `sign_in` without writing anything: see [`Explanation`].
    pub(crate) async fn explain(&self, sign_in: &SignIn) -> Result<Explanation, Error> {
        let mut draft = Draft {
            tracer: Tracer::detailed(),
            action: None,
            account: None,
            changes: Vec::new(),
        };
        let admitted = match self.admit(sign_in, &mut draft.tracer).await {
            Ok(admitted) => admitted,
            Err(reason) => return Ok(draft.finish(Some(reason))),
        };
        let store = &self.config.store;
        let found = store
            .find_by_identity(&admitted.key)
            .await
            .map_err(store_failed)?;
        let (mut user, identity) = match found {
            Some((user, identity)) => {
                draft.tracer.decision(
                    TraceStep::new(Stage::Account, "identity", Verdict::Found)
                        .target(user.id.to_string())
                        .seen(user.status.as_str()),
                );
                draft.action = Some(AccountAction::Found);
                (user, Some(identity))
            }
            None => match self.explain_first(sign_in, &admitted, &mut draft).await? {
                Ok(user) => (user, None),
                Err(reason) => return Ok(draft.refuse(reason)),
            },
        };
        if user.organization_id != sign_in.organization_id() {
            draft.account = Some(user);
            return Ok(draft.refuse(DenyReason::OtherOrganization));
        }
        // A new account is active or pending: nothing to reactivate, and built from this very
        // profile, nothing to sync.
        let created = matches!(
            draft.action,
            Some(AccountAction::Created | AccountAction::Adopted)
        );
        if user.status == UserStatus::Deactivated && self.config.reactivate_on_login {
            draft.tracer.decision(
                TraceStep::new(Stage::Account, "reactivate_on_login", Verdict::Reactivated)
                    .target(user.id.to_string()),
            );
            user.apply(
                crate::user::UserUpdate::status(UserStatus::Active),
                Utc::now(),
            );
            draft.changes.push("status".into());
        }
        if let Some(reason) = refusal_of(user.status) {
            draft.account = Some(user);
            return Ok(draft.refuse(reason));
        }
        if !created {
            self.explain_sync(&mut user, identity.as_ref(), &admitted, &mut draft);
        }
        draft.account = Some(user);
        Ok(draft.finish(None))
    }

    /// A first sign-in: the account it would be linked to, or the one it would create, or
    /// why neither.
    async fn explain_first(
        &self,
        sign_in: &SignIn,
        admitted: &super::Admitted,
        draft: &mut Draft,
    ) -> Result<Result<User, DenyReason>, Error> {
        let store = &self.config.store;
        if store
            .is_identity_deleted(&admitted.key)
            .await
            .map_err(store_failed)?
        {
            return Ok(Err(DenyReason::Deleted));
        }
        let tracer = &mut draft.tracer;
        let by_claim = self
            .claim_target(sign_in, tracer)
            .await
            .map_err(Error::from)?;
        let by_email = match by_claim {
            Some(_) => None,
            None => self
                .email_target(admitted, sign_in, tracer)
                .await
                .map_err(Error::from)?,
        };
        for target in [by_claim, by_email].into_iter().flatten() {
            // A person has one subject per issuer: an account that has one here already is
            // someone else's, and the link would be refused.
            let linked_here = store
                .identities(target)
                .await
                .map_err(store_failed)?
                .iter()
                .any(|identity: &Identity| identity.key.issuer() == sign_in.issuer());
            if linked_here {
                tracer.decision(
                    TraceStep::new(Stage::Linking, "one_identity_per_issuer", Verdict::Skipped)
                        .target(target.to_string())
                        .note("the account has another identity at this issuer"),
                );
                continue;
            }
            if let Some(user) = store.get_user(target).await.map_err(store_failed)? {
                draft.action = Some(AccountAction::Linked);
                return Ok(Ok(user));
            }
        }
        if let Some(legacy) = self
            .legacy_account(admitted, sign_in, tracer)
            .await
            .map_err(Error::from)?
        {
            match store.find_by_legacy_id(legacy.id()).await {
                Ok(Some(owner)) => {
                    tracer.decision(
                        TraceStep::new(Stage::Linking, "legacy_account", Verdict::Refused)
                            .target(owner.id.to_string())
                            .note("another identity adopted this legacy account"),
                    );
                    return Ok(Err(DenyReason::LegacyAccountClaimed));
                }
                // A store that keeps no adoption records refuses the adoption itself.
                Ok(None) | Err(StoreError::Unsupported(_)) => {}
                Err(error) => return Err(store_failed(error)),
            }
            let user = User::from_new(self.adopted_user(&legacy, admitted, sign_in), Utc::now());
            tracer.decision(
                TraceStep::new(Stage::Account, "identity", Verdict::Created)
                    .target(user.id.to_string()),
            );
            draft.action = Some(AccountAction::Adopted);
            return Ok(Ok(user));
        }
        let creates = self.may_create(sign_in);
        if !creates {
            return Ok(Err(DenyReason::NotProvisioned));
        }
        tracer.decision(TraceStep::new(
            Stage::Account,
            "create_accounts",
            Verdict::Passed,
        ));
        let pending = self.needs_approval(sign_in, &admitted.profile);
        let status = if pending {
            tracer.decision(
                TraceStep::new(Stage::Account, "require_approval", Verdict::Pending)
                    .note("the new account waits for approval"),
            );
            UserStatus::PendingApproval
        } else {
            UserStatus::Active
        };
        // Untrusted roles were cleared from the profile by admission, as for a real sign-in.
        let new_user = self.new_user(admitted, sign_in, status);
        for grant in &new_user.roles {
            tracer.detail(|| {
                TraceStep::new(Stage::Roles, grant.source.to_string(), Verdict::Granted)
                    .target(grant.role.clone())
            });
        }
        let user = User::from_new(new_user, Utc::now());
        tracer.decision(
            TraceStep::new(Stage::Account, "identity", Verdict::Created)
                .target(user.id.to_string()),
        );
        draft.action = Some(AccountAction::Created);
        Ok(Ok(user))
    }

    /// What a sign-in's sync would write to an active account, applied to `user`.
    fn explain_sync(
        &self,
        user: &mut User,
        identity: Option<&Identity>,
        admitted: &super::Admitted,
        draft: &mut Draft,
    ) {
        let tracer = &mut draft.tracer;
        if identity.and_then(|i| i.claims_fingerprint.as_deref()) == Some(&admitted.fingerprint) {
            tracer.decision(
                TraceStep::new(Stage::Sync, "fingerprint", Verdict::Unchanged)
                    .note("the same attributes as the last sign-in: nothing is synced"),
            );
            return;
        }
        let (update, fields) =
            self.config
                .mapping
                .changes(user, &admitted.profile, admitted.roles_trusted, tracer);
        if !update.is_empty() {
            user.apply(update, Utc::now());
        }
        draft.changes.extend(fields.into_iter().map(str::to_owned));
    }
}
