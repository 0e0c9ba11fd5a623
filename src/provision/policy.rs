//! Admission: who may have an account, decided from a verified sign-in before anything is
//! written.
//!
//! Stage: the pipeline. Reads a [`SignIn`]; uses `crate::sign_in` and
//! `crate::error`.
//!
//! Per issuer: an e-mail domain allow-list, claim pins (a tenant: Entra `tid`, Google `hd`,
//! Entra `xms_edov`), required groups. For everyone: an async predicate of the application's.
//!
//! E-mail domains are read strictly: exactly one `@`, a plain ASCII local part (no quotes,
//! comments, spaces or brackets), a domain of LDH labels, lower-cased with a trailing dot
//! removed. Anything else — Unicode look-alikes, full-width characters, quoted local parts — is
//! refused rather than guessed at. The same normalisation is used to check a domain and to
//! store the address, so what was checked is what is kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

pub use crate::error::DenyReason;
use crate::sign_in::SignIn;
use crate::trace::{Stage, TraceStep, Tracer, Verdict};
use crate::user::User;

/// An e-mail domain rule: `example.com` matches exactly that domain, `*.example.com` matches
/// its sub-domains (whole labels only) and not `example.com` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DomainPattern {
    Exact(String),
    Subdomains(String),
}

impl DomainPattern {
    /// Parses a configured pattern; `None` when it is not a valid domain.
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        match pattern.strip_prefix("*.") {
            Some(parent) => normalize_domain(parent).map(Self::Subdomains),
            None => normalize_domain(pattern).map(Self::Exact),
        }
    }

    pub(crate) fn matches(&self, domain: &str) -> bool {
        match self {
            Self::Exact(exact) => domain == exact,
            Self::Subdomains(parent) => domain
                .strip_suffix(parent.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

/// Whether any of `patterns` matches `domain`.
pub(crate) fn domain_matches(patterns: &[DomainPattern], domain: &str) -> bool {
    patterns.iter().any(|p| p.matches(domain))
}

/// A domain in normal form: ASCII LDH labels, lower case, no trailing dot, at least two labels.
pub(crate) fn normalize_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.len() > 253 || !domain.is_ascii() {
        return None;
    }
    let domain = domain.to_ascii_lowercase();
    let mut labels = 0;
    for label in domain.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return None;
        }
        labels += 1;
    }
    (labels >= 2).then_some(domain)
}

/// An e-mail address read strictly, with its domain normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EmailAddress {
    pub(crate) local: String,
    pub(crate) domain: String,
}

impl EmailAddress {
    pub(crate) fn parse(address: &str) -> Option<Self> {
        let (local, domain) = address.split_once('@')?;
        if domain.contains('@') || local.is_empty() || local.len() > 64 || address.len() > 254 {
            return None;
        }
        let plain = |b: u8| b.is_ascii_graphic() && !b"\"(),:;<>[\\]".contains(&b);
        if !local.bytes().all(plain)
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return None;
        }
        Some(Self {
            local: local.to_owned(),
            domain: normalize_domain(domain)?,
        })
    }

    /// `local@domain`, with the normalised domain: what is stored.
    pub(crate) fn normalized(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

/// One issuer's admission rules, validated.
#[derive(Clone, Debug, Default)]
pub(crate) struct Admission {
    pub(crate) allowed_domains: Vec<DomainPattern>,
    pub(crate) required_claims: Vec<(String, Value)>,
    pub(crate) required_groups: Vec<String>,
}

impl Admission {
    /// Checks a sign-in (and the groups mapped from it) against the rules, recording each
    /// rule it consults.
    pub(crate) fn check(
        &self,
        sign_in: &SignIn,
        groups: &[String],
        tracer: &mut Tracer,
    ) -> Result<(), DenyReason> {
        if !self.allowed_domains.is_empty() {
            let step = |verdict| TraceStep::new(Stage::Admission, "allowed_domains", verdict);
            let domain = sign_in
                .email()
                .and_then(EmailAddress::parse)
                .map(|address| address.domain);
            if !sign_in.email_verified() {
                let mut refused = step(Verdict::Refused).note("the address is not verified");
                if let Some(domain) = domain {
                    refused = refused.seen(domain);
                }
                tracer.decision(refused);
                return Err(DenyReason::EmailNotVerified);
            }
            let Some(domain) = domain else {
                tracer.decision(step(Verdict::Refused).note("no well-formed e-mail address"));
                return Err(DenyReason::DomainNotAllowed);
            };
            if !domain_matches(&self.allowed_domains, &domain) {
                tracer.decision(
                    step(Verdict::Refused)
                        .seen(domain)
                        .note("not an allowed domain"),
                );
                return Err(DenyReason::DomainNotAllowed);
            }
            tracer.decision(step(Verdict::Passed).seen(domain));
        }
        for (claim, expected) in &self.required_claims {
            let seen = sign_in.claim(claim);
            let held = seen == Some(expected);
            let mut step = TraceStep::new(
                Stage::Admission,
                format!("required_claim:{claim}"),
                Verdict::held(held),
            )
            .seen(seen.cloned().unwrap_or(Value::Null));
            if !held {
                step = step.note(format!("requires {expected}"));
            }
            tracer.decision(step);
            if !held {
                return Err(DenyReason::ClaimMismatch);
            }
        }
        for group in &self.required_groups {
            let held = groups.iter().any(|g| g == group);
            let step = TraceStep::new(
                Stage::Admission,
                format!("required_group:{group}"),
                Verdict::held(held),
            );
            tracer.decision(if held {
                step
            } else {
                step.seen(groups.to_vec()).note("not a member")
            });
            if !held {
                return Err(DenyReason::MissingGroup);
            }
        }
        Ok(())
    }
}

type PredicateFuture = Pin<Box<dyn Future<Output = Result<(), DenyReason>> + Send>>;

/// The application's own admission check: async, run once per sign-in before anything is
/// written.
#[derive(Clone)]
pub(crate) struct Predicate(Arc<dyn Fn(SignIn) -> PredicateFuture + Send + Sync>);

impl Predicate {
    pub(crate) fn new<F, Fut>(check: F) -> Self
    where
        F: Fn(SignIn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), DenyReason>> + Send + 'static,
    {
        Self(Arc::new(move |sign_in| Box::pin(check(sign_in))))
    }

    pub(crate) async fn check(&self, sign_in: SignIn) -> Result<(), DenyReason> {
        (self.0)(sign_in).await
    }
}

/// Told of each account that starts pending approval, once, after it is written.
#[derive(Clone)]
pub(crate) struct PendingHook(Arc<dyn Fn(&User) + Send + Sync>);

impl PendingHook {
    pub(crate) fn new(hook: impl Fn(&User) + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }

    pub(crate) fn notify(&self, user: &User) {
        (self.0)(user);
    }
}

impl std::fmt::Debug for PendingHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingHook(<fn>)")
    }
}

impl std::fmt::Debug for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Predicate(<fn>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_read_strictly() {
        let domain = |a: &str| EmailAddress::parse(a).map(|e| e.domain);
        assert_eq!(domain("jane@Example.COM"), Some("example.com".into()));
        assert_eq!(domain("jane@example.com."), Some("example.com".into()));
        assert_eq!(
            domain("jane.doe+tag@mail.example.com"),
            Some("mail.example.com".into())
        );
        for bad in [
            "jane",
            "@example.com",
            "jane@",
            "jane@@example.com",
            "jane@evil.com@example.com",
            "\"jane@evil.com\"@example.com",
            "jane(comment)@example.com",
            "jane doe@example.com",
            "jane@example",
            "jane@exa_mple.com",
            "jane@-example.com",
            "jane@example..com",
            "jane@exаmple.com",        // Cyrillic а
            "jane@ｅｘａｍｐｌｅ.com", // full-width
            ".jane@example.com",
            "ja..ne@example.com",
            "jane@[127.0.0.1]",
        ] {
            assert_eq!(domain(bad), None, "{bad}");
        }
        assert_eq!(
            EmailAddress::parse("Jane@Example.COM.")
                .unwrap()
                .normalized(),
            "Jane@example.com"
        );
    }

    #[test]
    fn domain_patterns_match_whole_labels() {
        let exact = DomainPattern::parse("Example.com.").unwrap();
        let sub = DomainPattern::parse("*.example.com").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("mail.example.com"));
        assert!(!exact.matches("badexample.com"));
        assert!(sub.matches("mail.example.com"));
        assert!(sub.matches("a.b.example.com"));
        assert!(!sub.matches("example.com"));
        assert!(!sub.matches("badexample.com"));
        assert!(!sub.matches("example.com.evil.org"));
        assert_eq!(DomainPattern::parse("*.com"), None);
        assert_eq!(DomainPattern::parse("exa mple.com"), None);
        assert_eq!(DomainPattern::parse("*"), None);
    }
}
