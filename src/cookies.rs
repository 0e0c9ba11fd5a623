//! Cookies: reading one strictly from a request, and writing this crate's own.
//!
//! Stage: a helper of the sign-in sources (the bearer-token source reads a token cookie, browser
//! sign-in its session and flow cookies). Uses nothing else of the crate.
//!
//! Written by hand rather than with the `cookie` crate: every value written here is this
//! crate's own base64url text and every attribute is fixed, so there is nothing to encode or
//! escape; and reading needs one rule the usual parsers do not enforce, refusing a name that
//! appears twice (a cookie planted for a parent domain or path beside the real one).

use http::HeaderMap;
use http::header::COOKIE;

/// A cookie named `name` appears more than once in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ambiguous;

/// The value of the cookie `name`, if the request carries it once and not empty.
pub(crate) fn read<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Ambiguous> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            let Some((key, val)) = pair.trim().split_once('=') else {
                continue;
            };
            if key.trim() != name {
                continue;
            }
            if found.is_some() {
                return Err(Ambiguous);
            }
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(val);
            found = Some(val);
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

#[cfg(feature = "login")]
/// A `Set-Cookie` value for one of this crate's cookies: `HttpOnly`, `SameSite=Lax`, `Path=/`,
/// and `Secure` when the application is served over https (where names carry the `__Host-`
/// prefix, which browsers accept only with `Secure`, `Path=/` and no `Domain`).
pub(crate) fn set(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    let mut cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age_secs.max(0)
    );
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

#[cfg(feature = "login")]
/// A `Set-Cookie` value that removes the cookie `name`.
pub(crate) fn clear(name: &str, secure: bool) -> String {
    set(name, "", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(COOKIE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_cookie_is_read_once_or_refused_as_ambiguous() {
        assert_eq!(read(&headers(&["a=1; b=2"]), "b"), Ok(Some("2")));
        assert_eq!(read(&headers(&["a=1", "b=\"2\""]), "b"), Ok(Some("2")));
        assert_eq!(read(&headers(&["a=1"]), "b"), Ok(None));
        assert_eq!(read(&headers(&["b="]), "b"), Ok(None));
        assert_eq!(read(&headers(&["b=1; b=2"]), "b"), Err(Ambiguous));
        assert_eq!(read(&headers(&["b=1", "b=2"]), "b"), Err(Ambiguous));
        assert_eq!(read(&headers(&["bb=1; xb=2"]), "b"), Ok(None));
    }

    #[test]
    #[cfg(feature = "login")]
    fn our_cookies_are_http_only_lax_and_secure_on_https() {
        assert_eq!(
            set("__Host-s", "v", 60, true),
            "__Host-s=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert_eq!(
            clear("s", false),
            "s=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }
}
