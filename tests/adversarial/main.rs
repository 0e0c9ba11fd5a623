//! The adversarial suite: every known class of token, key-set and account-linking attack,
//! one test per case named after it, each over real HTTP against `TestIssuer` and a real SQLite
//! file. Every refusal also proves that no user, identity or cache entry was written and that
//! neither the answer nor the logs contain the token.

#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod harness;

mod accounts;
mod claims;
mod domains;
mod framing;
mod issuer;
mod key_set;
mod races;
mod scim;
mod signature;
mod time;
