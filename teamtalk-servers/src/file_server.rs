//! file_server: relays files between two clients (online) or stores them for a receiver who
//! is away (offline), a shell over [`teamtalk_core::file_transfer`].
//!
//! Offline files live in `{dir}/{first 2 chars of task}/{task}` with the original's 960-byte
//! header (docs/storage.md § file_server offline files); they are found again at start-up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use teamtalk_core::file_transfer::{FileAction, FileConn, FileLimits, FileTasks};
use teamtalk_core::proto::base_define::IpAddr as WireAddr;
use teamtalk_core::proto::server::{ImFileServerIpRsp, ImFileTransferReq, ImFileTransferRsp};
use teamtalk_core::time::{Epoch, Machine, Now};
use teamtalk_core::{CommandId, Pdu};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::link::{self, LinkConfig, LinkEvent, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// Size of the header in front of an offline file's bytes.
const HEADER: usize = 960;

/// Settings of file_server.
#[derive(Clone, Debug)]
pub struct FileServerConfig {
    /// Where offline files are kept (`offline_file`).
    pub dir: PathBuf,
    /// Addresses handed to clients (`FileServerIp` × `ClientListenPort`).
    pub advertise: Vec<(String, u32)>,
    /// Size limit, idle timeout and retention.
    pub limits: FileLimits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Client(u64),
    MsgServer(u64),
}

/// Serves clients on `clients` and msg_servers on `msg_servers` until `shutdown`.
pub async fn run(
    config: FileServerConfig,
    clients: impl Into<Listeners>,
    msg_servers: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let clients: Listeners = clients.into();
    let msg_servers: Listeners = msg_servers.into();
    tokio::fs::create_dir_all(&config.dir).await?;
    info!(clients = ?clients.local_addrs(), msg_servers = ?msg_servers.local_addrs(), "file_server listening");
    let epoch = Epoch::start();
    let mut tasks = FileTasks::new(config.limits);
    for (id, from, to, size) in stored_files(&config.dir).await {
        tasks.handle_offline_restored(epoch.now(), id, from, to, size);
    }
    let (events_tx, mut events) = mpsc::channel::<LinkEvent<Peer>>(1024);
    let mut links = Links::default();
    let mut next = 0u64;
    let client_link = LinkConfig {
        outbox: 64,
        heartbeat: None,
        timeout: Some(Duration::from_secs(120)),
        report_heartbeats: true,
        ..LinkConfig::default()
    };
    loop {
        let wake = tasks.poll_timeout();
        let sleep = async {
            match wake {
                Some(ms) => tokio::time::sleep_until(epoch.instant_at(ms).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (stream, peer) = link::accept(&clients) => {
                next += 1;
                link::spawn_serve("file_client", stream, peer, Peer::Client(next), client_link.clone(), events_tx.clone(), shutdown.clone());
            }
            (stream, peer) = link::accept_link(&msg_servers) => {
                next += 1;
                link::spawn_serve("file_ms", stream, peer, Peer::MsgServer(next), LinkConfig::default(), events_tx.clone(), shutdown.clone());
            }
            Some(event) = events.recv() => {
                let now = epoch.now();
                match event {
                    LinkEvent::Opened(Peer::Client(id), outbox) => {
                        let conn = tasks.handle_conn_opened(now);
                        links.client_ids.insert(id, conn);
                        links.clients.insert(conn, outbox);
                    }
                    LinkEvent::Opened(Peer::MsgServer(id), outbox) => {
                        links.msg_servers.insert(id, outbox);
                    }
                    LinkEvent::Closed(Peer::Client(id)) => {
                        if let Some(conn) = links.client_ids.remove(&id) {
                            links.clients.remove(&conn);
                            tasks.handle_conn_closed(now, conn);
                        }
                    }
                    LinkEvent::Closed(Peer::MsgServer(id)) => {
                        links.msg_servers.remove(&id);
                    }
                    LinkEvent::Frame(Peer::Client(id), pdu) => {
                        if let Some(&conn) = links.client_ids.get(&id) {
                            tasks.handle_frame(now, conn, &pdu);
                        }
                    }
                    LinkEvent::Frame(Peer::MsgServer(id), pdu) => {
                        if let Some(answer) = msg_server_request(&mut tasks, &config, &pdu, now) {
                            if let Some(outbox) = links.msg_servers.get(&id) {
                                let _ = outbox.send_pdu(&answer);
                            }
                        }
                    }
                }
            }
            () = sleep => tasks.handle_timeout(epoch.now()),
            _ = shutdown.wait() => return Ok(()),
        }
        // Performing an action can be an input again (a block read from disk): drain until
        // the machine has nothing more to do.
        while let Some(action) = tasks.poll_output() {
            perform(action, &config, &mut tasks, &mut links, epoch).await;
        }
    }
}

/// The open connections of the shell.
#[derive(Default)]
struct Links {
    /// The link task's id of a client connection → the core's id.
    client_ids: HashMap<u64, FileConn>,
    clients: HashMap<FileConn, Outbox>,
    msg_servers: HashMap<u64, Outbox>,
}

fn msg_server_request(
    tasks: &mut FileTasks,
    config: &FileServerConfig,
    pdu: &Pdu,
    now: Now,
) -> Option<Pdu> {
    match pdu.command() {
        CommandId::OTHER_FILE_TRANSFER_REQ => {
            let request = pdu.decode_body::<ImFileTransferReq>().ok()?;
            // Task ids are capabilities (whoever knows one may fetch the file): unguessable.
            let answer = match crate::secret::task_id(crate::secret::os_fill) {
                Ok(id) => tasks.handle_transfer_request(now, request, id),
                Err(error) => {
                    warn!(%error, "file transfer refused: no task id");
                    ImFileTransferRsp {
                        result_code: 1,
                        from_user_id: request.from_user_id,
                        to_user_id: request.to_user_id,
                        file_name: Some(request.file_name),
                        file_size: Some(request.file_size),
                        task_id: None,
                        trans_mode: Some(request.trans_mode),
                        attach_data: request.attach_data,
                    }
                }
            };
            Some(Pdu::encode_message(&answer, pdu.seq_num()))
        }
        CommandId::OTHER_FILE_SERVER_IP_REQ => {
            let answer = ImFileServerIpRsp {
                ip_addr_list: wire_addrs(&config.advertise),
            };
            Some(Pdu::encode_message(&answer, pdu.seq_num()))
        }
        _ => None,
    }
}

/// The advertised addresses as protocol values.
pub fn wire_addrs(addrs: &[(String, u32)]) -> Vec<WireAddr> {
    addrs
        .iter()
        .map(|(ip, port)| WireAddr {
            ip: ip.clone(),
            port: *port,
        })
        .collect()
}

fn file_path(dir: &Path, task: &str) -> Option<PathBuf> {
    // Ids are ours (hex and dashes); anything else never names a file.
    if task.len() < 2 || !task.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    Some(dir.join(task.get(..2)?).join(task))
}

/// Does what the core asked. Dropping an outbox closes its link after it wrote what was
/// queued; the link then reports `Closed`, which goes back to the core.
async fn perform(
    action: FileAction,
    config: &FileServerConfig,
    tasks: &mut FileTasks,
    links: &mut Links,
    epoch: Epoch,
) {
    match action {
        FileAction::Send(conn, pdu) => {
            if let Some(outbox) = links.clients.get(&conn) {
                if outbox.send_pdu(&pdu).is_err() {
                    links.clients.remove(&conn);
                }
            }
        }
        FileAction::Close(conn) => {
            links.clients.remove(&conn);
        }
        FileAction::Store { task, offset, data } => {
            if let Err(error) = store(config, tasks, &task, offset, &data).await {
                warn!(%error, "cannot store an offline file block");
            }
        }
        FileAction::Load {
            conn,
            task,
            offset,
            len,
            seq,
        } => match load(config, &task, offset, len).await {
            Ok(data) => tasks.handle_loaded(epoch.now(), conn, &task, offset, data, seq),
            Err(error) => {
                warn!(%error, "cannot read an offline file");
                links.clients.remove(&conn);
            }
        },
        FileAction::Forget(task) => {
            if let Some(path) = file_path(&config.dir, &task) {
                let _ = tokio::fs::remove_file(path).await;
            }
        }
    }
}

async fn store(
    config: &FileServerConfig,
    tasks: &FileTasks,
    task: &str,
    offset: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let path = file_path(&config.dir, task).ok_or_else(|| std::io::Error::other("bad task id"))?;
    if offset == 0 {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let (_, size) = tasks.describe(task).unwrap_or(("", 0));
        let mut header = vec![0u8; HEADER];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (from, to) = tasks.users(task).unwrap_or((0, 0));
        for (at, len, value) in [
            (0, 128, task.to_owned()),
            (128, 64, from.to_string()),
            (192, 64, to.to_string()),
            (256, 128, now.to_string()),
            (896, 64, size.to_string()),
        ] {
            let bytes = value.as_bytes();
            let n = bytes.len().min(len - 1);
            if let (Some(dst), Some(src)) = (header.get_mut(at..at + n), bytes.get(..n)) {
                dst.copy_from_slice(src);
            }
        }
        tokio::fs::write(&path, &header).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .await?;
    file.write_all(data).await?;
    file.flush().await
}

async fn load(
    config: &FileServerConfig,
    task: &str,
    offset: u32,
    len: u32,
) -> std::io::Result<Bytes> {
    let path = file_path(&config.dir, task).ok_or_else(|| std::io::Error::other("bad task id"))?;
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(HEADER as u64 + u64::from(offset)))
        .await?;
    let mut data = vec![0u8; len as usize];
    file.read_exact(&mut data).await?;
    Ok(Bytes::from(data))
}

/// Offline files already on disk: (task, from, to, size).
async fn stored_files(dir: &Path) -> Vec<(String, u32, u32, u32)> {
    let mut found = Vec::new();
    let Ok(mut shards) = tokio::fs::read_dir(dir).await else {
        return found;
    };
    while let Ok(Some(shard)) = shards.next_entry().await {
        let Ok(mut files) = tokio::fs::read_dir(shard.path()).await else {
            continue;
        };
        while let Ok(Some(file)) = files.next_entry().await {
            // Only the header is read: offline files may be large and many.
            let Ok((bytes, file_len)) = read_header(&file.path()).await else {
                continue;
            };
            let field = |at: usize, len: usize| {
                let raw = bytes.get(at..at + len).unwrap_or_default();
                let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned()
            };
            let (task, from, to, size) = (
                field(0, 128),
                field(128, 64),
                field(192, 64),
                field(896, 64),
            );
            let (Ok(from), Ok(to), Ok(size)) = (from.parse(), to.parse(), size.parse::<u32>())
            else {
                continue;
            };
            if file_len == HEADER as u64 + u64::from(size) && !task.is_empty() {
                found.push((task, from, to, size));
            } else {
                debug!(path = %file.path().display(), "incomplete offline file skipped");
            }
        }
    }
    found
}

/// The first [`HEADER`] bytes of a stored file (fewer if it is shorter) and its length.
async fn read_header(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let mut header = Vec::with_capacity(HEADER);
    file.take(HEADER as u64).read_to_end(&mut header).await?;
    Ok((header, len))
}
