//! Just-in-time user provisioning for tower and axum services.
//!
//! [`ProvisioningLayer`] verifies the credential of each request — an OpenID Connect bearer
//! token checked against the keys of the issuers you trust, or a [sign-in
//! source](#adding-a-sign-in-source) of your own. With a [`UserStore`], it also gives the person
//! behind it an account the first time they are seen, and hands every request's
//! [`ProvisionedUser`] to your handlers; without one, it hands over the [`SignIn`] (and, for a
//! token, the [`VerifiedClaims`]).
//!
//! ```text
//! request ──► extract token ──► verify ──► admit ──► resolve user ──► inner service
//!              (Bearer header     (issuer    (policy)   (cache ─► store ─► link or create,
//!               or cookie)         keys,                 one resolution per identity,
//!                                  claims)               attribute sync, audit event)
//! ```
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_jit_provisioning::{
//!     AttributeMapping, Issuer, ProvisionedUser, ProvisioningLayer, SqliteStore, TokenKind,
//! };
//!
//! async fn me(user: ProvisionedUser) -> String {
//!     format!("hello {}", user.user().email.as_deref().unwrap_or("stranger"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::connect("sqlite://jit.db").await?;
//! store.migrate().await?;
//!
//! let layer = ProvisioningLayer::builder()
//!     .issuer(
//!         Issuer::new("https://login.example.com")
//!             .audience("orders-api")
//!             .token_kinds([TokenKind::Access])
//!             .allowed_domains(["example.com"]),
//!     )
//!     .store(store)
//!     .mapping(AttributeMapping::new().default_roles(["member"]))
//!     .build()?;
//!
//! let app: Router = Router::new().route("/me", get(me)).layer(layer);
//! # drop(app);
//! # std::fs::remove_file("jit.db").ok();
//! # Ok(())
//! # }
//! ```
//!
//! # What is verified
//!
//! Tokens are routed to an issuer by their `iss`, compared exactly with the configured issuer
//! URLs; tokens of any other issuer are refused without a network request. Keys come from the
//! issuer's OpenID Connect discovery document and key set, cached and refreshed as described in
//! [`Issuer`]. Signature and registered claims are checked by the `openidconnect` crate's
//! verifier, with key types whose signature checks run on aws-lc-rs, the crate's one crypto
//! provider. ID tokens and RFC 9068 access tokens are each checked by their own rules. See
//! [`TokenError`] for every reason a token is refused and [`Error`] for the responses.
//!
//! # What is provisioned
//!
//! Identity is `(issuer, subject)`: an [`IdentityKey`], never an e-mail address. Admission
//! ([`Issuer::allowed_domains`], [`Issuer::require_claim`], [`Issuer::required_groups`],
//! [`ProvisioningLayerBuilder::admit`]) is decided before anything is written. Accounts are
//! found in a cache, else in the store, else linked or created; see [`provision`] for the
//! pipeline, [`AttributeMapping`] for the mapping and sync rules, [`store`] for the storage
//! guarantees and [`audit`] for the audit trail.
//!
//! Creation can be turned off ([`ProvisioningLayerBuilder::create_accounts`], per issuer or
//! source with [`IssuerPolicy::create_accounts_from`]) so only accounts that exist sign in;
//! new accounts can wait for a person's decision ([`approval::Approvals`]); a token whose
//! groups did not fit has them asked of a [`provision::groups::GroupResolver`] (Microsoft
//! Graph built in). Every stage reports counts and latencies through the `metrics` facade
//! (see the README's "Operating it"). [`ProvisioningLayer::explain`] runs the pipeline for a
//! sign-in without writing anything and says why, rule by rule ([`trace`]); a refusal's audit
//! event carries the same trace.
//!
//! # Sign-in sources
//!
//! A person can arrive through several sources; each verifies its own credential and says what
//! it proved as a [`SignIn`] (issuer, subject, attributes, a vouched-for e-mail address, groups,
//! expiry), and every source ends in the same pipeline: admission, resolution, linking or
//! creation, sync, audit. Built in: bearer JWTs (OpenID Connect ID tokens and RFC 9068 access
//! tokens), opaque bearer tokens by RFC 7662 introspection ([`Issuer::introspection`]), and
//! with the `login` feature, browser sign-in at OpenID Connect issuers and at OAuth2-only
//! providers such as GitHub ([`login`]), whose sessions are then a credential of their own.
//! [`SignInSource`] names them all, and an application adds its own.
//!
//! ```text
//! bearer JWT ──────────┐
//! opaque token ────────┤  (introspection, or GitHub's API)
//! session cookie ──────┼─► source-specific verification ─► SignIn ─► admit ─► resolve ─► extensions
//! browser callback ────┤  (OIDC code flow, OAuth2 + profile API)
//! your own source ─────┘
//! ```
//!
//! # Adding a sign-in source
//!
//! 1. Verify the credential your way and build a [`SignIn`] with [`SignIn::builder`]: your
//!    source's name ([`SignInSource::Custom`]), the issuer the subject belongs to, and the
//!    issuer's *stable* identifier for the person (never an e-mail address or a name people can
//!    change). Add the attributes the mapping should read, and the e-mail address with whether
//!    your source vouches for it: only a vouched address counts for domain rules and linking.
//! 2. Implement [`Authenticator`]: `Ok(None)` when a request carries no credential of yours,
//!    [`Error::InvalidCredentials`] when it carries a bad one.
//! 3. Register it with [`ProvisioningLayerBuilder::authenticator`], and give its issuer
//!    admission rules with [`ProvisioningLayerBuilder::policy`]. It is asked for every request
//!    without a bearer token; the account it proves is admitted, mapped, linked or created and
//!    audited (with your source's name) exactly as a token's. For a sign-in verified outside a
//!    request, such as a browser callback, call [`ProvisioningLayer::provision`].
//!
//! ```
//! use aws_lc_rs::hmac;
//! use tower_jit_provisioning::{
//!     Authenticator, Error, IssuerPolicy, ProvisioningLayer, SignIn, SignInSource, SqliteStore,
//! };
//!
//! /// An authenticating proxy puts the person's stable id and address in `x-proxy-user`
//! /// (`id,address`) and an HMAC of that header, hex-encoded, in `x-proxy-mac`.
//! struct Proxy {
//!     key: hmac::Key,
//! }
//!
//! const PROXY: SignInSource = SignInSource::Custom("proxy");
//!
//! impl Authenticator for Proxy {
//!     fn source(&self) -> SignInSource {
//!         PROXY
//!     }
//!
//!     async fn authenticate(&self, request: &http::request::Parts) -> Result<Option<SignIn>, Error> {
//!         let header = |name| request.headers.get(name).and_then(|v| v.to_str().ok());
//!         let Some(user) = header("x-proxy-user") else {
//!             return Ok(None); // not ours: the next source is asked
//!         };
//!         let refused = Error::InvalidCredentials("bad_proxy_mac");
//!         let mac = header("x-proxy-mac").and_then(|hex| {
//!             (0..hex.len())
//!                 .step_by(2)
//!                 .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
//!                 .collect::<Option<Vec<u8>>>()
//!         });
//!         match mac {
//!             Some(mac) if hmac::verify(&self.key, user.as_bytes(), &mac).is_ok() => {}
//!             _ => return Err(refused),
//!         }
//!         let (id, address) = user.split_once(',').ok_or(refused)?;
//!         let sign_in = SignIn::builder(PROXY, "https://proxy.internal", id)
//!             .email(address, true) // the proxy verified it
//!             .build()
//!             .map_err(|_| Error::InvalidCredentials("bad_proxy_user"))?;
//!         Ok(Some(sign_in))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::connect("sqlite::memory:").await?;
//! store.migrate().await?;
//! let layer = ProvisioningLayer::builder()
//!     .authenticator(Proxy { key: hmac::Key::new(hmac::HMAC_SHA256, b"a key shared with the proxy") })
//!     .policy("https://proxy.internal", IssuerPolicy::new().allowed_domains(["example.com"]))
//!     .store(store)
//!     .build()?;
//!
//! // The same pipeline serves a sign-in verified outside any request.
//! let sign_in = SignIn::builder(PROXY, "https://proxy.internal", "u-7")
//!     .email("grace@example.com", true)
//!     .build()?;
//! let user = layer.provision(&sign_in).await?;
//! assert_eq!(user.source(), PROXY);
//! assert_eq!(user.user().email.as_deref(), Some("grace@example.com"));
//! # Ok(())
//! # }
//! ```
//!
//! `tests/custom_source.rs` runs a signed-header source like this one over HTTP, with
//! admission, mapping and audit.
//!
//! # Features
//!
//! - `sqlite` (default): [`SqliteStore`].
//! - `postgres`: [`PostgresStore`], for several servers sharing one database.
//! - `axum`: [`ProvisionedUser`], [`SignIn`], [`VerifiedClaims`] and their `Option`s as
//!   extractors.
//! - `scim`: [`scim::Scim`], a SCIM 2.0 service provider on the same store.
//! - `test-util`: [`testing::TestIssuer`], a real issuer on loopback that mints tokens.
//!
//! Every item says which feature it needs, on docs.rs.
//!

#![cfg_attr(feature = "postgres", doc = "[`PostgresStore`]: crate::PostgresStore")]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "[`PostgresStore`]: https://docs.rs/tower-jit-provisioning/latest/tower_jit_provisioning/struct.PostgresStore.html"
)]
#![cfg_attr(feature = "sqlite", doc = "[`SqliteStore`]: crate::SqliteStore")]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "[`SqliteStore`]: https://docs.rs/tower-jit-provisioning/latest/tower_jit_provisioning/struct.SqliteStore.html"
)]
#![cfg_attr(feature = "login", doc = "[`login`]: crate::login")]
#![cfg_attr(
    not(feature = "login"),
    doc = "[`login`]: https://docs.rs/tower-jit-provisioning/latest/tower_jit_provisioning/login/index.html"
)]
#![cfg_attr(feature = "scim", doc = "[`scim::Scim`]: crate::scim::Scim")]
#![cfg_attr(
    not(feature = "scim"),
    doc = "[`scim::Scim`]: https://docs.rs/tower-jit-provisioning/latest/tower_jit_provisioning/scim/struct.Scim.html"
)]
#![cfg_attr(
    feature = "test-util",
    doc = "[`testing::TestIssuer`]: crate::testing::TestIssuer"
)]
#![cfg_attr(
    not(feature = "test-util"),
    doc = "[`testing::TestIssuer`]: https://docs.rs/tower-jit-provisioning/latest/tower_jit_provisioning/testing/struct.TestIssuer.html"
)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod approval;
pub mod audit;
mod builder;
mod cookies;
#[cfg(feature = "organizations")]
mod directory;
pub mod error;
mod layer;
mod metrics;
pub mod organization;
pub mod provision;
pub mod session;
mod sign_in;
pub mod store;
mod token;
pub mod trace;
mod user;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;

#[cfg(feature = "login")]
#[cfg_attr(docsrs, doc(cfg(feature = "login")))]
pub mod login;

#[cfg(feature = "scim")]
#[cfg_attr(docsrs, doc(cfg(feature = "scim")))]
pub mod scim;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

#[cfg(feature = "__fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use crate::audit::{Actor, AuditEvent, AuditKind, AuditSink};
pub use crate::builder::{
    DEFAULT_MAX_TOKEN_BYTES, DEFAULT_TOKEN_CACHE_CAPACITY, Issuer, IssuerPolicy, MAX_LEEWAY,
    Provider, ProvisioningLayerBuilder,
};
#[cfg(feature = "organizations")]
#[cfg_attr(docsrs, doc(cfg(feature = "organizations")))]
pub use crate::directory::OrganizationDirectory;
pub use crate::error::{
    ConfigError, DefaultErrorHandler, DenyReason, Error, ErrorHandler, RequestError, TokenError,
};
pub use crate::layer::{
    CacheSizes, ProvisioningLayer, ProvisioningService, ResponseFuture, UnreachableIssuers,
};
pub use crate::provision::{
    AccountAction, AttributeMapping, Explanation, Field, MappedProfile, ProvisionedUser, SyncPolicy,
};
pub use crate::sign_in::{
    Authenticator, MAX_SUBJECT_BYTES, SignIn, SignInBuilder, SignInError, SignInSource,
};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteStore;
pub use crate::store::{MemoryStore, StoreError, UserStore};
pub use crate::token::{AccessTokenProfile, Algorithm, TokenKind, TokenSource, VerifiedClaims};
pub use crate::trace::{DecisionTrace, Stage, TraceStep, Verdict};
pub use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, RoleGrant, RoleSource, User,
    UserStatus, UserUpdate,
};
