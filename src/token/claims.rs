//! Reading a compact JWS strictly, and the claims handed to the application once it verified.
//!
//! Stage: the bearer-token source. Uses `crate::sign_in` to state what a token proves.
//!
//! [`RawToken::parse`] runs before any key is looked up. It refuses what a lenient parser would
//! let through and what no issuer legitimately sends: anything but three segments (encrypted and
//! nested tokens included), non-canonical base64url, JSON objects with duplicate member names (RFC
//! 7519 §4: a later duplicate could smuggle a claim past a different parser), `crit`, `cty` and
//! `zip` headers, and payloads that are not a JSON object. Its result is only a routing hint —
//! which issuer, which key, which kind of token — until `openidconnect` has verified the
//! signature over the very same bytes.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{TokenError, TokenKind};
use crate::sign_in::{
    ConnectionRef, SignIn, SignInSource, TokenSignIn, is_valid_subject, lookup, strings,
};

/// The parts of a token read before verification.
#[derive(Debug)]
pub(crate) struct RawToken {
    pub(crate) header: RawHeader,
    pub(crate) payload: Map<String, Value>,
    /// The payload's JSON text, as signed: what [`VerifiedClaims`] keeps instead of the map.
    pub(crate) payload_json: String,
}

/// The JOSE header members this crate acts on. Members it does not act on (`jku`, `jwk`, `x5u`,
/// `x5c`, …) are never read, so no token can name a key or a URL to fetch one from.
#[derive(Debug)]
pub(crate) struct RawHeader {
    pub(crate) alg: String,
    pub(crate) typ: Option<String>,
    pub(crate) kid: Option<String>,
}

impl RawToken {
    pub(crate) fn parse(token: &str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if signature.is_empty() {
            // `alg: none` tokens end in an empty signature; refuse them before anything else.
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if !is_canonical_base64url(signature) {
            return Err(TokenError::Malformed);
        }
        let (header, _) = decode_object(header)?;
        let (payload, payload_json) = decode_object(payload)?;
        Ok(Self {
            header: RawHeader::from_object(header)?,
            payload,
            payload_json,
        })
    }

    /// The `iss` claim, as a string, before verification: it only picks the key set.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.payload.get("iss").and_then(Value::as_str)
    }
}

impl RawHeader {
    fn from_object(mut header: Map<String, Value>) -> Result<Self, TokenError> {
        for refused in ["crit", "cty", "zip", "enc"] {
            if header.contains_key(refused) {
                return Err(TokenError::UnsupportedHeader);
            }
        }
        let alg = match header.remove("alg") {
            Some(Value::String(alg)) => alg,
            _ => return Err(TokenError::Malformed),
        };
        let typ = match header.remove("typ") {
            None => None,
            Some(Value::String(typ)) => Some(typ),
            Some(_) => return Err(TokenError::Malformed),
        };
        let kid = match header.remove("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(TokenError::Malformed),
        };
        Ok(Self { alg, typ, kid })
    }

    /// Which kind of token the `typ` header declares, if it declares one this crate knows.
    ///
    /// RFC 9068 access tokens carry `at+jwt`; ID tokens carry `JWT` or nothing. The media type
    /// may be written in full (`application/at+jwt`) and is compared case-insensitively (RFC 7515
    /// §4.1.9).
    pub(crate) fn declared_kind(&self) -> Option<TokenKind> {
        let Some(typ) = self.typ.as_deref() else {
            return Some(TokenKind::Id);
        };
        let short = strip_prefix_ignore_case(typ, "application/").unwrap_or(typ);
        if short.eq_ignore_ascii_case("at+jwt") {
            Some(TokenKind::Access)
        } else if short.eq_ignore_ascii_case("jwt") {
            Some(TokenKind::Id)
        } else {
            None
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A segment's JSON object, and its text.
fn decode_object(segment: &str) -> Result<(Map<String, Value>, String), TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::Malformed)?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let value = StrictValue::deserialize(&mut deserializer).map_err(|_| TokenError::Malformed)?;
    deserializer.end().map_err(|_| TokenError::Malformed)?;
    match value.0 {
        Value::Object(map) => Ok((map, text)),
        _ => Err(TokenError::Malformed),
    }
}

/// Base64url without padding whose unused trailing bits are zero, so that exactly one string
/// encodes each signature.
fn is_canonical_base64url(s: &str) -> bool {
    fn value(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.iter().any(|b| value(*b).is_none()) {
        return false;
    }
    let last = bytes.last().and_then(|b| value(*b)).unwrap_or(0);
    match bytes.len() % 4 {
        0 => true,
        2 => last & 0x0f == 0,
        3 => last & 0x03 == 0,
        _ => false,
    }
}

/// A JSON value whose objects, at any depth, have unique member names. Depth stays bounded by
/// `serde_json`'s recursion limit.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(map))
    }
}

/// How one issuer's claims become [`VerifiedClaims`].
#[derive(Clone, Debug)]
pub(crate) struct ClaimRules {
    /// Where group names are: each claim's strings, together.
    pub(crate) groups_claims: Vec<String>,
    pub(crate) accept_string_booleans: bool,
    /// The organisation's connection the issuer is, for an issuer added at runtime.
    pub(crate) connection: Option<ConnectionRef>,
}

/// The claims of a token whose signature, issuer, audience, type and lifetime were verified:
/// its [`SignIn`], with what only a token has (its kind, audiences, client, issue time).
///
/// The issuer and subject together are the person's identity at that issuer; the e-mail
/// address is not an identity. Cheap to clone: the claims sit behind an [`Arc`].
///
/// The registered and profile claims are read once, at verification; the full claim set is
/// kept as the payload's JSON text and parsed on the first call to [`claims`](Self::claims) or
/// [`claim`](Self::claim), so that a cached token costs a few hundred bytes rather than a
/// parsed JSON tree.
///
/// The layer puts a `VerifiedClaims` into the request extensions of every request it lets
/// through with a token; with the `axum` feature it is also an extractor, and so is
/// `Option<VerifiedClaims>` for routes behind an [optional](crate::ProvisioningLayerBuilder::optional)
/// layer.
#[derive(Clone)]
pub struct VerifiedClaims(Arc<ClaimsInner>);

struct ClaimsInner {
    sign_in: SignIn,
    kind: TokenKind,
    audiences: Vec<String>,
    authorized_party: Option<String>,
    issued_at: DateTime<Utc>,
}

impl VerifiedClaims {
    /// Builds the claims from a payload (its JSON object and text) whose signature and
    /// registered claims were verified.
    pub(crate) fn from_verified(
        source: SignInSource,
        issuer: Arc<str>,
        kind: TokenKind,
        subject_claim: &str,
        claims: &Map<String, Value>,
        json: String,
        rules: &ClaimRules,
    ) -> Result<Self, TokenError> {
        let subject = match claims.get(subject_claim) {
            Some(Value::String(sub)) if is_valid_subject(sub) => sub.as_str(),
            _ => return Err(TokenError::InvalidSubject),
        };
        let audiences = audiences(claims);
        let authorized_party = claims
            .get("azp")
            .or_else(|| claims.get("client_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => *verified,
            Some(Value::String(s)) if rules.accept_string_booleans => {
                s.eq_ignore_ascii_case("true")
            }
            _ => false,
        };
        let mut groups = Vec::new();
        let mut groups_asserted = false;
        for path in &rules.groups_claims {
            if let Some(value) = lookup(claims, path) {
                groups_asserted = true;
                groups.extend(strings(value));
            }
        }
        let expires_at = timestamp(claims, "exp").ok_or(TokenError::Malformed)?;
        let issued_at = timestamp(claims, "iat").ok_or(TokenError::Malformed)?;
        let sign_in = SignIn::from_token(TokenSignIn {
            source,
            issuer,
            subject,
            claims,
            json,
            email_verified,
            groups,
            groups_asserted,
            expires_at,
            connection: rules.connection,
        });
        Ok(Self(Arc::new(ClaimsInner {
            sign_in,
            kind,
            audiences,
            authorized_party,
            issued_at,
        })))
    }

    /// The claims of an opaque access token whose holder a provider's API named: the sign-in
    /// it built (which must carry an expiry), issued now, for no audience in particular.
    #[cfg(feature = "login")]
    pub(crate) fn from_answer(sign_in: SignIn, issued_at: DateTime<Utc>) -> Option<Self> {
        sign_in.expires_at()?;
        Some(Self(Arc::new(ClaimsInner {
            sign_in,
            kind: TokenKind::Access,
            audiences: Vec::new(),
            authorized_party: None,
            issued_at,
        })))
    }

    /// The sign-in this token proves: what provisioning reads.
    pub fn sign_in(&self) -> &SignIn {
        &self.0.sign_in
    }

    /// The issuer (`iss`), exactly as configured and as the token carries it.
    pub fn issuer(&self) -> &str {
        self.0.sign_in.issuer()
    }

    /// The subject (`sub`): the issuer's stable identifier for the person.
    pub fn subject(&self) -> &str {
        self.0.sign_in.subject()
    }

    /// Whether this was an ID token or an RFC 9068 access token.
    pub fn token_kind(&self) -> TokenKind {
        self.0.kind
    }

    /// The audiences (`aud`) the token was issued for.
    pub fn audiences(&self) -> &[String] {
        &self.0.audiences
    }

    /// The client the token was issued to: `azp`, or an access token's `client_id`.
    pub fn authorized_party(&self) -> Option<&str> {
        self.0.authorized_party.as_deref()
    }

    /// The `email` claim, as sent. Not an identity, and not proof of anything unless
    /// [`email_verified`](Self::email_verified) is true.
    pub fn email(&self) -> Option<&str> {
        self.0.sign_in.email()
    }

    /// Whether the issuer asserted that it verified [`email`](Self::email).
    ///
    /// True only for a JSON `true`, or, for an issuer configured with
    /// [`accept_string_booleans`](crate::Issuer::accept_string_booleans), the string `"true"`.
    /// Any other value, type or absence is false.
    pub fn email_verified(&self) -> bool {
        self.0.sign_in.email_verified()
    }

    /// The `name` claim.
    pub fn name(&self) -> Option<&str> {
        self.0.sign_in.name()
    }

    /// The `given_name` claim.
    pub fn given_name(&self) -> Option<&str> {
        self.0.sign_in.given_name()
    }

    /// The `family_name` claim.
    pub fn family_name(&self) -> Option<&str> {
        self.0.sign_in.family_name()
    }

    /// The `preferred_username` claim. Informational only: issuers let people change it.
    pub fn preferred_username(&self) -> Option<&str> {
        self.0.sign_in.preferred_username()
    }

    /// The `picture` claim.
    pub fn picture(&self) -> Option<&str> {
        self.0.sign_in.picture()
    }

    /// The `locale` claim.
    pub fn locale(&self) -> Option<&str> {
        self.0.sign_in.locale()
    }

    /// Whether the token carries the issuer's groups claim at all (an empty list included).
    pub fn groups_asserted(&self) -> bool {
        self.0.sign_in.groups_asserted()
    }

    /// Group names from the issuer's groups claim (`groups` unless
    /// [configured otherwise](crate::Issuer::groups_claim)); strings only.
    pub fn groups(&self) -> &[String] {
        self.0.sign_in.groups()
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.0
            .sign_in
            .expires_at()
            .expect("a token's sign-in carries its `exp`")
    }

    /// When the token was issued (`iat`).
    pub fn issued_at(&self) -> DateTime<Utc> {
        self.0.issued_at
    }

    /// Every claim of the token, as JSON. Parsed from the payload on the first call.
    pub fn claims(&self) -> &Map<String, Value> {
        self.0.sign_in.attributes()
    }

    /// A claim by name or by dotted path into nested objects (`realm_access.roles`,
    /// `resource_access.app.roles`). A top-level claim whose name itself contains dots (such as
    /// Auth0's `https://example.com/roles`) is found by its full name first.
    pub fn claim(&self, path: &str) -> Option<&Value> {
        self.0.sign_in.claim(path)
    }
}

impl fmt::Debug for VerifiedClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedClaims")
            .field("issuer", &self.issuer())
            .field("subject", &self.subject())
            .field("token_kind", &self.token_kind())
            .field("email", &self.email())
            .field("email_verified", &self.email_verified())
            .field("groups", &self.groups())
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

pub(crate) fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn timestamp(claims: &Map<String, Value>, name: &str) -> Option<DateTime<Utc>> {
    let secs = claims.get(name)?.as_f64()?;
    DateTime::from_timestamp(secs.floor() as i64, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        // serde_json's own `Value` keeps the last duplicate silently; that is what we guard.
        let lenient: Value = serde_json::from_str(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(lenient["a"], 2);
        let cases = [
            r#"{"sub":"a","sub":"b"}"#,
            r#"{"sub":"a","x":{"y":1,"y":2}}"#,
            r#"{"sub":"a","x":[{"y":1,"y":2}]}"#,
        ];
        for payload in cases {
            let err = RawToken::parse(&token(r#"{"alg":"RS256"}"#, payload)).unwrap_err();
            assert_eq!(err, TokenError::Malformed, "{payload}");
        }
        let err = RawToken::parse(&token(r#"{"alg":"RS256","alg":"none"}"#, "{}")).unwrap_err();
        assert_eq!(err, TokenError::Malformed);
    }

    #[test]
    fn structure_is_checked_before_anything_else() {
        let good = token(r#"{"alg":"RS256"}"#, r#"{"iss":"x"}"#);
        assert_eq!(RawToken::parse(&good).unwrap().issuer(), Some("x"));
        let cases = [
            ("a.b", TokenError::Malformed),
            ("a.b.c.d.e", TokenError::Malformed),
            (&format!("{good}."), TokenError::Malformed),
            (
                &format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}")),
                TokenError::UnsupportedAlgorithm,
            ),
            (&token(r#"{"alg":"RS256"}"#, "[1]"), TokenError::Malformed),
            (&token(r#"{"alg":"RS256"}"#, "{} x"), TokenError::Malformed),
            (&token(r#"{"typ":"JWT"}"#, "{}"), TokenError::Malformed),
            (
                &token(r#"{"alg":"RS256","crit":["exp"]}"#, "{}"),
                TokenError::UnsupportedHeader,
            ),
            (
                &token(r#"{"alg":"RS256","cty":"JWT"}"#, "{}"),
                TokenError::UnsupportedHeader,
            ),
            (
                &token(r#"{"alg":"RS256","kid":7}"#, "{}"),
                TokenError::Malformed,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(RawToken::parse(input).unwrap_err(), expected, "{input}");
        }
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        assert!(is_canonical_base64url("AAAA"));
        assert!(is_canonical_base64url("AA"));
        assert!(!is_canonical_base64url("AB")); // trailing bits set
        assert!(!is_canonical_base64url("AAA=")); // padding
        assert!(!is_canonical_base64url("A")); // impossible length
        assert!(!is_canonical_base64url("AA+/")); // standard alphabet
        let header = b64(r#"{"alg":"RS256"}"#);
        let payload = b64("{}");
        assert_eq!(
            RawToken::parse(&format!("{header}=.{payload}.AA")).unwrap_err(),
            TokenError::Malformed
        );
        assert_eq!(
            RawToken::parse(&format!("{header}.{payload}.AB")).unwrap_err(),
            TokenError::Malformed
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let payload = format!(r#"{{"x":{deep}}}"#);
        let err = RawToken::parse(&token(r#"{"alg":"RS256"}"#, &payload)).unwrap_err();
        assert_eq!(err, TokenError::Malformed);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let header = b64(r#"{"alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(b"{\"sub\":\"\xff\"}");
        assert_eq!(
            RawToken::parse(&format!("{header}.{payload}.AA")).unwrap_err(),
            TokenError::Malformed
        );
    }

    #[test]
    fn declared_kind_follows_typ() {
        let kind = |typ: Option<&str>| {
            RawHeader {
                alg: "RS256".into(),
                typ: typ.map(str::to_owned),
                kid: None,
            }
            .declared_kind()
        };
        assert_eq!(kind(None), Some(TokenKind::Id));
        assert_eq!(kind(Some("JWT")), Some(TokenKind::Id));
        assert_eq!(kind(Some("application/jwt")), Some(TokenKind::Id));
        assert_eq!(kind(Some("at+jwt")), Some(TokenKind::Access));
        assert_eq!(kind(Some("application/AT+JWT")), Some(TokenKind::Access));
        assert_eq!(kind(Some("logout+jwt")), None);
        assert_eq!(kind(Some("")), None);
    }

    fn rules(accept_string_booleans: bool) -> ClaimRules {
        ClaimRules {
            groups_claims: vec!["groups".into()],
            accept_string_booleans,
            connection: None,
        }
    }

    fn claims(json: Value, rules: &ClaimRules) -> Result<VerifiedClaims, TokenError> {
        let Value::Object(map) = json else { panic!() };
        let json = Value::Object(map.clone()).to_string();
        VerifiedClaims::from_verified(
            SignInSource::BearerToken,
            "https://idp".into(),
            TokenKind::Id,
            "sub",
            &map,
            json,
            rules,
        )
    }

    #[test]
    fn email_verified_needs_a_json_true_unless_the_issuer_accepts_strings() {
        let base = |v: Value| serde_json::json!({"sub":"s","exp":2,"iat":1,"email":"a@b.c","email_verified":v});
        let strict = rules(false);
        let lenient = rules(true);
        for (value, strict_expected, lenient_expected) in [
            (Value::Bool(true), true, true),
            (Value::Bool(false), false, false),
            (Value::from("true"), false, true),
            (Value::from("TRUE"), false, true),
            (Value::from("false"), false, false),
            (Value::from("yes"), false, false),
            (Value::from(1), false, false),
            (Value::Null, false, false),
        ] {
            let got = claims(base(value.clone()), &strict)
                .unwrap()
                .email_verified();
            assert_eq!(got, strict_expected, "strict {value}");
            let got = claims(base(value.clone()), &lenient)
                .unwrap()
                .email_verified();
            assert_eq!(got, lenient_expected, "lenient {value}");
        }
        let no_email = serde_json::json!({"sub":"s","exp":2,"iat":1,"email_verified":true});
        assert!(!claims(no_email, &strict).unwrap().email_verified());
    }

    #[test]
    fn subjects_are_bounded_and_printable() {
        let with_sub = |sub: Value| serde_json::json!({"sub": sub, "exp": 2, "iat": 1});
        let r = rules(false);
        assert!(claims(with_sub("248289761001".into()), &r).is_ok());
        assert!(claims(with_sub("x".repeat(255).into()), &r).is_ok());
        for bad in [
            Value::from(""),
            Value::from("x".repeat(256)),
            Value::from("a\nb"),
            Value::from("a\u{0}b"),
            Value::from(12),
        ] {
            assert_eq!(
                claims(with_sub(bad.clone()), &r).unwrap_err(),
                TokenError::InvalidSubject,
                "{bad}"
            );
        }
    }

    #[test]
    fn claim_paths() {
        let c = claims(
            serde_json::json!({
                "sub": "s", "exp": 2, "iat": 1,
                "realm_access": {"roles": ["admin"]},
                "https://example.com/roles": ["owner"],
                "groups": "solo",
            }),
            &rules(false),
        )
        .unwrap();
        assert_eq!(c.claim("realm_access.roles").unwrap()[0], "admin");
        assert_eq!(c.claim("https://example.com/roles").unwrap()[0], "owner");
        assert!(c.claim("realm_access.missing").is_none());
        assert_eq!(c.groups(), ["solo"]);
    }
}
