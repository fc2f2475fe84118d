//! The whole system over real sockets on 127.0.0.1 with ephemeral ports: login_server,
//! route_server, db_proxy_server and two msg_servers, driven by raw TeamTalk clients the way
//! the original apps talk (discovery, login, sync, chat, groups, presence, kicks, failures).
//!
//! Runs on the embedded SQLite store, and on MySQL + Redis when `TEAMTALK_TEST_MYSQL_URL` and
//! `TEAMTALK_TEST_REDIS_URL` are set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::{ClientType, GroupType, Timestamp};
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{base_define as bd, buddy, group, login, message};
use teamtalk_core::service::DbProxy;
use teamtalk_core::store::{Credentials, NewDepartment, NewUser, Store, User};
use teamtalk_core::{AnyMessage, CommandId, Pdu, PduDecoder, PduMessage};
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::shutdown::{self, ShutdownTrigger};
use teamtalk_servers::{db_proxy, login_server, msg_server, route_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

// ---- a raw client ---------------------------------------------------------------------

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
    seq: u16,
    user_id: u32,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: PduDecoder::default(),
            seq: 0,
            user_id: 0,
        }
    }

    async fn send(&mut self, message: impl Into<AnyMessage>) -> u16 {
        self.seq += 1;
        let seq = self.seq;
        self.stream
            .write_all(&message.into().to_pdu(seq).to_bytes())
            .await
            .unwrap();
        seq
    }

    /// The next PDU, `None` when the server closed the connection or nothing came in time.
    async fn recv_within(&mut self, wait: Duration) -> Option<Pdu> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pdu) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(pdu);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next PDU of `M`'s command (others, e.g. presence notices, are skipped).
    async fn expect<M: PduMessage>(&mut self) -> (M, u16) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let pdu = self
                .recv_within(left)
                .await
                .unwrap_or_else(|| panic!("user {} expected {}", self.user_id, M::COMMAND));
            if pdu.command() == M::COMMAND {
                return (pdu.decode_body().unwrap(), pdu.seq_num());
            }
        }
    }

    /// Asserts that no PDU of `command` arrives within `wait`.
    async fn expect_none(&mut self, command: CommandId, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                None => return,
                Some(pdu) => assert_ne!(
                    pdu.command(),
                    command,
                    "user {} got an unexpected {command}",
                    self.user_id
                ),
            }
        }
    }

    /// Whether the server closes the connection within `wait` (other PDUs are skipped).
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.decoder.decode(&mut self.buf).ok().flatten().is_some() {
                continue;
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    async fn login(
        addr: SocketAddr,
        name: &str,
        password: &str,
        client: ClientType,
    ) -> (Client, login::ImLoginRes) {
        let mut c = Client::connect(addr).await;
        let seq = c
            .send(login::ImLoginReq {
                user_name: name.into(),
                password: client_password(password),
                online_status: 1,
                client_type: client.to_wire(),
                client_version: Some("test".into()),
            })
            .await;
        let (res, res_seq) = c.expect::<login::ImLoginRes>().await;
        assert_eq!(res_seq, seq, "the login answer echoes the request seq");
        c.user_id = res.user_info.as_ref().map_or(0, |u| u.user_id);
        (c, res)
    }

    async fn login_ok(addr: SocketAddr, name: &str, client: ClientType) -> Client {
        let (c, res) = Client::login(addr, name, "secret", client).await;
        assert_eq!(
            res.result_code, 0,
            "login of {name}: {:?}",
            res.result_string
        );
        c
    }

    async fn send_text(&mut self, to: u32, kind: i32, text: &'static [u8]) -> u16 {
        self.send(message::ImMsgData {
            from_user_id: 0,
            to_session_id: to,
            msg_id: 90_000_001,
            create_time: 0,
            msg_type: kind,
            msg_data: Bytes::from_static(text),
            attach_data: None,
        })
        .await
    }
}

/// Logs in until the msg_server has all its upstreams (it refuses logins before).
async fn login_when_ready(addr: SocketAddr, name: &str, client: ClientType) -> Client {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (c, res) = Client::login(addr, name, "secret", client).await;
        if res.result_code == 0 {
            return c;
        }
        assert!(
            matches!(res.result_code, 3..=5),
            "unexpected refusal {res:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "msg_server {addr} never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(response).unwrap()
}

// ---- the system -----------------------------------------------------------------------

struct Role {
    trigger: ShutdownTrigger,
    task: JoinHandle<std::io::Result<()>>,
}

impl Role {
    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
    }
}

fn spawn_role<F>(run: impl FnOnce(shutdown::Shutdown) -> F) -> Role
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (trigger, shutdown) = shutdown::channel();
    Role {
        trigger,
        task: tokio::spawn(run(shutdown)),
    }
}

struct System<S> {
    proxy: Arc<DbProxy<S, SystemClock>>,
    db: (SocketAddr, Role),
    route: (SocketAddr, Role),
    login: Role,
    http: SocketAddr,
    msg: Vec<(SocketAddr, Role)>,
}

async fn listener() -> (SocketAddr, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (l.local_addr().unwrap(), l)
}

fn start_db<S: Store + 'static>(proxy: &Arc<DbProxy<S, SystemClock>>, l: TcpListener) -> Role {
    let proxy = proxy.clone();
    spawn_role(move |s| db_proxy::run(Default::default(), l, proxy, s))
}

fn start_route(l: TcpListener) -> Role {
    spawn_role(move |s| route_server::run(Default::default(), l, s))
}

async fn start<S: Store + 'static>(store: S) -> System<S> {
    let proxy = Arc::new(DbProxy::new(store, SystemClock, Default::default()));
    let (db_addr, db_l) = listener().await;
    let (route_addr, route_l) = listener().await;
    let (http, http_l) = listener().await;
    let (login_addr, login_l) = listener().await;
    let db = start_db(&proxy, db_l);
    let route = start_route(route_l);
    let login = spawn_role(move |s| login_server::run(Default::default(), http_l, login_l, s));
    let mut msg = Vec::new();
    for _ in 0..2 {
        let (addr, l) = listener().await;
        let mut settings = msg_server::MsgServerSettings {
            db_servers: vec![db_addr],
            route_servers: vec![route_addr],
            login_servers: vec![login_addr],
            reconnect_delay: Duration::from_millis(100),
            ..Default::default()
        };
        settings.core.port = u32::from(addr.port());
        settings.core.max_msgs_per_sec = 1000;
        msg.push((addr, spawn_role(move |s| msg_server::run(settings, l, s))));
    }
    System {
        proxy,
        db: (db_addr, db),
        route: (route_addr, route),
        login,
        http,
        msg,
    }
}

async fn add_user<S: Store>(store: &S, name: &str) -> u32 {
    let user = NewUser {
        profile: User {
            name: name.into(),
            nick: format!("{name} nick"),
            department: teamtalk_core::domain::DepartmentId(1),
            ..Default::default()
        },
        credentials: Credentials::from_plain("secret", "4321"),
    };
    store.add_user(&user, Timestamp(1)).await.unwrap().0
}

async fn suite<S: Store + 'static>(store: S) {
    store
        .add_department(
            &NewDepartment {
                name: "R&D".into(),
                priority: 0,
                parent: Default::default(),
            },
            Timestamp(1),
        )
        .await
        .unwrap();
    let (alice, bob, carol, dave) = (
        add_user(&store, "alice").await,
        add_user(&store, "bob").await,
        add_user(&store, "carol").await,
        add_user(&store, "dave").await,
    );
    let mut sys = start(store).await;
    let (ms1, ms2) = (sys.msg[0].0, sys.msg[1].0);

    // Login before the msg_servers are wired up is refused with a reason; then works.
    let mut a = login_when_ready(ms1, "alice", ClientType::Windows).await;
    let mut b = login_when_ready(ms2, "bob", ClientType::Windows).await;
    assert_eq!((a.user_id, b.user_id), (alice, bob));

    // Discovery: both msg_servers registered; the answer points to one of them.
    let deadline = tokio::time::Instant::now() + WAIT;
    let json = loop {
        let response = http_get(sys.http, "/msg_server").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap().to_owned();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if json["code"] == 0 {
            break json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no msg_server registered: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(json["priorIP"], "127.0.0.1");
    let port: u16 = json["port"]
        .as_str()
        .expect("port is a string")
        .parse()
        .unwrap();
    assert!(port == ms1.port() || port == ms2.port());
    assert!(http_get(sys.http, "/other")
        .await
        .starts_with("HTTP/1.1 404"));

    // Bad password and unknown user: refused (6) and closed.
    for (name, password) in [("alice", "wrong"), ("nobody", "secret")] {
        let (mut c, res) = Client::login(ms1, name, password, ClientType::Windows).await;
        assert_eq!(res.result_code, 6, "{name}");
        assert!(c.closed_within(WAIT).await);
    }

    // Post-login sync, in the Android client's order.
    a.send(buddy::ImDepartmentReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    })
    .await;
    let (depts, _) = a.expect::<buddy::ImDepartmentRsp>().await;
    assert_eq!(depts.dept_list.len(), 1);
    assert!(
        depts.attach_data.is_none(),
        "attach data never reaches clients"
    );
    a.send(buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    })
    .await;
    let (users, _) = a.expect::<buddy::ImAllUserRsp>().await;
    assert_eq!(users.user_list.len(), 4);
    a.send(buddy::ImRecentContactSessionReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    })
    .await;
    assert!(a
        .expect::<buddy::ImRecentContactSessionRsp>()
        .await
        .0
        .contact_session_list
        .is_empty());
    a.send(group::ImNormalGroupListReq {
        user_id: 0,
        attach_data: None,
    })
    .await;
    a.expect::<group::ImNormalGroupListRsp>().await;
    a.send(message::ImUnreadMsgCntReq {
        user_id: 0,
        attach_data: None,
    })
    .await;
    assert_eq!(
        a.expect::<message::ImUnreadMsgCntRsp>().await.0.total_cnt,
        0
    );
    let seq = a
        .send(buddy::ImUsersStatReq {
            user_id: 0,
            user_id_list: vec![bob, carol],
            attach_data: None,
        })
        .await;
    let (stat, stat_seq) = a.expect::<buddy::ImUsersStatRsp>().await;
    assert_eq!(stat_seq, seq);
    let statuses: Vec<_> = stat
        .user_stat_list
        .iter()
        .map(|s| (s.user_id, s.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(bob, 1), (carol, 2)],
        "bob online on the other msg_server"
    );

    // 1:1 across msg_servers: ack after storage, same msg_id at the receiver, seq 0.
    let seq = a.send_text(bob, 1, b"aGVsbG8=").await;
    let (ack, ack_seq) = a.expect::<message::ImMsgDataAck>().await;
    assert_eq!((ack_seq, ack.session_id), (seq, bob));
    let (got, got_seq) = b.expect::<message::ImMsgData>().await;
    assert_eq!(
        (got.msg_id, got.from_user_id, got_seq),
        (ack.msg_id, alice, 0)
    );
    assert_eq!(got.msg_data, Bytes::from_static(b"aGVsbG8="));
    assert!(got.attach_data.is_none());

    // Offline delivery: carol gets the unread count and the history after login.
    a.send_text(carol, 1, b"b2ZmbGluZQ==").await;
    let (ack_c, _) = a.expect::<message::ImMsgDataAck>().await;
    let mut c = Client::login_ok(ms2, "carol", ClientType::Windows).await;
    c.send(message::ImUnreadMsgCntReq {
        user_id: 0,
        attach_data: None,
    })
    .await;
    let (unread, _) = c.expect::<message::ImUnreadMsgCntRsp>().await;
    assert_eq!(unread.total_cnt, 1);
    c.send(message::ImGetMsgListReq {
        user_id: 0,
        session_type: 1,
        session_id: alice,
        msg_id_begin: 0,
        msg_cnt: 20,
        attach_data: None,
    })
    .await;
    let (history, _) = c.expect::<message::ImGetMsgListRsp>().await;
    assert_eq!(history.msg_list.len(), 1);
    assert_eq!(history.msg_list[0].msg_id, ack_c.msg_id);

    // Group: created by alice with bob and carol; fan-out across both msg_servers.
    a.send(group::ImGroupCreateReq {
        user_id: 0,
        group_type: GroupType::Temporary.to_wire(),
        group_name: "team".into(),
        group_avatar: String::new(),
        member_id_list: vec![alice, bob, carol],
        attach_data: None,
    })
    .await;
    let (created, _) = a.expect::<group::ImGroupCreateRsp>().await;
    assert_eq!(created.result_code, 0);
    let gid = created.group_id.unwrap();
    a.send_text(gid, 17, b"Z3JvdXA=").await;
    let (gack, _) = a.expect::<message::ImMsgDataAck>().await;
    for member in [&mut b, &mut c] {
        let (m, seq) = member.expect::<message::ImMsgData>().await;
        assert_eq!((m.to_session_id, m.msg_id, seq), (gid, gack.msg_id, 0));
    }
    // A non-member cannot post.
    let mut d = Client::login_ok(ms1, "dave", ClientType::Windows).await;
    d.send_text(gid, 17, b"aW50cnVkZXI=").await;
    d.expect_none(CommandId::MSG_DATA_ACK, Duration::from_millis(500))
        .await;
    b.expect_none(CommandId::MSG_DATA, Duration::from_millis(200))
        .await;
    // Group info with members.
    a.send(group::ImGroupInfoListReq {
        user_id: 0,
        group_version_list: vec![bd::GroupVersionInfo {
            group_id: gid,
            version: 0,
        }],
        attach_data: None,
    })
    .await;
    let (info, _) = a.expect::<group::ImGroupInfoListRsp>().await;
    assert_eq!(info.group_info_list[0].group_member_list.len(), 3);

    // Multi-device: bob's phone on ms1 and alice's phone on ms2 get every copy.
    let mut b_phone = Client::login_ok(ms1, "bob", ClientType::Android).await;
    let mut a_phone = Client::login_ok(ms2, "alice", ClientType::Ios).await;
    a.send_text(bob, 1, b"Ym90aA==").await;
    let (ack2, _) = a.expect::<message::ImMsgDataAck>().await;
    for receiver in [&mut b, &mut b_phone, &mut a_phone] {
        let (m, _) = receiver.expect::<message::ImMsgData>().await;
        assert_eq!(m.msg_id, ack2.msg_id);
    }
    // Read ack on bob's PC → read notify on bob's phone (the other msg_server).
    b.send(message::ImMsgDataReadAck {
        user_id: 0,
        session_id: alice,
        msg_id: ack2.msg_id,
        session_type: 1,
    })
    .await;
    let (read, _) = b_phone.expect::<message::ImMsgDataReadNotify>().await;
    assert_eq!((read.user_id, read.session_id), (bob, alice));

    // Same-class login on the other msg_server kicks the older one, which is closed.
    let mut a2 = Client::login_ok(ms2, "alice", ClientType::Mac).await;
    let (kick, kick_seq) = a.expect::<login::ImKickUser>().await;
    assert_eq!((kick.user_id, kick.kick_reason, kick_seq), (alice, 1, 0));
    assert!(
        a.closed_within(WAIT).await,
        "Q-03: the kicked connection is closed"
    );

    // Presence: bob's PC goes away → alice (PC, other server) sees him offline.
    drop(b);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (notice, _) = a2.expect::<buddy::ImUserStatNotify>().await;
        if notice.user_stat.user_id == bob && notice.user_stat.status == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }

    // route_server restart: presence rebuilt from the msg_servers, delivery resumes.
    let (route_addr, route) = sys.route;
    route.stop().await;
    let route_l = TcpListener::bind(route_addr).await.unwrap();
    sys.route = (route_addr, start_route(route_l));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        b_phone
            .send(buddy::ImUsersStatReq {
                user_id: 0,
                user_id_list: vec![alice],
                attach_data: None,
            })
            .await;
        if let Some(pdu) = b_phone.recv_within(Duration::from_millis(300)).await {
            if pdu.command() == CommandId::BUDDY_LIST_USERS_STATUS_RESPONSE {
                let stat: buddy::ImUsersStatRsp = pdu.decode_body().unwrap();
                if stat.user_stat_list[0].status == 1 {
                    break;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never rebuilt"
        );
    }
    a2.send_text(bob, 1, b"YWdhaW4=").await;
    let (ack3, _) = a2.expect::<message::ImMsgDataAck>().await;
    let (m, _) = b_phone.expect::<message::ImMsgData>().await;
    assert_eq!(m.msg_id, ack3.msg_id, "delivery across msg_servers resumed");

    // Broken frames close only their own connection.
    for header in [2u32 << 30, 8] {
        let mut bad = TcpStream::connect(ms1).await.unwrap();
        let mut frame = header.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 1, 0, 0, 7, 1, 0, 1, 0, 0, 0, 0]);
        bad.write_all(&frame).await.unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(WAIT, bad.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "a frame of length {header} closes the connection"
        );
    }
    b_phone.send(message::ImClientTimeReq {}).await;
    b_phone.expect::<message::ImClientTimeRsp>().await;

    // db_proxy down: new logins are refused with NO_DB_SERVER, nothing panics.
    let db_addr = sys.db.0;
    let (_, db) = sys.db;
    db.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, res) = Client::login(ms1, "carol", "secret", ClientType::Android).await;
        if res.result_code == bd::ResultType::RefuseReasonNoDbServer as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "login not refused: {res:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and work again when it is back.
    let db_l = TcpListener::bind(db_addr).await.unwrap();
    let db = start_db(&sys.proxy, db_l);
    let c2 = login_when_ready(ms1, "carol", ClientType::Android).await;
    assert_eq!(c2.user_id, carol);
    let _ = dave;

    db.stop().await;
    sys.route.1.stop().await;
    sys.login.stop().await;
    for (_, role) in sys.msg {
        role.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_system_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("teamtalk-system-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = teamtalk_store::SqliteStore::open(&teamtalk_store::SqliteConfig::new(
        dir.join("teamtalk.db"),
    ))
    .await
    .unwrap();
    suite(store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_system_on_mysql_and_redis() {
    let (Ok(server), Ok(redis)) = (
        std::env::var("TEAMTALK_TEST_MYSQL_URL"),
        std::env::var("TEAMTALK_TEST_REDIS_URL"),
    ) else {
        println!("skipped: set TEAMTALK_TEST_MYSQL_URL and TEAMTALK_TEST_REDIS_URL to run the system test on MySQL + Redis");
        return;
    };
    let name = format!("tt_system_{}", std::process::id());
    let server = server.trim_end_matches('/').to_owned();
    let admin = sqlx::MySqlPool::connect(&server).await.unwrap();
    let create = format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .unwrap();
    let mut config = teamtalk_store::MysqlRedisConfig::new(&format!("{server}/{name}"), &redis);
    config.key_prefix = format!("{name}:");
    let store = teamtalk_store::MysqlRedisStore::connect(&config)
        .await
        .unwrap();
    store.bootstrap().await.unwrap();
    let cleanup = store.clone();
    let outcome = tokio::spawn(suite(store)).await;
    let _ = cleanup.delete_prefixed_keys().await;
    let drop = format!("DROP DATABASE IF EXISTS `{name}`");
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

/// A login from `local` (a loopback address of the test's choosing) to the msg_server at
/// `addr`; the answer's result string.
async fn login_from(local: &str, addr: SocketAddr, name: &str, password: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let mut c = Client {
        stream: socket.connect(addr).await.unwrap(),
        buf: BytesMut::new(),
        decoder: PduDecoder::default(),
        seq: 0,
        user_id: 0,
    };
    c.send(login::ImLoginReq {
        user_name: name.into(),
        password: client_password(password),
        online_status: 1,
        client_type: ClientType::Windows.to_wire(),
        client_version: None,
    })
    .await;
    let (res, _) = c.expect::<login::ImLoginRes>().await;
    if res.result_code == 0 {
        "ok".to_owned()
    } else {
        res.result_string.unwrap_or_default()
    }
}

/// msg_server tells db_proxy each client's address: a stranger guessing from one address is
/// locked out, the owner logging in from another is not (both went through one msg_server,
/// whose own address the original counted by).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_counts_per_client_address() {
    let sys = start(teamtalk_store::MemoryStore::new()).await;
    add_user(sys.proxy.store(), "owner").await;
    let ms = sys.msg[0].0;
    drop(login_when_ready(ms, "owner", ClientType::Windows).await);
    for _ in 0..11 {
        let answer = login_from("127.0.0.2", ms, "owner ", "guess").await;
        assert_eq!(answer, "用户名/密码错误", "a plain refusal");
    }
    assert_eq!(
        login_from("127.0.0.2", ms, "owner", "secret").await,
        "用户名/密码错误次数太多",
        "the stranger's address is locked out, also with the right password"
    );
    assert_eq!(
        login_from("127.0.0.1", ms, "owner", "secret").await,
        "ok",
        "the owner's address is not"
    );
    sys.db.1.stop().await;
    sys.route.1.stop().await;
    sys.login.stop().await;
    for (_, role) in sys.msg {
        role.stop().await;
    }
}
