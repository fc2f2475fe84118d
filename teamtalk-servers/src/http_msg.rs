//! http_msg_server: the administration HTTP API (docs/protocol.md § http_msg_server), acting
//! through db_proxy and route_server as the original does.
//!
//! `POST /query/CreateGroup`, `POST /query/ChangeMembers` with the original JSON bodies and
//! answers (`{"error_code":N,"error_msg":"…"}`, plus `group_id` for CreateGroup), and
//! `POST /query/SendMessage` (ours: `{"from_user_id", "to_id", "is_group", "text"}` → stored and
//! delivered to whoever is online, answered with `msg_id`), and `POST /query/KickUser` (ours:
//! `{"user_id"}` → every connection of the user, PC and mobile, on every msg_server gets
//! `CID_LOGIN_KICK_USER` and is closed; for an account just closed with `teamtalk user
//! disable`).
//!
//! Unlike the original (docs/compatibility.md Q-09), every request needs the API key — in the
//! `X-Api-Key` header or the body's `app_key` — and the server listens on 127.0.0.1 by
//! default. error_code: 0 成功, 1 参数错误, 2 认证失败 (ours), 10 服务器异常, 11 创建群失败,
//! 12 更改群成员失败, 13 发送消息失败 (ours).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::limits::serve_http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use teamtalk_core::crypt::MessageKey;
use teamtalk_core::kick::KICK_REASON_DUPLICATE_USER;
use teamtalk_core::proto::base_define::ClientType;
use teamtalk_core::proto::{group, message, server};
use teamtalk_core::{AnyMessage, AttachType, DbAttach, Pdu};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::link::{self, Backoff, LinkConfig, LinkEvent, LinkTarget, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// Settings of http_msg_server.
#[derive(Clone, Debug)]
pub struct HttpMsgConfig {
    /// The key every request must carry.
    pub api_key: String,
    /// db_proxy_servers (addresses, or in-process listeners in `teamtalk serve`).
    pub db_servers: Vec<LinkTarget>,
    /// Connections per db_proxy_server (`ConcurrentDBConnCnt`, 2).
    pub db_connections: usize,
    /// route_servers (addresses, or in-process listeners).
    pub route_servers: Vec<LinkTarget>,
    /// How long to wait for db_proxy (5 s).
    pub timeout: Duration,
    /// The message key (`aesKey`) to encrypt texts of SendMessage.
    pub message_key: String,
    /// First reconnect delay of the upstream links (4 s).
    pub reconnect_delay: Duration,
    /// The upstream links (heartbeat 5 s, timeout 30 s; TLS with the `tls` feature).
    pub upstream_link: LinkConfig,
}

impl HttpMsgConfig {
    /// Settings with this API key and upstreams.
    pub fn new<D: Into<LinkTarget>, R: Into<LinkTarget>>(
        api_key: &str,
        db_servers: impl IntoIterator<Item = D>,
        route_servers: impl IntoIterator<Item = R>,
    ) -> HttpMsgConfig {
        HttpMsgConfig {
            api_key: api_key.to_owned(),
            db_servers: db_servers.into_iter().map(Into::into).collect(),
            db_connections: 2,
            route_servers: route_servers.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(5),
            message_key: teamtalk_core::crypt::DEFAULT_KEY.to_owned(),
            reconnect_delay: Duration::from_secs(4),
            upstream_link: LinkConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Up {
    Db(u32),
    Route(u32),
}

#[derive(Default)]
struct Links {
    db: Vec<(Up, Outbox)>,
    routes: Vec<(Up, Outbox)>,
    turn: usize,
}

struct State {
    config: HttpMsgConfig,
    key: MessageKey,
    links: Mutex<Links>,
    pending: Mutex<HashMap<u32, oneshot::Sender<AnyMessage>>>,
    next_handle: AtomicU32,
}

/// Serves the API on `listener` until `shutdown`, keeping links to db_proxy and route_server.
pub async fn run(
    config: HttpMsgConfig,
    listener: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener: Listeners = listener.into();
    if config.api_key.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "http_msg_server needs an API key",
        ));
    }
    let key = MessageKey::new(&config.message_key).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("aesKey: {e}"))
    })?;
    info!(addr = ?listener.local_addrs(), "http_msg_server listening");
    let (events_tx, events) = mpsc::channel::<LinkEvent<Up>>(1024);
    let mut n = 0;
    let upstream = config.upstream_link.clone();
    for target in &config.db_servers {
        for _ in 0..config.db_connections.max(1) {
            n += 1;
            let backoff = Backoff::new(config.reconnect_delay, 5);
            tokio::spawn(link::dial(
                target.clone(),
                Up::Db(n),
                upstream.clone(),
                backoff,
                events_tx.clone(),
                shutdown.clone(),
            ));
        }
    }
    for target in &config.route_servers {
        n += 1;
        let backoff = Backoff::new(config.reconnect_delay, 5);
        tokio::spawn(link::dial(
            target.clone(),
            Up::Route(n),
            upstream.clone(),
            backoff,
            events_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(events_tx);
    let state = Arc::new(State {
        config,
        key,
        links: Mutex::default(),
        pending: Mutex::default(),
        next_handle: AtomicU32::new(0),
    });
    tokio::spawn(upstream_events(state.clone(), events));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = link::accept(&listener) => accepted,
            _ = shutdown.wait() => return Ok(()),
        };
        let state = state.clone();
        let timeouts = listener.http_timeouts();
        let mut builder = timeouts.builder();
        builder.keep_alive(false);
        let answer = move |request| {
            let state = state.clone();
            async move { handle(&state, request).await }
        };
        tokio::spawn(serve_http(
            stream,
            peer,
            timeouts,
            builder,
            Duration::from_secs(60),
            "http_msg_server",
            answer,
        ));
    }
}

/// Keeps the link table and hands db_proxy answers to the waiting requests.
async fn upstream_events(state: Arc<State>, mut events: mpsc::Receiver<LinkEvent<Up>>) {
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Opened(up, outbox) => {
                let mut links = state.links.lock().unwrap_or_else(PoisonError::into_inner);
                match up {
                    Up::Db(_) => links.db.push((up, outbox)),
                    Up::Route(_) => links.routes.push((up, outbox)),
                }
            }
            LinkEvent::Closed(up) => {
                let mut links = state.links.lock().unwrap_or_else(PoisonError::into_inner);
                links.db.retain(|(u, _)| *u != up);
                links.routes.retain(|(u, _)| *u != up);
            }
            LinkEvent::Frame(Up::Db(_), pdu) => {
                let Ok(mut answer) = pdu.decode_any() else {
                    continue;
                };
                let attach = match &mut answer {
                    AnyMessage::GroupCreateRsp(r) => r.attach_data.take(),
                    AnyMessage::GroupChangeMemberRsp(r) => r.attach_data.take(),
                    AnyMessage::MsgData(r) => r.attach_data.take(),
                    _ => None,
                };
                let Some(handle) = attach
                    .as_deref()
                    .and_then(|a| DbAttach::decode(a).ok())
                    .map(|a| a.handle)
                else {
                    continue;
                };
                let waiter = state
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&handle);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
            // route_server relays everything to every link; nothing here is for us.
            LinkEvent::Frame(Up::Route(_), _) => {}
        }
    }
}

impl State {
    /// Sends a request to db_proxy and waits for its answer.
    async fn ask(&self, build: impl FnOnce(bytes::Bytes) -> AnyMessage) -> Result<AnyMessage, u32> {
        let handle = self
            .next_handle
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let attach = DbAttach::new(AttachType::HANDLE_AND_PDU, handle).to_bytes();
        let request = build(attach);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(handle, tx);
        let sent = {
            let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
            links.turn = links.turn.wrapping_add(1);
            let count = links.db.len();
            match links.db.get(links.turn % count.max(1)) {
                Some((_, outbox)) => outbox.send_pdu(&request.to_pdu(0)).is_ok(),
                None => false,
            }
        };
        let answer = if sent {
            tokio::time::timeout(self.config.timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle);
        answer.ok_or(10)
    }

    /// Sends `pdu` to the first connected route_server; `false` when none took it.
    fn to_routes(&self, pdu: &Pdu) -> bool {
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((_, outbox)) = links.routes.first() else {
            return false;
        };
        match outbox.send_pdu(pdu) {
            Ok(()) => true,
            Err(error) => {
                warn!(%error, "route_server link busy, notification dropped");
                false
            }
        }
    }
}

fn answer(error_code: u32, extra: Option<(&str, Value)>) -> Response<Full<Bytes>> {
    let error_msg = match error_code {
        0 => "成功",
        1 => "参数错误",
        2 => "认证失败",
        10 => "服务器异常",
        11 => "创建群失败",
        12 => "更改群成员失败",
        _ => "发送消息失败",
    };
    let mut body = json!({ "error_code": error_code, "error_msg": error_msg });
    if let (Some((key, value)), Some(map)) = (extra, body.as_object_mut()) {
        map.insert(key.to_owned(), value);
    }
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    if error_code == 2 {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
    }
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

fn ids(value: &Value) -> Option<Vec<u32>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

fn number(body: &Value, key: &str) -> Option<u32> {
    body.get(key)?.as_u64().and_then(|n| u32::try_from(n).ok())
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let Some(endpoint) = path.strip_prefix("/query/") else {
        return status(StatusCode::NOT_FOUND);
    };
    if request.method() != Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let header_key = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = Limited::new(request.into_body(), 64 * 1024).collect().await else {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST); // the original closed the connection
    };
    let given = header_key.or_else(|| {
        body.get("app_key")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let authorized = given.is_some_and(|k| {
        k.len() == state.config.api_key.len()
            && k.bytes()
                .zip(state.config.api_key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !authorized {
        return answer(2, None);
    }
    match endpoint {
        "CreateGroup" => create_group(state, &body).await,
        "ChangeMembers" => change_members(state, &body).await,
        "SendMessage" => send_message(state, &body).await,
        "KickUser" => kick_user(state, &body),
        _ => status(StatusCode::NOT_FOUND),
    }
}

async fn create_group(state: &State, body: &Value) -> Response<Full<Bytes>> {
    let (Some(name), Some(kind), Some(members)) = (
        body.get("group_name").and_then(Value::as_str),
        number(body, "group_type").filter(|t| *t == 1 || *t == 2),
        body.get("user_id_list").and_then(ids),
    ) else {
        return answer(1, None);
    };
    let avatar = body
        .get("group_avatar")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = name.to_owned();
    let result = state
        .ask(|attach| {
            group::ImGroupCreateReq {
                user_id: 0,
                group_type: i32::try_from(kind).unwrap_or(2),
                group_name: name,
                group_avatar: avatar,
                member_id_list: members,
                attach_data: Some(attach),
            }
            .into()
        })
        .await;
    match result {
        Ok(AnyMessage::GroupCreateRsp(r)) if r.result_code == 0 => {
            answer(0, Some(("group_id", json!(r.group_id.unwrap_or(0)))))
        }
        Ok(_) => answer(11, Some(("group_id", json!(0)))),
        Err(code) => answer(code, None),
    }
}

async fn change_members(state: &State, body: &Value) -> Response<Full<Bytes>> {
    let (Some(group_id), Some(kind), Some(members)) = (
        number(body, "group_id"),
        number(body, "modify_type").filter(|t| *t == 1 || *t == 2),
        body.get("user_id_list").and_then(ids),
    ) else {
        return answer(1, None);
    };
    let result = state
        .ask(|attach| {
            group::ImGroupChangeMemberReq {
                user_id: 0,
                change_type: i32::try_from(kind).unwrap_or(1),
                group_id,
                member_id_list: members,
                attach_data: Some(attach),
            }
            .into()
        })
        .await;
    match result {
        Ok(AnyMessage::GroupChangeMemberRsp(r)) if r.result_code == 0 => {
            let notify = group::ImGroupChangeMemberNotify {
                user_id: 0,
                change_type: r.change_type,
                group_id: r.group_id,
                cur_user_id_list: r.cur_user_id_list,
                chg_user_id_list: r.chg_user_id_list,
            };
            state.to_routes(&Pdu::encode_message(&notify, 0));
            answer(0, None)
        }
        Ok(_) => answer(12, None),
        // An unknown group gets no answer from db_proxy.
        Err(_) => answer(12, None),
    }
}

/// Kicks every connection of `user_id`: one server kick per device class, which route_server
/// passes to every msg_server.
fn kick_user(state: &State, body: &Value) -> Response<Full<Bytes>> {
    let Some(user_id) = number(body, "user_id").filter(|id| *id != 0) else {
        return answer(1, None);
    };
    for client in [ClientType::Windows, ClientType::Android] {
        let kick = server::ImServerKickUser {
            user_id,
            client_type: client as i32,
            reason: KICK_REASON_DUPLICATE_USER as u32,
        };
        if !state.to_routes(&Pdu::encode_message(&kick, 0)) {
            return answer(10, None);
        }
    }
    answer(0, None)
}

async fn send_message(state: &State, body: &Value) -> Response<Full<Bytes>> {
    let (Some(from), Some(to), Some(text)) = (
        number(body, "from_user_id").filter(|id| *id != 0),
        number(body, "to_id").filter(|id| *id != 0),
        body.get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty()),
    ) else {
        return answer(1, None);
    };
    let is_group = body
        .get("is_group")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let data: Bytes = state.key.encrypt(text.as_bytes()).into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let result = state
        .ask(|attach| {
            message::ImMsgData {
                from_user_id: from,
                to_session_id: to,
                msg_id: 0,
                create_time: u32::try_from(now).unwrap_or(u32::MAX),
                msg_type: if is_group { 17 } else { 1 },
                msg_data: data,
                attach_data: Some(attach),
            }
            .into()
        })
        .await;
    match result {
        Ok(AnyMessage::MsgData(stored)) if stored.msg_id != 0 => {
            // route_server passes it to every msg_server, which deliver it to whoever is online.
            state.to_routes(&Pdu::encode_message(&stored, 0));
            answer(0, Some(("msg_id", json!(stored.msg_id))))
        }
        Ok(_) => answer(13, None),
        Err(code) => answer(code, None),
    }
}
