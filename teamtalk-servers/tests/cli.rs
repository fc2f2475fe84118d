//! The `teamtalk` command as a user runs it: administration on a fresh data dir, then
//! `teamtalk serve`, a client logging in through HTTP discovery as the user just created,
//! chatting, and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{buddy, group, login, message};
use teamtalk_core::{AnyMessage, PduDecoder, PduMessage};

fn teamtalk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_teamtalk"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("teamtalk-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = teamtalk()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_usage_errors() {
    let out = teamtalk().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .starts_with(&format!("teamtalk {}", env!("CARGO_PKG_VERSION"))));
    let out = teamtalk().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "user add",
        "user list",
        "dept add",
        "db-proxy-server",
        "msg-server",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
    for role in ["push-server", "file-server", "msfs", "http-msg-server"] {
        let out = teamtalk()
            .args([role, "--config", "/nonexistent.conf"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{role}: {err}");
        assert!(err.contains("cannot read"), "{role} is a known role: {err}");
    }
    for bad in [
        &["serve", "--bogus", "1"][..],
        &["frobnicate"],
        &["user", "add", "x"],
        &["msg-server"],
        &["dept", "add", "x", "--parent", "two"],
    ] {
        let out = teamtalk().args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?} explains itself");
    }
    let dir = temp_dir("badconf");
    let conf = dir.join("msgserver.conf");
    std::fs::write(&conf, "ListenPort=eighty\nIpAddr1=1.2.3.4\n").unwrap();
    let out = teamtalk()
        .args(["msg-server", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ListenPort"));
    // APNs keys: without the `apns` feature the build says so; with it, the missing key
    // file is named. Either way the role does not start half-configured.
    let push = dir.join("pushserver.conf");
    std::fs::write(
        &push,
        "ListenPort=0\nApnsKeyFile=/nonexistent/AuthKey_X.p8\nApnsKeyId=X\nApnsTeamId=Y\nApnsTopic=z\n",
    )
    .unwrap();
    let out = teamtalk()
        .args(["push-server", "--config"])
        .arg(&push)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("APNs"), "{err}");
    let toml = dir.join("serve.toml");
    std::fs::write(&toml, "http_port = [1]\n").unwrap();
    let out = teamtalk()
        .args(["serve", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let _ = std::fs::remove_dir_all(&dir);
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
}

impl Client {
    fn send(&mut self, message: impl Into<AnyMessage>, seq: u16) {
        self.stream
            .write_all(&message.into().to_pdu(seq).to_bytes())
            .unwrap();
    }

    fn expect<M: PduMessage>(&mut self) -> M {
        loop {
            if let Some(pdu) = self.decoder.decode(&mut self.buf).unwrap() {
                if pdu.command() == M::COMMAND {
                    return pdu.decode_body().unwrap();
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed while waiting for {}", M::COMMAND);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn login(addr: SocketAddr, name: &str, password: &str) -> (Client, login::ImLoginRes) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            decoder: PduDecoder::default(),
        };
        c.send(
            login::ImLoginReq {
                user_name: name.into(),
                password: client_password(password),
                online_status: 1,
                client_type: 1,
                client_version: None,
            },
            1,
        );
        let res = c.expect::<login::ImLoginRes>();
        (c, res)
    }
}

/// `GET path` on `http`: (status code, body).
fn http_get(http: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(http).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn discover(http: &str) -> SocketAddr {
    discover_json(http).0
}

fn discover_json(http: &str) -> (SocketAddr, serde_json::Value) {
    let addr: SocketAddr = http.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /msg_server HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        if json["code"] == 0 {
            let ip = json["priorIP"].as_str().unwrap();
            let port = json["port"].as_str().unwrap();
            return (format!("{ip}:{port}").parse().unwrap(), json);
        }
        assert!(Instant::now() < deadline, "no msg_server: {json}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_with_users_added_by_the_cli() {
    let dir = temp_dir("serve");
    let (code, out, _) = run(&["dept", "add", "R&D"], &dir);
    assert_eq!((code, out.trim()), (0, "department R&D added with id 1"));
    for name in ["alice", "bob"] {
        let (code, out, err) = run(
            &["user", "add", name, "--password", "pw-123", "--dept", "1"],
            &dir,
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(name));
    }
    let (code, out, _) = run(&["user", "list"], &dir);
    assert_eq!(code, 0);
    assert!(out.contains("alice") && out.contains("bob"));

    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        "http_port = 0\nmsg_port = 0\nlogin_port = 0\nroute_port = 0\ndb_proxy_port = 0\nmsfs_port = 0\nhttp_msg_port = 0\nfile_port = 0\nfile_ms_port = 0\n",
    )
    .unwrap();
    let mut server = Process(Some(
        teamtalk()
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&dir)
            .env("TEAMTALK_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let stdout = server.0.as_mut().and_then(|c| c.stdout.take()).unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut http = None;
    let mut msfs = None;
    while http.is_none() || msfs.is_none() {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.trim().strip_prefix("clients:") {
            let url = rest.split_whitespace().next().unwrap();
            http = Some(
                url.trim_start_matches("http://")
                    .trim_end_matches("/msg_server")
                    .to_owned(),
            );
        }
        if let Some(rest) = line.trim().strip_prefix("msfs:") {
            msfs = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
    }
    let (http, msfs) = (http.unwrap(), msfs.unwrap());
    // msfs answers (a missing file), and discovery hands its URL to clients.
    let msfs_addr = msfs
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = TcpStream::connect(&msfs_addr).unwrap();
    stream
        .write_all(b"GET /g0/000/000/none.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    let (ms, json) = discover_json(&http);
    assert_eq!(
        json["msfsPrior"],
        msfs.as_str(),
        "clients are sent to this msfs"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut alice, res) = loop {
        let (c, res) = Client::login(ms, "alice", "pw-123");
        if res.result_code == 0 || Instant::now() > deadline {
            break (c, res);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(res.result_code, 0);
    let alice_id = res.user_info.unwrap().user_id;
    let (_, wrong) = Client::login(ms, "alice", "nope");
    assert_eq!(wrong.result_code, 6);
    let (mut bob, res) = Client::login(ms, "bob", "pw-123");
    assert_eq!(res.result_code, 0);
    let bob_id = res.user_info.unwrap().user_id;

    alice.send(
        message::ImMsgData {
            from_user_id: alice_id,
            to_session_id: bob_id,
            msg_id: 0,
            create_time: 0,
            msg_type: 1,
            msg_data: Bytes::from_static(b"aGk="),
            attach_data: None,
        },
        2,
    );
    let ack = alice.expect::<message::ImMsgDataAck>();
    let got = bob.expect::<message::ImMsgData>();
    assert_eq!(got.msg_id, ack.msg_id);
    // The client's post-login sync, then a group.
    alice.send(
        buddy::ImDepartmentReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None,
        },
        3,
    );
    assert_eq!(
        alice.expect::<buddy::ImDepartmentRsp>().dept_list[0].dept_name,
        "R&D"
    );
    alice.send(
        buddy::ImAllUserReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None,
        },
        4,
    );
    assert_eq!(alice.expect::<buddy::ImAllUserRsp>().user_list.len(), 2);
    alice.send(
        buddy::ImRecentContactSessionReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None,
        },
        5,
    );
    let sessions = alice
        .expect::<buddy::ImRecentContactSessionRsp>()
        .contact_session_list;
    assert_eq!(sessions.len(), 1, "the chat with bob");
    assert_eq!(sessions[0].session_id, bob_id);
    alice.send(
        group::ImGroupCreateReq {
            user_id: 0,
            group_type: 2,
            group_name: "lunch".into(),
            group_avatar: String::new(),
            member_id_list: vec![alice_id, bob_id],
            attach_data: None,
        },
        6,
    );
    let group_id = alice.expect::<group::ImGroupCreateRsp>().group_id.unwrap();
    alice.send(
        message::ImMsgData {
            from_user_id: 0,
            to_session_id: group_id,
            msg_id: 0,
            create_time: 0,
            msg_type: 17,
            msg_data: Bytes::from_static(b"bm9vbj8="),
            attach_data: None,
        },
        7,
    );
    let ack = alice.expect::<message::ImMsgDataAck>();
    let got = bob.expect::<message::ImMsgData>();
    assert_eq!((got.to_session_id, got.msg_id), (group_id, ack.msg_id));
    bob.send(
        message::ImUnreadMsgCntReq {
            user_id: 0,
            attach_data: None,
        },
        2,
    );
    assert_eq!(
        bob.expect::<message::ImUnreadMsgCntRsp>().total_cnt,
        2,
        "one 1:1, one group message"
    );

    alice.send(login::ImLogoutReq {}, 8);
    assert_eq!(alice.expect::<login::ImLogoutRsp>().result_code, 0);

    stop(server, "serve");
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process of a test: killed when dropped (a failing assertion must not leave it
/// running, holding ports and the test's output pipe).
struct Process(Option<Child>);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops `process` with SIGTERM and checks that it exits cleanly.
fn stop(mut process: Process, role: &str) {
    let Some(mut child) = process.0.take() else {
        return;
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{role} exits cleanly on SIGTERM: {exit:?}");
            return;
        }
        assert!(Instant::now() < deadline, "{role} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The multi-machine deployment, on one machine: every role its own process, configured by
/// the original `.conf` files (db_proxy by a TOML file on the embedded store).
#[test]
fn each_role_alone_from_its_config_file() {
    let dir = temp_dir("roles");
    for name in ["alice", "bob"] {
        let (code, _, err) = run(&["user", "add", name, "--password", "pw"], &dir);
        assert_eq!(code, 0, "{err}");
    }
    let (db, route, http, links, client) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let files = [
        ("dbproxy.toml", format!("ListenIP = \"127.0.0.1\"\nListenPort = {db}\ndata_dir = {:?}\n", dir.display().to_string())),
        ("routeserver.conf", format!("ListenIP=127.0.0.1\nListenMsgPort={route}\n")),
        (
            "loginserver.conf",
            format!("HttpListenIP=127.0.0.1\nHttpPort={http}\nMsgServerListenIP=127.0.0.1\nMsgServerPort={links}\nmsfs=http://127.0.0.1:8700/\n"),
        ),
        (
            "msgserver.conf",
            format!(
                "ListenIP=127.0.0.1;127.0.0.2\nListenPort={client}\nIpAddr1=127.0.0.1\nMaxConnCnt=1000\n\
                 DBServerIP1=127.0.0.1\nDBServerPort1={db}\nDBServerIP2=127.0.0.1\nDBServerPort2={db}\nConcurrentDBConnCnt=1\n\
                 LoginServerIP1=localhost\nLoginServerPort1={links}\nRouteServerIP1=127.0.0.1\nRouteServerPort1={route}\n"
            ),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let spawn = |role: &str, file: &str| {
        Process(Some(
            teamtalk()
                .args([role, "--config"])
                .arg(dir.join(file))
                .env("TEAMTALK_LOG", "warn")
                .spawn()
                .unwrap(),
        ))
    };
    let db_proxy = spawn("db-proxy-server", "dbproxy.toml");
    let route_server = spawn("route-server", "routeserver.conf");
    let login_server = spawn("login-server", "loginserver.conf");
    for port in [db, route, links, http] {
        wait_listening(port);
    }
    let msg_server = spawn("msg-server", "msgserver.conf");

    let ms = discover(&format!("127.0.0.1:{http}"));
    let (status, health) = http_get(&format!("127.0.0.1:{http}"), "/health");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["msg_servers"].as_u64()),
        (Some("ok"), Some(1))
    );
    assert_eq!(ms.port(), client);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut alice, res) = loop {
        let (c, res) = Client::login(ms, "alice", "pw");
        if res.result_code == 0 || Instant::now() > deadline {
            break (c, res);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(res.result_code, 0, "{res:?}");
    // The second address of `ListenIP` is served too.
    let second = SocketAddr::from(([127, 0, 0, 2], client));
    let (mut bob, res) = Client::login(second, "bob", "pw");
    assert_eq!(res.result_code, 0, "{res:?}");
    let bob_id = res.user_info.unwrap().user_id;
    alice.send(
        message::ImMsgData {
            from_user_id: 0,
            to_session_id: bob_id,
            msg_id: 0,
            create_time: 0,
            msg_type: 1,
            msg_data: Bytes::from_static(b"aGk="),
            attach_data: None,
        },
        2,
    );
    let ack = alice.expect::<message::ImMsgDataAck>();
    assert_eq!(bob.expect::<message::ImMsgData>().msg_id, ack.msg_id);

    stop(msg_server, "msg-server");
    // Without a msg_server the login_server says so to load balancers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(&format!("127.0.0.1:{http}"), "/health");
        if status == 503 {
            assert!(body.contains("no msg_server"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still healthy: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(login_server, "login-server");
    stop(route_server, "route-server");
    stop(db_proxy, "db-proxy-server");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `user passwd`, `user disable` and `user enable` on the embedded store, checked in the store
/// the way a login checks it.
#[test]
fn passwords_are_changed_and_accounts_closed_from_the_cli() {
    let dir = temp_dir("useradmin");
    let (code, _, err) = run(&["user", "add", "dave", "--password", "old"], &dir);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["user", "passwd", "dave", "--password", "n3w"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("password of dave changed"), "{out}");
    let (code, out, err) = run(&["user", "disable", "dave"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dave (id 1) disabled"), "{out}");
    assert!(
        out.contains("/query/KickUser"),
        "says how to cut open connections: {out}"
    );
    let (_, list, _) = run(&["user", "list"], &dir);
    assert!(
        !list.contains("dave"),
        "a closed account is not listed: {list}"
    );
    let (code, list, err) = run(&["user", "list", "--all"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        list.lines()
            .any(|l| l.contains("dave") && l.ends_with("disabled")),
        "--all lists it as disabled: {list}"
    );
    let (code, _, err) = run(&["user", "enable", "dave"], &dir);
    assert_eq!(code, 0, "{err}");
    let (_, list, _) = run(&["user", "list"], &dir);
    assert!(list.contains("dave"), "{list}");
    let (code, _, err) = run(&["user", "passwd", "nobody", "--password", "x"], &dir);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no user named"), "{err}");
    let (code, _, _) = run(&["user", "passwd", "dave"], &dir);
    assert_eq!(code, 64, "--password is required");
    let (code, out, err) = run(
        &["user", "set", "dave", "--nick", "Dave D.", "--dept", "3"],
        &dir,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("profile of dave changed"), "{out}");
    let (_, list, _) = run(&["user", "list"], &dir);
    assert!(list.contains("Dave D."), "{list}");
    let (code, _, _) = run(&["user", "set", "dave"], &dir);
    assert_eq!(code, 64, "nothing to change");
    let (code, _, _) = run(&["user", "set", "dave", "--gender", "7"], &dir);
    assert_eq!(code, 64);

    // What a login would check: the new password verifies, the old one does not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use teamtalk_core::store::UserStore;
        let config = teamtalk_store::SqliteConfig::new(dir.join("teamtalk.db"));
        let store = teamtalk_store::SqliteStore::open(&config).await.unwrap();
        let (_, credentials) = store.login_candidate("dave").await.unwrap().unwrap();
        let verify = |plain: &str| {
            teamtalk_core::password::verify_password(
                &client_password(plain),
                &credentials.salt,
                &credentials.password_hash,
            )
        };
        assert!(verify("n3w"));
        assert!(!verify("old"));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// One account per login name: `user add` and `user add-many` refuse names that exist
/// (trailing spaces do not make a name new), and `user list` flags duplicates that an older
/// tool stored.
#[test]
fn one_account_per_login_name_from_the_cli() {
    let dir = temp_dir("unique");
    let (code, out, err) = run(&["user", "add", "bob", "--password", "pw"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added with id 1"), "{out}");
    for name in ["bob", "bob "] {
        let (code, _, err) = run(&["user", "add", name, "--password", "other"], &dir);
        assert_eq!(code, 64, "{name:?} refused: {err}");
        assert!(
            err.contains("a user named") && err.contains("already exists (id 1)"),
            "{err}"
        );
    }
    let (code, _, err) = run(&["user", "add", "Bob", "--password", "pw"], &dir);
    assert_eq!(code, 0, "names are case-sensitive: {err}");

    let many = |count: &str| {
        run(
            &[
                "user",
                "add-many",
                "--prefix",
                "p",
                "--count",
                count,
                "--password",
                "pw",
            ],
            &dir,
        )
    };
    let (code, out, err) = many("3");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 users added"), "{out}");
    let (code, out, err) = many("5");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 users added"), "{out}");
    assert!(out.contains("3 names already taken, skipped"), "{out}");

    let (code, list, err) = run(&["user", "list"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(!list.contains("DUPLICATE"), "{list}");
    assert_eq!(
        list.lines().filter(|l| l.contains(" p")).count(),
        5,
        "{list}"
    );

    // A database written by an older tool may hold the same name twice.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("teamtalk.db"))
            .connect()
            .await
            .unwrap();
        sqlx::query("INSERT INTO users (name, nick, created, updated) VALUES ('bob ', 'b2', 1, 1)")
            .execute(&mut db)
            .await
            .unwrap();
    });
    let (code, list, err) = run(&["user", "list"], &dir);
    assert_eq!(code, 0, "{err}");
    let flagged: Vec<&str> = list.lines().filter(|l| l.contains("DUPLICATE")).collect();
    assert_eq!(flagged.len(), 2, "{list}");
    assert!(
        flagged.iter().all(|l| l.contains("logins use id 8")),
        "both name the account a login picks (the highest id): {list}"
    );
    assert!(err.contains("docs/compatibility.md"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `teamtalk backup`: a copy of the embedded store that opens with the data in it; it never
/// overwrites a file, and a MySQL configuration is told to use mysqldump.
#[test]
fn backup_of_the_embedded_store() {
    let dir = temp_dir("backup");
    let (code, _, err) = run(&["user", "add", "erin", "--password", "pw"], &dir);
    assert_eq!(code, 0, "{err}");
    let copy = dir.join("copy.db");
    let copy_arg = copy.to_str().unwrap();
    let (code, _, err) = run(&["dept", "add", "Sales"], &dir);
    assert_eq!(code, 0, "{err}");
    let (code, depts, err) = run(&["dept", "list"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(depts.contains("Sales"), "{depts}");
    let (code, out, err) = run(&["backup", copy_arg], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backup written"), "{out}");
    let (code, _, err) = run(&["backup", copy_arg], &dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");

    // The copy is a data dir of its own: the user is in it.
    let restored = dir.join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::rename(&copy, restored.join("teamtalk.db")).unwrap();
    let (code, list, err) = run(&["user", "list"], &restored);
    assert_eq!(code, 0, "{err}");
    assert!(list.contains("erin"), "{list}");
    let (_, depts, _) = run(&["dept", "list"], &restored);
    assert!(depts.contains("Sales"), "{depts}");

    let conf = dir.join("mysql.toml");
    std::fs::write(
        &conf,
        "mysql_url = \"mysql://127.0.0.1:1/x\"\nredis_url = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = teamtalk()
        .args(["backup", "/tmp/never.db", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysqldump"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw validate request from source address `from`; the answer's command, `None` when the
/// server closed the connection without one.
fn ask_db_proxy_from(from: &str, port: u16) -> Option<teamtalk_core::CommandId> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let request = teamtalk_core::proto::server::ImValidateReq {
            user_name: "alice".into(),
            password: client_password("pw"),
            attach_data: None,
        };
        let _ = stream
            .write_all(&AnyMessage::from(request).to_pdu(1).to_bytes())
            .await;
        let mut buf = BytesMut::new();
        let mut decoder = PduDecoder::default();
        loop {
            if let Some(pdu) = decoder.decode(&mut buf).unwrap() {
                return Some(pdu.command());
            }
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
                .await
                .expect("an answer or a close within 10 s");
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        }
    })
}

/// A role's internal port serves the peers of its `AllowedPeers` key only; a bad list or TLS
/// keys the build cannot use are configuration errors.
#[test]
fn a_role_serves_only_its_allowed_peers() {
    let dir = temp_dir("allowed");
    let (code, _, err) = run(&["user", "add", "alice", "--password", "pw"], &dir);
    assert_eq!(code, 0, "{err}");
    let db = free_port();
    let conf = dir.join("dbproxy.toml");
    std::fs::write(
        &conf,
        format!(
            "ListenPort = {db}\nAllowedPeers = \"127.0.0.1\"\ndata_dir = {:?}\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let db_proxy = Process(Some(
        teamtalk()
            .args(["db-proxy-server", "--config"])
            .arg(&conf)
            .env("TEAMTALK_LOG", "error")
            .spawn()
            .unwrap(),
    ));
    wait_listening(db);
    assert_eq!(ask_db_proxy_from("127.0.0.2", db), None, "not on the list");
    assert_eq!(
        ask_db_proxy_from("127.0.0.1", db),
        Some(teamtalk_core::CommandId::OTHER_VALIDATE_RSP)
    );
    stop(db_proxy, "db-proxy-server");

    for (text, needle) in [
        (
            "ListenMsgPort=0\nAllowedPeers=10.0.0.0/33\n",
            "AllowedPeers",
        ),
        (
            "ListenMsgPort=0\nTlsCaFile=ca.pem\n",
            if cfg!(feature = "tls") {
                "TlsCertFile"
            } else {
                "--features tls"
            },
        ),
    ] {
        let bad = dir.join("bad.conf");
        std::fs::write(&bad, text).unwrap();
        let out = teamtalk()
            .args(["route-server", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped `dbproxyserver.conf` says `MsfsSite=127.0.0.1`: accepted with a warning about
/// port 80 (the file here then fails on its too short `aesKey`, read after `MsfsSite`, so the
/// role stops before reaching for MySQL); a value that is no http URL is itself the
/// configuration error (exit 64).
#[test]
fn db_proxy_takes_the_shipped_scheme_less_msfs_site() {
    let dir = temp_dir("msfs-site");
    let conf = |site: &str| {
        format!(
            "ListenIP=127.0.0.1\nListenPort=0\nMsfsSite={site}\naesKey=short\n\
             DBInstances=teamtalk_master,teamtalk_slave\n\
             teamtalk_master_host=127.0.0.1\nteamtalk_master_port=1\nteamtalk_master_dbname=x\n\
             teamtalk_slave_host=127.0.0.1\nteamtalk_slave_port=1\nteamtalk_slave_dbname=x\n\
             CacheInstances=unread,group_set,token,group_member\n\
             unread_host=127.0.0.1\nunread_port=1\ngroup_set_host=127.0.0.1\n\
             group_set_port=1\ntoken_host=127.0.0.1\ntoken_port=1\n\
             group_member_host=127.0.0.1\ngroup_member_port=1\n"
        )
    };
    let run_with = |site: &str| {
        let path = dir.join("dbproxyserver.conf");
        std::fs::write(&path, conf(site)).unwrap();
        let out = teamtalk()
            .args(["db-proxy-server", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run_with("127.0.0.1");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("aesKey") && !err.contains("key MsfsSite"),
        "MsfsSite is accepted: {err}"
    );
    assert!(
        err.contains("MsfsSite") && err.contains("http://127.0.0.1/") && err.contains("port 80"),
        "the operator is told where audio goes: {err}"
    );
    let (code, err) = run_with("ftp://127.0.0.1");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("MsfsSite"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `teamtalk serve` on free ports under `ulimit` arguments `limit` (e.g. `-n 256`) with the
/// extra TOML `config`: the process, login_server's HTTP address and the msg_server's.
fn serve_limited(dir: &Path, limit: &str, config: &str) -> (Process, SocketAddr, SocketAddr) {
    let file = dir.join("serve.toml");
    std::fs::write(
        &file,
        format!(
            "http_port = 0\nmsg_port = 0\nlogin_port = 0\nroute_port = 0\ndb_proxy_port = 0\n\
             msfs_port = 0\nhttp_msg_port = 0\nfile_port = 0\nfile_ms_port = 0\n{config}"
        ),
    )
    .unwrap();
    let mut server = Process(Some(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_teamtalk"))
            .args(["serve", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir)
            .env("TEAMTALK_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let stdout = server.0.as_mut().and_then(|c| c.stdout.take()).unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut ms) = (None, None);
    while http.is_none() || ms.is_none() {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.trim().strip_prefix("clients:") {
            let url = rest.split_whitespace().next().unwrap();
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches("/msg_server");
            http = Some(addr.parse().unwrap());
        }
        if let Some(rest) = line.trim().strip_prefix("msg_server:") {
            ms = Some(rest.trim().parse().unwrap());
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, http.unwrap(), ms.unwrap())
}

/// Logs `name` in on `ms`, retrying while the msg_server is not ready yet (or closes the
/// connection because it is out of descriptors).
fn login_eventually(ms: SocketAddr, name: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Client::login(ms, name, "pw-123")
        }));
        match attempt {
            Ok((c, res)) if res.result_code == 0 => return c,
            Ok((_, res)) => assert!(Instant::now() < deadline, "login of {name}: {res:?}"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "login of {name} never got through"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens up to `count` idle connections to `addr`, stopping at the first connect not
/// answered within a second (the backlog is full: the server stopped accepting); returns
/// those opened and how many of them the server closed within a few seconds.
fn flood(addr: SocketAddr, count: usize) -> (Vec<TcpStream>, usize) {
    let mut streams = Vec::new();
    for _ in 0..count {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => streams.push(stream),
            Err(_) => break,
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = 0;
    for stream in &mut streams {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    (streams, closed)
}

/// One login attempt of `name` on `ms`: whether it succeeded (a connection that is never
/// served or is closed counts as a failure).
fn logs_in(ms: SocketAddr, name: &str) -> bool {
    std::panic::catch_unwind(|| Client::login(ms, name, "pw-123").1.result_code == 0)
        .unwrap_or(false)
}

#[test]
fn a_full_http_port_leaves_the_other_roles_their_descriptors() {
    let dir = temp_dir("fd-caps");
    let (code, _, err) = run(&["user", "add", "alice", "--password", "pw-123"], &dir);
    assert_eq!(code, 0, "{err}");
    let (server, http, ms) = serve_limited(&dir, "-n 256", "");
    drop(login_eventually(ms, "alice"));
    // More idle HTTP connections than the whole process has descriptors.
    let (held, closed) = flood(http, 400);
    assert!(closed > 0, "login_server's HTTP cap closes the excess");
    assert!(
        logs_in(ms, "alice"),
        "msg_server serves clients while login_server's HTTP port is full"
    );
    drop(held);
    stop(server, "serve");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn out_of_descriptors_the_waiting_connections_are_closed_and_service_recovers() {
    let dir = temp_dir("fd-reserve");
    let (code, _, err) = run(&["user", "add", "alice", "--password", "pw-123"], &dir);
    assert_eq!(code, 0, "{err}");
    // Caps too high for the limit: the process runs out of descriptors.
    let (server, http, ms) = serve_limited(
        &dir,
        "-n 256",
        "http_max_conn = 100000\nmax_conn_per_ip = 0\nhttp_header_timeout = 300\n\
         http_idle_timeout = 300\n",
    );
    drop(login_eventually(ms, "alice"));
    let (held, closed) = flood(http, 400);
    assert!(
        closed > 0,
        "connections without a descriptor are accepted and closed, not left waiting"
    );
    drop(held);
    let mut alice = login_eventually(ms, "alice");
    alice.send(login::ImLogoutReq {}, 2);
    assert_eq!(alice.expect::<login::ImLogoutRsp>().result_code, 0);
    stop(server, "serve");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let dir = temp_dir("fd-raise");
    let (server, _, _) = serve_limited(&dir, "-S -n 300", "");
    let pid = server.0.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(values.len(), 2, "{line}");
    assert_ne!(values[0], "300", "{line}");
    assert_eq!(values[0], values[1], "soft = hard: {line}");
    stop(server, "serve");
    let _ = std::fs::remove_dir_all(&dir);
}
