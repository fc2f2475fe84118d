//! group_announcer: posts each line of stdin to a group, creating the group when asked.
//!
//! ```text
//! echo "deploy done" | cargo run --example group_announcer -- --login-url http://127.0.0.1:8080 \
//!     --user bot --password PW --group 12
//! cargo run --example group_announcer -- --msg-server 127.0.0.1:8000 --user bot --password PW \
//!     --create ops --members 2,3,4
//! ```
//!
//! Flags: the connection flags of every example, and either `--group ID` (an existing group the
//! user belongs to) or `--create NAME --members ID,ID,…` (a new temporary group with those
//! members and the user). Prints the msg_id of every posted line.

mod common;

use teamtalk_client::Client;
use tokio::io::{AsyncBufReadExt, BufReader};

const USAGE: &str =
    "usage: group_announcer (--login-url URL | --msg-server HOST:PORT) --user NAME --password PW \
                     (--group ID | --create NAME [--members ID,ID,...])";

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("group_announcer: {message}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let mut args = common::Args::parse(USAGE);
    let group = args.take("group");
    let create = args.take("create");
    let members = args.take("members");
    args.finish(USAGE);
    let (client, _events) = Client::connect(args.config)
        .await
        .unwrap_or_else(|e| fail(e));
    let group = match (group, create) {
        (Some(id), None) => id
            .parse::<u32>()
            .unwrap_or_else(|_| fail(format!("--group needs a number, got {id:?}"))),
        (None, Some(name)) => {
            let mut ids = vec![client.user_id()];
            for id in members
                .iter()
                .flat_map(|m| m.split(','))
                .filter(|s| !s.is_empty())
            {
                ids.push(
                    id.trim()
                        .parse()
                        .unwrap_or_else(|_| fail(format!("--members: not a user id: {id:?}"))),
                );
            }
            let id = client
                .create_group(&name, ids)
                .await
                .unwrap_or_else(|e| fail(e));
            println!("created group {name} with id {id}");
            id
        }
        _ => {
            eprintln!("error: give --group ID or --create NAME\n{USAGE}");
            std::process::exit(64);
        }
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match client.send_group_text(group, &line).await {
            Ok(msg_id) => println!("posted {msg_id}"),
            Err(error) => fail(error),
        }
    }
}
