//! tt: an interactive terminal chat client, line by line.
//!
//! ```text
//! cargo run --release --example tt -- --login-url http://127.0.0.1:8080 --user alice --password PW
//! ```
//!
//! Flags: `--login-url URL` or `--msg-server HOST:PORT`, `--user NAME`, `--password PW`.
//!
//! Commands: `/contacts` (users with presence and unread counts), `/groups`, `/open NAME` or
//! `/open #GROUP_ID` (shows the last messages and marks them read), `/history [N]` (older
//! messages), `/read`, `/help`, `/quit`. Any other line is sent to the open conversation.
//! Incoming messages are printed as they arrive; those of the open conversation are marked
//! read.

mod common;

use std::collections::HashMap;

use teamtalk_client::{Client, Event, Message};
use teamtalk_core::domain::SessionKind;
use teamtalk_core::proto::base_define::MsgInfo;
use tokio::io::{AsyncBufReadExt, BufReader};

const USAGE: &str =
    "usage: tt (--login-url URL | --msg-server HOST:PORT) --user NAME --password PW";
const HELP: &str = "commands: /contacts  /groups  /open NAME | /open #GROUP_ID  /history [N]  /read  /help  /quit\n\
                    anything else is sent to the open conversation";

struct Chat {
    client: Client,
    names: HashMap<u32, String>,
    online: HashMap<u32, bool>,
    unread: HashMap<(SessionKind, u32), u32>,
    open: Option<(SessionKind, u32)>,
    oldest_shown: u32,
    latest_seen: u32,
}

impl Chat {
    fn name(&self, id: u32) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}"))
    }

    fn label(&self, conversation: (SessionKind, u32)) -> String {
        match conversation {
            (SessionKind::Group, id) => format!("#{id}"),
            (SessionKind::Single, id) => self.name(id),
        }
    }

    fn show(&self, info: &MsgInfo) {
        let key = teamtalk_core::crypt::MessageKey::default_key();
        let text = key
            .decrypt(&info.msg_data)
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_else(|_| "[audio]".to_owned());
        println!(
            "  #{} {}: {}",
            info.msg_id,
            self.name(info.from_session_id),
            text
        );
    }

    async fn command(&mut self, line: &str) -> Result<bool, teamtalk_client::Error> {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "/quit" => {
                let _ = self.client.logout().await;
                return Ok(false);
            }
            "/help" => println!("{HELP}"),
            "/contacts" => {
                let mut ids: Vec<u32> = self
                    .names
                    .keys()
                    .copied()
                    .filter(|id| *id != self.client.user_id())
                    .collect();
                ids.sort_unstable();
                for id in ids {
                    let presence = if self.online.get(&id).copied().unwrap_or(false) {
                        "online"
                    } else {
                        "offline"
                    };
                    let unread = self
                        .unread
                        .get(&(SessionKind::Single, id))
                        .copied()
                        .unwrap_or(0);
                    println!("  {} [{presence}] unread {unread}", self.name(id));
                }
            }
            "/groups" => {
                let mut ids: Vec<u32> = self
                    .client
                    .groups()
                    .await?
                    .iter()
                    .map(|g| g.group_id)
                    .collect();
                for session in self.client.recent_sessions(0).await? {
                    if session.session_type == SessionKind::Group.to_wire()
                        && !ids.contains(&session.session_id)
                    {
                        ids.push(session.session_id);
                    }
                }
                for group in self.client.group_info(ids).await? {
                    let unread = self
                        .unread
                        .get(&(SessionKind::Group, group.group_id))
                        .copied()
                        .unwrap_or(0);
                    println!(
                        "  #{} {} ({} members) unread {unread}",
                        group.group_id,
                        group.group_name,
                        group.group_member_list.len()
                    );
                }
            }
            "/open" => {
                let conversation = if let Some(id) = rest.strip_prefix('#') {
                    match id.parse() {
                        Ok(id) => (SessionKind::Group, id),
                        Err(_) => {
                            println!("not a group id: {id}");
                            return Ok(true);
                        }
                    }
                } else {
                    match self.names.iter().find(|(_, name)| name.as_str() == rest) {
                        Some((id, _)) => (SessionKind::Single, *id),
                        None => {
                            println!("no user named {rest:?} (see /contacts)");
                            return Ok(true);
                        }
                    }
                };
                self.open = Some(conversation);
                self.oldest_shown = 0;
                self.latest_seen = 0;
                println!("-- {} --", self.label(conversation));
                self.history(10).await?;
                self.mark_read().await?;
            }
            "/history" => self.history(rest.parse().unwrap_or(10)).await?,
            "/read" => self.mark_read().await?,
            _ if cmd.starts_with('/') => println!("unknown command {cmd}; {HELP}"),
            _ => match self.open {
                None => println!("open a conversation first: /open NAME"),
                Some((kind, peer)) => {
                    let msg_id = match kind {
                        SessionKind::Single => self.client.send_text(peer, line).await?,
                        SessionKind::Group => self.client.send_group_text(peer, line).await?,
                    };
                    self.latest_seen = self.latest_seen.max(msg_id);
                    println!("  #{msg_id} me: {line}");
                }
            },
        }
        Ok(true)
    }

    async fn history(&mut self, count: u32) -> Result<(), teamtalk_client::Error> {
        let Some((kind, peer)) = self.open else {
            println!("open a conversation first: /open NAME");
            return Ok(());
        };
        let before = self.oldest_shown.saturating_sub(1);
        if self.oldest_shown == 1 {
            println!("  (no older messages)");
            return Ok(());
        }
        let page = self.client.history(kind, peer, before, count).await?;
        if page.is_empty() {
            println!("  (no messages)");
        }
        for info in page.iter().rev() {
            self.show(info);
        }
        if let Some(oldest) = page.iter().map(|m| m.msg_id).min() {
            self.oldest_shown = oldest;
        }
        if let Some(newest) = page.iter().map(|m| m.msg_id).max() {
            self.latest_seen = self.latest_seen.max(newest);
        }
        Ok(())
    }

    async fn mark_read(&mut self) -> Result<(), teamtalk_client::Error> {
        if let Some((kind, peer)) = self.open {
            self.client.read_ack(kind, peer, self.latest_seen).await?;
            self.unread.remove(&(kind, peer));
        }
        Ok(())
    }

    async fn incoming(&mut self, message: Message) -> Result<(), teamtalk_client::Error> {
        let me = self.client.user_id();
        let conversation = if message.is_group() {
            (SessionKind::Group, message.to)
        } else if message.from == me {
            (SessionKind::Single, message.to)
        } else {
            (SessionKind::Single, message.from)
        };
        let text = message.text.clone().unwrap_or_else(|| "[audio]".to_owned());
        let sender = if message.from == me {
            "me".to_owned()
        } else {
            self.name(message.from)
        };
        if self.open == Some(conversation) {
            println!("  #{} {sender}: {text}", message.msg_id);
            self.latest_seen = self.latest_seen.max(message.msg_id);
            self.mark_read().await?;
        } else {
            let count = self.unread.entry(conversation).or_default();
            if message.from != me {
                *count += 1;
            }
            let count = *count;
            println!(
                "[{}] {sender}: {text} (unread {count})",
                self.label(conversation)
            );
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let args = common::Args::parse(USAGE);
    args.finish(USAGE);
    let (client, mut events) = common::connect_or_exit("tt", args.config).await;
    let mut chat = Chat {
        client: client.clone(),
        names: HashMap::new(),
        online: HashMap::new(),
        unread: HashMap::new(),
        open: None,
        oldest_shown: 0,
        latest_seen: 0,
    };
    let setup = async {
        let (users, _) = client.users_changed(0).await?;
        chat.names = users
            .iter()
            .map(|u| (u.user_id, u.user_real_name.clone()))
            .collect();
        let ids: Vec<u32> = chat.names.keys().copied().collect();
        for stat in client.user_status(ids).await? {
            chat.online.insert(stat.user_id, stat.status == 1);
        }
        for info in client.unread().await?.unreadinfo_list {
            if let Some(kind) = SessionKind::from_wire(info.session_type) {
                chat.unread.insert((kind, info.session_id), info.unread_cnt);
            }
        }
        Ok::<_, teamtalk_client::Error>(())
    };
    if let Err(error) = setup.await {
        eprintln!("tt: sync failed: {error}");
        std::process::exit(1);
    }
    println!(
        "logged in as {} (id {}); {HELP}",
        client.me().user_real_name,
        client.user_id()
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let result = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if !line.trim().is_empty() => match chat.command(line.trim()).await {
                    Ok(true) => Ok(()),
                    Ok(false) => break,
                    Err(error) => Err(error),
                },
                Ok(Some(_)) => Ok(()),
                Ok(None) | Err(_) => break, // end of input
            },
            event = events.recv() => match event {
                Some(Event::Message(message)) => chat.incoming(message).await,
                Some(Event::Status { user_id, online }) => {
                    chat.online.insert(user_id, online);
                    println!("* {} is {}", chat.name(user_id), if online { "online" } else { "offline" });
                    Ok(())
                }
                Some(Event::Kicked { .. }) => {
                    println!("* logged in elsewhere; bye");
                    break;
                }
                Some(Event::Disconnected) => {
                    println!("* disconnected, reconnecting…");
                    Ok(())
                }
                Some(Event::Reconnected) => {
                    println!("* reconnected");
                    Ok(())
                }
                Some(Event::Closed(reason)) => {
                    println!("* closed: {reason}");
                    break;
                }
                Some(_) => Ok(()),
                None => break,
            },
        };
        if let Err(error) = result {
            println!("! {error}");
        }
    }
}
