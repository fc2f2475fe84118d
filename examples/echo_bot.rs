//! echo_bot: logs in and answers every 1:1 text message with the same text.
//!
//! ```text
//! cargo run --release --example echo_bot -- --login-url http://127.0.0.1:8080 --user bot --password PW
//! ```
//!
//! Flags: `--login-url URL` (a login_server) or `--msg-server HOST:PORT` (a msg_server
//! directly), `--user NAME`, `--password PW`. Stops on Ctrl-C, a kick or a logout elsewhere.

mod common;

use teamtalk_client::Event;
use teamtalk_core::domain::SessionKind;

const USAGE: &str =
    "usage: echo_bot (--login-url URL | --msg-server HOST:PORT) --user NAME --password PW";

#[tokio::main]
async fn main() {
    let args = common::Args::parse(USAGE);
    args.finish(USAGE);
    let (client, mut events) = common::connect_or_exit("echo_bot", args.config).await;
    let me = client.me();
    println!(
        "echo_bot: logged in as {} (id {})",
        me.user_nick_name, me.user_id
    );
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(message) if !message.is_group() && message.from != client.user_id() => {
                let Some(text) = &message.text else { continue };
                match client.send_text(message.from, text).await {
                    Ok(msg_id) => println!(
                        "echoed message {} from {} as {msg_id}",
                        message.msg_id, message.from
                    ),
                    Err(error) => eprintln!("echo_bot: reply failed: {error}"),
                }
                let _ = client
                    .read_ack(SessionKind::Single, message.from, message.msg_id)
                    .await;
            }
            Event::Disconnected => eprintln!("echo_bot: disconnected, reconnecting"),
            Event::Reconnected => println!("echo_bot: reconnected"),
            Event::Closed(reason) => {
                println!("echo_bot: closed ({reason})");
                break;
            }
            _ => {}
        }
    }
}
