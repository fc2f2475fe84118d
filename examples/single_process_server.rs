//! single_process_server: a whole TeamTalk server (login, 1:1 and group chat, presence,
//! history, unread) in one process on teamtalk-core, with no TCP between its parts. Flags:
//! `--listen ADDR` (127.0.0.1:8000), `--sqlite FILE` (else the data is kept in memory),
//! `--user NAME:PASSWORD` (repeatable; added unless the name exists). Try it with `tt`:
//! ```text
//! cargo run --example single_process_server -- --user alice:pw --user bob:pw
//! cargo run --example tt -- --msg-server 127.0.0.1:8000 --user alice --password pw
//! ```
//! One task owns a [`Node`] (msg_server, route hub and login registry, linked in memory); a
//! task per client moves its frames; `DbProxy` answers db requests on their own tasks.
use bytes::{Bytes, BytesMut};
use std::{collections::HashMap, sync::Arc, time::Duration, time::Instant};
use teamtalk_core::local::{answer_db, DbRequest, LocalOutput, Node, NodeConfig};
use teamtalk_core::msg_server::{Action, ConnId, MsgServerConfig};
use teamtalk_core::store::{Credentials, NewUser, Store, UserStore};
use teamtalk_core::time::{Epoch, Machine, SystemClock};
use teamtalk_core::{domain::Timestamp, service::DbProxy, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{channel, Receiver, Sender};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Proxy = Arc<DbProxy<Arc<dyn Store>, SystemClock>>;

/// What the node task hears from the client and db tasks.
enum Input {
    Frame(ConnId, Pdu),
    Closed(ConnId),
    Answer(DbRequest, Option<Pdu>),
}

/// What a client task is told: write a frame, stop / resume reading, close.
enum ToClient {
    Frame(Bytes),
    Pause(bool),
    Close,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (mut listen, mut sqlite, mut users) = ("127.0.0.1:8000".to_owned(), None, Vec::new());
    let mut args = std::env::args().skip(1);
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        match flag.as_str() {
            "--listen" => listen = value,
            "--sqlite" => sqlite = Some(teamtalk_store::SqliteConfig::new(value)),
            "--user" => users.push(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let store: Arc<dyn Store> = match sqlite {
        Some(config) => Arc::new(teamtalk_store::SqliteStore::open(&config).await?),
        None => Arc::new(teamtalk_store::MemoryStore::new()),
    };
    for user in users {
        let (name, password) = user.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
        let mut new = NewUser::default();
        (new.profile.name, new.profile.nick) = (name.to_owned(), name.to_owned());
        new.credentials = Credentials::from_plain(password, "7");
        if store.user_named(name).await?.is_none() {
            store.add_user(&new, Timestamp(1)).await?;
        }
    }
    let listener = TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    let mut config = MsgServerConfig::default();
    (config.ip1, config.port) = (addr.ip().to_string(), addr.port().into());
    config.ip2 = config.ip1.clone();
    let proxy = Arc::new(DbProxy::new(store, SystemClock, Default::default()));
    run(listener, proxy, config).await
}

/// The node task: every input goes into the node, every output out to the task it is for.
async fn run(listener: TcpListener, proxy: Proxy, config: MsgServerConfig) -> Result<(), Error> {
    let (epoch, mut node) = (Epoch::start(), Node::new(NodeConfig::default()));
    let now = epoch.now();
    let server = node.add_msg_server(now, config).ok_or("no msg_server")?;
    let (inputs, mut input) = channel::<Input>(4096);
    let mut clients = HashMap::<ConnId, Sender<ToClient>>::new();
    loop {
        let far = Instant::now() + Duration::from_secs(3600);
        let wake = node.poll_timeout().map_or(far, |ms| epoch.instant_at(ms));
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let Some(conn) = node.handle_client_opened(epoch.now(), server, Some(peer.ip())) else { continue };
                let (tx, rx) = channel(1024);
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
            () = tokio::time::sleep_until(wake.into()) => node.handle_timeout(epoch.now()),
        }
        while let Some(output) = node.poll_output() {
            use LocalOutput::Msg;
            let (conn, message) = match output {
                LocalOutput::Db { request, pdu, .. } => {
                    let (proxy, inputs) = (proxy.clone(), inputs.clone());
                    tokio::spawn(async move {
                        let answer = answer_db(&*proxy, &pdu).await;
                        let _ = inputs.send(Input::Answer(request, answer)).await;
                    });
                    continue;
                }
                Msg(_, Action::ToClient(conn, f)) => (conn, ToClient::Frame(f.wire().clone())),
                Msg(_, Action::PauseReading(conn)) => (conn, ToClient::Pause(true)),
                Msg(_, Action::ResumeReading(conn)) => (conn, ToClient::Pause(false)),
                Msg(_, Action::Close(conn)) => (conn, ToClient::Close), // after what is queued
                _ => continue, // no push_server, file_server or other process here
            };
            // A client that does not read its frames fast enough is disconnected.
            if let Some(Err(_)) = clients.get(&conn).map(|tx| tx.try_send(message)) {
                clients.remove(&conn);
            }
        }
    }
}

/// One client connection: frames in (the core's decoder, 1 MiB at most), frames out.
async fn client(mut io: TcpStream, conn: ConnId, mut rx: Receiver<ToClient>, tx: Sender<Input>) {
    let (mut decoder, mut buf, mut paused) = (PduDecoder::default(), BytesMut::new(), false);
    'serve: loop {
        tokio::select! {
            read = io.read_buf(&mut buf), if !paused => {
                if !matches!(read, Ok(n) if n > 0) { break };
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(pdu)) => if tx.send(Input::Frame(conn, pdu)).await.is_err() { break 'serve },
                        Ok(None) => break,
                        Err(_) => break 'serve, // a framing error closes the connection
                    }
                }
            }
            command = rx.recv() => match command {
                Some(ToClient::Frame(frame)) => if io.write_all(&frame).await.is_err() { break },
                Some(ToClient::Pause(pause)) => paused = pause,
                Some(ToClient::Close) | None => break,
            },
        }
    }
    let _ = tx.send(Input::Closed(conn)).await;
}
