//! single_process_server: a whole TeamTalk server (login, 1:1 and group chat, presence,
//! history, unread) in one process, written on teamtalk-core alone: no TCP between its parts.
//!
//! ```text
//! cargo run --example single_process_server -- --listen 127.0.0.1:8000 --user alice:pw --user bob:pw
//! cargo run --example tt -- --msg-server 127.0.0.1:8000 --user alice --password pw
//! ```
//!
//! Flags: `--listen ADDR` (127.0.0.1:8000), `--sqlite FILE` (else the data lives in memory),
//! `--user NAME:PASSWORD` (repeatable; adds the user unless it exists). One task owns a
//! [`Node`] (msg_server, route hub and login registry, linked in memory); one task per client
//! moves frames; db requests are answered by `DbProxy` over the store on their own tasks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::local::{DbRequest, LocalOutput, Node, NodeConfig, ServerId};
use teamtalk_core::msg_server::{Action, ConnId, MsgServerConfig};
use teamtalk_core::service::{DbProxy, Handler};
use teamtalk_core::store::{Credentials, NewUser, Store, User, UserStore};
use teamtalk_core::time::{Epoch, Machine, SystemClock};
use teamtalk_core::{Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Proxy = Arc<DbProxy<Arc<dyn Store>, SystemClock>>;

/// What the node task hears from the client and db tasks.
enum Input {
    Frame(ConnId, Pdu),
    Closed(ConnId),
    Answer(DbRequest, Option<Pdu>),
}

/// What a client task is told to do.
enum ToClient {
    Frame(Bytes),
    Pause(bool),
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (mut listen, mut sqlite, mut users) = ("127.0.0.1:8000".to_owned(), None, Vec::new());
    let mut args = std::env::args().skip(1);
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        match flag.as_str() {
            "--listen" => listen = value,
            "--sqlite" => sqlite = Some(value),
            "--user" => users.push(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let store: Arc<dyn Store> = match sqlite {
        Some(file) => Arc::new(teamtalk_store::SqliteStore::open(&teamtalk_store::SqliteConfig::new(file)).await?),
        None => Arc::new(teamtalk_store::MemoryStore::new()),
    };
    for user in users {
        let (name, password) = user.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
        let profile = User { name: name.into(), nick: name.into(), ..User::default() };
        let new = NewUser { profile, credentials: Credentials::from_plain(password, "7") };
        if store.user_named(name).await?.is_none() {
            store.add_user(&new, Timestamp(1)).await?;
        }
    }
    let listener = TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    let proxy: Proxy = Arc::new(DbProxy::new(store, SystemClock, Default::default()));
    run(listener, proxy, MsgServerConfig { ip1: addr.ip().to_string(), ip2: addr.ip().to_string(), port: u32::from(addr.port()), ..MsgServerConfig::default() }).await
}

/// The node task: every input goes into the node, every output out to its task.
async fn run(listener: TcpListener, proxy: Proxy, config: MsgServerConfig) -> Result<(), Error> {
    let epoch = Epoch::start();
    let mut node = Node::new(NodeConfig::default());
    let server = node.add_msg_server(epoch.now(), config).ok_or("no msg_server")?;
    let (inputs, mut input) = mpsc::channel::<Input>(4096);
    let mut clients = std::collections::HashMap::<ConnId, mpsc::Sender<ToClient>>::new();
    loop {
        let wake = node.poll_timeout().map(|ms| epoch.instant_at(ms));
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let Some(conn) = node.handle_client_opened(epoch.now(), server, Some(peer.ip())) else { continue };
                let (tx, rx) = mpsc::channel(1024);
                clients.insert(conn, tx);
                tokio::spawn(client(stream, conn, rx, inputs.clone()));
            }
            Some(event) = input.recv() => match event {
                Input::Frame(conn, pdu) => node.handle_client_frame(epoch.now(), server, conn, pdu),
                Input::Closed(conn) => {
                    clients.remove(&conn);
                    node.handle_client_closed(epoch.now(), server, conn);
                }
                Input::Answer(request, answer) => node.handle_db_answer(epoch.now(), request, answer),
            },
            () = sleep => node.handle_timeout(epoch.now()),
        }
        while let Some(output) = node.poll_output() {
            let (conn, message) = match output {
                LocalOutput::Db { request, pdu, .. } => {
                    tokio::spawn(answer(proxy.clone(), request, pdu, inputs.clone()));
                    continue;
                }
                LocalOutput::Msg(ServerId(_), Action::ToClient(conn, frame)) => (conn, ToClient::Frame(frame.wire().clone())),
                LocalOutput::Msg(_, Action::PauseReading(conn)) => (conn, ToClient::Pause(true)),
                LocalOutput::Msg(_, Action::ResumeReading(conn)) => (conn, ToClient::Pause(false)),
                LocalOutput::Msg(_, Action::Close(conn)) => {
                    clients.remove(&conn); // the task sees its channel end, writes what is queued and closes
                    continue;
                }
                _ => continue, // no push_server, file_server or other processes here
            };
            // A client that does not read its frames fast enough is disconnected.
            if clients.get(&conn).is_some_and(|tx| tx.try_send(message).is_err()) {
                clients.remove(&conn);
            }
        }
    }
}

/// Answers one db request as a db_proxy_server would (no answer to an undecodable one).
async fn answer(proxy: Proxy, request: DbRequest, pdu: Pdu, inputs: mpsc::Sender<Input>) {
    let reply = match pdu.decode_any() {
        Ok(message) => proxy.handle(message).await.map(|reply| reply.to_pdu(pdu.seq_num())),
        Err(_) => None,
    };
    let _ = inputs.send(Input::Answer(request, reply)).await;
}

/// One client connection: frames in (the core's decoder, 1 MiB at most), frames out.
async fn client(mut stream: TcpStream, conn: ConnId, mut rx: mpsc::Receiver<ToClient>, inputs: mpsc::Sender<Input>) {
    let (mut decoder, mut buf, mut paused) = (PduDecoder::default(), BytesMut::new(), false);
    'serve: loop {
        tokio::select! {
            read = stream.read_buf(&mut buf), if !paused => {
                if !matches!(read, Ok(n) if n > 0) { break };
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(pdu)) => if inputs.send(Input::Frame(conn, pdu)).await.is_err() { break 'serve },
                        Ok(None) => break,
                        Err(_) => break 'serve, // a framing error closes the connection
                    }
                }
            }
            command = rx.recv() => match command {
                Some(ToClient::Frame(frame)) => if stream.write_all(&frame).await.is_err() { break },
                Some(ToClient::Pause(pause)) => paused = pause,
                None => break,
            },
        }
    }
    let _ = inputs.send(Input::Closed(conn)).await;
}
