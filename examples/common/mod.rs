//! Command-line flags shared by the examples:
//! `--login-url URL` (or `--msg-server HOST:PORT`) `--user NAME --password PW`.
#![allow(dead_code)] // each example uses a part

use teamtalk_client::{Client, ClientConfig, Events};

/// Parsed flags: the connection settings and every other `--flag value` pair.
pub(crate) struct Args {
    pub(crate) config: ClientConfig,
    pub(crate) extra: Vec<(String, String)>,
}

impl Args {
    /// Parses `std::env::args()`; prints `usage` and exits with 64 on a mistake.
    pub(crate) fn parse(usage: &str) -> Args {
        match Args::try_parse(std::env::args().skip(1)) {
            Ok(args) => args,
            Err(message) => {
                if !message.is_empty() {
                    eprintln!("error: {message}");
                }
                eprintln!("{usage}");
                std::process::exit(if message.is_empty() { 0 } else { 64 });
            }
        }
    }

    fn try_parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut pairs = Vec::new();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(String::new());
            }
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            pairs.push((name.to_owned(), value));
        }
        let mut take = |name: &str| {
            let i = pairs.iter().position(|(n, _)| n == name)?;
            Some(pairs.remove(i).1)
        };
        let user = take("user").ok_or("--user is required")?;
        let password = take("password").ok_or("--password is required")?;
        let config = match (take("login-url"), take("msg-server")) {
            (Some(url), None) => ClientConfig::login_url(&url, &user, &password),
            (None, Some(addr)) => ClientConfig::msg_server(&addr, &user, &password),
            _ => {
                return Err("give exactly one of --login-url URL or --msg-server HOST:PORT".into())
            }
        };
        Ok(Args {
            config,
            extra: pairs,
        })
    }

    /// Removes and returns the value of `--name`.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        let i = self.extra.iter().position(|(n, _)| n == name)?;
        Some(self.extra.remove(i).1)
    }

    /// Exits with 64 when flags are left that the example does not know.
    pub(crate) fn finish(&self, usage: &str) {
        if let Some((name, _)) = self.extra.first() {
            eprintln!("error: unknown flag --{name}\n{usage}");
            std::process::exit(64);
        }
    }
}

/// Connects and logs in, or prints why not and exits with 1.
pub(crate) async fn connect_or_exit(name: &str, config: ClientConfig) -> (Client, Events) {
    match Client::connect(config).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::exit(1);
        }
    }
}
