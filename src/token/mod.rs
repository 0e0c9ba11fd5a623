//! Bearer tokens: where they are read from, how they are verified, what comes out.
//!
//! Stage: a sign-in source (bearer tokens). Produces [`VerifiedClaims`], whose
//! [`SignIn`](crate::SignIn) goes on to provisioning; uses only `crate::sign_in` and
//! `crate::error`, never `provision`.
//!
//! - [`extract`]: the token from the `Authorization` header or a cookie, with RFC 6750 framing.
//! - [`claims`]: strict parsing before verification and [`VerifiedClaims`] after it.
//! - [`jwk`]: issuer keys as `openidconnect` key types verified by aws-lc-rs.
//! - [`fetch`]: the HTTP client for discovery documents and key sets.
//! - [`jwks`]: each issuer's key set: discovery, caching, rotation, rate-limited refresh.
//! - [`doorkeeper`]: which verified tokens the cache takes (those seen before).
//! - [`verify`]: one token, start to finish.

pub(crate) mod answer;
pub(crate) mod claims;
pub(crate) mod doorkeeper;
pub(crate) mod extract;
pub(crate) mod fetch;
pub(crate) mod introspect;
pub(crate) mod jwk;
pub(crate) mod jwks;
#[cfg(feature = "login")]
pub(crate) mod sign_in_tokens;
pub(crate) mod verify;

use std::fmt;

use openidconnect::core::CoreJwsSigningAlgorithm;

pub use self::claims::VerifiedClaims;
pub use self::extract::TokenSource;
pub(crate) use crate::error::TokenError;

#[cfg(test)]
mod profile_tests {
    use super::*;
    use serde_json::json;

    fn kind(profile: AccessTokenProfile, claims: serde_json::Value) -> Option<TokenKind> {
        let serde_json::Value::Object(map) = claims else {
            panic!()
        };
        profile.kind_of(&map)
    }

    #[test]
    fn each_profile_tells_access_tokens_from_id_tokens_by_its_own_claims() {
        use AccessTokenProfile as P;
        use TokenKind::{Access, Id};
        let cases = [
            (P::Rfc9068, json!({"scp": "x", "client_id": "c"}), Some(Id)),
            (
                P::Entra,
                json!({"azpacr": "0", "scp": "read"}),
                Some(Access),
            ),
            (
                P::Entra,
                json!({"appidacr": "1", "roles": ["x"]}),
                Some(Access),
            ),
            (P::Entra, json!({"roles": ["x"], "nonce": "n"}), Some(Id)),
            (
                P::Okta,
                json!({"cid": "0oa", "scp": ["openid"]}),
                Some(Access),
            ),
            (P::Okta, json!({"amr": ["pwd"], "idp": "00o"}), Some(Id)),
            (P::Keycloak, json!({"typ": "Bearer"}), Some(Access)),
            (P::Keycloak, json!({"typ": "ID"}), Some(Id)),
            (P::Keycloak, json!({}), Some(Id)),
            (P::Keycloak, json!({"typ": "Refresh"}), None),
            (P::Keycloak, json!({"typ": "Logout"}), None),
            (
                P::Auth0,
                json!({"scope": "openid read:orders"}),
                Some(Access),
            ),
            (P::Auth0, json!({"gty": "client-credentials"}), Some(Access)),
            (P::Auth0, json!({"nonce": "n", "name": "x"}), Some(Id)),
        ];
        for (profile, claims, expected) in cases {
            assert_eq!(
                kind(profile, claims.clone()),
                expected,
                "{profile:?} {claims}"
            );
        }
    }
}

/// The two kinds of JWT an issuer can be trusted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An OpenID Connect ID token: `typ` absent or `JWT`, `aud` naming this application as a
    /// client, `azp` (when present) an allowed client.
    Id,
    /// An RFC 9068 JWT access token: `typ` `at+jwt`, `aud` naming this resource server,
    /// `client_id` and `jti` present, `client_id` an allowed client when a list is configured.
    Access,
}

impl TokenKind {
    /// The short name used in logs and audit records: `id` or `access`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Access => "access",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an issuer's access tokens are told from its ID tokens, and which claims they must carry.
///
/// RFC 9068 gives access tokens a `typ` of `at+jwt`; several providers issue theirs as plain
/// `typ: JWT` (or no `typ`) and mark them by claims only that provider documents. A provider's
/// profile reads those claims, so its ID token is still refused where an access token is
/// expected and the other way round. A token typed `at+jwt` is an access token under every
/// profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessTokenProfile {
    /// RFC 9068 only: `typ: at+jwt`, with `client_id` and `jti`. Anything else is an ID token.
    #[default]
    Rfc9068,
    /// Microsoft Entra ID: an access token carries `azpacr` (v2.0) or `appidacr` (v1.0), which
    /// ID tokens never do; the client is `azp` (v2.0) or `appid` (v1.0).
    Entra,
    /// Okta custom authorization servers: an access token carries `cid` (the client) and `scp`;
    /// the person is `uid` (an access token's `sub` is their login name, which changes).
    Okta,
    /// Keycloak: the payload's own `typ` says `Bearer` for an access token and `ID` for an ID
    /// token (refresh and logout tokens say otherwise and are refused); the client is `azp`.
    Keycloak,
    /// Auth0: an access token carries `scope` or `gty`, which ID tokens never do; the client
    /// is `azp` (or `client_id` in Auth0's RFC 9068 profile).
    Auth0,
}

impl AccessTokenProfile {
    /// Which kind of token a `typ: JWT` (or untyped) token with these claims is, under this
    /// profile; `None` when the provider says it is neither.
    pub(crate) fn kind_of(
        self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<TokenKind> {
        let has = |name: &str| claims.contains_key(name);
        // `nonce` belongs to ID tokens alone (OpenID Connect Core §2): whatever else it
        // carries, a token with one is not an access token.
        if self != Self::Rfc9068 && has("nonce") {
            return Some(TokenKind::Id);
        }
        let access = match self {
            Self::Rfc9068 => false,
            Self::Entra => has("azpacr") || has("appidacr"),
            Self::Okta => has("cid"),
            Self::Auth0 => has("scope") || has("gty"),
            Self::Keycloak => match claims.get("typ").and_then(serde_json::Value::as_str) {
                Some("Bearer") => true,
                Some("ID") | None => false,
                Some(_) => return None,
            },
        };
        Some(if access {
            TokenKind::Access
        } else {
            TokenKind::Id
        })
    }

    /// The claim that holds the person's stable identifier in an access token. Okta puts the
    /// user's *login* in an access token's `sub` (which the user can change, and which is not
    /// the `sub` of their ID tokens) and their id in `uid`.
    pub(crate) fn subject_claim(self) -> &'static str {
        match self {
            Self::Okta => "uid",
            _ => "sub",
        }
    }

    /// The claim that names the client an access token was issued to.
    pub(crate) fn client_claims(self) -> &'static [&'static str] {
        match self {
            Self::Rfc9068 => &["client_id"],
            Self::Entra => &["azp", "appid"],
            Self::Okta => &["cid"],
            Self::Keycloak => &["azp"],
            Self::Auth0 => &["azp", "client_id"],
        }
    }
}

/// A JWS signature algorithm an issuer may be allowed to use.
///
/// Only asymmetric algorithms exist here: a resource server that accepted `HS256` would accept
/// tokens forged by anyone holding the shared secret, and `none` is not an algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// ECDSA on P-521 with SHA-512.
    ES512,
    /// Ed25519 (RFC 8037).
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm; the default allow-list of an [`Issuer`](crate::Issuer).
    pub const ALL: [Self; 10] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::ES512,
        Self::EdDSA,
    ];

    /// The JOSE name (`RS256`, `EdDSA`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with this exact JOSE name. Names are case-sensitive (RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    pub(crate) fn to_core(self) -> CoreJwsSigningAlgorithm {
        use CoreJwsSigningAlgorithm as C;
        match self {
            Self::RS256 => C::RsaSsaPkcs1V15Sha256,
            Self::RS384 => C::RsaSsaPkcs1V15Sha384,
            Self::RS512 => C::RsaSsaPkcs1V15Sha512,
            Self::PS256 => C::RsaSsaPssSha256,
            Self::PS384 => C::RsaSsaPssSha384,
            Self::PS512 => C::RsaSsaPssSha512,
            Self::ES256 => C::EcdsaP256Sha256,
            Self::ES384 => C::EcdsaP384Sha384,
            Self::ES512 => C::EcdsaP521Sha512,
            Self::EdDSA => C::EdDsa,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.as_str()), Some(alg));
            let core: CoreJwsSigningAlgorithm =
                serde_json::from_value(serde_json::Value::from(alg.as_str())).unwrap();
            assert_eq!(core, alg.to_core());
        }
        for bad in ["rs256", "none", "None", "HS256", "EDDSA", ""] {
            assert_eq!(Algorithm::from_name(bad), None, "{bad}");
        }
    }
}
