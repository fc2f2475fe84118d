//! push_server: receives `CID_OTHER_PUSH_TO_USER_REQ` from msg_servers and hands every
//! device token to a [`PushBackend`] (docs/protocol.md § push_server). The original spoke Apple's
//! retired binary APNs protocol and failed every Android token; here the delivery is
//! pluggable, with a webhook backend (an HTTP POST of a JSON payload per notification) and,
//! with the cargo feature `apns`, Apple's HTTP/2 provider API (module `apns`).
//! [`PlatformBackend`] sends iOS devices to APNs when it is configured and everything else to
//! the webhook.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use teamtalk_core::proto::base_define::PushResult;
use teamtalk_core::proto::server::{ImPushToUserReq, ImPushToUserRsp};
use teamtalk_core::{CommandId, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::link::{self, LinkConfig, LinkEvent, Listeners};
use crate::shutdown::Shutdown;

#[cfg(feature = "apns")]
pub mod apns;

/// One notification to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The receiver.
    pub user_id: u32,
    /// Its device's client type (17 iOS, 18 Android).
    pub client_type: i32,
    /// The device token.
    pub token: String,
    /// 1 normal (with sound), 2 silent (a PC of the user is online).
    pub push_type: u32,
    /// Badge: the user's unread messages.
    pub badge: u32,
    /// Alert text (already cut to length).
    pub alert: String,
    /// Custom data, JSON (`{"msg_type":…,"from_id":…[,"group_id":…]}`).
    pub data: String,
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("push failed: {0}")]
pub struct PushError(pub String);

/// Where notifications go.
pub trait PushBackend: Send + Sync + 'static {
    /// Delivers one notification.
    fn push(
        &self,
        notification: &Notification,
    ) -> impl Future<Output = Result<(), PushError>> + Send;
}

/// POSTs each notification as JSON to a URL:
/// `{"user_id","client_type","token","push_type","badge","alert","data"}` (`data` as a JSON
/// object). A 2xx answer counts as delivered.
#[derive(Clone, Debug)]
pub struct WebhookBackend {
    url: url::Url,
    timeout: Duration,
}

impl WebhookBackend {
    /// A webhook at `url` (`http://host[:port]/path`).
    pub fn new(url: &str) -> Result<WebhookBackend, PushError> {
        let url =
            url::Url::parse(url).map_err(|e| PushError(format!("webhook URL {url:?}: {e}")))?;
        if url.scheme() != "http" || url.host_str().is_none() {
            return Err(PushError(format!(
                "webhook URL must be http://host/…, got {url}"
            )));
        }
        Ok(WebhookBackend {
            url,
            timeout: Duration::from_secs(5),
        })
    }
}

impl PushBackend for WebhookBackend {
    async fn push(&self, n: &Notification) -> Result<(), PushError> {
        let data: serde_json::Value =
            serde_json::from_str(&n.data).unwrap_or(serde_json::Value::Null);
        let body = serde_json::json!({
            "user_id": n.user_id,
            "client_type": n.client_type,
            "token": n.token,
            "push_type": n.push_type,
            "badge": n.badge,
            "alert": n.alert,
            "data": data,
        })
        .to_string();
        let host = self.url.host_str().unwrap_or_default().to_owned();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            &self.url[url::Position::BeforePath..],
            body.len()
        );
        let exchange = async {
            let mut stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut head = vec![0u8; 64];
            let n = stream.read(&mut head).await?;
            Ok::<_, std::io::Error>(
                String::from_utf8_lossy(head.get(..n).unwrap_or_default()).into_owned(),
            )
        };
        let head = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PushError("webhook timed out".into()))?
            .map_err(|e| PushError(format!("webhook: {e}")))?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(PushError(format!("webhook answered {status:?}")))
        }
    }
}

/// What a push_server delivers through: a webhook, APNs (feature `apns`), or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSettings {
    /// Where notifications are POSTed (every device when there is no APNs, else non-iOS ones).
    pub webhook_url: Option<String>,
    /// APNs, for iOS devices.
    #[cfg(feature = "apns")]
    pub apns: Option<apns::ApnsConfig>,
}

impl PushSettings {
    /// Only a webhook at `url`.
    pub fn webhook(url: impl Into<String>) -> PushSettings {
        PushSettings {
            webhook_url: Some(url.into()),
            #[cfg(feature = "apns")]
            apns: None,
        }
    }

    /// Whether no backend is configured (no push_server is needed).
    pub fn is_empty(&self) -> bool {
        #[cfg(feature = "apns")]
        if self.apns.is_some() {
            return false;
        }
        self.webhook_url.is_none()
    }

    /// The backends, ready to push (reads the APNs key file).
    pub fn backend(&self) -> Result<PlatformBackend, PushError> {
        Ok(PlatformBackend {
            webhook: self
                .webhook_url
                .as_deref()
                .map(WebhookBackend::new)
                .transpose()?,
            #[cfg(feature = "apns")]
            apns: self.apns.clone().map(apns::ApnsBackend::new).transpose()?,
        })
    }
}

/// iOS devices go to APNs when it is configured; every other device (and iOS ones without
/// APNs) to the webhook. A device no backend serves fails (result code 1, as the original
/// answered for Android tokens).
#[derive(Debug, Default)]
pub struct PlatformBackend {
    webhook: Option<WebhookBackend>,
    #[cfg(feature = "apns")]
    apns: Option<apns::ApnsBackend>,
}

impl PushBackend for PlatformBackend {
    async fn push(&self, notification: &Notification) -> Result<(), PushError> {
        #[cfg(feature = "apns")]
        if notification.client_type == teamtalk_core::proto::base_define::ClientType::Ios as i32 {
            if let Some(apns) = &self.apns {
                return apns.push(notification).await;
            }
        }
        match &self.webhook {
            Some(webhook) => webhook.push(notification).await,
            None => Err(PushError(format!(
                "no push backend for client type {}",
                notification.client_type
            ))),
        }
    }
}

/// Push requests delivered at the same time, over all links; more wait (their links stop
/// being read, so a slow backend slows the msg_servers down instead of growing memory).
const MAX_CONCURRENT_REQUESTS: usize = 256;

/// Serves msg_server links on `listener` until `shutdown`, pushing through `backend`.
pub async fn run<B: PushBackend>(
    backend: Arc<B>,
    listener: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener: Listeners = listener.into();
    info!(addr = ?listener.local_addrs(), "push_server listening");
    let mut next = 0u64;
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = link::accept_link(&listener) => accepted,
            _ = shutdown.wait() => return Ok(()),
        };
        next += 1;
        let (events_tx, events) = mpsc::channel(256);
        link::spawn_serve(
            "push",
            stream,
            peer,
            next,
            LinkConfig::default(),
            events_tx,
            shutdown.clone(),
        );
        tokio::spawn(serve_link(backend.clone(), events, limit.clone()));
    }
}

async fn serve_link<B: PushBackend>(
    backend: Arc<B>,
    mut events: mpsc::Receiver<LinkEvent<u64>>,
    limit: Arc<tokio::sync::Semaphore>,
) {
    let mut outbox = None;
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Opened(_, o) => outbox = Some(o),
            LinkEvent::Closed(_) => return,
            LinkEvent::Frame(_, pdu) => {
                if pdu.command() != CommandId::OTHER_PUSH_TO_USER_REQ {
                    debug!(command = %pdu.command(), "push_server ignores");
                    continue;
                }
                let Ok(request) = pdu.decode_body::<ImPushToUserReq>() else {
                    debug!("undecodable push request");
                    continue;
                };
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return; // never closed
                };
                let (backend, outbox, seq) = (backend.clone(), outbox.clone(), pdu.seq_num());
                tokio::spawn(async move {
                    let _permit = permit;
                    let mut results = Vec::new();
                    for token in request.user_token_list {
                        let notification = Notification {
                            user_id: token.user_id,
                            client_type: token.user_type,
                            token: token.token.clone(),
                            push_type: token.push_type,
                            badge: token.push_count,
                            alert: request.flash.clone(),
                            data: request.data.clone(),
                        };
                        let result_code = match backend.push(&notification).await {
                            Ok(()) => 0,
                            Err(error) => {
                                warn!(user = token.user_id, %error, "push not delivered");
                                1
                            }
                        };
                        results.push(PushResult {
                            user_token: token.token,
                            result_code,
                        });
                    }
                    if let Some(outbox) = outbox {
                        let answer = ImPushToUserRsp {
                            push_result_list: results,
                        };
                        let _ = outbox.send_pdu(&Pdu::encode_message(&answer, seq));
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::BytesMut;
    use teamtalk_core::proto::base_define::UserTokenInfo;
    use teamtalk_core::{AnyMessage, PduDecoder, PduMessage};
    use tokio::net::TcpListener;

    use super::*;

    /// Holds every push for a while and records how many were in flight at once.
    #[derive(Default)]
    struct Slow {
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    impl PushBackend for Slow {
        async fn push(&self, _: &Notification) -> Result<(), PushError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_backend_bounds_the_requests_in_flight() {
        let backend = Arc::new(Slow::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let server = tokio::spawn(run(backend.clone(), listener, shutdown));

        let requests = MAX_CONCURRENT_REQUESTS + 44;
        let mut wire = BytesMut::new();
        for seq in 0..requests {
            let request = ImPushToUserReq {
                flash: "a:b".into(),
                data: "{}".into(),
                user_token_list: vec![UserTokenInfo {
                    user_id: 1,
                    user_type: 18,
                    token: format!("t{seq}"),
                    push_count: 1,
                    push_type: 1,
                }],
            };
            let seq = u16::try_from(seq).unwrap();
            wire.extend_from_slice(&AnyMessage::from(request).to_pdu(seq).to_bytes());
        }
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&wire).await.unwrap();

        let (mut buf, mut decoder, mut answered) = (BytesMut::new(), PduDecoder::default(), 0);
        while answered < requests {
            if let Some(pdu) = decoder.decode(&mut buf).unwrap() {
                if pdu.command() == ImPushToUserRsp::COMMAND {
                    let answer = pdu.decode_body::<ImPushToUserRsp>().unwrap();
                    assert_eq!(answer.push_result_list[0].result_code, 0);
                    answered += 1;
                }
                continue;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
                .await
                .expect("every request is answered")
                .unwrap();
            assert!(n > 0);
        }
        assert_eq!(
            backend.most.load(Ordering::SeqCst),
            MAX_CONCURRENT_REQUESTS,
            "as many in flight as allowed, no more"
        );
        trigger.trigger();
        server.await.unwrap().unwrap();
    }
}
