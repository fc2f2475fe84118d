//! The APNs backend (cargo feature `apns`): Apple's HTTP/2 provider API with token-based
//! authentication (a `.p8` signing key, its key id and the team id).
//!
//! One HTTP/2 connection over TLS (rustls, ALPN `h2`) is opened on the first push, shared by
//! every push (HTTP/2 multiplexes them) and opened again when it breaks. The provider token
//! (an ES256 JSON web token) is signed once and reused for 50 minutes, as Apple asks (a new one
//! at most every 20 minutes, none older than an hour); when APNs answers
//! `ExpiredProviderToken` a fresh one is signed and the push is sent once more.
//!
//! The payload keeps the original push_server's shape (docs/protocol.md § push_server), so existing
//! iOS clients read it unchanged: push type 1 `{"aps":{"alert":{"body":…},"badge":…,"sound":…},
//! "custom":…}`, push type 2 (silent, a PC of the user is online) `{"aps":{"badge":…},
//! "custom":…}`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use teamtalk_core::domain::Clock;
use teamtalk_core::proto::base_define::ClientType;
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::{Notification, PushBackend, PushError};
use crate::clock::SystemClock;

/// Apple's production endpoint.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's development (sandbox) endpoint.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// How long a signed provider token is used before a new one is signed.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// How long APNs keeps a notification it cannot deliver yet (the original's `now + 3600`).
const EXPIRATION_SECS: u32 = 3600;
/// The largest error body read from APNs (they are small JSON objects).
const MAX_ERROR_BODY: usize = 4096;

/// What the APNs backend needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApnsConfig {
    /// The `.p8` signing key downloaded from Apple's developer account (PKCS#8 PEM).
    pub key_file: PathBuf,
    /// The signing key's 10-character key id.
    pub key_id: String,
    /// The developer team id (the token's issuer).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// `https://host[:port]`: [`PRODUCTION`], [`SANDBOX`], or a proxy or test server.
    pub endpoint: String,
    /// A PEM file of extra trusted certificate authorities (a TLS-intercepting proxy, a test
    /// server); Mozilla's roots are always trusted.
    pub ca_file: Option<PathBuf>,
    /// The sound of normal (push type 1) notifications. Default `bingbong.aiff`, the sound the
    /// original TeamTalk iOS client ships.
    pub sound: String,
    /// Limit for connecting and for each push. Default 10 s.
    pub timeout: Duration,
}

impl ApnsConfig {
    /// A configuration for Apple's production endpoint (`sandbox`: the development one).
    pub fn new(
        key_file: impl Into<PathBuf>,
        key_id: &str,
        team_id: &str,
        topic: &str,
        sandbox: bool,
    ) -> ApnsConfig {
        ApnsConfig {
            key_file: key_file.into(),
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            topic: topic.to_owned(),
            endpoint: if sandbox { SANDBOX } else { PRODUCTION }.to_owned(),
            ca_file: None,
            sound: "bingbong.aiff".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Delivers notifications to iOS devices through APNs. Notifications for other client types
/// fail (pair it with a webhook for Android, see [`super::PlatformBackend`]).
pub struct ApnsBackend {
    config: ApnsConfig,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    signer: Signer,
    token: Mutex<Option<(String, Instant)>>,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for ApnsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsBackend")
            .field("endpoint", &self.config.endpoint)
            .field("key_id", &self.config.key_id)
            .field("team_id", &self.config.team_id)
            .field("topic", &self.config.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsBackend {
    /// Reads the signing key and the extra certificate authorities; connects on first use.
    pub fn new(config: ApnsConfig) -> Result<ApnsBackend, PushError> {
        let (host, port) = parse_endpoint(&config.endpoint)?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| PushError(format!("APNs endpoint host {host:?}: {e}")))?;
        let key = PrivatePkcs8KeyDer::from_pem_file(&config.key_file).map_err(|e| {
            PushError(format!(
                "APNs key file {}: {e} (expected the .p8 file from Apple)",
                config.key_file.display()
            ))
        })?;
        let signer = Signer::new(key.secret_pkcs8_der(), &config.key_id, &config.team_id)?;
        if hyper::header::HeaderValue::from_str(&config.topic).is_err() {
            return Err(PushError(format!(
                "APNs topic {:?} cannot be sent as a header",
                config.topic
            )));
        }
        if config.topic.is_empty() {
            return Err(PushError(
                "APNs topic (the app's bundle id) is empty".into(),
            ));
        }
        let tls = tls_connector(config.ca_file.as_ref())?;
        Ok(ApnsBackend {
            config,
            host,
            port,
            server_name,
            tls,
            signer,
            token: Mutex::new(None),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// The provider token: the cached one while it is young enough, else a new one.
    fn token(&self, renew: bool) -> Result<String, PushError> {
        let mut cached = self
            .token
            .lock()
            .map_err(|_| PushError("APNs token cache poisoned".into()))?;
        if let Some((token, signed)) = cached.as_ref() {
            if !renew && signed.elapsed() < TOKEN_LIFETIME {
                return Ok(token.clone());
            }
        }
        let token = self.signer.sign(u64::from(SystemClock.now().0))?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// A sender on the shared connection, connecting when there is none or it broke.
    /// `fresh`: whether the connection was opened for this call.
    async fn sender(&self) -> Result<(SendRequest<Full<Bytes>>, bool), PushError> {
        let mut connection = self.connection.lock().await;
        if let Some(sender) = connection.as_ref() {
            if !sender.is_closed() {
                return Ok((sender.clone(), false));
            }
        }
        *connection = None;
        let sender = tokio::time::timeout(self.config.timeout, self.connect())
            .await
            .map_err(|_| PushError(format!("connecting to {} timed out", self.host)))??;
        *connection = Some(sender.clone());
        Ok((sender, true))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PushError> {
        let io = |e: std::io::Error| PushError(format!("APNs {}:{}: {e}", self.host, self.port));
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(io)?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
            return Err(PushError(format!(
                "APNs {}:{} did not agree to HTTP/2",
                self.host, self.port
            )));
        }
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| PushError(format!("APNs HTTP/2 handshake: {e}")))?;
        let host = self.host.clone();
        tokio::spawn(async move {
            match connection.await {
                Ok(()) => debug!(%host, "APNs connection closed"),
                Err(error) => debug!(%host, %error, "APNs connection failed"),
            }
        });
        info!(host = %self.host, port = self.port, "connected to APNs");
        Ok(sender)
    }

    /// One POST on `sender`: `Ok(None)` delivered, `Ok(Some(answer))` refused by APNs.
    async fn post(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        notification: &Notification,
        token: &str,
    ) -> Result<Option<Refusal>, hyper::Error> {
        let expiration = SystemClock.now().0.saturating_add(EXPIRATION_SECS);
        let request = request(&self.config, &self.host, self.port, notification, token)
            .header("apns-expiration", expiration.to_string())
            .body(Full::new(Bytes::from(payload(
                notification,
                &self.config.sound,
            ))));
        // The parts are checked before (token, topic, endpoint): a failure here is a bug.
        let Ok(request) = request else {
            return Ok(Some(Refusal {
                status: 0,
                reason: "request could not be built".into(),
            }));
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(None);
        }
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Some(Refusal {
            status: status.as_u16(),
            reason: reason(&body),
        }))
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), PushError> {
        let mut renewed = false;
        let mut reconnected = false;
        loop {
            let token = self.token(false)?;
            let (sender, fresh) = self.sender().await?;
            match self.post(sender, notification, &token).await {
                Ok(None) => return Ok(()),
                Ok(Some(refusal)) if refusal.reason == "ExpiredProviderToken" && !renewed => {
                    renewed = true;
                    self.token(true)?;
                }
                Ok(Some(refusal)) => {
                    return Err(PushError(format!(
                        "APNs refused ({}): {}",
                        refusal.status, refusal.reason
                    )))
                }
                // A connection that broke while idle (GOAWAY, reset): once more on a new one.
                Err(error) if !fresh && !reconnected => {
                    debug!(%error, "APNs connection broke; reconnecting");
                    reconnected = true;
                    *self.connection.lock().await = None;
                }
                Err(error) => return Err(PushError(format!("APNs: {error}"))),
            }
        }
    }
}

impl PushBackend for ApnsBackend {
    async fn push(&self, notification: &Notification) -> Result<(), PushError> {
        if notification.client_type != ClientType::Ios as i32 {
            return Err(PushError(format!(
                "APNs delivers to iOS devices only (client type {})",
                notification.client_type
            )));
        }
        if !is_device_token(&notification.token) {
            return Err(PushError("not an APNs device token (hex digits)".into()));
        }
        tokio::time::timeout(self.config.timeout, self.deliver(notification))
            .await
            .map_err(|_| PushError("APNs timed out".into()))?
    }
}

/// An APNs refusal: the HTTP status and the `reason` of its JSON body.
#[derive(Debug)]
struct Refusal {
    status: u16,
    reason: String,
}

/// Signs provider tokens (ES256 JSON web tokens).
struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: String,
    team_id: String,
}

impl Signer {
    fn new(pkcs8: &[u8], key_id: &str, team_id: &str) -> Result<Signer, PushError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| PushError(format!("APNs key is not a P-256 signing key: {e}")))?;
        for (name, value) in [("key id", key_id), ("team id", team_id)] {
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(PushError(format!(
                    "APNs {name} must be letters and digits, got {value:?}"
                )));
            }
        }
        Ok(Signer {
            key,
            rng,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
        })
    }

    /// A token issued at `iat` (unix seconds).
    fn sign(&self, iat: u64) -> Result<String, PushError> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.key_id}).to_string();
        let claims = serde_json::json!({"iss": self.team_id, "iat": iat}).to_string();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| PushError("signing the APNs provider token failed".into()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// `https://host[:port]` → host and port (443).
fn parse_endpoint(endpoint: &str) -> Result<(String, u16), PushError> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| PushError(format!("APNs endpoint {endpoint:?}: {e}")))?;
    match (url.scheme(), url.host_str()) {
        ("https", Some(host)) if url.path() == "/" || url.path().is_empty() => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok((host.to_owned(), url.port().unwrap_or(443)))
        }
        _ => Err(PushError(format!(
            "APNs endpoint must be https://host[:port], got {endpoint:?}"
        ))),
    }
}

fn tls_connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, PushError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| PushError(format!("APNs CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(PushError(format!(
                "APNs CA file {} holds no certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| PushError(format!("APNs CA file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PushError(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Device tokens are hex digits (64 today; Apple says they may grow). Anything else would end
/// up in the request path.
fn is_device_token(token: &str) -> bool {
    (1..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The request for `notification` without its expiration and body.
fn request(
    config: &ApnsConfig,
    host: &str,
    port: u16,
    notification: &Notification,
    token: &str,
) -> hyper::http::request::Builder {
    let silent = notification.push_type == 2;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    hyper::Request::post(format!(
        "https://{authority}/3/device/{}",
        notification.token
    ))
    .header("authorization", format!("bearer {token}"))
    .header("apns-topic", config.topic.as_str())
    .header("apns-push-type", "alert")
    .header("apns-priority", if silent { "5" } else { "10" })
    .header("content-type", "application/json")
}

/// The JSON payload of `notification`, shaped as the original push_server's.
pub fn payload(notification: &Notification, sound: &str) -> String {
    let custom = serde_json::from_str::<serde_json::Value>(&notification.data)
        .unwrap_or_else(|_| serde_json::Value::String(notification.data.clone()));
    let aps = if notification.push_type == 2 {
        serde_json::json!({"badge": notification.badge})
    } else {
        serde_json::json!({
            "alert": {"body": notification.alert},
            "badge": notification.badge,
            "sound": sound,
        })
    };
    serde_json::json!({"aps": aps, "custom": custom}).to_string()
}

/// The `reason` of an APNs error body, or the body itself.
fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(push_type: u32) -> Notification {
        Notification {
            user_id: 7,
            client_type: ClientType::Ios as i32,
            token: "ab".repeat(32),
            push_type,
            badge: 3,
            alert: "bob:hi".into(),
            data: r#"{"msg_type":1,"from_id":5}"#.into(),
        }
    }

    #[test]
    fn payloads_keep_the_original_shape() {
        let normal: serde_json::Value =
            serde_json::from_str(&payload(&notification(1), "bingbong.aiff")).unwrap();
        assert_eq!(
            normal,
            serde_json::json!({
                "aps": {"alert": {"body": "bob:hi"}, "badge": 3, "sound": "bingbong.aiff"},
                "custom": {"msg_type": 1, "from_id": 5},
            })
        );
        let silent: serde_json::Value =
            serde_json::from_str(&payload(&notification(2), "x")).unwrap();
        assert_eq!(
            silent,
            serde_json::json!({"aps": {"badge": 3}, "custom": {"msg_type": 1, "from_id": 5}})
        );
        let mut odd = notification(1);
        odd.data = "not json".into();
        let odd: serde_json::Value = serde_json::from_str(&payload(&odd, "s")).unwrap();
        assert_eq!(odd["custom"], "not json");
    }

    #[test]
    fn endpoints_are_https_hosts() {
        assert_eq!(
            parse_endpoint(PRODUCTION).unwrap(),
            ("api.push.apple.com".to_owned(), 443)
        );
        assert_eq!(
            parse_endpoint("https://127.0.0.1:8443").unwrap(),
            ("127.0.0.1".to_owned(), 8443)
        );
        assert!(parse_endpoint("http://api.push.apple.com").is_err());
        assert!(parse_endpoint("https://api.push.apple.com/3/device").is_err());
        assert!(parse_endpoint("api.push.apple.com").is_err());
    }

    #[test]
    fn device_tokens_are_hex() {
        assert!(is_device_token(&"0f".repeat(32)));
        assert!(!is_device_token(""));
        assert!(!is_device_token("../../3/device/x"));
        assert!(!is_device_token(&"a".repeat(201)));
    }

    #[test]
    fn reasons_come_from_the_json_body() {
        assert_eq!(reason(br#"{"reason":"BadDeviceToken"}"#), "BadDeviceToken");
        assert_eq!(reason(b"gateway down"), "gateway down");
    }
}
