//! `scim-connector`: provisions SCIM 2.0 services (RFC 7643, 7644) over wasi:http.
//!
//! - added → `POST /Users` (`externalId` is the owner's key; attributes mapped, see
//!   `mapping.rs`); a 409 on an `externalId` that already exists is an earlier attempt of the
//!   same order: its user is taken as the result;
//! - modified → `PATCH /Users/{id}` replacing only the changed attributes, removing cleared ones;
//! - deleted → `DELETE /Users/{id}` (404: already gone), or `PATCH active=false` for the
//!   resource types in `deactivate`;
//! - entitlements are group memberships by group displayName: one `PATCH /Groups/{id}` per
//!   group and batch, adding and removing members;
//! - `read` lists `/Users` page by page (startIndex, count) with their groups, so the host
//!   verifies orders and sees drift; deactivated users count as absent;
//! - 4xx other than 408/429 → permanent error with the server's SCIM `detail`; 408, 429, 5xx and
//!   network errors → transient, with the server's Retry-After;
//! - with `bulk = "auto"` (the default) and a batch of more than one order, user operations go
//!   in one `POST /Bulk` when the server advertises bulk support.
//!
//! Config: `base-url` (granted to the plugin in `grants.http`), `token` (a secret), `attributes`
//! (the host attributes it manages and reads back, comma-separated; default `userName`),
//! `map.ATTRIBUTE = "SCIM path"`, `deactivate` (resource types), `bulk` (`auto` or `never`),
//! `create-groups` (`true` creates a missing group instead of failing), `managed-groups` (the
//! groups it reads back; default all), `page-size` (default 100).

wit_bindgen::generate!({ path: "../../wit", world: "synchronising-connector" });

mod client;
mod mapping;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use wstd::http::Method;

use client::{Scim, permanent};
use exports::provision::plugin::fulfil::{self, Failure, Outcome};
use exports::provision::plugin::read::{self, ManagedResource, Page};
use provision::plugin::config;
use provision::plugin::types::{Attribute, ChangeKind, Order};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

/// The plugin's config.
pub struct Config {
    base_url: String,
    token: Option<String>,
    attributes: Vec<String>,
    map: BTreeMap<String, String>,
    deactivate: Vec<String>,
    bulk: bool,
    create_groups: bool,
    managed_groups: Option<Vec<String>>,
    page_size: usize,
}

fn list(text: &str) -> Vec<String> {
    text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

impl Config {
    fn load() -> Result<Config, String> {
        let base_url = config::get("base-url").ok_or("config key `base-url` is required")?;
        let bulk = match config::get("bulk").as_deref() {
            None | Some("auto") => true,
            Some("never") => false,
            Some(other) => return Err(format!("config key `bulk`: `{other}` is not auto or never")),
        };
        let page_size = match config::get("page-size") {
            None => 100,
            Some(n) => {
                n.parse::<usize>().ok().filter(|n| *n > 0).ok_or("config key `page-size` must be a positive number")?
            }
        };
        let map = config::entries()
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("map.").map(|a| (a.to_string(), v)))
            .collect();
        Ok(Config {
            base_url,
            token: config::get("token"),
            attributes: list(&config::get("attributes").unwrap_or_else(|| "userName".into())),
            map,
            deactivate: list(&config::get("deactivate").unwrap_or_default()),
            bulk,
            create_groups: config::get("create-groups").as_deref() == Some("true"),
            managed_groups: config::get("managed-groups").map(|g| list(&g)),
            page_size,
        })
    }
}

struct ScimConnector;

/// The User a created order describes.
fn new_user(config: &Config, order: &Order) -> Value {
    let mut user = Map::new();
    user.insert("schemas".into(), json!([USER]));
    user.insert("externalId".into(), Value::String(order.owner.clone()));
    for Attribute { name, value } in &order.attributes {
        mapping::set(&mut user, &mapping::path(config, name), value);
    }
    user.entry("userName").or_insert_with(|| Value::String(order.owner.clone()));
    Value::Object(user)
}

/// The PATCH of a modified order: only what changes.
fn patch(config: &Config, order: &Order) -> Option<Value> {
    let mut operations: Vec<Value> = order
        .attributes
        .iter()
        .map(|Attribute { name, value }| {
            let path = mapping::path(config, name);
            json!({ "op": "replace", "path": path, "value": mapping::to_json(&path, value) })
        })
        .collect();
    operations.extend(
        order.attributes_cleared.iter().map(|name| json!({ "op": "remove", "path": mapping::path(config, name) })),
    );
    (!operations.is_empty()).then(|| json!({ "schemas": [PATCH_OP], "Operations": operations }))
}

fn deactivates(config: &Config, order: &Order) -> bool {
    config.deactivate.contains(&order.resource_type)
}

/// One order's user-level request, once its user id is known.
enum Step {
    Create(Value),
    Patch(String, Value),
    Delete(String),
    /// Nothing to send for the user itself (only group changes, or already gone).
    Done(Option<String>),
}

async fn plan(scim: &Scim, config: &Config, order: &Order) -> Result<Step, Failure> {
    let id = match (&order.change, &order.resource_id) {
        (ChangeKind::Added, _) => return Ok(Step::Create(new_user(config, order))),
        (_, Some(id)) => Some(id.clone()),
        (_, None) => scim.user_by_owner(&order.owner).await?,
    };
    match order.change {
        ChangeKind::Deleted => Ok(match id {
            None => Step::Done(None),
            Some(id) if deactivates(config, order) => {
                let body = json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "replace", "path": "active", "value": false }] });
                Step::Patch(id, body)
            }
            Some(id) => Step::Delete(id),
        }),
        _ => {
            let id = id.ok_or_else(|| permanent(format!("no user with externalId `{}` to change", order.owner)))?;
            Ok(match patch(config, order) {
                Some(body) => Step::Patch(id, body),
                None => Step::Done(Some(id)),
            })
        }
    }
}

/// Carries out one step alone.
async fn run(scim: &Scim, order: &Order, step: Step) -> Result<Option<String>, Failure> {
    match step {
        Step::Done(id) => Ok(id),
        Step::Delete(id) => {
            scim.call_allowing(Method::DELETE, &format!("/Users/{id}"), None, &[404]).await?;
            Ok(Some(id))
        }
        Step::Patch(id, body) => {
            scim.call(Method::PATCH, &format!("/Users/{id}"), Some(&body)).await?;
            Ok(Some(id))
        }
        Step::Create(body) => match scim.call(Method::POST, "/Users", Some(&body)).await {
            Ok(answer) => Ok(answer.body.get("id").and_then(Value::as_str).map(str::to_string)),
            Err(failure) if failure.message.contains(": 409 ") => {
                // Created by an earlier attempt of this order (the host could not record it).
                match scim.user_by_owner(&order.owner).await? {
                    Some(id) => Ok(Some(id)),
                    None => Err(failure),
                }
            }
            Err(failure) => Err(failure),
        },
    }
}

/// Sends the steps in `POST /Bulk` requests; each step's result in order.
async fn run_bulk(
    scim: &Scim,
    orders: &[&Order],
    steps: Vec<Step>,
    max: usize,
) -> Vec<Result<Option<String>, Failure>> {
    let mut results: Vec<Option<Result<Option<String>, Failure>>> = (0..steps.len()).map(|_| None).collect();
    let mut operations = Vec::new();
    for (slot, step) in steps.into_iter().enumerate() {
        let bulk_id = format!("op{slot}");
        let (method, path, data, id) = match step {
            Step::Done(id) => {
                results[slot] = Some(Ok(id));
                continue;
            }
            Step::Create(body) => ("POST", "/Users".to_string(), Some(body), None),
            Step::Patch(id, body) => ("PATCH", format!("/Users/{id}"), Some(body), Some(id)),
            Step::Delete(id) => ("DELETE", format!("/Users/{id}"), None, Some(id)),
        };
        let mut operation = json!({ "method": method, "path": path, "bulkId": bulk_id });
        if let Some(data) = data {
            operation["data"] = data;
        }
        operations.push((slot, id, operation));
    }
    for chunk in operations.chunks(max.max(1)) {
        let body = json!({ "schemas": [BULK_REQUEST], "Operations": chunk.iter().map(|(_, _, op)| op.clone()).collect::<Vec<_>>() });
        let answer = match scim.call(Method::POST, "/Bulk", Some(&body)).await {
            Ok(answer) => answer,
            Err(failure) => {
                for (slot, _, _) in chunk {
                    results[*slot] = Some(Err(failure.clone()));
                }
                continue;
            }
        };
        let answers = answer.body.get("Operations").and_then(Value::as_array).cloned().unwrap_or_default();
        for (position, (slot, id, operation)) in chunk.iter().enumerate() {
            // Match by bulkId, falling back to position for servers that leave it out.
            let found =
                answers.iter().find(|a| a.get("bulkId") == operation.get("bulkId")).or_else(|| answers.get(position));
            let order = orders[*slot];
            results[*slot] = Some(match found {
                None => Err(client::transient(format!("the bulk answer has no result for order {}", order.id), None)),
                Some(result) => {
                    let status: u16 = result
                        .get("status")
                        .and_then(|s| s.as_str().map(str::to_string).or_else(|| s.as_u64().map(|n| n.to_string())))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let location_id = result
                        .get("location")
                        .and_then(Value::as_str)
                        .and_then(|l| l.rsplit('/').next())
                        .map(str::to_string);
                    match status {
                        200..=299 => Ok(id.clone().or(location_id)),
                        404 if operation["method"] == "DELETE" => Ok(id.clone()),
                        409 if operation["method"] == "POST" => match scim.user_by_owner(&order.owner).await {
                            Ok(Some(existing)) => Ok(Some(existing)),
                            _ => Err(permanent(format!("POST /Users: 409 {}", detail(result)))),
                        },
                        408 | 429 | 500..=599 => Err(client::transient(
                            format!(
                                "{} {}: {status} {}",
                                operation["method"].as_str().unwrap_or(""),
                                operation["path"].as_str().unwrap_or(""),
                                detail(result)
                            ),
                            None,
                        )),
                        _ => Err(permanent(format!(
                            "{} {}: {status} {}",
                            operation["method"].as_str().unwrap_or(""),
                            operation["path"].as_str().unwrap_or(""),
                            detail(result)
                        ))),
                    }
                }
            });
        }
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(permanent("not sent".into())))).collect()
}

fn detail(result: &Value) -> String {
    result.pointer("/response/detail").and_then(Value::as_str).unwrap_or("").to_string()
}

/// Whether the server advertises bulk, and its largest number of operations.
async fn bulk_support(scim: &Scim) -> Option<usize> {
    let answer = scim.call(Method::GET, "/ServiceProviderConfig", None).await.ok()?;
    let bulk = answer.body.get("bulk")?;
    bulk.get("supported")?.as_bool()?.then(|| bulk.get("maxOperations").and_then(Value::as_u64).unwrap_or(100) as usize)
}

async fn fulfil_all(orders: Vec<Order>) -> Vec<Outcome> {
    let config = match Config::load() {
        Ok(config) => config,
        Err(message) => return orders.iter().map(|_| Outcome::Failed(permanent(message.clone()))).collect(),
    };
    let scim = Scim::new(config.base_url.clone(), config.token.clone());
    let order_refs: Vec<&Order> = orders.iter().collect();

    // Users first.
    let mut planned = Vec::with_capacity(orders.len());
    for order in &orders {
        planned.push(plan(&scim, &config, order).await);
    }
    let bulk = if config.bulk && orders.len() > 1 { bulk_support(&scim).await } else { None };
    let mut users: Vec<Result<Option<String>, Failure>> = Vec::with_capacity(orders.len());
    match bulk {
        Some(max) => {
            // Orders whose plan failed keep their failure; the others go in bulk.
            let mut steps = Vec::new();
            let mut slots = Vec::new();
            for (slot, plan) in planned.into_iter().enumerate() {
                match plan {
                    Ok(step) => {
                        steps.push(step);
                        slots.push(slot);
                        users.push(Ok(None));
                    }
                    Err(failure) => users.push(Err(failure)),
                }
            }
            let bulk_orders: Vec<&Order> = slots.iter().map(|s| order_refs[*s]).collect();
            for (slot, result) in slots.into_iter().zip(run_bulk(&scim, &bulk_orders, steps, max).await) {
                users[slot] = result;
            }
        }
        None => {
            for (order, plan) in orders.iter().zip(planned) {
                users.push(match plan {
                    Ok(step) => run(&scim, order, step).await,
                    Err(failure) => Err(failure),
                });
            }
        }
    }

    // Then group memberships, one PATCH per group for the whole batch.
    let mut changes: BTreeMap<String, GroupChange> = BTreeMap::new();
    for (slot, (order, user)) in orders.iter().zip(&users).enumerate() {
        let (Ok(Some(id)), false) = (user, order.change == ChangeKind::Deleted) else { continue };
        for group in &order.entitlements_added {
            let entry = changes.entry(group.clone()).or_default();
            entry.add.push(id.clone());
            entry.slots.push(slot);
        }
        for group in &order.entitlements_removed {
            let entry = changes.entry(group.clone()).or_default();
            entry.remove.push(id.clone());
            entry.slots.push(slot);
        }
    }
    let mut group_failures: HashMap<usize, Failure> = HashMap::new();
    for (group, change) in changes {
        if let Err(failure) = change_group(&scim, &config, &group, &change.add, &change.remove).await {
            for slot in change.slots {
                group_failures.entry(slot).or_insert_with(|| failure.clone());
            }
        }
    }

    users
        .into_iter()
        .enumerate()
        .map(|(slot, user)| match (user, group_failures.remove(&slot)) {
            (Err(failure), _) | (Ok(_), Some(failure)) => Outcome::Failed(failure),
            (Ok(id), None) => Outcome::Executed(id),
        })
        .collect()
}

/// What a batch changes in one group: members to add and remove, and the orders asking.
#[derive(Default)]
struct GroupChange {
    add: Vec<String>,
    remove: Vec<String>,
    slots: Vec<usize>,
}

async fn change_group(
    scim: &Scim,
    config: &Config,
    group: &str,
    add: &[String],
    remove: &[String],
) -> Result<(), Failure> {
    let id = match scim.group_by_name(group).await? {
        Some(id) => id,
        None if config.create_groups => {
            let body = json!({ "schemas": [GROUP], "displayName": group });
            let answer = scim.call(Method::POST, "/Groups", Some(&body)).await?;
            answer
                .body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| permanent(format!("group {group} was created without an id")))?
        }
        None => {
            return Err(permanent(format!(
                "group `{group}` does not exist on the SCIM server (set create-groups = true to create it)"
            )));
        }
    };
    let mut operations = Vec::new();
    if !add.is_empty() {
        let members: Vec<Value> = add.iter().map(|id| json!({ "value": id })).collect();
        operations.push(json!({ "op": "add", "path": "members", "value": members }));
    }
    operations.extend(remove.iter().map(|id| json!({ "op": "remove", "path": format!("members[value eq \"{id}\"]") })));
    let body = json!({ "schemas": [PATCH_OP], "Operations": operations });
    scim.call(Method::PATCH, &format!("/Groups/{id}"), Some(&body)).await.map(|_| ())
}

impl fulfil::Guest for ScimConnector {
    fn fulfil(orders: Vec<Order>) -> Vec<Outcome> {
        wstd::runtime::block_on(fulfil_all(orders))
    }
}

/// Every group's members: user id → group names.
async fn memberships(scim: &Scim, config: &Config) -> Result<HashMap<String, Vec<String>>, Failure> {
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    let mut start = 1;
    loop {
        let answer = scim.call(Method::GET, &format!("/Groups?startIndex={start}&count=100"), None).await?;
        let groups = answer.body.get("Resources").and_then(Value::as_array).cloned().unwrap_or_default();
        for group in &groups {
            let Some(name) = group.get("displayName").and_then(Value::as_str) else { continue };
            if config.managed_groups.as_ref().is_some_and(|managed| !managed.iter().any(|m| m == name)) {
                continue;
            }
            for member in group.get("members").and_then(Value::as_array).into_iter().flatten() {
                if let Some(id) = member.get("value").and_then(Value::as_str) {
                    members.entry(id.to_string()).or_default().push(name.to_string());
                }
            }
        }
        let total = answer.body.get("totalResults").and_then(Value::as_u64).unwrap_or(0) as usize;
        start += groups.len();
        if groups.is_empty() || start > total {
            return Ok(members);
        }
    }
}

async fn read_page(resource_type: String, cursor: Option<String>) -> Result<Page, Failure> {
    let config = Config::load().map_err(permanent)?;
    let scim = Scim::new(config.base_url.clone(), config.token.clone());
    let start: usize = match cursor {
        None => 1,
        Some(c) => c.parse().map_err(|_| permanent(format!("bad cursor `{c}`")))?,
    };
    let answer = scim.call(Method::GET, &format!("/Users?startIndex={start}&count={}", config.page_size), None).await?;
    let users = answer.body.get("Resources").and_then(Value::as_array).cloned().unwrap_or_default();
    let groups = memberships(&scim, &config).await?;
    let deactivating = config.deactivate.contains(&resource_type);
    let resources = users
        .iter()
        .filter(|u| !(deactivating && u.get("active") == Some(&Value::Bool(false))))
        .filter_map(|user| {
            let id = user.get("id")?.as_str()?.to_string();
            let attributes = config
                .attributes
                .iter()
                .filter_map(|name| {
                    Some(Attribute { name: name.clone(), value: mapping::get(user, &mapping::path(&config, name))? })
                })
                .collect();
            Some(ManagedResource {
                owner: user.get("externalId").and_then(Value::as_str).map(str::to_string),
                attributes,
                entitlements: groups.get(&id).cloned().unwrap_or_default(),
                id,
            })
        })
        .collect();
    let total = answer.body.get("totalResults").and_then(Value::as_u64).unwrap_or(0) as usize;
    let next = start + users.len();
    let next_cursor = (!users.is_empty() && next <= total).then(|| next.to_string());
    Ok(Page { resources, next_cursor })
}

impl read::Guest for ScimConnector {
    fn read(resource_type: String, cursor: Option<String>) -> Result<Page, Failure> {
        wstd::runtime::block_on(read_page(resource_type, cursor))
    }
}

impl exports::provision::plugin::describe::Guest for ScimConnector {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Provisions users and group memberships to a SCIM 2.0 service provider over HTTPS.".to_string(),
            resource_types: Vec::new(),
        }
    }
}

export!(ScimConnector);
