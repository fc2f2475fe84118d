//! `teamtalk-bench`: see `teamtalk-bench --help`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use teamtalk_bench::{
    chat, group, idle, login, relay, BenchError, Report, Target, Users, DEFAULT_DRAIN,
};

const HELP: &str = "\
teamtalk-bench — load and measure a TeamTalk deployment through the public protocol

USAGE:
  teamtalk-bench login --login-url URL | --msg-server HOST:PORT  USERS [--logins N] [--parallel C]
  teamtalk-bench chat  TARGET USERS --rate MSGS_PER_S [--duration SECS] [--per-conn-rate R] [--drain SECS]
  teamtalk-bench chat  TARGET USERS --ramp START_RATE [--ramp-factor 1.25] [--ramp-max-p99-ms 1000] [--duration SECS_PER_STEP]
  teamtalk-bench group TARGET USERS --members M [--senders S] --rate POSTS_PER_S [--duration SECS]
  teamtalk-bench idle  TARGET USERS [--server-pid PID] [--sources K] [--duration SECS]
  teamtalk-bench relay --listen HOST:PORT

  TARGET: --login-url URL (a login_server; discovery per connection) or --msg-server HOST:PORT
  USERS:  --users PATTERN (default u{}) --first N (default 1) --count N --password PW
          [--client-type android|windows] (default android: not sent every PC presence change)
  --json FILE writes the report as JSON as well.

MODES:
  login  N logins (default --count), C at a time (default 1): logins/s, p50/p95/p99.
  chat   pairs (u1→u2, u3→u4, …) sending numbered messages open-loop at the total rate, spread
         over enough pairs to stay under the server's per-connection limit (default 20/s);
         delivered/s, latency sender→receiver, exact lost/duplicated/out-of-order counts.
         --ramp: steps from START_RATE, ×factor each, until a step is not sustained (under
         95 % delivered, anything lost, over 1 % unacknowledged, or p99 over the bound).
  group  one group of the first M users; S of them post: fan-out deliveries/s and latency.
  idle   holds --count logged-in connections from K source addresses 127.0.0.1.. (default 4)
         for --duration (default 5 s); server RSS growth per connection with --server-pid.
  relay  the ceiling: answers logins and forwards each message with an ack, nothing else.
         Measure it with `chat --msg-server HOST:PORT`.

Exit codes: 0 ok, 64 bad flags, 1 the run failed.
";

struct Flags(Vec<(String, String)>);

impl Flags {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(i).1)
    }

    fn number<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: Option<T>,
    ) -> Result<T, BenchError> {
        match self.take(name) {
            Some(v) => v
                .parse()
                .map_err(|_| BenchError::Usage(format!("--{name}: not a number: {v:?}"))),
            None => default.ok_or_else(|| BenchError::Usage(format!("--{name} is required"))),
        }
    }

    fn target(&mut self) -> Result<Target, BenchError> {
        match (self.take("login-url"), self.take("msg-server")) {
            (Some(url), None) => Ok(Target::LoginUrl(url)),
            (None, Some(addr)) => Ok(Target::MsgServer(addr)),
            _ => Err(BenchError::Usage(
                "give exactly one of --login-url URL or --msg-server HOST:PORT".into(),
            )),
        }
    }

    fn users(&mut self) -> Result<Users, BenchError> {
        let client_type = match self.take("client-type").as_deref() {
            None | Some("android") => 18,
            Some("ios") => 17,
            Some("windows") => 1,
            Some("mac") => 2,
            Some(other) => {
                return Err(BenchError::Usage(format!(
                    "--client-type: unknown {other:?}"
                )))
            }
        };
        Ok(Users {
            pattern: self.take("users").unwrap_or_else(|| "u{}".to_owned()),
            first: self.number("first", Some(1))?,
            count: self.number("count", None)?,
            password: self
                .take("password")
                .ok_or_else(|| BenchError::Usage("--password is required".into()))?,
            client_type,
        })
    }

    fn secs(&mut self, name: &str, default: f64) -> Result<Duration, BenchError> {
        let secs: f64 = self.number(name, Some(default))?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(BenchError::Usage(format!("--{name}: not a duration")));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    fn finish(&self) -> Result<(), BenchError> {
        match self.0.first() {
            Some((name, _)) => Err(BenchError::Usage(format!("unknown flag --{name}"))),
            None => Ok(()),
        }
    }
}

fn parse(args: &[String]) -> Result<(String, Flags), BenchError> {
    let mut iter = args.iter();
    let mode = iter.next().cloned().unwrap_or_default();
    let mut pairs = Vec::new();
    while let Some(flag) = iter.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| BenchError::Usage(format!("unexpected argument {flag:?}")))?;
        let value = iter
            .next()
            .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value")))?;
        pairs.push((name.to_owned(), value.clone()));
    }
    Ok((mode, Flags(pairs)))
}

async fn execute(mode: &str, mut flags: Flags) -> Result<Option<Report>, BenchError> {
    let report = match mode {
        "relay" => {
            let listen = flags
                .take("listen")
                .ok_or_else(|| BenchError::Usage("--listen HOST:PORT is required".into()))?;
            flags.finish()?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| BenchError::Setup(format!("{listen}: {e}")))?;
            println!(
                "relay listening on {}",
                listener.local_addr().map_or(listen, |a| a.to_string())
            );
            relay::serve(listener)
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            return Ok(None);
        }
        "flood" => {
            let target = flags.target()?;
            let users = flags.users()?;
            let flooders = flags.number("flooders", Some(3))?;
            let duration = std::time::Duration::from_secs(flags.number("duration", Some(10))?);
            flags.finish()?;
            teamtalk_bench::flood::run(&teamtalk_bench::flood::FloodOptions {
                target,
                users,
                flooders,
                duration,
            })
            .await?
        }
        "login" => {
            let target = flags.target()?;
            let users = flags.users()?;
            let logins = flags.number("logins", Some(users.count))?;
            let parallel = flags.number("parallel", Some(1))?;
            flags.finish()?;
            login::run(&login::LoginOptions {
                target,
                users,
                logins,
                parallel,
            })
            .await?
        }
        "chat" => {
            let ramp_start: Option<f64> = flags
                .take("ramp")
                .map(|v| v.parse())
                .transpose()
                .map_err(|_| BenchError::Usage("--ramp: not a rate".into()))?;
            let ramp_factor: f64 = flags.number("ramp-factor", Some(1.25))?;
            let max_p99_ms: f64 = flags.number("ramp-max-p99-ms", Some(1000.0))?;
            let options = chat::ChatOptions {
                target: flags.target()?,
                users: flags.users()?,
                rate: match ramp_start {
                    Some(start) => start,
                    None => flags.number("rate", None)?,
                },
                duration: flags.secs("duration", 10.0)?,
                per_conn_rate: flags.number("per-conn-rate", Some(20.0))?,
                drain: flags.secs("drain", DEFAULT_DRAIN.as_secs_f64())?,
            };
            flags.finish()?;
            if !(options.rate > 0.0 && options.per_conn_rate > 0.0) {
                return Err(BenchError::Usage(
                    "--rate and --per-conn-rate must be positive".into(),
                ));
            }
            if ramp_start.is_some() {
                chat::ramp(&chat::RampOptions {
                    base: options,
                    factor: ramp_factor,
                    max_p99_ms,
                })
                .await?
            } else {
                chat::run(&options).await?
            }
        }
        "group" => {
            let target = flags.target()?;
            let users = flags.users()?;
            let options = group::GroupOptions {
                members: flags.number("members", Some(users.count))?,
                senders: flags.number("senders", Some(1))?,
                rate: flags.number("rate", None)?,
                duration: flags.secs("duration", 10.0)?,
                drain: flags.secs("drain", DEFAULT_DRAIN.as_secs_f64())?,
                target,
                users,
            };
            flags.finish()?;
            if options.rate <= 0.0 {
                return Err(BenchError::Usage("--rate must be positive".into()));
            }
            group::run(&options).await?
        }
        "idle" => {
            let target = flags.target()?;
            let users = flags.users()?;
            let server_pid = flags
                .take("server-pid")
                .map(|p| p.parse())
                .transpose()
                .map_err(|_| BenchError::Usage("--server-pid: not a pid".into()))?;
            let k: u8 = flags.number("sources", Some(4))?;
            let sources = (1..=k.max(1))
                .map(|i| IpAddr::from([127, 0, 0, i]))
                .collect();
            let hold = flags.secs("duration", 5.0)?;
            flags.finish()?;
            idle::run(&idle::IdleOptions {
                target,
                users,
                server_pid,
                sources,
                hold,
            })
            .await?
        }
        other => return Err(BenchError::Usage(format!("unknown mode {other:?}"))),
    };
    Ok(Some(report))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let (mode, mut flags) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("teamtalk-bench: {error}\nRun `teamtalk-bench --help`.");
            return ExitCode::from(64);
        }
    };
    let json = flags.take("json");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("teamtalk-bench: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(&mode, flags)) {
        Ok(Some(report)) => {
            print!("{}", report.table());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
                if let Err(error) = std::fs::write(&path, text + "\n") {
                    eprintln!("teamtalk-bench: cannot write {path}: {error}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(BenchError::Usage(message)) => {
            eprintln!("teamtalk-bench: {message}\nRun `teamtalk-bench --help`.");
            ExitCode::from(64)
        }
        Err(error) => {
            eprintln!("teamtalk-bench: {error}");
            ExitCode::from(1)
        }
    }
}
