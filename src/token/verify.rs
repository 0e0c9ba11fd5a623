//! One token, start to finish: routing by issuer, `openidconnect`'s verification, and the rules
//! `openidconnect` leaves to its caller.
//!
//! Stage: the bearer-token source. Uses only `crate::error`; what later stages remember about a
//! token rides in its cache entry as an opaque memo.
//!
//! Order matters for cost and for safety:
//!
//! 1. [`RawToken::parse`]: structure, canonical encoding, strict JSON. No key is touched.
//! 2. The issuer is picked by `iss`, compared exactly with the configured issuers; an unknown
//!    issuer is refused with no network request.
//! 3. `alg` against the issuer's allow-list and `typ` against the kinds of token the issuer is
//!    trusted for, so `none`, HMAC and ID-token/access-token confusion never reach a key.
//! 4. The key set, from the issuer's [`KeyManager`]; only an unknown `kid` waits for a refresh.
//! 5. `openidconnect`'s `IdTokenVerifier`, built once per key set and audience: header rules
//!    (`typ`, `cty`, `crit`, JWE), `iss`, `aud` (other audiences only when they are accepted
//!    audiences too), algorithm allow-list, key selection, signature (aws-lc-rs through [`Jwk`]),
//!    `exp` (with the leeway applied through the verifier's clock).
//! 6. What the verifier does not check: `nbf` and `iat` against the same leeway, the optional
//!    maximum token age, `azp`/`client_id` against the allowed clients, RFC 9068's required
//!    `client_id` and `jti`, and the shape of `sub`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use openidconnect::{
    Audience, ClaimsVerificationError, ClientId, IdTokenVerifier, IssuerUrl, JsonWebKeySet,
    JsonWebTokenType, Nonce, SignatureVerificationError,
};
use serde_json::{Map, Value};

use super::answer::{
    REFUSAL_TTL, Remembered, TokenAnswerer, Unanswered, UntilDeadline, Verdict, is_jwt_shaped,
};
use super::claims::{ClaimRules, RawToken, VerifiedClaims, audiences};
use super::doorkeeper::Doorkeeper;
use super::jwk::Jwk;
use super::jwks::{KeyManager, KeySet};
use super::{AccessTokenProfile, Algorithm, TokenError, TokenKind};
use crate::error::Error;
use crate::sign_in::SignInSource;

/// The validated settings of one issuer.
#[derive(Debug)]
pub(crate) struct IssuerRules {
    pub(crate) issuer: Arc<str>,
    pub(crate) issuer_url: IssuerUrl,
    pub(crate) kinds: Vec<TokenKind>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) audiences: Arc<[String]>,
    /// Audiences a token may name beside an accepted one, which never suffice alone (Auth0's
    /// `…/userinfo`, Keycloak's `account`).
    pub(crate) tolerated_audiences: Arc<[String]>,
    /// Allowed `azp`/`client_id` values; `None`: ID tokens' `azp` must be an accepted audience,
    /// access tokens may come from any client.
    pub(crate) authorized_parties: Option<Vec<String>>,
    pub(crate) leeway: Duration,
    pub(crate) max_token_age: Option<Duration>,
    pub(crate) claims: ClaimRules,
    /// How access tokens are told from ID tokens.
    pub(crate) profile: AccessTokenProfile,
    /// The discovery document's URL, when not at the issuer's own well-known URL.
    pub(crate) discovery: Option<url::Url>,
    /// The application's client at this issuer, for browser sign-in.
    pub(crate) browser: Option<SignInClient>,
    /// Opaque access tokens, checked at the issuer's introspection endpoint.
    pub(crate) introspection: Option<super::answer::IntrospectionRules>,
}

/// The application's OAuth client at an issuer, for browser sign-in.
#[derive(Clone)]
pub(crate) struct SignInClient {
    pub(crate) id: String,
    pub(crate) secret: Option<String>,
    /// Scopes asked for beside `openid email profile`.
    pub(crate) scopes: Vec<String>,
}

impl std::fmt::Debug for SignInClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInClient")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `openidconnect` verifiers for one key set, one per (kind, accepted audience).
pub(crate) struct Verifiers {
    id: Vec<IdTokenVerifier<'static, Jwk>>,
    access: Vec<IdTokenVerifier<'static, Jwk>>,
    /// For the ID tokens of browser sign-ins: the client's audience, no other.
    #[cfg_attr(not(feature = "login"), allow(dead_code))]
    pub(super) browser: Option<IdTokenVerifier<'static, Jwk>>,
}

impl Verifiers {
    fn build(rules: &IssuerRules, keys: &JsonWebKeySet<Jwk>) -> Self {
        let make = |kind: TokenKind| {
            if !rules.kinds.contains(&kind) {
                return Vec::new();
            }
            rules
                .audiences
                .iter()
                .map(|audience| verifier(rules, keys, audience, kind))
                .collect()
        };
        let leeway = TimeDelta::from_std(rules.leeway).unwrap_or(TimeDelta::zero());
        let browser = rules.browser.as_ref().map(|client| {
            IdTokenVerifier::new_public_client(
                ClientId::new(client.id.clone()),
                rules.issuer_url.clone(),
                keys.clone(),
            )
            .set_allowed_algs(rules.algorithms.iter().map(|alg| alg.to_core()))
            .set_time_fn(move || Utc::now() - leeway)
        });
        Self {
            id: make(TokenKind::Id),
            access: make(TokenKind::Access),
            browser,
        }
    }

    fn get(&self, kind: TokenKind, audience: usize) -> Option<&IdTokenVerifier<'static, Jwk>> {
        match kind {
            TokenKind::Id => self.id.get(audience),
            TokenKind::Access => self.access.get(audience),
        }
    }
}

fn verifier(
    rules: &IssuerRules,
    keys: &JsonWebKeySet<Jwk>,
    audience: &str,
    kind: TokenKind,
) -> IdTokenVerifier<'static, Jwk> {
    let accepted = Arc::clone(&rules.audiences);
    let tolerated = Arc::clone(&rules.tolerated_audiences);
    let leeway = TimeDelta::from_std(rules.leeway).unwrap_or(TimeDelta::zero());
    let verifier = IdTokenVerifier::new_public_client(
        ClientId::new(audience.to_owned()),
        rules.issuer_url.clone(),
        keys.clone(),
    )
    .set_allowed_algs(rules.algorithms.iter().map(|alg| alg.to_core()))
    .set_other_audience_verifier_fn(move |aud: &Audience| {
        accepted
            .iter()
            .chain(tolerated.iter())
            .any(|a| a.as_str() == aud.as_str())
    })
    // The verifier refuses a token once its clock reaches `exp`; running that clock `leeway`
    // behind applies the leeway to `exp` exactly as it is applied to `nbf` and `iat` below.
    .set_time_fn(move || Utc::now() - leeway);
    let media_type = |typ: &str| {
        JsonWebTokenType::new(typ.to_owned())
            .normalize()
            .expect("a valid media type")
    };
    match (kind, rules.profile) {
        (TokenKind::Id, _) => verifier,
        (TokenKind::Access, AccessTokenProfile::Rfc9068) => {
            verifier.set_allowed_jose_types([media_type("at+jwt")])
        }
        // The provider types its access tokens `JWT` (or not at all); which kind a token is was
        // decided from its claims before the verifier was chosen.
        (TokenKind::Access, _) => {
            verifier.set_allowed_jose_types([media_type("JWT"), media_type("at+jwt")])
        }
    }
}

/// One issuer's verification.
pub(crate) struct IssuerVerifier {
    pub(crate) rules: Arc<IssuerRules>,
    pub(crate) keys: Arc<KeyManager<Verifiers>>,
}

impl IssuerVerifier {
    pub(crate) fn new(
        rules: IssuerRules,
        fetcher: super::fetch::Fetcher,
        timing: super::jwks::KeyTiming,
    ) -> Self {
        let rules = Arc::new(rules);
        let for_keys = Arc::clone(&rules);
        let keys = KeyManager::new(
            rules.issuer_url.clone(),
            rules.discovery.clone(),
            fetcher,
            timing,
            move |keys| Verifiers::build(&for_keys, keys),
        );
        Self {
            rules,
            keys: Arc::new(keys),
        }
    }

    /// The token's `alg`, if this issuer allows it.
    pub(super) fn allowed_algorithm(&self, raw: &RawToken) -> Result<Algorithm, Error> {
        Algorithm::from_name(&raw.header.alg)
            .filter(|alg| self.rules.algorithms.contains(alg))
            .ok_or(Error::InvalidToken(TokenError::UnsupportedAlgorithm))
    }

    /// The issuer's key set, refreshed first when it lacks the token's `kid`.
    pub(super) async fn key_set_for(
        &self,
        raw: &RawToken,
    ) -> Result<Arc<KeySet<Verifiers>>, Error> {
        self.keys
            .key_set(raw.header.kid.as_deref())
            .await
            .map_err(|unavailable| Error::IssuerUnavailable {
                retry_after: unavailable.retry_after,
            })
    }

    async fn verify(&self, token: &str, raw: RawToken) -> Result<VerifiedClaims, Error> {
        let rules = &self.rules;
        let invalid = Error::InvalidToken;
        self.allowed_algorithm(&raw)?;
        // A token typed `at+jwt` follows RFC 9068 whatever the issuer's profile.
        let typed_access = raw.header.declared_kind() == Some(TokenKind::Access);
        let kind = match raw.header.declared_kind() {
            None => return Err(invalid(TokenError::WrongTokenType)),
            Some(TokenKind::Access) => TokenKind::Access,
            Some(TokenKind::Id) => rules
                .profile
                .kind_of(&raw.payload)
                .ok_or(invalid(TokenError::WrongTokenType))?,
        };
        if !rules.kinds.contains(&kind) {
            return Err(invalid(match kind {
                TokenKind::Id => TokenError::ExpectedAccessToken,
                TokenKind::Access => TokenError::ExpectedIdToken,
            }));
        }
        let access_rules = if typed_access {
            AccessTokenProfile::Rfc9068
        } else {
            rules.profile
        };
        let token_audiences = audiences(&raw.payload);
        let audience = rules
            .audiences
            .iter()
            .position(|a| token_audiences.contains(a))
            .ok_or(invalid(TokenError::WrongAudience))?;

        let keys = self.key_set_for(&raw).await?;
        verify_signed(&keys, kind, audience, token).map_err(invalid)?;

        let now = Utc::now();
        check_times(rules, &raw.payload, now).map_err(invalid)?;
        check_party(
            rules,
            kind,
            access_rules,
            &raw.payload,
            token_audiences.len(),
        )
        .map_err(invalid)?;
        let subject_claim = match kind {
            TokenKind::Access => access_rules.subject_claim(),
            TokenKind::Id => "sub",
        };
        VerifiedClaims::from_verified(
            SignInSource::BearerToken,
            rules.issuer.clone(),
            kind,
            subject_claim,
            &raw.payload,
            raw.payload_json,
            &rules.claims,
        )
        .map_err(invalid)
    }
}

/// `openidconnect`'s part: header, `iss`, `aud`, algorithm, key, signature, `exp`.
fn verify_signed(
    keys: &KeySet<Verifiers>,
    kind: TokenKind,
    audience: usize,
    token: &str,
) -> Result<(), TokenError> {
    let verifier = keys
        .derived
        .get(kind, audience)
        .ok_or(TokenError::WrongTokenType)?;
    let id_token = super::jwk::parse_signed(token).ok_or(TokenError::Malformed)?;
    // Bearer tokens reach a resource server without the authorization request that set a
    // nonce, so there is none to compare.
    let no_nonce = |_: Option<&Nonce>| Ok(());
    id_token
        .claims(verifier, no_nonce)
        .map(drop)
        .map_err(claims_error)
}

pub(super) fn claims_error(error: ClaimsVerificationError) -> TokenError {
    use SignatureVerificationError as S;
    match error {
        ClaimsVerificationError::Expired(_) => TokenError::Expired,
        ClaimsVerificationError::InvalidAudience(_) => TokenError::WrongAudience,
        ClaimsVerificationError::InvalidIssuer(_) => TokenError::UntrustedIssuer,
        ClaimsVerificationError::Unsupported(_) => TokenError::WrongTokenType,
        ClaimsVerificationError::SignatureVerification(error) => match error {
            S::DisallowedAlg(_) | S::UnsupportedAlg(_) | S::NoSignature => {
                TokenError::UnsupportedAlgorithm
            }
            S::NoMatchingKey | S::AmbiguousKeyId(_) => TokenError::UnknownKey,
            _ => TokenError::BadSignature,
        },
        _ => TokenError::Malformed,
    }
}

/// `nbf`, `iat` and the maximum age, with the same leeway the verifier applied to `exp`.
pub(super) fn check_times(
    rules: &IssuerRules,
    claims: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(), TokenError> {
    let leeway = rules.leeway.as_secs_f64();
    let now = now.timestamp_millis() as f64 / 1000.0;
    let number = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(TokenError::Malformed),
    };
    if let Some(nbf) = number("nbf")?
        && nbf > now + leeway
    {
        return Err(TokenError::NotYetValid);
    }
    let iat = number("iat")?.ok_or(TokenError::MissingClaim)?;
    if iat > now + leeway {
        return Err(TokenError::IssuedInFuture);
    }
    if let Some(max_age) = rules.max_token_age
        && iat < now - max_age.as_secs_f64() - leeway
    {
        return Err(TokenError::TooOld);
    }
    Ok(())
}

/// `azp` for ID tokens; for access tokens, the client claim of their profile (RFC 9068's
/// `client_id`, with `jti`; a provider's own otherwise) and `azp`.
fn check_party(
    rules: &IssuerRules,
    kind: TokenKind,
    access_rules: AccessTokenProfile,
    claims: &Map<String, Value>,
    audience_count: usize,
) -> Result<(), TokenError> {
    let string = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(TokenError::Malformed),
    };
    let azp = string("azp")?;
    match kind {
        TokenKind::Id => {
            let allowed = rules
                .authorized_parties
                .as_deref()
                .unwrap_or(&rules.audiences);
            match azp {
                Some(azp) if !allowed.iter().any(|a| a == azp) => {
                    Err(TokenError::UnauthorizedParty)
                }
                // OpenID Connect Core §3.1.3.7: several audiences need an `azp` saying which
                // of them the token was issued to.
                None if audience_count > 1 => Err(TokenError::UnauthorizedParty),
                _ => Ok(()),
            }
        }
        TokenKind::Access => {
            let mut client_id = None;
            for claim in access_rules.client_claims() {
                if let Some(client) = string(claim)? {
                    client_id = Some(client);
                    break;
                }
            }
            let client_id = client_id.ok_or(TokenError::MissingClaim)?;
            if access_rules == AccessTokenProfile::Rfc9068 {
                string("jti")?.ok_or(TokenError::MissingClaim)?;
            }
            if let Some(allowed) = &rules.authorized_parties {
                for party in [Some(client_id), azp].into_iter().flatten() {
                    if !allowed.iter().any(|a| a == party) {
                        return Err(TokenError::UnauthorizedParty);
                    }
                }
            }
            Ok(())
        }
    }
}

/// A verified token, as the token cache keeps it: its claims, and what the stages after
/// verification learn about it (`memo`, which this stage never reads), so that a repeated token
/// costs a hash and a lookup.
pub(crate) struct VerifiedToken<M> {
    pub(crate) claims: VerifiedClaims,
    checked_by: CheckedBy,
    /// When the token stops being acceptable (its `exp`, or its maximum age), on the monotonic
    /// clock.
    valid_until: Instant,
    pub(crate) memo: M,
}

/// What vouched for a cached token, and so what must still hold for it to be used again.
enum CheckedBy {
    /// A signature by a key of this issuer (index into the verifier's issuers), which must
    /// still be in its key set.
    Key { issuer: usize, kid: Option<String> },
    /// An answer from whoever the token is for (introspection, a provider's API), good until
    /// the entry's deadline.
    Answer,
    /// A signature by a key of an issuer added at runtime, which must still be configured and
    /// still hold the key.
    Runtime {
        issuer: Arc<RuntimeIssuer>,
        kid: Option<String>,
    },
}

/// An issuer added while the layer runs (an organisation's connection).
pub(crate) struct RuntimeIssuer {
    pub(crate) verifier: IssuerVerifier,
    /// Set when it is removed or changed: tokens it verified are not served from the cache
    /// again.
    pub(crate) retired: std::sync::atomic::AtomicBool,
    /// Set while a change to the runtime issuers has not been read yet: its tokens are checked
    /// again (which reads the change) rather than served from the cache.
    pending: Arc<std::sync::atomic::AtomicBool>,
}

impl RuntimeIssuer {
    #[cfg(feature = "organizations")]
    pub(crate) fn new(
        verifier: IssuerVerifier,
        pending: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            verifier,
            retired: std::sync::atomic::AtomicBool::new(false),
            pending,
        }
    }

    /// Whether tokens it verified may be served from the cache: it is still configured, as far
    /// as every change published so far says.
    fn is_current(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        !self.retired.load(Acquire) && !self.pending.load(Acquire)
    }
}

/// Where issuers added at runtime are found.
pub(crate) trait RuntimeIssuers: Send + Sync + 'static {
    /// The issuer that verifies tokens naming `iss`, chosen among those sharing that issuer by
    /// the token's (not yet verified) `claims`: the verification that follows checks them.
    fn find<'a>(
        &'a self,
        iss: &'a str,
        claims: &'a Map<String, Value>,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<Arc<RuntimeIssuer>>, Error>>;

    /// Where the people of e-mail `domain` sign in with a browser (home-realm discovery).
    #[cfg(feature = "login")]
    fn for_domain<'a>(
        &'a self,
        domain: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<DomainRoute, Error>>;

    /// The connection `id`'s issuer, if it still exists and has a browser client.
    #[cfg(feature = "login")]
    fn browser_connection(
        &self,
        id: uuid::Uuid,
    ) -> futures_util::future::BoxFuture<'_, Result<Option<Arc<RuntimeIssuer>>, Error>>;
}

/// Where home-realm discovery sends the people of one e-mail domain.
#[cfg(feature = "login")]
#[cfg_attr(not(feature = "organizations"), allow(dead_code))]
pub(crate) enum DomainRoute {
    /// The domain's organisation's connection (its id), which has a browser client.
    Connection(uuid::Uuid, Arc<RuntimeIssuer>),
    /// The domain's organisation's SAML connection (its id).
    #[cfg(feature = "saml")]
    Saml(uuid::Uuid),
    /// An organisation's domain whose organisation has no browser sign-in.
    Closed,
    /// No organisation's domain.
    Unknown,
}

impl<M> std::fmt::Debug for VerifiedToken<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("claims", &self.claims)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// Entries expire when their token stops being acceptable, never later.
struct UntilInvalid;

impl<M> moka::Expiry<[u8; 32], Arc<VerifiedToken<M>>> for UntilInvalid {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        token: &Arc<VerifiedToken<M>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(token.valid_until.saturating_duration_since(Instant::now()))
    }
}

/// Hashes a SHA-256 digest by its first eight bytes: the digest is already uniform, and only
/// tokens that verified are ever inserted, so nothing is gained by hashing it again.
#[derive(Clone, Copy, Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes.
        if bytes.len() >= 8 {
            let mut head = [0u8; 8];
            head.copy_from_slice(&bytes[..8]);
            self.0 ^= u64::from_le_bytes(head);
        }
    }

    fn write_usize(&mut self, _length: usize) {}
}

type DigestHash = std::hash::BuildHasherDefault<DigestHasher>;

type TokenCache<M> = moka::sync::Cache<[u8; 32], Arc<VerifiedToken<M>>, DigestHash>;

/// Every configured issuer, the route from a token to the right one, and the cache of tokens
/// already verified, each with a memo `M` of the later stages'.
pub(crate) struct TokenVerifier<M> {
    issuers: Vec<IssuerVerifier>,
    /// Issuers added at runtime, asked about an `iss` no configured issuer has.
    runtime: Option<Arc<dyn RuntimeIssuers>>,
    cache: Option<TokenCache<M>>,
    /// Which verified JWTs the cache takes: those seen before.
    doorkeeper: Option<Doorkeeper>,
    /// Introspection answers, accepted or refused, when an issuer introspects or a provider
    /// answers for its tokens: one call per token however many requests wait for it.
    introspected: Option<IntrospectionCache<M>>,
    /// Providers that answer for opaque tokens of their own shape.
    answerers: Vec<Arc<dyn TokenAnswerer>>,
}

type IntrospectionCache<M> =
    moka::future::Cache<[u8; 32], Remembered<VerifiedToken<M>>, DigestHash>;

impl<M: Default + Send + Sync + 'static> TokenVerifier<M> {
    /// `cache_capacity` tokens are remembered by their SHA-256; 0 turns the cache off.
    pub(crate) fn new(
        issuers: Vec<IssuerVerifier>,
        answerers: Vec<Arc<dyn TokenAnswerer>>,
        cache_capacity: u64,
    ) -> Self {
        let cache = (cache_capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .expire_after(UntilInvalid)
                .build_with_hasher(DigestHash::default())
        });
        let introspected = (!answerers.is_empty()
            || issuers
                .iter()
                .any(|issuer| issuer.rules.introspection.is_some()))
        .then(|| {
            // Even with the token cache off, concurrent requests share one call.
            moka::future::Cache::builder()
                .max_capacity(cache_capacity.max(1_000))
                .expire_after(UntilDeadline)
                .build_with_hasher(DigestHash::default())
        });
        Self {
            issuers,
            runtime: None,
            doorkeeper: cache.as_ref().map(|_| Doorkeeper::new(cache_capacity)),
            cache,
            introspected,
            answerers,
        }
    }

    /// The issuers added at runtime, if the layer has any.
    #[cfg(feature = "login")]
    pub(crate) fn runtime_issuers(&self) -> Option<&Arc<dyn RuntimeIssuers>> {
        self.runtime.as_ref()
    }

    /// Asks `runtime` about tokens of issuers that are not configured.
    #[cfg(feature = "organizations")]
    pub(crate) fn with_runtime_issuers(mut self, runtime: Arc<dyn RuntimeIssuers>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    pub(crate) fn issuers(&self) -> &[IssuerVerifier] {
        &self.issuers
    }

    /// How many verified tokens the cache holds, after pending evictions ran.
    pub(crate) fn cached_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }

    /// The token, if it was verified already and is still acceptable: unexpired, and signed by
    /// a key still in its issuer's key set (a key the issuer withdrew stops its tokens at the
    /// next request). Synchronous, and only a hash and a lookup.
    pub(crate) fn cached(&self, token: &str, now: Instant) -> Result<Arc<VerifiedToken<M>>, Miss> {
        let Some(cache) = self.cache.as_ref() else {
            return Err(Miss(None));
        };
        let digest = sha256(token);
        self.lookup(cache, &digest, now)
            .ok_or_else(|| Miss(Some((token.into(), digest))))
    }

    fn lookup(
        &self,
        cache: &TokenCache<M>,
        digest: &[u8; 32],
        now: Instant,
    ) -> Option<Arc<VerifiedToken<M>>> {
        let hit = cache.get(digest)?;
        let keys_hold = match &hit.checked_by {
            CheckedBy::Key { issuer, kid } => self.issuers[*issuer].keys.holds(kid.as_deref(), now),
            CheckedBy::Answer => true,
            CheckedBy::Runtime { issuer, kid } => {
                issuer.is_current() && issuer.verifier.keys.holds(kid.as_deref(), now)
            }
        };
        if now < hit.valid_until && keys_hold {
            return Some(hit);
        }
        cache.invalidate(digest);
        None
    }

    /// Drops `token` from the cache: a token whose request was refused after verification
    /// leaves nothing behind.
    pub(crate) fn forget(&self, token: &str) {
        let digest = sha256(token);
        if let Some(cache) = &self.cache {
            cache.invalidate(&digest);
        }
        if let Some(introspected) = &self.introspected {
            // Best effort: the answer would only be read again by a request with this token.
            let _ = futures_util::FutureExt::now_or_never(introspected.invalidate(&digest));
        }
    }

    /// The sign-in a bearer token of `issuer` carrying `claims` would make, built by the
    /// issuer's claim rules with nothing verified: for explaining a decision about claims an
    /// administrator typed. `iat` and `exp` default to now and an hour from now.
    pub(crate) fn sign_in_for_claims(
        &self,
        issuer: &str,
        mut claims: Map<String, Value>,
    ) -> Result<crate::sign_in::SignIn, Error> {
        let issuer = self
            .issuers
            .iter()
            .find(|i| &*i.rules.issuer == issuer)
            .ok_or(Error::InvalidToken(TokenError::UntrustedIssuer))?;
        let now = Utc::now().timestamp();
        claims.entry("iat").or_insert(Value::from(now));
        claims.entry("exp").or_insert(Value::from(now + 3600));
        claims.insert("iss".into(), Value::from(&*issuer.rules.issuer));
        let json = Value::Object(claims.clone()).to_string();
        let verified = VerifiedClaims::from_verified(
            SignInSource::BearerToken,
            issuer.rules.issuer.clone(),
            TokenKind::Id,
            "sub",
            &claims,
            json,
            &issuer.rules.claims,
        )
        .map_err(Error::InvalidToken)?;
        Ok(verified.sign_in().clone())
    }

    /// The configured issuer a token names in its `iss`, read without verifying anything: only
    /// to route the token to the issuer that will verify it.
    #[cfg(feature = "login")]
    pub(crate) fn issuer_of(&self, token: &str) -> Option<&IssuerVerifier> {
        if !super::extract::is_token_syntax(token) {
            return None;
        }
        let raw = RawToken::parse(token).ok()?;
        let iss = raw.issuer()?;
        self.issuers
            .iter()
            .find(|issuer| &*issuer.rules.issuer == iss)
    }

    /// Verifies `token`, or finds it verified already: a JWT by its signature, an opaque token
    /// at the issuers that introspect.
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken<M>>, Error> {
        self.verify_after(token, Miss(None)).await
    }

    /// [`verify`](Self::verify), told that [`cached`](Self::cached) just missed this token:
    /// its digest is not computed, nor the cache asked, a second time.
    pub(crate) async fn verify_after(
        &self,
        token: &str,
        miss: Miss,
    ) -> Result<Arc<VerifiedToken<M>>, Error> {
        if let Some(introspected) = &self.introspected
            && !is_jwt_shaped(token)
        {
            return self.introspect(introspected, token).await;
        }
        let Some(cache) = &self.cache else {
            return Ok(Arc::new(self.verify_uncached(token).await?));
        };
        let digest = match miss.digest_of(token) {
            Some(digest) => digest,
            None => {
                let digest = sha256(token);
                if let Some(hit) = self.lookup(cache, &digest, Instant::now()) {
                    crate::metrics::token_cache(true);
                    return Ok(hit);
                }
                digest
            }
        };
        crate::metrics::token_cache(false);
        let verified = Arc::new(self.verify_uncached(token).await?);
        // A JWT costs a signature check again rather than an entry, until it comes back.
        if self
            .doorkeeper
            .as_ref()
            .is_none_or(|doorkeeper| doorkeeper.seen_before(&digest))
        {
            cache.insert(digest, Arc::clone(&verified));
        }
        Ok(verified)
    }

    async fn verify_uncached(&self, token: &str) -> Result<VerifiedToken<M>, Error> {
        let started = Instant::now();
        let verified = self.verify_signed(token).await;
        crate::metrics::verification(verified.is_ok(), started.elapsed());
        verified
    }

    async fn verify_signed(&self, token: &str) -> Result<VerifiedToken<M>, Error> {
        if !super::extract::is_token_syntax(token) {
            return Err(Error::InvalidToken(TokenError::Malformed));
        }
        let raw = RawToken::parse(token).map_err(Error::InvalidToken)?;
        let configured = raw.issuer().and_then(|iss| {
            self.issuers
                .iter()
                .enumerate()
                .find(|(_, i)| &*i.rules.issuer == iss)
        });
        let Some((index, issuer)) = configured else {
            return self.verify_at_runtime_issuer(token, raw).await;
        };
        if issuer
            .rules
            .introspection
            .as_ref()
            .is_some_and(|rules| rules.opaque_only)
        {
            return Err(Error::InvalidToken(TokenError::ExpectedOpaqueToken));
        }
        let kid = raw.header.kid.clone();
        let claims = issuer.verify(token, raw).await?;
        let mut valid_until = claims.expires_at();
        if let Some(max_age) = issuer.rules.max_token_age {
            let leeway = TimeDelta::from_std(issuer.rules.leeway).unwrap_or_default();
            let oldest =
                claims.issued_at() + TimeDelta::from_std(max_age).unwrap_or_default() + leeway;
            valid_until = valid_until.min(oldest);
        }
        // The cache runs on the monotonic clock: a wall-clock jump cannot extend an entry.
        let remaining = (valid_until - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Ok(VerifiedToken {
            claims,
            checked_by: CheckedBy::Key { issuer: index, kid },
            valid_until: Instant::now() + remaining,
            memo: M::default(),
        })
    }

    /// A token of an issuer added at runtime, if one was; else an untrusted issuer's.
    async fn verify_at_runtime_issuer(
        &self,
        token: &str,
        raw: RawToken,
    ) -> Result<VerifiedToken<M>, Error> {
        let untrusted = Error::InvalidToken(TokenError::UntrustedIssuer);
        let (Some(runtime), Some(iss)) = (&self.runtime, raw.issuer()) else {
            return Err(untrusted);
        };
        let Some(issuer) = runtime.find(iss, &raw.payload).await? else {
            return Err(untrusted);
        };
        let kid = raw.header.kid.clone();
        let claims = issuer.verifier.verify(token, raw).await?;
        let remaining = (claims.expires_at() - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Ok(VerifiedToken {
            claims,
            checked_by: CheckedBy::Runtime { issuer, kid },
            valid_until: Instant::now() + remaining,
            memo: M::default(),
        })
    }

    /// An opaque token: from the caches, or asked of each issuer that introspects, in
    /// configuration order, until one knows it. An issuer that cannot be reached makes the
    /// answer "unavailable", never "refused", and nothing is remembered of it.
    async fn introspect(
        &self,
        introspected: &IntrospectionCache<M>,
        token: &str,
    ) -> Result<Arc<VerifiedToken<M>>, Error> {
        if !super::extract::is_token_syntax(token) || token.is_empty() {
            return Err(Error::InvalidToken(TokenError::Malformed));
        }
        let digest = sha256(token);
        if let Some(cache) = &self.cache
            && let Some(hit) = self.lookup(cache, &digest, Instant::now())
        {
            crate::metrics::token_cache(true);
            return Ok(hit);
        }
        crate::metrics::token_cache(false);
        let remembered = introspected
            .try_get_with(digest, self.ask_issuers_timed(token))
            .await
            .map_err(|unanswered| Error::IssuerUnavailable {
                retry_after: unanswered.retry_after,
            })?;
        match remembered.answer {
            Ok(verified) if Instant::now() < verified.valid_until => {
                if let Some(cache) = &self.cache {
                    cache.insert(digest, Arc::clone(&verified));
                }
                Ok(verified)
            }
            Ok(_) => Err(Error::InvalidToken(TokenError::Expired)),
            Err(error) => Err(Error::InvalidToken(error)),
        }
    }

    /// [`ask_issuers`](Self::ask_issuers), counted and timed: once per herd, since only the
    /// caller that asks for the herd runs it.
    async fn ask_issuers_timed(
        &self,
        token: &str,
    ) -> Result<Remembered<VerifiedToken<M>>, Unanswered> {
        let started = Instant::now();
        let answer = self.ask_issuers(token).await;
        crate::metrics::introspection(answer.is_ok(), started.elapsed());
        answer
    }

    async fn ask_issuers(&self, token: &str) -> Result<Remembered<VerifiedToken<M>>, Unanswered> {
        // A provider's own token goes to that provider and nowhere else.
        if let Some(answerer) = self.answerers.iter().find(|a| a.recognizes(token)) {
            return Ok(match answerer.ask(token).await? {
                Verdict::Accepted {
                    claims,
                    valid_until,
                } => Remembered {
                    answer: Ok(Arc::new(VerifiedToken {
                        claims,
                        checked_by: CheckedBy::Answer,
                        valid_until,
                        memo: M::default(),
                    })),
                    until: valid_until,
                },
                Verdict::Inactive => Remembered {
                    answer: Err(TokenError::Inactive),
                    until: Instant::now() + REFUSAL_TTL,
                },
                Verdict::Refused(error) => Remembered {
                    answer: Err(error),
                    until: Instant::now() + REFUSAL_TTL,
                },
            });
        }
        let mut unanswered = None;
        let mut refusal_ttl = REFUSAL_TTL;
        let prefixed = self.issuers.iter().any(|issuer| {
            issuer.rules.introspection.as_ref().is_some_and(|rules| {
                rules
                    .token_prefix
                    .as_deref()
                    .is_some_and(|prefix| token.starts_with(prefix))
            })
        });
        for issuer in &self.issuers {
            let Some(rules) = &issuer.rules.introspection else {
                continue;
            };
            if !rules.may_receive(token, prefixed) {
                continue;
            }
            refusal_ttl = refusal_ttl.min(rules.refusal_ttl());
            let refused = |error| Remembered {
                answer: Err(error),
                until: Instant::now() + rules.refusal_ttl(),
            };
            match issuer.introspect(token).await {
                Ok(Verdict::Accepted {
                    claims,
                    valid_until,
                }) => {
                    let verified = VerifiedToken {
                        claims,
                        checked_by: CheckedBy::Answer,
                        valid_until,
                        memo: M::default(),
                    };
                    return Ok(Remembered {
                        answer: Ok(Arc::new(verified)),
                        until: valid_until,
                    });
                }
                Ok(Verdict::Refused(error)) => return Ok(refused(error)),
                Ok(Verdict::Inactive) => {}
                Err(error) => unanswered = Some(error),
            }
        }
        match unanswered {
            Some(error) => Err(error),
            None => Ok(Remembered {
                answer: Err(TokenError::Inactive),
                until: Instant::now() + refusal_ttl,
            }),
        }
    }
}

/// What [`TokenVerifier::cached`] learnt when it missed: the token and its digest, so the
/// verification that follows need not compute or look it up again. Empty without a cache.
#[derive(Clone, Default)]
pub(crate) struct Miss(Option<(Box<str>, [u8; 32])>);

/// The token is left out: a credential never reaches a debug print.
impl std::fmt::Debug for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Miss(<token>)"
        } else {
            "Miss(None)"
        })
    }
}

impl Miss {
    /// The digest of `token`, if this miss was for that very token: the digest is the cache
    /// key, so a digest of any other token must never key this one's verification.
    fn digest_of(&self, token: &str) -> Option<[u8; 32]> {
        match &self.0 {
            Some((missed, digest)) if **missed == *token => Some(*digest),
            _ => None,
        }
    }
}

fn sha256(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_miss_vouches_only_for_its_own_token() {
        let miss = super::Miss(Some(("token-a".into(), super::sha256("token-a"))));
        assert_eq!(miss.digest_of("token-a"), Some(super::sha256("token-a")));
        assert_eq!(miss.digest_of("token-b"), None);
        assert_eq!(miss.digest_of("token-a "), None);
        assert_eq!(super::Miss::default().digest_of("token-a"), None);
        assert!(!format!("{miss:?}").contains("token-a"));
    }

    use super::*;

    fn rules(max_token_age: Option<Duration>, parties: Option<Vec<String>>) -> IssuerRules {
        IssuerRules {
            issuer: "https://idp.example.com".into(),
            issuer_url: IssuerUrl::new("https://idp.example.com".into()).unwrap(),
            kinds: vec![TokenKind::Id, TokenKind::Access],
            algorithms: vec![Algorithm::RS256],
            audiences: vec!["app".to_owned(), "api".to_owned()].into(),
            tolerated_audiences: Vec::new().into(),
            authorized_parties: parties,
            leeway: Duration::from_secs(30),
            max_token_age,
            claims: ClaimRules {
                groups_claims: vec!["groups".into()],
                accept_string_booleans: false,
                connection: None,
            },
            profile: AccessTokenProfile::Rfc9068,
            discovery: None,
            browser: None,
            introspection: None,
        }
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn time_rules_share_one_leeway() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let r = rules(Some(Duration::from_secs(600)), None);
        let check = |claims: Value| check_times(&r, &map(claims), now);
        assert_eq!(check(serde_json::json!({"iat": 1_000_000})), Ok(()));
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_030, "nbf": 1_000_030})),
            Ok(())
        );
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_000, "nbf": 1_000_031})),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_031})),
            Err(TokenError::IssuedInFuture)
        );
        assert_eq!(check(serde_json::json!({"iat": 1_000_000 - 630})), Ok(()));
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_000 - 631})),
            Err(TokenError::TooOld)
        );
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_000, "nbf": "soon"})),
            Err(TokenError::Malformed)
        );
        assert_eq!(check(serde_json::json!({})), Err(TokenError::MissingClaim));
    }

    #[test]
    fn authorized_party_rules() {
        let default = rules(None, None);
        let listed = rules(None, Some(vec!["web".to_owned()]));
        let id = |r: &IssuerRules, claims: Value, auds| {
            check_party(
                r,
                TokenKind::Id,
                AccessTokenProfile::Rfc9068,
                &map(claims),
                auds,
            )
        };
        let access = |r: &IssuerRules, claims: Value| {
            check_party(r, TokenKind::Access, r.profile, &map(claims), 1)
        };

        assert_eq!(id(&default, serde_json::json!({}), 1), Ok(()));
        assert_eq!(id(&default, serde_json::json!({"azp": "app"}), 1), Ok(()));
        assert_eq!(
            id(&default, serde_json::json!({"azp": "evil"}), 1),
            Err(TokenError::UnauthorizedParty)
        );
        assert_eq!(
            id(&default, serde_json::json!({}), 2),
            Err(TokenError::UnauthorizedParty)
        );
        assert_eq!(id(&listed, serde_json::json!({"azp": "web"}), 2), Ok(()));
        assert_eq!(
            id(&listed, serde_json::json!({"azp": "app"}), 1),
            Err(TokenError::UnauthorizedParty)
        );

        let ok = serde_json::json!({"client_id": "web", "jti": "1"});
        assert_eq!(access(&default, ok.clone()), Ok(()));
        assert_eq!(access(&listed, ok), Ok(()));
        assert_eq!(
            access(
                &listed,
                serde_json::json!({"client_id": "other", "jti": "1"})
            ),
            Err(TokenError::UnauthorizedParty)
        );
        assert_eq!(
            access(
                &listed,
                serde_json::json!({"client_id": "web", "azp": "other", "jti": "1"})
            ),
            Err(TokenError::UnauthorizedParty)
        );
        assert_eq!(
            access(&default, serde_json::json!({"jti": "1"})),
            Err(TokenError::MissingClaim)
        );
        assert_eq!(
            access(&default, serde_json::json!({"client_id": "web"})),
            Err(TokenError::MissingClaim)
        );
    }
}
