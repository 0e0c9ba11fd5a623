//! [`TestGraph`]: the parts of Microsoft Graph and the Microsoft identity platform that
//! [`MicrosoftGraph`](crate::provision::groups::MicrosoftGraph) uses, on loopback: the client
//! credentials token endpoint (`POST /{tenant}/oauth2/v2.0/token`) and
//! `GET /v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group`, paged with
//! `@odata.nextLink` as Graph pages. Groups are set per person; an outage can be switched on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::signin::json_response;
use super::{form_post, request_host, serve_with};
use crate::provision::groups::MicrosoftGraph;

type Response = http::Response<Full<Bytes>>;

/// A Microsoft Graph double on loopback.
#[derive(Debug)]
pub struct TestGraph {
    state: Arc<GraphState>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct GraphState {
    groups: Mutex<HashMap<String, Vec<String>>>,
    page_size: AtomicUsize,
    outage: AtomicBool,
    group_calls: AtomicUsize,
    token_calls: AtomicUsize,
}

impl TestGraph {
    /// The tenant the double answers for.
    pub const TENANT: &'static str = "test-tenant";
    /// The application's client id the double accepts.
    pub const CLIENT_ID: &'static str = "test-graph-client";
    /// The application's client secret the double accepts.
    pub const CLIENT_SECRET: &'static str = "test-graph-secret";
    const ACCESS_TOKEN: &'static str = "test-graph-access-token";

    /// Starts the double on a free loopback port; pages hold 2 groups.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a free loopback port for the Graph double");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(GraphState {
            page_size: AtomicUsize::new(2),
            ..GraphState::default()
        });
        let server = tokio::spawn(serve_with(listener, Arc::clone(&state), respond));
        Self {
            state,
            addr,
            server,
        }
    }

    /// The double's base URL, `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The token endpoint for [`TestGraph::TENANT`].
    pub fn token_url(&self) -> String {
        format!("http://{}/{}/oauth2/v2.0/token", self.addr, Self::TENANT)
    }

    /// A [`MicrosoftGraph`] resolver pointed at the double, with its client and a cache of
    /// `capacity` people.
    ///
    /// # Panics
    ///
    /// Never: the double's URLs are valid.
    pub fn resolver(&self, capacity: u64) -> MicrosoftGraph {
        MicrosoftGraph::builder(Self::TENANT, Self::CLIENT_ID, Self::CLIENT_SECRET)
            .graph_url(self.url())
            .token_url(self.token_url())
            .cache(capacity, std::time::Duration::from_secs(300))
            .allow_http_loopback(true)
            .build()
            .expect("the double's URLs are valid")
    }

    /// Sets the groups (object ids) of the person `oid`.
    pub fn set_groups<I, G>(&self, oid: &str, groups: I)
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.state
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                oid.to_ascii_lowercase(),
                groups.into_iter().map(Into::into).collect(),
            );
    }

    /// Groups per page.
    pub fn set_page_size(&self, size: usize) {
        self.state.page_size.store(size.max(1), Ordering::SeqCst);
    }

    /// While on, every group request answers 503.
    pub fn set_outage(&self, outage: bool) {
        self.state.outage.store(outage, Ordering::SeqCst);
    }

    /// Group pages served or refused so far.
    pub fn group_calls(&self) -> usize {
        self.state.group_calls.load(Ordering::SeqCst)
    }

    /// Tokens asked for so far.
    pub fn token_calls(&self) -> usize {
        self.state.token_calls.load(Ordering::SeqCst)
    }
}

impl Drop for TestGraph {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn respond(
    state: Arc<GraphState>,
    request: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let host = request_host(request.headers());
    let token_path = format!("/{}/oauth2/v2.0/token", TestGraph::TENANT);
    if request.method() == http::Method::POST && path == token_path {
        state.token_calls.fetch_add(1, Ordering::SeqCst);
        let body = match form_post(request).await {
            Ok((_, body)) => body,
            Err(response) => return Ok(response),
        };
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let granted = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some(TestGraph::CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(TestGraph::CLIENT_SECRET);
        return Ok(if granted {
            json_response(
                200,
                &json!({"access_token": TestGraph::ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600}),
            )
        } else {
            json_response(401, &json!({"error": "invalid_client"}))
        });
    }
    let oid = path
        .strip_prefix("/v1.0/users/")
        .and_then(|rest| rest.strip_suffix("/transitiveMemberOf/microsoft.graph.group"));
    let (Some(oid), &http::Method::GET) = (oid, request.method()) else {
        return Ok(json_response(404, &json!({"error": {"code": "NotFound"}})));
    };
    state.group_calls.fetch_add(1, Ordering::SeqCst);
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {}", TestGraph::ACCESS_TOKEN)) {
        return Ok(json_response(
            401,
            &json!({"error": {"code": "InvalidAuthenticationToken"}}),
        ));
    }
    if state.outage.load(Ordering::SeqCst) {
        return Ok(json_response(
            503,
            &json!({"error": {"code": "serviceNotAvailable"}}),
        ));
    }
    let groups = state
        .groups
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&oid.to_ascii_lowercase())
        .cloned();
    let Some(groups) = groups else {
        return Ok(json_response(
            404,
            &json!({"error": {"code": "Request_ResourceNotFound"}}),
        ));
    };
    let skip: usize = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "$skiptoken")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let size = state.page_size.load(Ordering::SeqCst);
    let page: Vec<_> = groups
        .iter()
        .skip(skip)
        .take(size)
        .map(|id| json!({"@odata.type": "#microsoft.graph.group", "id": id}))
        .collect();
    let mut body = json!({ "value": page });
    if skip + size < groups.len() {
        body["@odata.nextLink"] = json!(format!(
            "http://{host}{path}?$select=id&$top={size}&$skiptoken={}",
            skip + size
        ));
    }
    Ok(json_response(200, &body))
}
