//! The HTTP client that reads discovery documents and key sets.
//!
//! Stage: the bearer-token source. Uses nothing else of the crate.
//!
//! It implements `openidconnect`'s [`AsyncHttpClient`] so discovery and JWKS parsing stay
//! `openidconnect`'s, and adds what a server-side fetcher of attacker-reachable URLs needs:
//! redirects are never followed, every URL must be `https` (plain `http` only on loopback and
//! only when the issuer allows it), the body is bounded while it streams in, and the whole
//! exchange has a deadline.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use url::Url;

/// Why a key-set or discovery fetch failed. Never shown to clients; logged at `warn`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request failed")]
    Http(#[source] reqwest::Error),
    #[error("response body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("refusing to fetch a non-https URL")]
    InsecureUrl,
    #[error("malformed request")]
    Request(#[source] http::Error),
}

/// Which URLs an issuer's documents may be fetched from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UrlPolicy {
    pub(crate) allow_http_loopback: bool,
}

impl UrlPolicy {
    /// `https` always; `http` only for loopback hosts and only when explicitly allowed.
    pub(crate) fn check(self, url: &Url) -> Result<(), UrlRefusal> {
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(UrlRefusal::NotAbsolute);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Credentials);
        }
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http_loopback && is_loopback(url) => Ok(()),
            "http" if self.allow_http_loopback => Err(UrlRefusal::HttpNotLoopback),
            _ => Err(UrlRefusal::NotHttps),
        }
    }
}

/// Why a URL is refused by [`UrlPolicy::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UrlRefusal {
    NotAbsolute,
    Credentials,
    NotHttps,
    HttpNotLoopback,
}

/// Whether `url`'s host is a loopback address or `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Builds the shared client: no redirects, bounded connect and total time.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!(
            "tower-jit-provisioning/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// One issuer's view of the shared client.
#[derive(Clone, Debug)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    policy: UrlPolicy,
    max_body: usize,
}

impl Fetcher {
    pub(crate) fn new(client: reqwest::Client, policy: UrlPolicy, max_body: usize) -> Self {
        Self {
            client,
            policy,
            max_body,
        }
    }

    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let (parts, body) = request.into_parts();
        let url = Url::parse(&parts.uri.to_string()).map_err(|_| FetchError::InsecureUrl)?;
        self.policy
            .check(&url)
            .map_err(|_| FetchError::InsecureUrl)?;
        let mut response = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(FetchError::Http)?;
        let limit = self.max_body;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(FetchError::TooLarge { limit });
        }
        let mut builder = http::Response::builder().status(response.status());
        if let Some(headers) = builder.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(FetchError::Http)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        builder.body(body).map_err(FetchError::Request)
    }
}

impl<'c> AsyncHttpClient<'c> for Fetcher {
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_policy() {
        let strict = UrlPolicy {
            allow_http_loopback: false,
        };
        let loopback = UrlPolicy {
            allow_http_loopback: true,
        };
        let url = |s: &str| Url::parse(s).unwrap();
        let cases = [
            (strict, "https://idp.example.com", Ok(())),
            (strict, "http://127.0.0.1:8080", Err(UrlRefusal::NotHttps)),
            (loopback, "http://127.0.0.1:8080", Ok(())),
            (loopback, "http://[::1]:8080", Ok(())),
            (loopback, "http://localhost:8080", Ok(())),
            (
                loopback,
                "http://idp.example.com",
                Err(UrlRefusal::HttpNotLoopback),
            ),
            (
                loopback,
                "http://10.0.0.1",
                Err(UrlRefusal::HttpNotLoopback),
            ),
            (strict, "ftp://idp.example.com", Err(UrlRefusal::NotHttps)),
            (
                strict,
                "https://user:pw@idp.example.com",
                Err(UrlRefusal::Credentials),
            ),
            (strict, "mailto:a@b.c", Err(UrlRefusal::NotAbsolute)),
        ];
        for (policy, input, expected) in cases {
            assert_eq!(policy.check(&url(input)), expected, "{input}");
        }
    }
}
