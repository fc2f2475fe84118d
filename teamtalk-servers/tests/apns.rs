//! The APNs backend against a local stand-in for Apple: an HTTP/2 server over TLS (a test
//! certificate authority) that checks what Apple checks — the path, the headers, the ES256
//! provider token against the public half of the `.p8` key — and answers as Apple does.
//!
//! Run with `cargo test -p teamtalk-servers --features apns` (CI does).

#![cfg(feature = "apns")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use teamtalk_core::proto::base_define::{ClientType, UserTokenInfo};
use teamtalk_core::proto::server::{ImPushToUserReq, ImPushToUserRsp};
use teamtalk_core::{AnyMessage, PduDecoder, PduMessage};
use teamtalk_servers::conf::ConfFile;
use teamtalk_servers::push::apns::{ApnsBackend, ApnsConfig};
use teamtalk_servers::push::{self, Notification, PushBackend, PushSettings};
use teamtalk_servers::{roles, shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const KEY_ID: &str = "TEST123456";
const TEAM_ID: &str = "TEAM987654";
const TOPIC: &str = "com.mogujie.TeamTalk";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apns")
        .join(name)
}

/// What the stand-in received.
#[derive(Debug)]
struct Seen {
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// The stand-in for Apple.
struct Apple {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Answers to give, in order (status, reason); 200 once they run out.
    script: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
    /// TLS connections accepted.
    connections: Arc<AtomicUsize>,
    /// The connections' tasks (aborting them drops the connections).
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Apple {
    async fn start() -> Apple {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(fixture("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (script2, connections2, tasks2) = (script.clone(), connections.clone(), tasks.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen_tx, script) =
                    (acceptor.clone(), seen_tx.clone(), script2.clone());
                let connections = connections2.clone();
                let task = tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (seen_tx, script) = (seen_tx.clone(), script.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            seen_tx
                                .send(Seen {
                                    path: parts.uri.path().to_owned(),
                                    headers: parts.headers,
                                    body,
                                })
                                .unwrap();
                            let answer = script.lock().unwrap().pop_front();
                            let response = match answer {
                                None => Response::builder()
                                    .status(200)
                                    .header("apns-id", "EC1BF194-B3B2-424A-89A9-5A918A6E6B5B")
                                    .body(Full::new(Bytes::new())),
                                Some((status, reason)) => Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(format!(
                                        "{{\"reason\":\"{reason}\"}}"
                                    )))),
                            };
                            Ok::<_, Infallible>(response.unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                tasks2.lock().unwrap().push(task);
            }
        });
        Apple {
            addr,
            seen,
            script,
            connections,
            tasks,
        }
    }

    fn config(&self) -> ApnsConfig {
        let mut config = ApnsConfig::new(
            fixture("AuthKey_TEST123456.p8"),
            KEY_ID,
            TEAM_ID,
            TOPIC,
            false,
        );
        config.endpoint = format!("https://localhost:{}", self.addr.port());
        config.ca_file = Some(fixture("ca.pem"));
        config
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("nothing reached the stand-in")
            .unwrap()
    }

    fn drop_connections(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

fn ios(token: &str, push_type: u32) -> Notification {
    Notification {
        user_id: 7,
        client_type: ClientType::Ios as i32,
        token: token.to_owned(),
        push_type,
        badge: 3,
        alert: "bob:你好".into(),
        data: r#"{"msg_type":1,"from_id":5}"#.into(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks the provider token as Apple does; returns it.
fn check_token(seen: &Seen) -> String {
    let authorization = seen.headers["authorization"].to_str().unwrap();
    let token = authorization.strip_prefix("bearer ").unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": KEY_ID}));
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], TEAM_ID);
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now()) < 60, "iat {iat} is now");
    let key = PrivatePkcs8KeyDer::from_pem_file(fixture("AuthKey_TEST123456.p8")).unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.secret_pkcs8_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the token is signed with the .p8 key");
    token.to_owned()
}

#[tokio::test]
async fn a_push_reaches_apns_as_apple_expects() {
    let mut apple = Apple::start().await;
    let backend = ApnsBackend::new(apple.config()).unwrap();
    let device = "0f".repeat(32);

    backend.push(&ios(&device, 1)).await.unwrap();
    let seen = apple.next().await;
    assert_eq!(seen.path, format!("/3/device/{device}"));
    assert_eq!(seen.headers["apns-topic"], TOPIC);
    assert_eq!(seen.headers["apns-push-type"], "alert");
    assert_eq!(seen.headers["apns-priority"], "10");
    let expiration: u64 = seen.headers["apns-expiration"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expiration.abs_diff(now() + 3600) < 60);
    let first_token = check_token(&seen);
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "aps": {"alert": {"body": "bob:你好"}, "badge": 3, "sound": "bingbong.aiff"},
            "custom": {"msg_type": 1, "from_id": 5},
        })
    );

    // A silent push (a PC of the user is online): badge only, low priority; same connection
    // and same provider token.
    backend.push(&ios(&device, 2)).await.unwrap();
    let seen = apple.next().await;
    assert_eq!(seen.headers["apns-priority"], "5");
    assert_eq!(check_token(&seen), first_token);
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"aps": {"badge": 3}, "custom": {"msg_type": 1, "from_id": 5}})
    );
    assert_eq!(apple.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refusals_fail_and_an_expired_token_is_renewed() {
    let mut apple = Apple::start().await;
    let backend = ApnsBackend::new(apple.config()).unwrap();
    let device = "ab".repeat(32);

    apple
        .script
        .lock()
        .unwrap()
        .push_back((400, "BadDeviceToken"));
    let error = backend.push(&ios(&device, 1)).await.unwrap_err();
    assert!(error.to_string().contains("BadDeviceToken"), "{error}");
    let refused = check_token(&apple.next().await);

    // Apple says the token expired: a new one is signed and the push sent again.
    apple
        .script
        .lock()
        .unwrap()
        .push_back((403, "ExpiredProviderToken"));
    backend.push(&ios(&device, 1)).await.unwrap();
    assert_eq!(check_token(&apple.next().await), refused);
    let renewed = check_token(&apple.next().await);
    assert_ne!(renewed, refused);
    // …and kept for the next pushes.
    backend.push(&ios(&device, 1)).await.unwrap();
    assert_eq!(check_token(&apple.next().await), renewed);

    // Devices APNs cannot serve fail before anything is sent.
    let mut android = ios(&device, 1);
    android.client_type = ClientType::Android as i32;
    assert!(backend.push(&android).await.is_err());
    assert!(backend.push(&ios("../../x", 1)).await.is_err());
    assert!(apple.seen.try_recv().is_err());
}

#[tokio::test]
async fn a_broken_connection_is_opened_again() {
    let mut apple = Apple::start().await;
    let backend = ApnsBackend::new(apple.config()).unwrap();
    let device = "cd".repeat(32);
    backend.push(&ios(&device, 1)).await.unwrap();
    apple.next().await;

    // Pushed at once, before the client noticed the close: the request fails on the dead
    // connection and is sent again on a new one.
    apple.drop_connections();
    backend.push(&ios(&device, 1)).await.unwrap();
    apple.next().await;
    assert_eq!(apple.connections.load(Ordering::SeqCst), 2);

    // Noticed while idle: the next push connects first.
    apple.drop_connections();
    tokio::time::sleep(Duration::from_millis(100)).await;
    backend.push(&ios(&device, 1)).await.unwrap();
    apple.next().await;
    assert_eq!(apple.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_untrusted_server_is_refused() {
    let mut apple = Apple::start().await;
    let mut config = apple.config();
    config.ca_file = None; // only Mozilla's roots: the test CA is not among them
    let backend = ApnsBackend::new(config).unwrap();
    let error = backend.push(&ios(&"ef".repeat(32), 1)).await.unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(apple.seen.try_recv().is_err());
}

#[test]
fn bad_key_files_are_clear_errors() {
    let mut config = ApnsConfig::new(fixture("missing.p8"), KEY_ID, TEAM_ID, TOPIC, true);
    let error = ApnsBackend::new(config.clone()).unwrap_err().to_string();
    assert!(error.contains("missing.p8"), "{error}");
    config.key_file = fixture("ca.pem"); // a certificate, not a key
    assert!(ApnsBackend::new(config.clone()).is_err());
    config.key_file = fixture("AuthKey_TEST123456.p8");
    config.key_id = "bad id".into();
    assert!(ApnsBackend::new(config.clone()).is_err());
    config.key_id = KEY_ID.into();
    config.topic = "com.example\r\nx-evil: 1".into();
    assert!(ApnsBackend::new(config.clone()).is_err());
    config.topic = TOPIC.into();
    config.endpoint = "http://api.push.apple.com".into();
    assert!(ApnsBackend::new(config).is_err());
}

/// The push-server role as a process would run it: its `.conf` keys, a msg_server's link, one
/// request for an iOS and an Android device. Without a webhook the Android one fails (result
/// code 1), as the original answered.
#[tokio::test]
async fn the_push_server_role_sends_ios_devices_to_apns() {
    let mut apple = Apple::start().await;
    let conf = ConfFile::parse(&format!(
        "ListenIP=127.0.0.1\nListenPort=0\nApnsKeyFile={}\nApnsKeyId={KEY_ID}\n\
         ApnsTeamId={TEAM_ID}\nApnsTopic={TOPIC}\nSandBox=0\n\
         ApnsEndpoint=https://localhost:{}\nApnsCaFile={}\n",
        fixture("AuthKey_TEST123456.p8").display(),
        apple.addr.port(),
        fixture("ca.pem").display(),
    ));
    let (listen, settings): (_, PushSettings) = roles::push_server(&conf).unwrap();
    assert!(settings.webhook_url.is_none());
    let backend = Arc::new(settings.backend().unwrap());
    let listener = TcpListener::bind(listen[0]).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = shutdown::channel();
    let server = tokio::spawn(push::run(backend, listener, shutdown));

    let ios_token = "12".repeat(32);
    let request = ImPushToUserReq {
        flash: "alice:hi".into(),
        data: r#"{"msg_type":1,"from_id":9}"#.into(),
        user_token_list: vec![
            UserTokenInfo {
                user_id: 3,
                user_type: ClientType::Ios as i32,
                token: ios_token.clone(),
                push_count: 1,
                push_type: 1,
            },
            UserTokenInfo {
                user_id: 4,
                user_type: ClientType::Android as i32,
                token: "android-token".into(),
                push_count: 2,
                push_type: 1,
            },
        ],
    };
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&AnyMessage::from(request).to_pdu(9).to_bytes())
        .await
        .unwrap();
    let (mut buf, mut decoder) = (BytesMut::new(), PduDecoder::default());
    let answer = loop {
        if let Some(pdu) = decoder.decode(&mut buf).unwrap() {
            if pdu.command() == ImPushToUserRsp::COMMAND {
                assert_eq!(pdu.seq_num(), 9);
                break pdu.decode_body::<ImPushToUserRsp>().unwrap();
            }
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
            .await
            .expect("push_server answers")
            .unwrap();
        assert!(n > 0, "push_server closed the link");
    };
    let results: Vec<(String, u32)> = answer
        .push_result_list
        .into_iter()
        .map(|r| (r.user_token, r.result_code))
        .collect();
    assert_eq!(
        results,
        vec![(ios_token.clone(), 0), ("android-token".to_owned(), 1)]
    );
    let seen = apple.next().await;
    assert_eq!(seen.path, format!("/3/device/{ios_token}"));
    check_token(&seen);
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["aps"]["alert"]["body"], "alice:hi");
    assert_eq!(body["aps"]["badge"], 1);

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn push_server_keys_are_checked() {
    let missing = ConfFile::parse("ListenPort=8500\n");
    assert!(roles::push_server(&missing).is_err());
    let no_team = ConfFile::parse("ApnsKeyFile=/k.p8\nApnsKeyId=A\nApnsTopic=t\n");
    assert!(roles::push_server(&no_team)
        .unwrap_err()
        .to_string()
        .contains("ApnsTeamId"));
    let bad_sandbox =
        ConfFile::parse("ApnsKeyFile=/k.p8\nApnsKeyId=A\nApnsTeamId=B\nApnsTopic=t\nSandBox=2\n");
    assert!(roles::push_server(&bad_sandbox).is_err());
    let sandbox =
        ConfFile::parse("ApnsKeyFile=/k.p8\nApnsKeyId=A\nApnsTeamId=B\nApnsTopic=t\nSandBox=1\n");
    let (_, settings) = roles::push_server(&sandbox).unwrap();
    assert_eq!(
        settings.apns.unwrap().endpoint,
        teamtalk_servers::push::apns::SANDBOX
    );
}
