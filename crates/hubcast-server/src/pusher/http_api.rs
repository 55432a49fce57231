//! The Pusher HTTP API (`/apps/{id}/…`), signed as Pusher signs it
//! (`pusher::auth::verify_request`): triggering events (durable appends to
//! the channels' rooms, several channels or a batch in one transaction),
//! channel information, presence users and `terminate_connections`.
//!
//! Every number is the cluster's: presence (`users`, `user_count`) comes
//! from the hubs' presence, which follows the bus; subscribers
//! (`subscription_count`, occupancy, the channel list) are this node's hubs'
//! counts plus the other nodes' answers to a count query over the bus
//! (`Node::cluster_counts`; a node that does not answer within the bus's
//! short wait is left out).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::channel::{Channel, ChannelKind};
use super::frame::StoredEvent;
use super::App;
use crate::bus::CountQuery;
use crate::http::error::ApiError;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use crate::store::{BatchItem, BatchOutcome, BatchRequest};

/// Most channels of one trigger (Pusher's limit).
const MAX_CHANNELS: usize = 100;
/// Longest event name (Pusher's limit).
const MAX_NAME: usize = 200;

/// The app of `id`, once the request's signature is verified.
fn verified(
    node: &Node,
    id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<Arc<App>, ApiError> {
    let app = node
        .pusher
        .by_id(id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("unknown app id {id}")))?;
    let request = super::auth::SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        body,
    };
    let now = crate::event::now_ms() / 1000;
    super::auth::verify_request(
        &app.key,
        &app.secret,
        &request,
        now,
        node.pusher.max_clock_skew_secs,
    )
    .map_err(|err| {
        crate::metrics::note_refusal(
            "unauthenticated",
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            &err.to_string(),
        );
        ApiError::new(ErrorCode::Unauthenticated, err.to_string())
    })?;
    Ok(app.clone())
}

/// One event to trigger, as the API's bodies carry it.
#[derive(Deserialize)]
struct Trigger {
    name: String,
    data: Box<RawValue>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    /// Channel attributes to answer with (`user_count`,
    /// `subscription_count`), comma-separated.
    #[serde(default)]
    info: Option<String>,
}

impl Trigger {
    /// The channel names, as given (`items` checks them).
    fn channel_names(&self) -> Vec<&str> {
        match (&self.channels, &self.channel) {
            (Some(channels), _) => channels.iter().map(String::as_str).collect(),
            (None, Some(channel)) => vec![channel.as_str()],
            (None, None) => Vec::new(),
        }
    }

    /// The `info` attributes asked for, checked before anything is appended
    /// (Pusher publishes nothing for a request it refuses).
    fn info(&self) -> Result<Vec<Attribute>, ApiError> {
        self.info
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|field| !field.is_empty())
            .map(|field| match field {
                "user_count" => Ok(Attribute::UserCount),
                "subscription_count" => Ok(Attribute::SubscriptionCount),
                other => Err(bad(format!("unknown info attribute {other}"))),
            })
            .collect()
    }
}

/// A channel attribute a trigger may ask for.
#[derive(Clone, Copy, PartialEq)]
enum Attribute {
    UserCount,
    SubscriptionCount,
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<Trigger>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

/// The batch items of `trigger`: one per channel, each stored as the
/// Pusher event (with the excluded `socket_id`).
fn items(
    node: &Node,
    app: &App,
    trigger: &Trigger,
    out: &mut Vec<BatchItem>,
) -> Result<(), ApiError> {
    if trigger.name.is_empty() || trigger.name.len() > MAX_NAME {
        return Err(bad(format!(
            "event name must be 1 to {MAX_NAME} characters"
        )));
    }
    let channels = trigger.channel_names();
    if trigger.channels.is_none() && trigger.channel.is_none() {
        return Err(bad("channels or channel is required"));
    }
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(bad(format!("1 to {MAX_CHANNELS} channels per event")));
    }
    if let Some(socket_id) = &trigger.socket_id {
        let valid = socket_id.split_once('.').is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        });
        if !valid {
            return Err(bad(format!("invalid socket_id {socket_id}")));
        }
    }
    let data = StoredEvent {
        event: &trigger.name,
        data: &trigger.data,
        socket_id: trigger.socket_id.as_deref(),
        user_id: None,
    }
    .to_raw();
    for name in channels {
        let channel = Channel::parse(name, &app.room_prefix)
            .map_err(|err| bad(format!("channel {name}: {err}")))?;
        let room = channel.room(&app.room_prefix);
        let max = node.max_event_bytes(&room);
        if trigger.data.get().len() > max {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("event data is larger than {max} bytes"),
            ));
        }
        out.push(BatchItem {
            room,
            data: data.clone(),
            expected_seq: None,
        });
    }
    Ok(())
}

/// Appends every item in one transaction: durable when this answers, as
/// a hubcast publish is; the hubs hear of it after the commit.
async fn append(node: &Node, app: &App, events: Vec<BatchItem>) -> Result<(), ApiError> {
    node.limits
        .check_publishes(|| format!("pusher:{}", app.id), events.len())
        .map_err(|refusal| ApiError::new(ErrorCode::RateLimited, refusal.to_string()))?;
    let outcome = node
        .store
        .append_batch(BatchRequest {
            events,
            idem_key: None,
            origin: None,
        })
        .await?;
    match outcome {
        BatchOutcome::Appended(_) | BatchOutcome::Duplicate(_) => Ok(()),
        // Neither can happen without keys or expected seqs.
        _ => Err(ApiError::new(
            ErrorCode::Conflict,
            "the events were not appended",
        )),
    }
}

/// `POST /apps/{id}/events`: one event to one or more channels.
pub async fn events(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = verified(&node, &id, &method, &uri, &body)?;
    let trigger: Trigger =
        serde_json::from_slice(&body).map_err(|err| bad(format!("invalid body: {err}")))?;
    let info = trigger.info()?;
    let mut events = Vec::new();
    items(&node, &app, &trigger, &mut events)?;
    append(&node, &app, events).await?;
    if info.is_empty() {
        return Ok(Json(json!({})).into_response());
    }
    // As Pusher answers: each channel's attributes, taken after the append
    // (the subscribers of all of them in one count query).
    let names = trigger.channel_names();
    let counts = subscription_counts(&node, &app, &names, &info).await?;
    let mut channels = Map::new();
    for name in names {
        channels.insert(
            name.to_owned(),
            attributes(&node, &app, name, &info, &counts).await?,
        );
    }
    Ok(Json(json!({ "channels": channels })).into_response())
}

/// The cluster's subscribers of the channels `names` (by room), asked only
/// when `info` wants `subscription_count`.
async fn subscription_counts(
    node: &Node,
    app: &App,
    names: &[&str],
    info: &[Attribute],
) -> Result<HashMap<String, usize>, ApiError> {
    if !info.contains(&Attribute::SubscriptionCount) || names.is_empty() {
        return Ok(HashMap::new());
    }
    let mut rooms = Vec::with_capacity(names.len());
    for name in names {
        let channel = Channel::parse(name, &app.room_prefix)
            .map_err(|err| bad(format!("channel {name}: {err}")))?;
        rooms.push(channel.room(&app.room_prefix).to_string());
    }
    Ok(node
        .cluster_counts(CountQuery {
            prefix: app.room_prefix.clone(),
            rooms,
        })
        .await)
}

/// The `info` attributes of the channel `name`: `user_count` only for a
/// presence channel (as Pusher answers a trigger to several channels);
/// `subscription_count` from `counts` (the cluster's, by room).
async fn attributes(
    node: &Node,
    app: &App,
    name: &str,
    info: &[Attribute],
    counts: &HashMap<String, usize>,
) -> Result<Value, ApiError> {
    let channel = Channel::parse(name, &app.room_prefix)
        .map_err(|err| bad(format!("channel {name}: {err}")))?;
    let room = channel.room(&app.room_prefix);
    let subscribers = counts.get(room.as_str()).copied().unwrap_or(0);
    let users = if info.contains(&Attribute::UserCount) {
        presence_users(node, &channel, &room).await
    } else {
        None
    };
    let mut body = Map::new();
    if info.contains(&Attribute::UserCount) {
        if let Some(users) = users {
            body.insert("user_count".into(), json!(users));
        }
    }
    if info.contains(&Attribute::SubscriptionCount) {
        body.insert("subscription_count".into(), json!(subscribers));
    }
    Ok(Value::Object(body))
}

/// `POST /apps/{id}/batch_events`: several events, appended together.
pub async fn batch_events(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = verified(&node, &id, &method, &uri, &body)?;
    let batch: Batch =
        serde_json::from_slice(&body).map_err(|err| bad(format!("invalid body: {err}")))?;
    let max = node.config.limits.max_batch_events;
    if batch.batch.is_empty() || batch.batch.len() > max {
        return Err(bad(format!("a batch holds 1 to {max} events")));
    }
    let mut events = Vec::new();
    let mut infos = Vec::with_capacity(batch.batch.len());
    for trigger in &batch.batch {
        infos.push(trigger.info()?);
        items(&node, &app, trigger, &mut events)?;
    }
    append(&node, &app, events).await?;
    if infos.iter().all(Vec::is_empty) {
        return Ok(Json(json!({})).into_response());
    }
    // As Pusher answers: one object per event, its channel's attributes
    // (an event to several channels, which only hubcast's batches allow,
    // is described by its first).
    let firsts: Vec<&str> = batch
        .batch
        .iter()
        .zip(&infos)
        .filter(|(_, info)| info.contains(&Attribute::SubscriptionCount))
        .filter_map(|(trigger, _)| trigger.channel_names().first().copied())
        .collect();
    let counts = subscription_counts(&node, &app, &firsts, &[Attribute::SubscriptionCount]).await?;
    let mut answers = Vec::with_capacity(infos.len());
    for (trigger, info) in batch.batch.iter().zip(&infos) {
        let answer = match trigger.channel_names().first() {
            Some(name) if !info.is_empty() => attributes(&node, &app, name, info, &counts).await?,
            _ => json!({}),
        };
        answers.push(answer);
    }
    Ok(Json(json!({ "batch": answers })).into_response())
}

/// The `info` attributes a query asks for.
fn info_fields(query: Option<&str>) -> (Vec<String>, Option<String>) {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let info = get("info")
        .map(|v| {
            v.split(',')
                .map(str::to_owned)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    (info, get("filter_by_prefix"))
}

/// A channel's numbers, the cluster's: its subscribers on every node, and
/// the presence members of a presence channel.
async fn channel_numbers(
    node: &Node,
    app: &App,
    channel: &Channel,
    room: &crate::room::RoomName,
) -> (usize, Option<usize>) {
    let counts = node
        .cluster_counts(CountQuery {
            prefix: app.room_prefix.clone(),
            rooms: vec![room.to_string()],
        })
        .await;
    let subscribers = counts.get(room.as_str()).copied().unwrap_or(0);
    (subscribers, presence_users(node, channel, room).await)
}

/// The cluster's members of a presence channel (`None` for another kind).
async fn presence_users(
    node: &Node,
    channel: &Channel,
    room: &crate::room::RoomName,
) -> Option<usize> {
    if channel.kind != ChannelKind::Presence {
        return None;
    }
    loop {
        let hub = node.hubs.get_or_spawn(room);
        match hub.presence().await {
            Ok(members) => return Some(members.len()),
            Err(_gone) => node.hubs.forget(room, hub.id),
        }
    }
}

/// `GET /apps/{id}/channels?filter_by_prefix=…&info=user_count`: the
/// occupied channels.
pub async fn channels(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let app = verified(&node, &id, &method, &uri, b"")?;
    let (info, prefix) = info_fields(query.as_deref());
    let wants_users = info.iter().any(|i| i == "user_count");
    if wants_users
        && !prefix
            .as_deref()
            .is_some_and(|p| p.starts_with("presence-"))
    {
        return Err(bad("info=user_count needs filter_by_prefix=presence-"));
    }
    // The rooms with subscribers on any node (one count query).
    let room_prefix = format!(
        "{}{}",
        app.room_prefix,
        super::channel::escape(prefix.as_deref().unwrap_or(""))
    );
    let mut rooms: Vec<(String, usize)> = node
        .cluster_counts(CountQuery {
            prefix: room_prefix,
            rooms: Vec::new(),
        })
        .await
        .into_iter()
        .collect();
    rooms.sort();
    let mut channels = Map::new();
    for (room, _) in rooms {
        let Some(name) = super::channel::channel_of(&room, &app.room_prefix) else {
            continue;
        };
        // Users' own channels are not the app's channels to list.
        let Some(channel) = Channel::parse(&name, &app.room_prefix)
            .ok()
            .filter(|c| c.kind != ChannelKind::ServerToUser)
        else {
            continue;
        };
        let mut attributes = Map::new();
        if wants_users {
            let room = channel.room(&app.room_prefix);
            let users = presence_users(&node, &channel, &room).await;
            attributes.insert("user_count".into(), json!(users.unwrap_or(0)));
        }
        channels.insert(name, Value::Object(attributes));
    }
    Ok(Json(json!({ "channels": channels })).into_response())
}

/// `GET /apps/{id}/channels/{channel}?info=user_count,subscription_count`.
pub async fn channel(
    State(node): State<Arc<Node>>,
    Path((id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let app = verified(&node, &id, &method, &uri, b"")?;
    let channel = Channel::parse(&name, &app.room_prefix)
        .map_err(|err| bad(format!("channel {name}: {err}")))?;
    let (info, _) = info_fields(query.as_deref());
    let room = channel.room(&app.room_prefix);
    let (subscribers, users) = channel_numbers(&node, &app, &channel, &room).await;
    let mut body = Map::new();
    body.insert(
        "occupied".into(),
        json!(subscribers > 0 || users.unwrap_or(0) > 0),
    );
    for field in &info {
        match field.as_str() {
            "user_count" if users.is_some() => {
                body.insert("user_count".into(), json!(users.unwrap_or(0)));
            }
            "user_count" => return Err(bad("user_count is only for presence channels")),
            "subscription_count" => {
                body.insert("subscription_count".into(), json!(subscribers));
            }
            other => return Err(bad(format!("unknown info attribute {other}"))),
        }
    }
    Ok(Json(Value::Object(body)).into_response())
}

/// `GET /apps/{id}/channels/{channel}/users`: a presence channel's members,
/// cluster-wide.
pub async fn users(
    State(node): State<Arc<Node>>,
    Path((id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = verified(&node, &id, &method, &uri, b"")?;
    let channel = Channel::parse(&name, &app.room_prefix)
        .map_err(|err| bad(format!("channel {name}: {err}")))?;
    if channel.kind != ChannelKind::Presence {
        return Err(bad("users are only for presence channels"));
    }
    let room = channel.room(&app.room_prefix);
    let members = loop {
        let hub = node.hubs.get_or_spawn(&room);
        match hub.presence().await {
            Ok(members) => break members,
            Err(_gone) => node.hubs.forget(&room, hub.id),
        }
    };
    let users: Vec<Value> = members.iter().map(|m| json!({"id": m.id})).collect();
    Ok(Json(json!({ "users": users })).into_response())
}

/// `POST /apps/{id}/users/{user}/terminate_connections`: closes every
/// connection signed in as `user`, on every node (the admin disconnect's
/// path: the roster here, the bus for the others). They are closed with
/// 4009, so pusher-js does not reconnect.
pub async fn terminate_connections(
    State(node): State<Arc<Node>>,
    Path((id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = verified(&node, &id, &method, &uri, &body)?;
    tracing::info!(app = %app.id, %user, "pusher terminate_connections");
    crate::admin::act(
        &node,
        crate::bus::ControlMessage::Disconnect {
            user: app.roster_user(&user),
            code: crate::protocol::codes::close::DISCONNECTED,
            reason: "terminated by the app".to_owned(),
        },
    )
    .await;
    Ok(Json(json!({})).into_response())
}

/// `POST /users/{user}/terminate_connections`: the path the Python `pusher`
/// library (3.3) sends, without `/apps/{id}`; the app is the one whose key
/// signed the request (`auth_key`).
pub async fn terminate_connections_by_key(
    State(node): State<Arc<Node>>,
    Path(user): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let id = params
        .iter()
        .find(|(k, _)| k == "auth_key")
        .and_then(|(_, key)| node.pusher.by_key(key))
        .map(|app| app.id.clone())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no app has this auth_key"))?;
    terminate_connections(State(node), Path((id, user)), method, uri, body).await
}
