//! Issuer signing keys as `openidconnect` key types whose signatures are checked by aws-lc-rs.
//!
//! Stage: the bearer-token source. Uses nothing else of the crate.
//!
//! `openidconnect`'s verifier is generic over [`JsonWebKey`]; its stock `CoreJsonWebKey` checks
//! signatures with the RustCrypto `rsa`/`p256` crates, several times slower than aws-lc-rs. [`Jwk`]
//! keeps every rule of the verifier (key selection by `kid`, key type and `use`/`alg`
//! compatibility, algorithm allow-list) and only swaps the arithmetic. Each key is parsed once,
//! when the key set is read, into aws-lc-rs `ParsedPublicKey`s, so a verification does no key
//! parsing at all.
//!
//! Keys this crate will not use are refused while the set is read, and `openidconnect` skips a
//! key that fails to deserialize: symmetric (`oct`) keys, RSA moduli under 2048 bits, curves other
//! than P-256/P-384/P-521/Ed25519, malformed points.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKeyType, CoreJsonWebKeyUse, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyId, SignatureVerificationError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Smallest RSA modulus accepted from a key set (NIST SP 800-131A).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// A public signing key from an issuer's JWKS, ready to verify.
#[derive(Clone)]
pub(crate) struct Jwk(Arc<Inner>);

struct Inner {
    kid: Option<JsonWebKeyId>,
    kty: CoreJsonWebKeyType,
    key_use: Option<CoreJsonWebKeyUse>,
    alg: DeclaredAlg,
    material: Material,
    /// The public members as published, kept for `Serialize`.
    published: PublishedJwk,
}

enum DeclaredAlg {
    None,
    Signing(CoreJwsSigningAlgorithm),
    NotForSigning,
}

enum Material {
    /// One parsed key per RSA algorithm: aws-lc-rs binds padding and hash at parse time.
    Rsa(Box<[(CoreJwsSigningAlgorithm, ParsedPublicKey)]>),
    Ec(CoreJwsSigningAlgorithm, ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    /// Only ever built by `new_symmetric`, which the verifier calls for client secrets; this crate
    /// never configures one, so such a key verifies nothing.
    Unusable,
}

#[derive(Clone, Default, Deserialize, Serialize)]
struct PublishedJwk {
    kty: String,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    key_use: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
}

const RSA_ALGS: [(CoreJwsSigningAlgorithm, &RsaParameters); 6] = [
    (
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        &signature::RSA_PKCS1_2048_8192_SHA256,
    ),
    (
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        &signature::RSA_PKCS1_2048_8192_SHA384,
    ),
    (
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        &signature::RSA_PKCS1_2048_8192_SHA512,
    ),
    (
        CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        &signature::RSA_PSS_2048_8192_SHA256,
    ),
    (
        CoreJwsSigningAlgorithm::RsaSsaPssSha384,
        &signature::RSA_PSS_2048_8192_SHA384,
    ),
    (
        CoreJwsSigningAlgorithm::RsaSsaPssSha512,
        &signature::RSA_PSS_2048_8192_SHA512,
    ),
];

impl Jwk {
    fn from_published(published: PublishedJwk) -> Result<Self, String> {
        let kid = published.kid.clone().map(JsonWebKeyId::new);
        let key_use = published
            .key_use
            .as_deref()
            .map(|u| serde_json::from_value(serde_json::Value::String(u.to_owned())))
            .transpose()
            .map_err(|_| "invalid `use`".to_owned())?;
        let alg = match published.alg.as_deref() {
            None => DeclaredAlg::None,
            Some(name) => match parse_alg(name) {
                Some(alg) if !is_symmetric_or_none(&alg) => DeclaredAlg::Signing(alg),
                _ => DeclaredAlg::NotForSigning,
            },
        };
        let (kty, material) = match published.kty.as_str() {
            "RSA" => (CoreJsonWebKeyType::RSA, rsa_material(&published)?),
            "EC" => (CoreJsonWebKeyType::EllipticCurve, ec_material(&published)?),
            "OKP" => (CoreJsonWebKeyType::OctetKeyPair, okp_material(&published)?),
            // Symmetric keys in a public key set are never used: accepting one would let anyone
            // who can read the set forge tokens.
            other => return Err(format!("unsupported key type `{other}`")),
        };
        Ok(Self(Arc::new(Inner {
            kid,
            kty,
            key_use,
            alg,
            material,
            published,
        })))
    }

    /// Whether this key can verify `alg` at all (type and declared algorithm agree).
    #[cfg(test)]
    pub(crate) fn supports(&self, alg: &CoreJwsSigningAlgorithm) -> bool {
        self.parsed_for(alg).is_some()
    }

    fn parsed_for(&self, alg: &CoreJwsSigningAlgorithm) -> Option<&ParsedPublicKey> {
        match &self.0.material {
            Material::Rsa(keys) => keys.iter().find(|(a, _)| a == alg).map(|(_, k)| k),
            Material::Ec(a, key) => (a == alg).then_some(key),
            Material::Ed25519(key) => (*alg == CoreJwsSigningAlgorithm::EdDsa).then_some(key),
            Material::Unusable => None,
        }
    }
}

fn parse_alg(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

fn is_symmetric_or_none(alg: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        alg,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
            | CoreJwsSigningAlgorithm::None
    )
}

fn decode_member(value: Option<&String>, name: &str) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn rsa_material(jwk: &PublishedJwk) -> Result<Material, String> {
    let n = decode_member(jwk.n.as_ref(), "n")?;
    let e = decode_member(jwk.e.as_ref(), "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits is under {MIN_RSA_BITS}"
        ));
    }
    let components = RsaPublicKeyComponents { n, e };
    let keys = RSA_ALGS
        .iter()
        .map(|(alg, params)| {
            components
                .to_parsed_public_key(params)
                .map(|key| (alg.clone(), key))
                .map_err(|_| "invalid RSA public key".to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Material::Rsa(keys.into_boxed_slice()))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn ec_material(jwk: &PublishedJwk) -> Result<Material, String> {
    let (alg, verification, size): (_, &'static signature::EcdsaVerificationAlgorithm, _) =
        match jwk.crv.as_deref() {
            Some("P-256") => (
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                &signature::ECDSA_P256_SHA256_FIXED,
                32,
            ),
            Some("P-384") => (
                CoreJwsSigningAlgorithm::EcdsaP384Sha384,
                &signature::ECDSA_P384_SHA384_FIXED,
                48,
            ),
            Some("P-521") => (
                CoreJwsSigningAlgorithm::EcdsaP521Sha512,
                &signature::ECDSA_P521_SHA512_FIXED,
                66,
            ),
            _ => return Err("unsupported EC curve".to_owned()),
        };
    let x = decode_member(jwk.x.as_ref(), "x")?;
    let y = decode_member(jwk.y.as_ref(), "y")?;
    if x.len() != size || y.len() != size {
        return Err("EC coordinates have the wrong length".to_owned());
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = ParsedPublicKey::new(verification, point)
        .map_err(|_| "EC point is not on the curve".to_owned())?;
    Ok(Material::Ec(alg, key))
}

fn okp_material(jwk: &PublishedJwk) -> Result<Material, String> {
    if jwk.crv.as_deref() != Some("Ed25519") {
        return Err("unsupported OKP curve".to_owned());
    }
    let x = decode_member(jwk.x.as_ref(), "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key has the wrong length".to_owned());
    }
    let key = ParsedPublicKey::new(&signature::ED25519, x)
        .map_err(|_| "invalid Ed25519 key".to_owned())?;
    Ok(Material::Ed25519(key))
}

impl<'de> Deserialize<'de> for Jwk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let published = PublishedJwk::deserialize(deserializer)?;
        Self::from_published(published).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Jwk {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.published.serialize(serializer)
    }
}

impl PartialEq for Jwk {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Jwk {}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.0.published.kid)
            .field("kty", &self.0.published.kty)
            .field("alg", &self.0.published.alg)
            .finish_non_exhaustive()
    }
}

impl JsonWebKey for Jwk {
    type KeyUse = CoreJsonWebKeyUse;
    type SigningAlgorithm = CoreJwsSigningAlgorithm;

    fn key_id(&self) -> Option<&JsonWebKeyId> {
        self.0.kid.as_ref()
    }

    fn key_type(&self) -> &CoreJsonWebKeyType {
        &self.0.kty
    }

    fn key_use(&self) -> Option<&CoreJsonWebKeyUse> {
        self.0.key_use.as_ref()
    }

    fn signing_alg(&self) -> JsonWebKeyAlgorithm<&CoreJwsSigningAlgorithm> {
        match &self.0.alg {
            DeclaredAlg::None => JsonWebKeyAlgorithm::Unspecified,
            DeclaredAlg::Signing(alg) => JsonWebKeyAlgorithm::Algorithm(alg),
            DeclaredAlg::NotForSigning => JsonWebKeyAlgorithm::Unsupported,
        }
    }

    fn new_symmetric(_key: Vec<u8>) -> Self {
        Self(Arc::new(Inner {
            kid: None,
            kty: CoreJsonWebKeyType::Symmetric,
            key_use: None,
            alg: DeclaredAlg::NotForSigning,
            material: Material::Unusable,
            published: PublishedJwk {
                kty: "oct".to_owned(),
                ..PublishedJwk::default()
            },
        }))
    }

    fn verify_signature(
        &self,
        signature_alg: &CoreJwsSigningAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureVerificationError> {
        let key = self.parsed_for(signature_alg).ok_or_else(|| {
            SignatureVerificationError::InvalidKey("key does not fit the algorithm".to_owned())
        })?;
        key.verify_sig(message, signature).map_err(|_| {
            SignatureVerificationError::CryptoError("signature does not verify".to_owned())
        })
    }

    fn hash_bytes(&self, bytes: &[u8], alg: &CoreJwsSigningAlgorithm) -> Result<Vec<u8>, String> {
        use CoreJwsSigningAlgorithm as A;
        let algorithm = match alg {
            A::RsaSsaPkcs1V15Sha256 | A::RsaSsaPssSha256 | A::EcdsaP256Sha256 => &digest::SHA256,
            A::RsaSsaPkcs1V15Sha384 | A::RsaSsaPssSha384 | A::EcdsaP384Sha384 => &digest::SHA384,
            A::RsaSsaPkcs1V15Sha512 | A::RsaSsaPssSha512 | A::EcdsaP521Sha512 => &digest::SHA512,
            // RFC 8037: Ed25519 hashes with SHA-512.
            A::EdDsa if matches!(self.0.material, Material::Ed25519(_)) => &digest::SHA512,
            _ => return Err("no hash for this key and algorithm".to_owned()),
        };
        Ok(digest::digest(algorithm, bytes).as_ref().to_vec())
    }
}

/// The content-encryption algorithm of a JWE header, which a signed token never has: it never
/// parses. `openidconnect` reads a header's `alg` by trying the encryption algorithms first, and
/// its stock type answers a signature algorithm with an error listing every one it knows, built
/// for every token; this one fails without building anything.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) enum NoEncryption {}

impl<'de> serde::Deserialize<'de> for NoEncryption {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("not an encrypted token"))
    }
}

impl openidconnect::JweContentEncryptionAlgorithm for NoEncryption {
    type KeyType = CoreJsonWebKeyType;

    fn key_type(&self) -> Result<CoreJsonWebKeyType, String> {
        match *self {}
    }
}

/// A signed ID token (or JWT access token) as `openidconnect` verifies it.
pub(crate) type SignedIdToken = openidconnect::IdToken<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreGenderClaim,
    NoEncryption,
    CoreJwsSigningAlgorithm,
>;

/// `token` parsed by `openidconnect`.
pub(crate) fn parse_signed(token: &str) -> Option<SignedIdToken> {
    <SignedIdToken as std::str::FromStr>::from_str(token).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Result<Jwk, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn symmetric_keys_are_refused() {
        let err = parse(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap_err();
        assert!(err.to_string().contains("unsupported key type"), "{err}");
    }

    #[test]
    fn short_rsa_modulus_is_refused() {
        // A 1024-bit modulus (all ones) with e = 65537.
        let n = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let err = parse(serde_json::json!({"kty": "RSA", "n": n, "e": "AQAB"})).unwrap_err();
        assert!(err.to_string().contains("under 2048"), "{err}");
    }

    #[test]
    fn ec_point_off_the_curve_is_refused() {
        let coord = URL_SAFE_NO_PAD.encode([0x01u8; 32]);
        let err = parse(serde_json::json!({"kty": "EC", "crv": "P-256", "x": coord, "y": coord}))
            .unwrap_err();
        assert!(err.to_string().contains("not on the curve"), "{err}");
    }

    #[test]
    fn unknown_curves_are_refused() {
        let coord = URL_SAFE_NO_PAD.encode([0x01u8; 57]);
        assert!(parse(serde_json::json!({"kty": "OKP", "crv": "Ed448", "x": coord})).is_err());
        assert!(
            parse(serde_json::json!({"kty": "EC", "crv": "secp256k1", "x": coord, "y": coord}))
                .is_err()
        );
    }

    #[test]
    fn ed25519_key_supports_only_eddsa() {
        let x = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::signature::KeyPair::public_key(
                &aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap(),
            )
            .as_ref(),
        );
        let key = parse(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x})).unwrap();
        assert!(key.supports(&CoreJwsSigningAlgorithm::EdDsa));
        assert!(!key.supports(&CoreJwsSigningAlgorithm::EcdsaP256Sha256));
        assert!(!key.supports(&CoreJwsSigningAlgorithm::HmacSha256));
    }

    #[test]
    fn declared_symmetric_alg_makes_the_key_unusable_for_signing() {
        let x = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::signature::KeyPair::public_key(
                &aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap(),
            )
            .as_ref(),
        );
        let key =
            parse(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "HS256"}))
                .unwrap();
        assert!(matches!(
            key.signing_alg(),
            JsonWebKeyAlgorithm::Unsupported
        ));
    }
}
