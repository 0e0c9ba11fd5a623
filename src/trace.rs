//! Decision traces: why a sign-in was admitted or refused, mapped as it was, granted the
//! roles it has, linked to the account it got.
//!
//! Stage: records shared by every stage. Uses nothing else of the crate.
//!
//! A [`DecisionTrace`] lists the rules the pipeline consulted, in order, each as a
//! [`TraceStep`]: the [`Stage`], the rule's name (`allowed_domains`, `required_claim:tid`,
//! `group:staff-admins`, `sync:display_name`, …), the value it saw, its [`Verdict`] and what it
//! produced. [`explain`](crate::ProvisioningLayer::explain) returns the whole trace of a dry
//! run; a refusal carries the steps that decided it in its `denied` [audit event](crate::audit).
//!
//! A trace holds claim values (an e-mail domain, a tenant id, group names), bounded in size,
//! and never a token or a secret.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest string a step keeps of a value it saw, in characters.
const MAX_TEXT: usize = 256;
/// The most items a step keeps of a list it saw.
const MAX_ITEMS: usize = 32;

/// Which stage of the pipeline a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// Attributes to profile fields, groups and attributes.
    Mapping,
    /// Groups asked of a group resolver (a token whose groups did not fit).
    Groups,
    /// Who may have an account at all: domains, pinned claims, required groups, the
    /// application's predicate, strict roles.
    Admission,
    /// Which rule grants or revokes which role.
    Roles,
    /// How a first sign-in finds an existing account.
    Linking,
    /// The account: found, created, its state.
    Account,
    /// Which field a later sign-in overwrites or keeps, by its sync policy.
    Sync,
}

impl Stage {
    /// The snake-case name used in serialized traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mapping => "mapping",
            Self::Groups => "groups",
            Self::Admission => "admission",
            Self::Roles => "roles",
            Self::Linking => "linking",
            Self::Account => "account",
            Self::Sync => "sync",
        }
    }
}

/// What a rule made of what it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// An admission rule held.
    Passed,
    /// The rule refused the sign-in: the trace ends here.
    Refused,
    /// A field or attribute was filled from the claim.
    Mapped,
    /// The claim the rule reads was absent.
    Absent,
    /// A role was granted.
    Granted,
    /// A role the rule granted before was revoked.
    Revoked,
    /// A role rule did not match.
    NotMatched,
    /// A grant that was not the mapping's (default, SCIM, the application's) was kept.
    Kept,
    /// Roles from claims were not trusted for this sign-in: the mapping grants none.
    Untrusted,
    /// The resolver answered.
    Resolved,
    /// The resolver did not answer: groups stay unknown, and no role is revoked for them.
    Unresolved,
    /// A linking candidate was taken.
    Taken,
    /// A linking rule found no usable candidate, or was off.
    Skipped,
    /// The identity's account was found.
    Found,
    /// An account would be (or was) created.
    Created,
    /// A deactivated account is reactivated by signing in.
    Reactivated,
    /// A new account waits for approval.
    Pending,
    /// A later sign-in writes the field.
    Written,
    /// The field's sync policy (or SCIM's ownership) keeps the stored value.
    Preserved,
    /// The field already holds the value.
    Unchanged,
}

impl Verdict {
    /// `Passed` for an admission rule that held, `Refused` for one that did not.
    pub(crate) fn held(held: bool) -> Self {
        if held { Self::Passed } else { Self::Refused }
    }

    /// The snake-case name used in serialized traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Refused => "refused",
            Self::Mapped => "mapped",
            Self::Absent => "absent",
            Self::Granted => "granted",
            Self::Revoked => "revoked",
            Self::NotMatched => "not_matched",
            Self::Kept => "kept",
            Self::Untrusted => "untrusted",
            Self::Resolved => "resolved",
            Self::Unresolved => "unresolved",
            Self::Taken => "taken",
            Self::Skipped => "skipped",
            Self::Found => "found",
            Self::Created => "created",
            Self::Reactivated => "reactivated",
            Self::Pending => "pending",
            Self::Written => "written",
            Self::Preserved => "preserved",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One rule consulted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TraceStep {
    /// The stage.
    pub stage: Stage,
    /// The rule, by a stable name: `allowed_domains`, `required_claim:<claim>`,
    /// `required_group:<group>`, `group:<group>`, `claim:<path>=<value>`, `field:<field>`,
    /// `sync:<field>`, `link_by_claim:<claim>`, `link_by_verified_email`, `create_accounts`, …
    pub rule: String,
    /// The value the rule saw (a claim's value, the e-mail domain, the groups), bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Value>,
    /// What the rule made of it.
    pub verdict: Verdict,
    /// What it produced or concerned: a role, a field, an account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Fixed text saying why, where the rule and verdict do not say it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TraceStep {
    /// A step of `stage`: `rule` came to `verdict`.
    pub fn new(stage: Stage, rule: impl Into<String>, verdict: Verdict) -> Self {
        Self {
            stage,
            rule: rule.into(),
            seen: None,
            verdict,
            target: None,
            note: None,
        }
    }

    /// The value the rule saw; long strings and lists are cut to a bound.
    #[must_use]
    pub fn seen(mut self, value: impl Into<Value>) -> Self {
        self.seen = Some(bounded(value.into()));
        self
    }

    /// What the step produced or concerned.
    #[must_use]
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Why, in a few words.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// A value cut to the trace's bounds, so a refusal's audit event stays small whatever the
/// token carried.
fn bounded(value: Value) -> Value {
    match value {
        Value::String(text) if text.chars().count() > MAX_TEXT => {
            let mut cut: String = text.chars().take(MAX_TEXT).collect();
            cut.push('…');
            Value::String(cut)
        }
        Value::Array(items) => {
            let total = items.len();
            let mut kept: Vec<Value> = items.into_iter().take(MAX_ITEMS).map(bounded).collect();
            if total > MAX_ITEMS {
                kept.push(Value::String(format!("… {} more", total - MAX_ITEMS)));
            }
            Value::Array(kept)
        }
        Value::Object(map) => {
            let total = map.len();
            let mut kept: serde_json::Map<String, Value> = map
                .into_iter()
                .take(MAX_ITEMS)
                .map(|(k, v)| (k, bounded(v)))
                .collect();
            if total > MAX_ITEMS {
                kept.insert("…".into(), Value::from(total - MAX_ITEMS));
            }
            Value::Object(kept)
        }
        other => other,
    }
}

/// The rules consulted for one sign-in, in the order they ran.
///
/// Serializes as `{"steps": [...]}`; [`Display`](fmt::Display) writes one line per step:
///
/// ```text
/// admission  allowed_domains            seen "evil.example"  refused  (not an allowed domain)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecisionTrace {
    /// The steps, in order.
    pub steps: Vec<TraceStep>,
}

impl DecisionTrace {
    /// The steps of `stage`.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &TraceStep> {
        self.steps.iter().filter(move |step| step.stage == stage)
    }

    /// The first step of the rule named `rule`.
    pub fn rule(&self, rule: &str) -> Option<&TraceStep> {
        self.steps.iter().find(|step| step.rule == rule)
    }

    /// The step that refused, if one did.
    pub fn refusal(&self) -> Option<&TraceStep> {
        self.steps
            .iter()
            .find(|step| step.verdict == Verdict::Refused)
    }

    /// Whether it holds no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for DecisionTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, step) in self.steps.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{:<10} {:<30}", step.stage.as_str(), step.rule)?;
            if let Some(seen) = &step.seen {
                write!(f, " seen {seen}")?;
            }
            write!(f, "  {}", step.verdict.as_str())?;
            if let Some(target) = &step.target {
                write!(f, " {target}")?;
            }
            if let Some(note) = &step.note {
                write!(f, "  ({note})")?;
            }
        }
        Ok(())
    }
}

/// Collects steps as the pipeline runs. The sign-in path records only the steps that decide
/// (admission, the account's state); a dry run records every step.
#[derive(Debug, Default)]
pub(crate) struct Tracer {
    steps: Vec<TraceStep>,
    detailed: bool,
}

impl Tracer {
    /// Records the deciding steps only: what a refusal's audit event carries.
    pub(crate) fn decisions() -> Self {
        Self::default()
    }

    /// Records every step: for explaining.
    pub(crate) fn detailed() -> Self {
        Self {
            steps: Vec::new(),
            detailed: true,
        }
    }

    /// Records a deciding step.
    pub(crate) fn decision(&mut self, step: TraceStep) {
        self.steps.push(step);
    }

    /// Records a step that explains but does not decide; built only when explaining.
    pub(crate) fn detail(&mut self, step: impl FnOnce() -> TraceStep) {
        if self.detailed {
            self.steps.push(step());
        }
    }

    pub(crate) fn is_detailed(&self) -> bool {
        self.detailed
    }

    pub(crate) fn finish(self) -> DecisionTrace {
        DecisionTrace { steps: self.steps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seen_values_are_bounded() {
        let long = "x".repeat(1000);
        let step = TraceStep::new(Stage::Mapping, "field:display_name", Verdict::Mapped)
            .seen(long.as_str());
        assert_eq!(
            step.seen
                .as_ref()
                .and_then(Value::as_str)
                .unwrap()
                .chars()
                .count(),
            MAX_TEXT + 1
        );
        let many: Vec<Value> = (0..100).map(|n| json!(format!("g{n}"))).collect();
        let step = TraceStep::new(Stage::Mapping, "groups", Verdict::Mapped).seen(many);
        let kept = step.seen.unwrap();
        assert_eq!(kept.as_array().unwrap().len(), MAX_ITEMS + 1);
        assert_eq!(kept[MAX_ITEMS], json!("… 68 more"));
    }

    #[test]
    fn traces_read_as_text_and_json() {
        let trace = DecisionTrace {
            steps: vec![
                TraceStep::new(Stage::Admission, "allowed_domains", Verdict::Refused)
                    .seen("evil.example")
                    .note("not an allowed domain"),
            ],
        };
        assert_eq!(
            trace.to_string(),
            "admission  allowed_domains                seen \"evil.example\"  refused  (not an \
             allowed domain)"
        );
        let json = serde_json::to_value(&trace).unwrap();
        assert_eq!(
            json,
            json!({"steps": [{"stage": "admission", "rule": "allowed_domains",
                "seen": "evil.example", "verdict": "refused", "note": "not an allowed domain"}]})
        );
        let back: DecisionTrace = serde_json::from_value(json).unwrap();
        assert_eq!(back, trace);
        assert_eq!(trace.refusal().unwrap().rule, "allowed_domains");
    }
}
