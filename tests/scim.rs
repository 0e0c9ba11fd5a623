//! The SCIM service provider over real HTTP on a real SQLite file (and PostgreSQL where it
//! matters), beside the JIT layer on the same store, as the reference server runs them.

mod common;

use std::time::Duration;

use axum::Router;
use common::{Reply, Server, get_with, reply, scim_request, sqlite_store, user_app};
use serde_json::{Value, json};
use tower_jit_provisioning::scim::Scim;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    Actor, AttributeMapping, AuditKind, Field, ProvisioningLayer, SqliteStore, SyncPolicy,
    UserStore,
};

const SECRET: &str = "scim-secret-for-tests-0123456789";
const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn mapping() -> AttributeMapping {
    AttributeMapping::new()
        .group_role("Admins", "admin")
        .default_roles(["member"])
}

/// The JIT layer on `/me` and SCIM under `/scim/v2`, on one SQLite file.
struct Harness {
    idp: TestIssuer,
    store: SqliteStore,
    _dir: tempfile::TempDir,
    server: Server,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Self {
        Self::with(|b| b).await
    }

    async fn with(
        configure: impl FnOnce(
            tower_jit_provisioning::ProvisioningLayerBuilder,
        ) -> tower_jit_provisioning::ProvisioningLayerBuilder,
    ) -> Self {
        let idp = TestIssuer::start().await;
        let (store, dir) = sqlite_store().await;
        let layer = configure(
            ProvisioningLayer::builder()
                .issuer(idp.issuer().trust_email_domains(["example.com"]))
                .store(store.clone())
                .mapping(mapping()),
        )
        .build()
        .unwrap();
        let app = app(layer, &store);
        Self {
            idp,
            store,
            _dir: dir,
            server: Server::start(app).await,
            http: reqwest::Client::new(),
        }
    }

    async fn scim(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.scim_as(SECRET, method, path, body).await
    }

    async fn scim_as(&self, secret: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let url = self.server.url(&format!("/scim/v2{path}"));
        scim_request(&self.http, secret, method, &url, body.as_ref()).await
    }

    async fn me(&self, token: &str) -> Reply {
        get_with(&self.http, &self.server.url("/me"), Some(token)).await
    }

    /// A PATCH of `path` with these operations.
    async fn patch(&self, path: &str, operations: Value) -> Reply {
        self.scim("PATCH", path, Some(patch(operations))).await
    }

    async fn create_user(&self, body: Value) -> Value {
        let reply = self.scim("POST", "/Users", Some(body)).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()
    }
}

fn app(layer: ProvisioningLayer, store: &SqliteStore) -> Router {
    let scim = Scim::new(store.clone())
        .bearer_token("okta", SECRET)
        .bearer_token("entra", "another-secret-for-entra-0123")
        .mapping(mapping())
        .router()
        .unwrap();
    user_app(layer).nest("/scim/v2", scim)
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [CORE_USER],
        "userName": user_name,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true
    })
}

#[allow(clippy::needless_pass_by_value)]
fn patch(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

fn id_of(resource: &Value) -> String {
    resource["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_secret_guards_every_endpoint() {
    let h = Harness::start().await;
    for (secret, method, path) in [
        ("", "GET", "/Users"),
        ("wrong-secret-wrong-secret", "GET", "/Users"),
        ("wrong-secret-wrong-secret", "POST", "/Users"),
        ("wrong-secret-wrong-secret", "GET", "/ServiceProviderConfig"),
        ("wrong-secret-wrong-secret", "GET", "/nonexistent"),
    ] {
        let reply = h.scim_as(secret, method, path, None).await;
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(reply.header("content-type"), Some("application/scim+json"));
        assert_eq!(
            reply.json()["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(reply.json()["status"], "401");
    }
    let no_header = reply(
        h.http
            .get(h.server.url("/scim/v2/Users"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(no_header.status, 401);
    // Both clients' secrets work.
    assert_eq!(h.scim("GET", "/Users", None).await.status, 200);
    assert_eq!(
        h.scim_as("another-secret-for-entra-0123", "GET", "/Users", None)
            .await
            .status,
        200
    );
    // Weak or missing secrets are refused when the router is built.
    assert!(Scim::new(h.store.clone()).router().is_err());
    assert!(
        Scim::new(h.store.clone())
            .bearer_token("x", "short")
            .router()
            .is_err()
    );
}

#[tokio::test]
async fn create_get_and_the_media_types() {
    let h = Harness::start().await;
    let created = h
        .scim("POST", "/Users", Some(user("bjensen@example.com")))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("content-type"),
        Some("application/scim+json")
    );
    let resource = created.json();
    let id = id_of(&resource);
    let location = created.header("location").unwrap().to_owned();
    assert!(
        location.ends_with(&format!("/scim/v2/Users/{id}")),
        "{location}"
    );
    assert_eq!(resource["meta"]["location"], location);
    assert_eq!(resource["meta"]["resourceType"], "User");
    assert_eq!(resource["meta"]["version"], "W/\"1\"");
    for field in ["created", "lastModified"] {
        let at = resource["meta"][field].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(at).unwrap();
    }
    assert_eq!(resource["userName"], "bjensen@example.com");
    assert_eq!(resource["name"]["givenName"], "Barbara");
    assert_eq!(resource["active"], true);
    assert_eq!(
        resource["roles"],
        json!([{"value": "member"}]),
        "default roles for new accounts"
    );

    let fetched = h.scim("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), resource);

    // application/json is accepted too; other types are not.
    let json_body = h
        .http
        .post(h.server.url("/scim/v2/Users"))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body(user("second@example.com").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 201);
    let xml = h
        .http
        .post(h.server.url("/scim/v2/Users"))
        .bearer_auth(SECRET)
        .header("content-type", "text/xml")
        .body("<user/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 415);

    let missing = h
        .scim("GET", "/Users/0190d1a0-0000-7000-8000-000000000000", None)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], "404");
    assert_eq!(h.scim("GET", "/Users/not-a-uuid", None).await.status, 404);
    let no_name = h
        .scim("POST", "/Users", Some(json!({"schemas": [CORE_USER]})))
        .await;
    assert_eq!(no_name.status, 400);
    assert_eq!(no_name.json()["scimType"], "invalidValue");
    let garbage = h
        .http
        .post(h.server.url("/scim/v2/Users"))
        .bearer_auth(SECRET)
        .header("content-type", "application/scim+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
}

#[tokio::test]
async fn duplicate_user_names_are_409_uniqueness() {
    let h = Harness::start().await;
    h.create_user(user("dup@example.com")).await;
    let again = h
        .scim("POST", "/Users", Some(user("DUP@example.com")))
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["scimType"], "uniqueness");
}

#[tokio::test]
async fn filters_paging_and_attribute_selection() {
    let h = Harness::start().await;
    let mut ids = Vec::new();
    for (i, name) in ["alice", "bob", "carol", "dave", "erin"].iter().enumerate() {
        let mut body = user(&format!("{name}@example.com"));
        body["externalId"] = json!(format!("EXT-{i}"));
        body["title"] = json!(if i % 2 == 0 { "Engineer" } else { "Manager" });
        body["emails"] = json!([
            {"value": format!("{name}@example.com"), "type": "work", "primary": true},
            {"value": format!("{name}@home.example"), "type": "home"}
        ]);
        body[ENTERPRISE] = json!({"department": if i < 2 { "Sales" } else { "R&D" }});
        ids.push(id_of(&h.create_user(body).await));
    }
    let h = &h;
    let list = |query: &'static str| async move {
        let reply = h.scim("GET", &format!("/Users?{query}"), None).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        reply.json()
    };
    let names = |response: &Value| -> Vec<String> {
        response["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["userName"]
                    .as_str()
                    .unwrap()
                    .split('@')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("filter=userName+eq+%22BOB%40example.com%22", vec!["bob"]),
        ("filter=externalId+eq+%22EXT-2%22", vec!["carol"]),
        ("filter=externalId+eq+%22ext-2%22", vec![]),
        (
            "filter=userName+ne+%22bob%40example.com%22",
            vec!["alice", "carol", "dave", "erin"],
        ),
        ("filter=userName+co+%22r%22", vec!["carol", "erin"]),
        ("filter=userName+sw+%22d%22", vec!["dave"]),
        (
            "filter=title+pr+and+title+eq+%22manager%22",
            vec!["bob", "dave"],
        ),
        (
            "filter=userName+sw+%22a%22+or+userName+sw+%22e%22",
            vec!["alice", "erin"],
        ),
        ("filter=not+(title+eq+%22Engineer%22)", vec!["bob", "dave"]),
        (
            "filter=emails%5Btype+eq+%22home%22+and+value+co+%22carol%22%5D",
            vec!["carol"],
        ),
        (
            "filter=emails.value+eq+%22dave%40home.example%22",
            vec!["dave"],
        ),
        (
            "filter=urn%3Aietf%3Aparams%3Ascim%3Aschemas%3Aextension%3Aenterprise%3A2.0%3AUser%3Adepartment+eq+%22sales%22",
            vec!["alice", "bob"],
        ),
        ("filter=userName+eq+%22nobody%40example.com%22", vec![]),
    ];
    for (query, expected) in cases {
        let response = list(query).await;
        assert_eq!(names(&response), expected, "{query}");
        assert_eq!(response["totalResults"], expected.len(), "{query}");
    }

    // Paging: a stable order, integer counters.
    let page = list("startIndex=2&count=2").await;
    assert_eq!(page["totalResults"], 5);
    assert_eq!(page["startIndex"], 2);
    assert_eq!(page["itemsPerPage"], 2);
    assert_eq!(names(&page), ["bob", "carol"]);
    assert!(page["totalResults"].is_u64() && page["itemsPerPage"].is_u64());
    let last = list("startIndex=5&count=10").await;
    assert_eq!(names(&last), ["erin"]);
    let empty = list("startIndex=9").await;
    assert_eq!(empty["itemsPerPage"], 0);
    assert_eq!(empty["Resources"], json!([]));
    let unfiltered = list("").await;
    assert_eq!(
        names(&unfiltered),
        ["alice", "bob", "carol", "dave", "erin"]
    );

    // Attribute selection.
    let selected =
        list("filter=userName+eq+%22bob%40example.com%22&attributes=userName,emails.value").await;
    let bob = &selected["Resources"][0];
    assert_eq!(bob["id"], ids[1], "id is always returned");
    assert_eq!(bob["userName"], "bob@example.com");
    assert_eq!(
        bob["emails"],
        json!([{"value": "bob@example.com"}, {"value": "bob@home.example"}])
    );
    assert!(bob.get("name").is_none() && bob.get("meta").is_none());
    let excluded = h
        .scim(
            "GET",
            &format!("/Users/{}?excludedAttributes=emails,name", ids[1]),
            None,
        )
        .await
        .json();
    assert!(excluded.get("emails").is_none() && excluded.get("name").is_none());
    assert_eq!(excluded["userName"], "bob@example.com");

    // A bad filter is 400 invalidFilter.
    let bad = h
        .scim("GET", "/Users?filter=userName+zz+%22x%22", None)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["scimType"], "invalidFilter");

    // POST /Users/.search takes the same parameters.
    let searched = h
        .scim(
            "POST",
            "/Users/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "title eq \"Engineer\"",
                "attributes": ["userName"],
                "startIndex": 1,
                "count": 2
            })),
        )
        .await
        .json();
    assert_eq!(searched["totalResults"], 3);
    assert_eq!(names(&searched), ["alice", "carol"]);
}

#[tokio::test]
async fn put_replaces_and_patch_edits_with_every_kind_of_path() {
    let h = Harness::start().await;
    let mut body = user("pat@example.com");
    body["externalId"] = json!("pat-1");
    body[ENTERPRISE] = json!({"department": "Ops", "manager": {"value": "boss"}});
    let id = id_of(&h.create_user(body).await);
    let path = format!("/Users/{id}");

    // PUT replaces the resource.
    let mut replacement = user("pat@example.com");
    replacement["displayName"] = json!("Pat");
    replacement["name"] = json!({"givenName": "Patricia", "familyName": "Smith"});
    replacement[ENTERPRISE] = json!({"department": "Finance"});
    let put = h.scim("PUT", &path, Some(replacement)).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let resource = put.json();
    assert_eq!(resource["displayName"], "Pat");
    assert_eq!(resource["name"]["givenName"], "Patricia");
    assert!(
        resource.get("externalId").is_none(),
        "PUT replaces: externalId cleared"
    );
    assert_eq!(resource[ENTERPRISE], json!({"department": "Finance"}));
    assert_eq!(resource["meta"]["version"], "W/\"2\"");

    let patched = h.patch(&path, json!([
                {"op": "add", "path": "nickName", "value": "Patty"},
                {"op": "replace", "path": "name.familyName", "value": "Jones"},
                {"op": "add", "path": "emails", "value": [{"value": "pat@home.example", "type": "home"}]},
                {"op": "replace", "path": "emails[type eq \"home\"].value", "value": "patty@home.example"},
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Legal"},
                {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value", "value": "cfo"},
                {"op": "replace", "value": {"title": "Counsel"}},
                {"op": "remove", "path": "displayName"}
            ])).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let resource = patched.json();
    assert_eq!(resource["nickName"], "Patty");
    assert_eq!(resource["name"]["familyName"], "Jones");
    assert_eq!(resource["name"]["givenName"], "Patricia");
    assert_eq!(
        resource["emails"],
        json!([
            {"value": "pat@example.com", "type": "work", "primary": true},
            {"value": "patty@home.example", "type": "home"}
        ])
    );
    assert_eq!(resource[ENTERPRISE]["department"], "Legal");
    assert_eq!(resource[ENTERPRISE]["manager"]["value"], "cfo");
    assert_eq!(resource["title"], "Counsel");
    assert!(resource.get("displayName").is_none());
    // What a GET shows is what was written.
    assert_eq!(h.scim("GET", &path, None).await.json(), resource);

    // Errors: a read-only target, a bad path, no target, an unknown user.
    for (operations, scim_type) in [
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "emails[type", "value": "x"}]),
            "invalidPath",
        ),
        (json!([{"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "remove", "path": "userName"}]),
            "invalidValue",
        ),
    ] {
        let reply = h
            .scim("PATCH", &path, Some(patch(operations.clone())))
            .await;
        assert_eq!(reply.status, 400, "{operations}");
        assert_eq!(reply.json()["scimType"], scim_type, "{operations}");
    }
    let unknown = h
        .scim(
            "PATCH",
            "/Users/0190d1a0-0000-7000-8000-000000000000",
            Some(patch(json!([{"op": "add", "path": "title", "value": "x"}]))),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn deactivated_users_are_still_returned_and_delete_removes() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("gone@example.com")).await);
    let path = format!("/Users/{id}");
    h.patch(
        &path,
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    let fetched = h.scim("GET", &path, None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["active"], false);
    let deleted = h.scim("DELETE", &path, None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(h.scim("GET", &path, None).await.status, 404);
    assert_eq!(h.scim("DELETE", &path, None).await.status, 404);
}

#[tokio::test]
async fn entra_patch_replace_capitalised_with_string_booleans() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("entra@example.com")).await);
    let reply = h
        .scim(
            "PATCH",
            &format!("/Users/{id}"),
            Some(patch(
                json!([{"op": "Replace", "path": "active", "value": "False"}]),
            )),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["active"], false);
    let reply = h
        .scim(
            "PATCH",
            &format!("/Users/{id}"),
            Some(patch(
                json!([{"op": "Replace", "path": "active", "value": "True"}]),
            )),
        )
        .await;
    assert_eq!(reply.json()["active"], true);
}

#[tokio::test]
async fn entra_path_less_replace_with_dotted_and_urn_keys() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("dotted@example.com")).await);
    let reply = h
        .scim(
            "PATCH",
            &format!("/Users/{id}"),
            Some(patch(json!([{"op": "Replace", "value": {
                "name.givenName": "Gina",
                "name.familyName": "Ray",
                "displayName": "Gina Ray",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"costCenter": "CC-7"}
            }}]))),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let resource = reply.json();
    assert_eq!(
        resource["name"],
        json!({"givenName": "Gina", "familyName": "Ray"})
    );
    assert_eq!(resource["displayName"], "Gina Ray");
    assert_eq!(
        resource[ENTERPRISE],
        json!({"employeeNumber": "42", "costCenter": "CC-7"})
    );
    assert_eq!(
        resource["schemas"],
        json!([CORE_USER, ENTERPRISE]),
        "the extension's schema is listed once it has attributes"
    );
}

#[tokio::test]
async fn entra_add_on_a_missing_work_email_creates_it() {
    let h = Harness::start().await;
    let id = id_of(
        &h.create_user(json!({"schemas": [CORE_USER], "userName": "noemail-user"}))
            .await,
    );
    let reply = h
        .scim(
            "PATCH",
            &format!("/Users/{id}"),
            Some(patch(json!([{
                "op": "Add",
                "path": "emails[type eq \"work\"].value",
                "value": "created@example.com"
            }]))),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["emails"],
        json!([{"type": "work", "value": "created@example.com"}])
    );
    let stored = h
        .store
        .get_user(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.email.as_deref(), Some("created@example.com"));
}

#[tokio::test]
async fn entra_member_removal_by_value_list_removes_only_that_member() {
    let h = Harness::start().await;
    let a = id_of(&h.create_user(user("m1@example.com")).await);
    let b = id_of(&h.create_user(user("m2@example.com")).await);
    let c = id_of(&h.create_user(user("m3@example.com")).await);
    let group = h
        .scim(
            "POST",
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Team",
                "members": [{"value": a}, {"value": b}, {"value": c}]
            })),
        )
        .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let gid = id_of(&group.json());
    let reply = h
        .scim(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(patch(
                json!([{"op": "Remove", "path": "members", "value": [{"value": b}]}]),
            )),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let members: Vec<String> = reply.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = vec![a.clone(), c.clone()];
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(
        h.scim("GET", &format!("/Users/{b}"), None)
            .await
            .json()
            .get("groups"),
        None
    );
    assert_eq!(
        h.scim("GET", &format!("/Users/{a}"), None).await.json()["groups"][0]["display"],
        "Team"
    );
}

#[tokio::test]
async fn okta_deactivates_with_put_and_a_put_without_active_leaves_the_status() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("okta@example.com")).await);
    let path = format!("/Users/{id}");
    let mut body = user("okta@example.com");
    body["active"] = json!(false);
    let reply = h.scim("PUT", &path, Some(body)).await;
    assert_eq!(reply.json()["active"], false);
    // A PUT that omits `active` does not reactivate…
    let mut body = user("okta@example.com");
    body.as_object_mut().unwrap().remove("active");
    body["displayName"] = json!("Renamed");
    let reply = h.scim("PUT", &path, Some(body.clone())).await;
    assert_eq!(reply.json()["active"], false);
    assert_eq!(reply.json()["displayName"], "Renamed");
    // …nor deactivate an active user.
    let mut active = user("okta@example.com");
    active["active"] = json!(true);
    h.scim("PUT", &path, Some(active)).await;
    let reply = h.scim("PUT", &path, Some(body)).await;
    assert_eq!(reply.json()["active"], true);
}

#[tokio::test]
async fn okta_path_less_replace_deactivates() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("okta2@example.com")).await);
    let reply = h
        .scim(
            "PATCH",
            &format!("/Users/{id}"),
            Some(patch(
                json!([{"op": "replace", "value": {"active": false}}]),
            )),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["active"], false);
}

#[tokio::test]
async fn okta_password_and_empty_groups_in_create_are_ignored_never_stored() {
    let h = Harness::start().await;
    let mut body = user("pw@example.com");
    body["password"] = json!("Hunter2!Hunter2!");
    body["groups"] = json!([]);
    let reply = h.scim("POST", "/Users", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(!reply.body.contains("Hunter2"), "never echoed");
    let id = id_of(&reply.json());
    assert!(
        !h.scim("GET", &format!("/Users/{id}"), None)
            .await
            .body
            .contains("Hunter2")
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT scim_attributes FROM jit_users")
        .fetch_all(h.store.pool())
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|s| !s.contains("Hunter2") && !s.contains("password"))
    );
    let dump: Vec<String> = sqlx::query_scalar("SELECT * FROM jit_audit_events")
        .fetch_all(h.store.pool())
        .await
        .unwrap_or_default();
    assert!(dump.iter().all(|s| !s.contains("Hunter2")));
}

#[tokio::test]
async fn read_only_attributes_echoed_back_in_put_are_ignored() {
    let h = Harness::start().await;
    let created = h.create_user(user("echo@example.com")).await;
    let id = id_of(&created);
    let mut echoed = created.clone();
    echoed["id"] = json!("some-other-id");
    echoed["meta"]["version"] = json!("W/\"99\"");
    echoed["groups"] = json!([{"value": "made-up"}]);
    echoed["displayName"] = json!("Echo");
    let reply = h.scim("PUT", &format!("/Users/{id}"), Some(echoed)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let resource = reply.json();
    assert_eq!(resource["id"], id);
    assert_eq!(resource["displayName"], "Echo");
    assert!(resource.get("groups").is_none());
    assert_eq!(resource["meta"]["version"], "W/\"2\"");
}

#[tokio::test]
async fn discovery_endpoints_tell_the_truth() {
    let h = Harness::start().await;
    let config = h.scim("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(config.status, 200);
    let config = config.json();
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(config["filter"]["supported"], true);
    assert_eq!(config["bulk"]["supported"], false);
    assert_eq!(config["sort"]["supported"], true);
    assert_eq!(config["etag"]["supported"], true);
    assert_eq!(config["changePassword"]["supported"], false);
    assert_eq!(
        config["authenticationSchemes"][0]["type"],
        "oauthbearertoken"
    );

    let types = h.scim("GET", "/ResourceTypes", None).await.json();
    assert_eq!(types["totalResults"], 2);
    let user_type = h.scim("GET", "/ResourceTypes/User", None).await.json();
    assert_eq!(user_type["endpoint"], "/Users");
    assert_eq!(user_type["schemaExtensions"][0]["schema"], ENTERPRISE);
    let schemas = h.scim("GET", "/Schemas", None).await.json();
    assert_eq!(schemas["totalResults"], 3);
    let user_schema = h
        .scim("GET", &format!("/Schemas/{CORE_USER}"), None)
        .await
        .json();
    let attribute = |name: &str| {
        user_schema["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(attribute("userName")["uniqueness"], "server");
    assert_eq!(attribute("password")["returned"], "never");
    assert_eq!(attribute("groups")["mutability"], "readOnly");

    for (method, path, status) in [
        ("POST", "/ServiceProviderConfig", 405),
        ("DELETE", "/Schemas", 405),
        ("PUT", "/ResourceTypes", 405),
        ("PATCH", "/Users", 405),
        ("GET", "/.search", 405),
        ("POST", "/Bulk", 501),
        ("GET", "/Nope", 404),
    ] {
        let reply = h.scim(method, path, Some(json!({}))).await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(reply.header("content-type"), Some("application/scim+json"));
    }
}

#[tokio::test]
async fn group_membership_grants_the_same_roles_as_a_token_group() {
    let h = Harness::start().await;
    // Through SCIM.
    let scim_user = id_of(&h.create_user(user("viascim@example.com")).await);
    let group = h
        .scim(
            "POST",
            "/Groups",
            Some(json!({"displayName": "Admins", "members": [{"value": scim_user}]})),
        )
        .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let gid = id_of(&group.json());
    let resource = h
        .scim("GET", &format!("/Users/{scim_user}"), None)
        .await
        .json();
    assert_eq!(
        resource["roles"],
        json!([{"value": "admin"}, {"value": "member"}])
    );
    assert_eq!(resource["groups"][0]["value"], gid);
    // Through a token.
    let token = h
        .idp
        .id_token()
        .subject("viatoken")
        .groups(["Admins"])
        .sign();
    assert_eq!(
        h.me(&token).await.json()["roles"],
        json!(["admin", "member"])
    );

    // Removing the membership revokes the role; renaming the group follows.
    h.scim(
        "PATCH",
        &format!("/Groups/{gid}"),
        Some(patch(
            json!([{"op": "remove", "path": format!("members[value eq \"{scim_user}\"]")}]),
        )),
    )
    .await;
    let resource = h
        .scim("GET", &format!("/Users/{scim_user}"), None)
        .await
        .json();
    assert_eq!(resource["roles"], json!([{"value": "member"}]));
    let stored = h
        .store
        .get_user(scim_user.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.groups.is_empty());
    // Group filters and lookups.
    let found = h
        .scim("GET", "/Groups?filter=displayName+eq+%22admins%22", None)
        .await
        .json();
    assert_eq!(found["totalResults"], 1);
    let dup = h
        .scim("POST", "/Groups", Some(json!({"displayName": "ADMINS"})))
        .await;
    assert_eq!(dup.status, 409);
    let ghost = h
        .scim(
            "POST",
            "/Groups",
            Some(json!({"displayName": "Ghosts", "members": [{"value": "0190d1a0-0000-7000-8000-000000000000"}]})),
        )
        .await;
    // A member naming no user is dropped, not refused: the answer shows who was kept.
    assert_eq!(ghost.status, 201);
    assert_eq!(ghost.json()["members"], json!([]));
    assert_eq!(
        h.scim("DELETE", &format!("/Groups/{gid}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        h.scim("GET", &format!("/Groups/{gid}"), None).await.status,
        404
    );
}

#[tokio::test]
async fn a_scim_user_is_linked_on_first_login_by_external_id_never_duplicated() {
    let second = TestIssuer::start().await;
    let second_rules = second.issuer();
    let h = Harness::with(|b| {
        b.link_by_claim("oid")
            .link_by_claim_unused_only(true)
            .issuer(second_rules)
    })
    .await;
    let mut body = user("linked@example.com");
    body["externalId"] = json!("entra-object-id-1");
    let id = id_of(&h.create_user(body).await);
    let oid_token = |issuer: &TestIssuer, subject: &str| {
        issuer
            .id_token()
            .subject(subject)
            .claim("oid", "entra-object-id-1")
            .sign()
    };
    let me = h.me(&oid_token(&h.idp, "pairwise-subject")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["id"], id);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM jit_users")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(users, 1);

    // Someone signs in to it now: a token from another issuer with the same claim value is
    // another person, and gets an account of their own.
    let theirs = h.me(&oid_token(&second, "another-subject")).await;
    assert_eq!(theirs.status, 200, "{}", theirs.body);
    assert_ne!(theirs.json()["id"], id);
}

#[tokio::test]
async fn a_scim_user_is_linked_by_verified_email_against_user_name() {
    let h = Harness::with(|b| b.link_by_verified_email(true)).await;
    let id = id_of(
        &h.create_user(json!({"schemas": [CORE_USER], "userName": "kim@example.com"}))
            .await,
    );
    let unverified = h
        .idp
        .id_token()
        .subject("u1")
        .email("kim@example.com", false)
        .sign();
    assert_ne!(
        h.me(&unverified).await.json()["id"],
        id,
        "never by an unverified address"
    );
    let verified = h
        .idp
        .id_token()
        .subject("u2")
        .email("Kim@Example.com", true)
        .sign();
    assert_eq!(h.me(&verified).await.json()["id"], id);
}

#[tokio::test]
async fn a_jit_user_is_found_by_the_identity_providers_user_name_lookup() {
    let h = Harness::start().await;
    let token = h
        .idp
        .id_token()
        .subject("jit-first")
        .email("jit@example.com", true)
        .claim("given_name", "Jo")
        .claim("family_name", "Tee")
        .sign();
    let id = h.me(&token).await.json()["id"].as_str().unwrap().to_owned();
    let found = h
        .scim(
            "GET",
            "/Users?filter=userName+eq+%22jit%40example.com%22",
            None,
        )
        .await
        .json();
    assert_eq!(found["totalResults"], 1);
    let resource = &found["Resources"][0];
    assert_eq!(resource["id"], id);
    assert_eq!(
        resource["name"],
        json!({"givenName": "Jo", "familyName": "Tee"})
    );
    assert_eq!(resource["emails"][0]["value"], "jit@example.com");
}

#[tokio::test]
async fn attributes_scim_pushes_are_not_overwritten_by_a_later_login() {
    let h = Harness::with(|b| b.link_by_claim("oid")).await;
    let mut body = user("owned@example.com");
    body["externalId"] = json!("oid-7");
    body["displayName"] = json!("From SCIM");
    let id = id_of(&h.create_user(body).await);
    let token = h
        .idp
        .id_token()
        .subject("s7")
        .claim("oid", "oid-7")
        .claim("name", "From Token")
        .claim("locale", "de")
        .sign();
    let me = h.me(&token).await.json();
    assert_eq!(
        me["display_name"], "From SCIM",
        "SCIM set it: the login leaves it"
    );
    assert_eq!(me["id"], id);
    let stored = h
        .store
        .get_user(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.locale.as_deref(),
        Some("de"),
        "SCIM never set locale: synced"
    );

    // With `Override`, the token's value wins.
    let h = Harness::with(|b| {
        b.link_by_claim("oid")
            .mapping(mapping().sync(Field::DisplayName, SyncPolicy::Override))
    })
    .await;
    let mut body = user("owned@example.com");
    body["externalId"] = json!("oid-7");
    body["displayName"] = json!("From SCIM");
    h.create_user(body).await;
    let me = h.me(&token_for(&h.idp, "oid-7")).await.json();
    assert_eq!(me["display_name"], "From Token");
}

fn token_for(idp: &TestIssuer, oid: &str) -> String {
    idp.id_token()
        .subject("s-override")
        .claim("oid", oid)
        .claim("name", "From Token")
        .sign()
}

#[tokio::test]
async fn a_scim_deactivation_refuses_the_very_next_request_and_logins_never_undo_it() {
    for how in ["patch", "put", "delete"] {
        let h = Harness::start().await;
        let token = h
            .idp
            .id_token()
            .subject(format!("victim-{how}"))
            .email("v@example.com", true)
            .sign();
        let id = h.me(&token).await.json()["id"].as_str().unwrap().to_owned();
        let path = format!("/Users/{id}");
        let reply = match how {
            "patch" => {
                h.patch(
                    &path,
                    json!([{"op": "replace", "path": "active", "value": false}]),
                )
                .await
            }
            "put" => {
                let mut body = h.scim("GET", &path, None).await.json();
                body["active"] = json!(false);
                h.scim("PUT", &path, Some(body)).await
            }
            _ => h.scim("DELETE", &path, None).await,
        };
        assert!(
            reply.status == 200 || reply.status == 204,
            "{how}: {}",
            reply.body
        );
        // The token and the account are cached: the next request is refused all the same.
        let refused = h.me(&token).await;
        assert_eq!(refused.status, 403, "{how}");
        let fresh = h.idp.id_token().subject(format!("victim-{how}")).sign();
        assert_eq!(
            h.me(&fresh).await.status,
            403,
            "{how}: a new login does not undo it"
        );
    }
}

#[tokio::test]
async fn reactivate_on_login_is_the_only_way_back() {
    let h = Harness::with(|b| b.reactivate_on_login(true)).await;
    let token = h.idp.id_token().subject("back").sign();
    let id = h.me(&token).await.json()["id"].as_str().unwrap().to_owned();
    h.scim(
        "PATCH",
        &format!("/Users/{id}"),
        Some(patch(
            json!([{"op": "replace", "path": "active", "value": false}]),
        )),
    )
    .await;
    assert_eq!(h.me(&token).await.status, 200);
}

#[tokio::test]
async fn scim_changes_are_audited_with_the_client_as_actor() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("audited@example.com")).await);
    let path = format!("/Users/{id}");
    h.patch(&path, json!([{"op": "add", "path": "title", "value": "x"}]))
        .await;
    h.patch(
        &path,
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    h.patch(
        &path,
        json!([{"op": "replace", "path": "active", "value": true}]),
    )
    .await;
    h.scim("DELETE", &path, None).await;
    let events = h
        .store
        .audit_events(Some(id.parse().unwrap()))
        .await
        .unwrap();
    let kinds: Vec<AuditKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::Provisioned,
            AuditKind::Updated,
            AuditKind::Deactivated,
            AuditKind::Reactivated,
            AuditKind::Deleted
        ]
    );
    assert!(events.iter().all(|e| e.actor == Actor::Scim("okta".into())));
    assert!(events[1].fields.contains(&"scim_attributes".to_owned()));
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn a_scim_deactivation_reaches_every_server_sharing_a_postgres_store() {
    let db = common::PgDatabase::create("a_scim_deactivation_reaches_every_server").await;
    let idp = TestIssuer::start().await;
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store = db.store().await;
        let layer = ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .store(store.clone())
            .build()
            .unwrap();
        let scim = Scim::new(store.clone())
            .bearer_token("okta", SECRET)
            .router()
            .unwrap();
        let started = std::time::Instant::now();
        while !store.is_listening() {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        servers.push(Server::start(user_app(layer).nest("/scim/v2", scim)).await);
    }
    let http = reqwest::Client::new();
    let token = idp.id_token().subject("pg-victim").sign();
    let id = get_with(&http, &servers[0].url("/me"), Some(&token))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get_with(&http, &servers[1].url("/me"), Some(&token))
            .await
            .status,
        200
    );
    let reply = http
        .patch(servers[0].url(&format!("/scim/v2/Users/{id}")))
        .bearer_auth(SECRET)
        .header("content-type", "application/scim+json")
        .body(patch(json!([{"op": "replace", "path": "active", "value": false}])).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let started = std::time::Instant::now();
    for server in &servers {
        loop {
            let status = get_with(&http, &server.url("/me"), Some(&token))
                .await
                .status;
            if status == 403 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a server never heard"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    println!(
        "SCIM deactivation refused on both servers after {:?}",
        started.elapsed()
    );
}

/// Every attribute of `resource` (and of its extensions, and their sub-attributes) is one the
/// endpoint's own `/Schemas` declares, spelled as declared; `schemas` lists exactly the
/// extensions present.
async fn assert_declared(h: &Harness, resource: &Value) {
    let schemas = h.scim("GET", "/Schemas", None).await.json();
    let declared = |id: &str| -> Vec<(String, Vec<String>)> {
        schemas["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} is published"))["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let subs = a["subAttributes"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .map(|s| s["name"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                (a["name"].as_str().unwrap().to_owned(), subs)
            })
            .collect()
    };
    let check = |object: &serde_json::Map<String, Value>, schema: &str, skip: &[&str]| {
        let attributes = declared(schema);
        for (key, value) in object {
            if skip.contains(&key.as_str()) {
                continue;
            }
            let (_, subs) = attributes
                .iter()
                .find(|(name, _)| name == key)
                .unwrap_or_else(|| panic!("{key} is not declared by {schema}: {resource}"));
            let items: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                if let Value::Object(fields) = item {
                    for sub in fields.keys() {
                        assert!(
                            subs.contains(sub),
                            "{key}.{sub} is not declared: {resource}"
                        );
                    }
                }
            }
        }
    };
    let object = resource.as_object().unwrap();
    check(
        object,
        CORE_USER,
        &["schemas", "id", "externalId", "meta", ENTERPRISE],
    );
    let listed: Vec<&str> = resource["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    match object.get(ENTERPRISE) {
        Some(Value::Object(extension)) => {
            check(extension, ENTERPRISE, &[]);
            assert_eq!(listed, [CORE_USER, ENTERPRISE]);
        }
        _ => assert_eq!(listed, [CORE_USER], "{resource}"),
    }
}

#[tokio::test]
async fn the_enterprise_extension_patched_in_every_shape_answers_a_declared_resource() {
    let h = Harness::start().await;
    let id = id_of(&h.create_user(user("ext@example.com")).await);
    let path = format!("/Users/{id}");
    let fields = [
        "employeeNumber",
        "costCenter",
        "organization",
        "division",
        "department",
    ];
    for op in ["add", "replace"] {
        for (n, field) in fields.iter().enumerate() {
            let value = format!("{op}-{n}");
            for operation in [
                json!({"op": op, "path": format!("{ENTERPRISE}:{field}"), "value": value}),
                json!({"op": op, "value": {format!("{ENTERPRISE}:{field}"): value}}),
                json!({"op": op, "value": {ENTERPRISE: {*field: value}}}),
                json!({"op": op, "path": ENTERPRISE, "value": {*field: value}}),
            ] {
                let reply = h.patch(&path, json!([operation])).await;
                assert_eq!(reply.status, 200, "{operation}: {}", reply.body);
                let resource = reply.json();
                assert_eq!(resource[ENTERPRISE][*field], value, "{operation}");
                assert_declared(&h, &resource).await;
                assert_eq!(h.scim("GET", &path, None).await.json(), resource);
            }
        }
        for operation in [
            json!({"op": op, "path": format!("{ENTERPRISE}:manager.value"), "value": "m1"}),
            json!({"op": op, "path": format!("{ENTERPRISE}:manager"), "value": {"value": "m1"}}),
            json!({"op": op, "path": ENTERPRISE, "value": {"manager": {"value": "m1"}}}),
        ] {
            let reply = h.patch(&path, json!([operation])).await;
            assert_eq!(reply.status, 200, "{operation}: {}", reply.body);
            assert_eq!(reply.json()[ENTERPRISE]["manager"]["value"], "m1");
            assert_declared(&h, &reply.json()).await;
        }
    }
    // The whole extension removed by its URN: gone, and gone from `schemas`.
    let removed = h
        .patch(&path, json!([{"op": "remove", "path": ENTERPRISE}]))
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert!(removed.json().get(ENTERPRISE).is_none());
    assert_declared(&h, &removed.json()).await;
    // Undeclared attributes, a look-alike URN and a custom extension are not kept.
    let mut body = user("undeclared@example.com");
    body["favouriteColour"] = json!("blue");
    body["urn:ietf:params:scim:schemas:extension:enterprise:2.0"] = json!({"User": {}});
    body["urn:example:custom:2.0:User"] = json!({"shoeSize": 44});
    body["NICKNAME"] = json!("Und");
    let created = h.create_user(body).await;
    assert_eq!(created["nickName"], "Und");
    assert_declared(&h, &created).await;
}

#[tokio::test]
async fn multi_valued_attributes_round_trip_every_sub_attribute_with_one_primary() {
    let h = Harness::start().await;
    let mut body = user("multi@example.com");
    let all = json!({
        "emails": [{"value": "multi@example.com", "display": "Work", "type": "work", "primary": true},
                   {"value": "m@home.example", "display": "Home", "type": "home", "primary": false}],
        "phoneNumbers": [{"value": "+1 555 0100", "display": "desk", "type": "work", "primary": true}],
        "ims": [{"value": "multi", "display": "chat", "type": "xmpp", "primary": true}],
        "photos": [{"value": "https://example.com/p.png", "display": "me", "type": "photo", "primary": true}],
        "addresses": [{"formatted": "1 Main St", "streetAddress": "1 Main St", "locality": "Town",
                       "region": "R", "postalCode": "1", "country": "US", "type": "work", "primary": true}],
        "entitlements": [{"value": "e1", "display": "E1", "type": "license", "primary": true}],
        "roles": [{"value": "editor", "display": "Editor", "type": "app", "primary": true},
                  {"value": "viewer", "display": "Viewer", "type": "app", "primary": false}],
        "x509Certificates": [{"value": "MIIB", "display": "cert", "type": "signing", "primary": true}]
    });
    for (key, value) in all.as_object().unwrap() {
        body[key] = value.clone();
    }
    let created = h.create_user(body).await;
    let path = format!("/Users/{}", id_of(&created));
    for (key, value) in all.as_object().unwrap() {
        let mut got = created[key].as_array().unwrap().clone();
        if key == "roles" {
            // Roles also list the default role the mapping grants; SCIM's come with their
            // sub-attributes.
            got.retain(|r| r["value"] != "member");
        }
        assert_eq!(&Value::Array(got), value, "{key}");
    }
    assert_declared(&h, &created).await;

    // A second primary in one request is refused, whole.
    let mut two = user("two@example.com");
    two["phoneNumbers"] = json!([{"value": "1", "primary": true}, {"value": "2", "primary": true}]);
    let refused = h.scim("POST", "/Users", Some(two)).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["scimType"], "invalidValue");

    // A value added as primary takes the mark from the others (RFC 7644 §3.5.2).
    for operation in [
        json!({"op": "add", "path": "roles", "value": [{"value": "owner", "primary": true}]}),
        json!({"op": "add", "path": "emails", "value": [{"value": "new@example.com", "type": "other", "primary": true}]}),
        json!({"op": "replace", "path": "phoneNumbers[type eq \"home\"]", "value": {"value": "+1 555 0199", "primary": true}}),
        json!({"op": "replace", "path": "roles[value eq \"viewer\"].primary", "value": true}),
    ] {
        let reply = h.patch(&path, json!([operation])).await;
        assert_eq!(reply.status, 200, "{operation}: {}", reply.body);
        let resource = reply.json();
        for key in ["roles", "emails", "phoneNumbers"] {
            let primaries = resource[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["primary"] == true)
                .count();
            assert_eq!(primaries, 1, "{operation}: {key} {resource}");
        }
    }
    let resource = h.scim("GET", &path, None).await.json();
    let viewer = resource["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["value"] == "viewer")
        .unwrap()
        .clone();
    assert_eq!(
        viewer,
        json!({"value": "viewer", "display": "Viewer", "type": "app", "primary": true})
    );

    // Removing roles removes SCIM's grants; the mapping's default role stays.
    let reply = h
        .patch(&path, json!([{"op": "remove", "path": "roles"}]))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["roles"], json!([{"value": "member"}]));
}

#[tokio::test]
async fn removing_active_returns_it_to_its_default_until_a_client_sets_it() {
    let h = Harness::start().await;
    let mut body = user("inactive@example.com");
    body["active"] = json!(false);
    let id = id_of(&h.create_user(body).await);
    let path = format!("/Users/{id}");
    let removed = h
        .patch(&path, json!([{"op": "remove", "path": "active"}]))
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert!(removed.json().get("active").is_none(), "{}", removed.body);
    let stored = h
        .store
        .get_user(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, tower_jit_provisioning::UserStatus::Active);
    // Other changes leave it unasserted.
    let renamed = h
        .patch(
            &path,
            json!([{"op": "replace", "path": "displayName", "value": "In"}]),
        )
        .await
        .json();
    assert!(renamed.get("active").is_none(), "{renamed}");
    // Set again, it shows again; false deactivates as ever.
    let set = h
        .patch(
            &path,
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await
        .json();
    assert_eq!(set["active"], false);
    assert_eq!(h.scim("GET", &path, None).await.json()["active"], false);
}

#[tokio::test]
async fn group_members_naming_no_user_are_dropped_by_every_write() {
    let h = Harness::start().await;
    let real = id_of(&h.create_user(user("member@example.com")).await);
    let ghost = "0190d1a0-0000-7000-8000-000000000000";
    let members = json!([{"value": real}, {"value": ghost}, {"value": "fake-member-id"}]);
    let kept = json!([real]);
    let ids = |group: &Value| -> Value {
        Value::Array(
            group["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["value"].clone())
                .collect(),
        )
    };
    let created = h
        .scim(
            "POST",
            "/Groups",
            Some(json!({"displayName": "g1", "members": members})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(ids(&created.json()), kept);
    let path = format!("/Groups/{}", id_of(&created.json()));
    let put = h
        .scim(
            "PUT",
            &path,
            Some(json!({"displayName": "g1", "members": members})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(ids(&put.json()), kept);
    for operation in [
        json!({"op": "add", "path": "members", "value": [{"value": "fake-member-id"}]}),
        json!({"op": "add", "path": "members", "value": [{"value": ghost}]}),
        json!({"op": "replace", "path": "members", "value": members}),
    ] {
        let reply = h.patch(&path, json!([operation])).await;
        assert_eq!(reply.status, 200, "{operation}: {}", reply.body);
        assert_eq!(ids(&reply.json()), kept, "{operation}");
    }
    // A PUT on a group that does not exist is a 404, whatever its members.
    let missing = h
        .scim(
            "PUT",
            &format!("/Groups/{ghost}"),
            Some(json!({"displayName": "x", "members": members})),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
}

/// Requests in the shapes Entra ID, Okta, OneLogin and JumpCloud document sending, replayed in
/// order against one user and one group: each is accepted and has its effect.
#[tokio::test]
async fn requests_shaped_as_real_clients_send_them_are_accepted() {
    let h = Harness::start().await;
    let user_id = id_of(&h.create_user(user("replay@example.com")).await);
    let other = id_of(&h.create_user(user("replay2@example.com")).await);
    let group = h
        .scim(
            "POST",
            "/Groups",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Replay"})),
        )
        .await
        .json();
    let group_id = id_of(&group);
    let u = format!("/Users/{user_id}");
    let g = format!("/Groups/{group_id}");
    let steps: Vec<(&str, &str, String, Value)> = vec![
        // Entra ID: capitalised ops, string booleans, enterprise attributes by URN path.
        (
            "entra",
            "PATCH",
            u.clone(),
            patch(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "E-1"},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": other},
            ])),
        ),
        (
            "entra",
            "PATCH",
            g.clone(),
            patch(json!([
                {"op": "Add", "path": "members", "value": [{"value": user_id}]}
            ])),
        ),
        // Okta: path-less replace repeating the read-only id, meta and schemas.
        (
            "okta",
            "PATCH",
            g.clone(),
            patch(json!([
                {"op": "replace", "value": {"id": group_id, "displayName": "Replay Renamed",
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "meta": {"resourceType": "Group"}}}
            ])),
        ),
        (
            "okta",
            "PATCH",
            u.clone(),
            patch(json!([
                {"op": "replace", "value": {"active": true}}
            ])),
        ),
        // OneLogin: membership changes by value lists; a user PUT with the extension.
        (
            "onelogin",
            "PATCH",
            g.clone(),
            patch(json!([
                {"op": "add", "path": "members", "value": [{"value": other}]},
                {"op": "remove", "path": "members", "value": [{"value": other}]}
            ])),
        ),
        (
            "onelogin",
            "PUT",
            u.clone(),
            json!({
                "schemas": [CORE_USER, ENTERPRISE],
                "id": user_id,
                "userName": "replay@example.com",
                "name": {"givenName": "Re", "familyName": "Play"},
                "emails": [{"value": "replay@example.com", "primary": true, "type": "work"}],
                "active": true,
                ENTERPRISE: {"department": "Sales", "manager": {"value": other}}
            }),
        ),
        // JumpCloud: roles by filter on primary; phone numbers replaced whole.
        (
            "jumpcloud",
            "PATCH",
            u.clone(),
            patch(json!([
                {"op": "add", "path": "roles", "value": [{"value": "agent", "type": "app", "primary": true}]},
                {"op": "replace", "path": "roles[primary eq true].value", "value": "supervisor"},
                {"op": "replace", "path": "phoneNumbers", "value": [{"value": "+1 555 0101", "type": "work"}]}
            ])),
        ),
    ];
    for (client, method, path, body) in steps {
        let reply = h.scim(method, &path, Some(body.clone())).await;
        assert!(
            (200..300).contains(&reply.status),
            "{client} {method} {path} {body}: {} {}",
            reply.status,
            reply.body
        );
    }
    let user = h.scim("GET", &u, None).await.json();
    assert_eq!(user["active"], true);
    assert_eq!(user[ENTERPRISE]["department"], "Sales");
    assert_eq!(user[ENTERPRISE]["manager"]["value"], other);
    assert!(
        user["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["value"] == "supervisor" && r["primary"] == true),
        "{user}"
    );
    assert_declared(&h, &user).await;
    let group = h.scim("GET", &g, None).await.json();
    assert_eq!(group["displayName"], "Replay Renamed");
    assert_eq!(group["id"], group_id);
    let members: Vec<&Value> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["value"])
        .collect();
    assert_eq!(members, [&json!(user_id)]);
}

impl Harness {
    /// A SCIM request with extra headers.
    async fn scim_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(
                method.parse().unwrap(),
                self.server.url(&format!("/scim/v2{path}")),
            )
            .bearer_auth(SECRET);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        reply(request.send().await.unwrap()).await
    }
}

/// What `/ServiceProviderConfig` and `/ResourceTypes` claim is what the endpoint does: each
/// feature said to be supported works, each said not to be is refused as RFC 7644 says.
#[tokio::test]
async fn every_feature_discovery_claims_behaves_as_claimed() {
    let h = Harness::start().await;
    let config = h.scim("GET", "/ServiceProviderConfig", None).await.json();
    let supported = |feature: &str| config[feature]["supported"].as_bool().unwrap();
    let mut ids = Vec::new();
    for name in ["carol@example.com", "alice@example.com", "bob@example.com"] {
        ids.push(id_of(&h.create_user(user(name)).await));
    }
    let path = format!("/Users/{}", ids[0]);

    // patch
    let patched = h
        .patch(
            &path,
            json!([{"op": "replace", "path": "title", "value": "T"}]),
        )
        .await;
    assert_eq!(patched.status, if supported("patch") { 200 } else { 501 });

    // bulk
    let bulk = h
        .scim(
            "POST",
            "/Bulk",
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": []})),
        )
        .await;
    if supported("bulk") {
        assert_eq!(bulk.status, 200);
    } else {
        assert_eq!(bulk.status, 501, "{}", bulk.body);
        assert_eq!(config["bulk"]["maxOperations"], 0);
    }

    // filter, and maxResults as the page bound
    assert!(supported("filter"));
    let found = h
        .scim(
            "GET",
            "/Users?filter=userName+eq+%22bob%40example.com%22",
            None,
        )
        .await
        .json();
    assert_eq!(found["totalResults"], 1);
    let max = config["filter"]["maxResults"].as_u64().unwrap();
    let page = h
        .scim("GET", &format!("/Users?count={}", max + 1), None)
        .await
        .json();
    assert!(page["itemsPerPage"].as_u64().unwrap() <= max);
    let two = h.scim("GET", "/Users?count=2", None).await.json();
    assert_eq!(two["itemsPerPage"], 2);
    assert_eq!(two["totalResults"], 3);

    // sort
    let names = |list: &Value| -> Vec<String> {
        list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["userName"].as_str().unwrap().to_owned())
            .collect()
    };
    let ascending = h.scim("GET", "/Users?sortBy=userName", None).await;
    let descending = h
        .scim("GET", "/Users?sortBy=userName&sortOrder=descending", None)
        .await;
    if supported("sort") {
        assert_eq!(
            names(&ascending.json()),
            ["alice@example.com", "bob@example.com", "carol@example.com"]
        );
        assert_eq!(
            names(&descending.json()),
            ["carol@example.com", "bob@example.com", "alice@example.com"]
        );
        let searched = h
            .scim(
                "POST",
                "/Users/.search",
                Some(json!({"sortBy": "emails", "sortOrder": "descending", "count": 1})),
            )
            .await
            .json();
        assert_eq!(names(&searched), ["carol@example.com"]);
        let bad = h
            .scim("GET", "/Users?sortBy=userName&sortOrder=up", None)
            .await;
        assert_eq!(bad.status, 400);
    }

    // etag
    let read = h.scim("GET", &path, None).await;
    let version = read.json()["meta"]["version"].as_str().unwrap().to_owned();
    if supported("etag") {
        assert_eq!(read.header("etag"), Some(version.as_str()));
        let unchanged = h
            .scim_with("GET", &path, &[("if-none-match", &version)], None)
            .await;
        assert_eq!(unchanged.status, 304);
        let stale = "W/\"1\"";
        assert_ne!(version, stale);
        let title = |t: &str| {
            Some(patch(
                json!([{"op": "replace", "path": "title", "value": t}]),
            ))
        };
        let refused = h
            .scim_with("PATCH", &path, &[("if-match", stale)], title("stale"))
            .await;
        assert_eq!(refused.status, 412, "{}", refused.body);
        let mut body = user("carol@example.com");
        body["title"] = json!("stale");
        let refused = h
            .scim_with("PUT", &path, &[("if-match", stale)], Some(body))
            .await;
        assert_eq!(refused.status, 412);
        let refused = h
            .scim_with("DELETE", &path, &[("if-match", stale)], None)
            .await;
        assert_eq!(refused.status, 412);
        assert_ne!(
            h.scim("GET", &path, None).await.json()["title"],
            "stale",
            "nothing written"
        );
        let accepted = h
            .scim_with("PATCH", &path, &[("if-match", &version)], title("fresh"))
            .await;
        assert_eq!(accepted.status, 200, "{}", accepted.body);
        assert_ne!(accepted.header("etag"), Some(version.as_str()));
        let group = h
            .scim("POST", "/Groups", Some(json!({"displayName": "etagged"})))
            .await;
        let group_path = format!("/Groups/{}", id_of(&group.json()));
        let refused = h
            .scim_with(
                "PUT",
                &group_path,
                &[("if-match", "W/\"99\"")],
                Some(json!({"displayName": "renamed"})),
            )
            .await;
        assert_eq!(refused.status, 412);
        let gone = h
            .scim_with(
                "DELETE",
                &group_path,
                &[("if-match", group.header("etag").unwrap())],
                None,
            )
            .await;
        assert_eq!(gone.status, 204);
    } else {
        assert!(read.header("etag").is_none());
    }

    // Resource types: each endpoint answers, each extension is a published schema.
    let types = h.scim("GET", "/ResourceTypes", None).await.json();
    let schemas = h.scim("GET", "/Schemas", None).await.json();
    let published: Vec<&str> = schemas["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for resource_type in types["Resources"].as_array().unwrap() {
        let endpoint = resource_type["endpoint"].as_str().unwrap();
        assert_eq!(
            h.scim("GET", endpoint, None).await.status,
            200,
            "{endpoint}"
        );
        assert!(published.contains(&resource_type["schema"].as_str().unwrap()));
        for extension in resource_type["schemaExtensions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(published.contains(&extension["schema"].as_str().unwrap()));
        }
    }
}

/// `POST /.search` at the root searches users and groups in one list (RFC 7644 §3.4.3).
#[tokio::test]
async fn a_root_search_finds_users_and_groups_alike() {
    let h = Harness::start().await;
    let mut body = user("shared@example.com");
    body["displayName"] = json!("Shared Name");
    let user_id = id_of(&h.create_user(body).await);
    h.create_user(user("other@example.com")).await;
    let group = h
        .scim(
            "POST",
            "/Groups",
            Some(json!({"displayName": "Shared Name"})),
        )
        .await
        .json();
    h.scim("POST", "/Groups", Some(json!({"displayName": "Another"})))
        .await;
    let found = h
        .scim(
            "POST",
            "/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "displayName eq \"Shared Name\"",
                "attributes": ["displayName"]
            })),
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.body);
    let found = found.json();
    assert_eq!(found["totalResults"], 2);
    let kinds: Vec<(&str, &str)> = found["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["displayName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (user_id.as_str(), "Shared Name"),
            (group["id"].as_str().unwrap(), "Shared Name")
        ]
    );
    let page = h
        .scim(
            "POST",
            "/.search",
            Some(json!({"count": 1, "startIndex": 4})),
        )
        .await
        .json();
    assert_eq!(page["totalResults"], 4);
    assert_eq!(page["itemsPerPage"], 1);
}
