//! A throwaway vhost with `broker/definitions.json` imported (its users renamed), and the
//! management-API views of it the test reads.

use crate::helpers::{mgmt, mgmt_get};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// The placeholder passwords `broker/hash-password.py` documents for the shipped hashes.
pub(super) fn placeholder_password(role: &str) -> String {
    format!("change-me-{role}")
}

/// A vhost and users imported from `broker/definitions.json`; deleted on drop, also when the
/// test fails.
pub(super) struct Sandbox {
    pub(super) vhost: String,
    pub(super) suffix: String,
    users: Vec<String>,
}

impl Sandbox {
    /// Imports the definitions with vhost `lanes` renamed to a fresh one and every user
    /// `lanes-<role>` to `lanes-<role>-<suffix>`; the password hashes stay as shipped.
    pub(super) async fn import(http: &reqwest::Client) -> Sandbox {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/broker/definitions.json"
        ))
        .unwrap();
        let mut defs: Value = serde_json::from_str(&text).unwrap();
        let suffix = Uuid::new_v4().simple().to_string()[..8].to_owned();
        let vhost = format!("lanes-test-{suffix}");
        let user = |name: &str| format!("{name}-{suffix}");
        let mut users = Vec::new();
        for u in defs["users"].as_array_mut().unwrap() {
            let name = user(u["name"].as_str().unwrap());
            users.push(name.clone());
            u["name"] = json!(name);
        }
        let sandbox = Sandbox {
            vhost: vhost.clone(),
            suffix: suffix.clone(),
            users,
        };
        for v in defs["vhosts"].as_array_mut().unwrap() {
            assert_eq!(v["name"], "lanes");
            v["name"] = json!(vhost);
        }
        for section in [
            "permissions",
            "topic_permissions",
            "policies",
            "parameters",
            "queues",
            "exchanges",
            "bindings",
        ] {
            let items = defs.get_mut(section).and_then(Value::as_array_mut);
            for item in items.into_iter().flatten() {
                if item["vhost"] == "lanes" {
                    item["vhost"] = json!(vhost);
                }
                if let Some(name) = item["user"].as_str() {
                    item["user"] = json!(user(name));
                }
            }
        }
        let resp = mgmt(http, Method::POST, "/definitions")
            .json(&defs)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            status.is_success(),
            "importing definitions: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        sandbox
    }

    pub(super) fn url(&self, role: &str) -> String {
        format!(
            "amqp://lanes-{role}-{}:{}@127.0.0.1:5672/{}",
            self.suffix,
            placeholder_password(role),
            self.vhost
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let (vhost, users) = (self.vhost.clone(), self.users.clone());
        crate::helpers::block_on_in_drop(async move {
            let http = reqwest::Client::new();
            let _ = mgmt(&http, Method::DELETE, &format!("/vhosts/{vhost}"))
                .send()
                .await;
            for u in users {
                let _ = mgmt(&http, Method::DELETE, &format!("/users/{u}"))
                    .send()
                    .await;
            }
        });
    }
}

/// A management API request as one of the sandbox's users.
pub(super) fn mgmt_as(
    http: &reqwest::Client,
    method: Method,
    path: &str,
    sandbox: &Sandbox,
    role: &str,
) -> reqwest::RequestBuilder {
    http.request(method, format!("http://127.0.0.1:15672/api{path}"))
        .basic_auth(
            format!("lanes-{role}-{}", sandbox.suffix),
            Some(placeholder_password(role)),
        )
}

pub(super) fn encode(s: &str) -> String {
    s.replace(':', "%3A")
        .replace(' ', "%20")
        .replace('>', "%3E")
}

/// The name of the server's control-plane connection in the vhost.
pub(super) async fn server_connection(http: &reqwest::Client, vhost: &str) -> String {
    let conns = mgmt_get(http, &format!("/vhosts/{vhost}/connections")).await;
    conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["client_properties"]["connection_name"]
                .as_str()
                .is_some_and(|n| n.starts_with("lanes-server-"))
        })
        .and_then(|c| c["name"].as_str())
        .expect("the server's connection")
        .to_owned()
}

/// How many open worker connections the vhost has (a fenced connection of a stopped process
/// stays listed as `closed` while its socket lingers).
pub(super) async fn worker_connections(http: &reqwest::Client, vhost: &str) -> usize {
    let conns = mgmt_get(http, &format!("/vhosts/{vhost}/connections")).await;
    conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["state"] != "closed"
                && c["client_properties"]["connection_name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("lanes-worker-"))
        })
        .count()
}
