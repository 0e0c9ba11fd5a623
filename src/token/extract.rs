//! Finding the token in a request, with RFC 6750 framing.
//!
//! Stage: the bearer-token source. Uses only `crate::error`.
//!
//! - `Authorization: Bearer <token>`: the scheme is case-insensitive (RFC 7235 §2.1); exactly one
//!   `Authorization` header; the token is one RFC 6750 `b64token`. Another scheme (`Basic`, …) is
//!   treated as no token at all.
//! - A named cookie, when configured: exactly one cookie of that name.
//! - An `access_token` query parameter is always refused (RFC 6750 §2.3 leaves it optional and
//!   it leaks tokens into logs and browser history).
//!
//! The size bound is checked first, on the raw length, so an oversized token costs nothing but
//! a comparison. The token's characters are checked (see [`is_token_syntax`]) only before it is
//! parsed: a token found in the verified-token cache passed that check when it was verified.

use http::header::AUTHORIZATION;
use http::{HeaderMap, Uri};

use crate::error::{Error, RequestError, TokenError};

/// Where the layer looks for the token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1). The default.
    #[default]
    AuthorizationHeader,
    /// A cookie of this name, for browser sessions that keep the token in a cookie.
    Cookie(String),
}

impl TokenSource {
    /// A cookie of this name.
    pub fn cookie(name: impl Into<String>) -> Self {
        Self::Cookie(name.into())
    }
}

/// The token of a request, or why there is none. `Ok(None)` means no credentials at all.
pub(crate) fn extract<'a>(
    source: &TokenSource,
    headers: &'a HeaderMap,
    uri: &Uri,
    max_len: usize,
) -> Result<Option<&'a str>, Error> {
    let in_query = uri.query().is_some_and(has_query_token);
    let token = match source {
        TokenSource::AuthorizationHeader => from_authorization(headers)?,
        TokenSource::Cookie(name) => from_cookie(headers, name)?,
    };
    match (token, in_query) {
        (Some(_), true) => Err(Error::InvalidRequest(RequestError::MultipleCredentials)),
        (None, true) => Err(Error::InvalidRequest(RequestError::TokenInQuery)),
        (None, false) => Ok(None),
        (Some(token), false) => {
            if token.len() > max_len {
                return Err(Error::InvalidToken(TokenError::TooLarge));
            }
            Ok(Some(token))
        }
    }
}

/// The token, cheaply, if the request frames one in the obvious way; `None` for anything
/// else (which [`extract`] then decides). Only a candidate for a cache lookup: the cache holds
/// nothing but verified tokens, so a malformed candidate simply misses.
pub(crate) fn candidate<'a>(
    source: &TokenSource,
    headers: &'a HeaderMap,
    uri: &Uri,
    max_len: usize,
) -> Option<&'a str> {
    if uri.query().is_some_and(|q| q.contains("access_token")) {
        return None;
    }
    let token = match source {
        TokenSource::AuthorizationHeader => {
            let mut values = headers.get_all(AUTHORIZATION).iter();
            let value = values.next()?.as_bytes();
            if values.next().is_some() || value.len() < 7 {
                return None;
            }
            let (scheme, token) = value.split_at(7);
            if !scheme.eq_ignore_ascii_case(b"bearer ") {
                return None;
            }
            std::str::from_utf8(token).ok()?
        }
        TokenSource::Cookie(name) => from_cookie(headers, name).ok()??,
    };
    (token.len() <= max_len).then_some(token)
}

fn from_authorization(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::InvalidRequest(RequestError::MultipleCredentials));
    }
    let malformed = Error::InvalidRequest(RequestError::MalformedAuthorization);
    // Header values hold no control characters but tab (the http crate refuses them); what is
    // not a b64token is refused when the token is parsed.
    let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
        return Err(malformed);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another authentication scheme: no bearer credentials (RFC 6750 §3.1).
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.bytes().any(|b| matches!(b, b' ' | b'\t' | b',')) {
        return Err(malformed);
    }
    Ok(Some(token))
}

fn from_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Error> {
    crate::cookies::read(headers, name)
        .map_err(|_| Error::InvalidRequest(RequestError::AmbiguousCookie))
}

fn has_query_token(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "access_token")
}

/// Whether every byte of `token` is an RFC 6750 `b64token` character.
pub(crate) fn is_token_syntax(token: &str) -> bool {
    const ALLOWED: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] = c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
            b += 1;
        }
        table
    };
    token.bytes().all(|b| ALLOWED[usize::from(b)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn run(
        source: &TokenSource,
        pairs: &[(&'static str, &str)],
        uri: &str,
    ) -> Result<Option<String>, String> {
        let map = headers(pairs);
        extract(source, &map, &uri.parse().unwrap(), 64)
            .map(|t| t.map(str::to_owned))
            .map_err(|e| e.code().to_owned() + ":" + e.description())
    }

    #[test]
    fn bearer_framing() {
        let bearer = TokenSource::AuthorizationHeader;
        let ok = |t: &str| Ok(Some(t.to_owned()));
        let invalid = |e: RequestError| Err(format!("invalid_request:{}", e.description()));
        let token_err = |e: TokenError| Err(format!("{}:{}", e.code(), e.description()));
        let too_large = format!("Bearer {}", "a".repeat(65));
        let at_bound = format!("Bearer {}", "a".repeat(64));
        type Case<'a> = (
            &'a str,
            Vec<(&'static str, &'a str)>,
            &'a str,
            Result<Option<String>, String>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("no header", vec![], "/", Ok(None)),
            (
                "bearer",
                vec![("authorization", "Bearer a.b.c")],
                "/",
                ok("a.b.c"),
            ),
            (
                "scheme case",
                vec![("authorization", "bEaReR a.b.c")],
                "/",
                ok("a.b.c"),
            ),
            (
                "extra spaces",
                vec![("authorization", "Bearer   a.b.c")],
                "/",
                ok("a.b.c"),
            ),
            (
                "basic",
                vec![("authorization", "Basic dXNlcjpwYXNz")],
                "/",
                Ok(None),
            ),
            (
                "scheme only",
                vec![("authorization", "Bearer")],
                "/",
                invalid(RequestError::MalformedAuthorization),
            ),
            (
                "empty token",
                vec![("authorization", "Bearer ")],
                "/",
                invalid(RequestError::MalformedAuthorization),
            ),
            (
                "two tokens",
                vec![("authorization", "Bearer a.b.c d.e.f")],
                "/",
                invalid(RequestError::MalformedAuthorization),
            ),
            (
                "comma list",
                vec![("authorization", "Bearer a.b.c,Bearer d")],
                "/",
                invalid(RequestError::MalformedAuthorization),
            ),
            (
                "two headers",
                vec![
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer d.e.f"),
                ],
                "/",
                invalid(RequestError::MultipleCredentials),
            ),
            (
                "query token",
                vec![],
                "/?access_token=a.b.c",
                invalid(RequestError::TokenInQuery),
            ),
            (
                "header and query",
                vec![("authorization", "Bearer a.b.c")],
                "/?x=1&access_token=a",
                invalid(RequestError::MultipleCredentials),
            ),
            (
                "unrelated query",
                vec![("authorization", "Bearer a.b.c")],
                "/?token=1",
                ok("a.b.c"),
            ),
            (
                "odd characters are left to the parser",
                vec![("authorization", "Bearer a.b\"c")],
                "/",
                ok("a.b\"c"),
            ),
            (
                "too large",
                vec![("authorization", &too_large)],
                "/",
                token_err(TokenError::TooLarge),
            ),
            (
                "at the bound",
                vec![("authorization", &at_bound)],
                "/",
                ok(&"a".repeat(64)),
            ),
        ];
        for (name, pairs, uri, expected) in cases {
            assert_eq!(run(&bearer, &pairs, uri), expected, "{name}");
        }
    }

    #[test]
    fn token_syntax() {
        assert!(is_token_syntax("eyJhbGci.eyJzdWIi.c2ln-_~+/=="));
        for bad in ["a b", "a\"b", "a,b", "a;b", "é", "a\u{0}b"] {
            assert!(!is_token_syntax(bad), "{bad:?}");
        }
    }

    #[test]
    fn cookie_source() {
        let cookie = TokenSource::cookie("id_token");
        assert_eq!(
            run(&cookie, &[("cookie", "a=1; id_token=x.y.z; b=2")], "/"),
            Ok(Some("x.y.z".to_owned()))
        );
        assert_eq!(
            run(&cookie, &[("cookie", "id_token=\"x.y.z\"")], "/"),
            Ok(Some("x.y.z".to_owned()))
        );
        assert_eq!(run(&cookie, &[("cookie", "other=x.y.z")], "/"), Ok(None));
        assert_eq!(run(&cookie, &[("cookie", "id_token=")], "/"), Ok(None));
        // The Authorization header is not this source.
        assert_eq!(
            run(&cookie, &[("authorization", "Bearer a.b.c")], "/"),
            Ok(None)
        );
        assert!(
            run(
                &cookie,
                &[("cookie", "id_token=a"), ("cookie", "id_token=b")],
                "/"
            )
            .unwrap_err()
            .starts_with("invalid_request")
        );
    }
}
