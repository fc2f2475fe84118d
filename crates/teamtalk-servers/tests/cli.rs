//! The `teamtalk` command as a user runs it: administration on a fresh data dir, then
//! `teamtalk serve`, a client logging in through HTTP discovery as the user just created,
//! chatting, and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{login, message};
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

fn discover(http: &str) -> SocketAddr {
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
            return format!("{ip}:{port}").parse().unwrap();
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
        "http_port = 0\nmsg_port = 0\nlogin_port = 0\nroute_port = 0\ndb_proxy_port = 0\n",
    )
    .unwrap();
    let mut server = teamtalk()
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&dir)
        .env("TEAMTALK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let http = loop {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.trim().strip_prefix("clients:") {
            let url = rest.split_whitespace().next().unwrap();
            break url
                .trim_start_matches("http://")
                .trim_end_matches("/msg_server")
                .to_owned();
        }
    };

    let ms = discover(&http);
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
    alice.send(login::ImLogoutReq {}, 3);
    assert_eq!(alice.expect::<login::ImLogoutRsp>().result_code, 0);

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful exit: {exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
