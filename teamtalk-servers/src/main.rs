//! `teamtalk`: the whole system in one process, each server role alone, and administration.
//! Run `teamtalk --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use teamtalk_core::crypt::MessageKey;
use teamtalk_core::domain::{Clock, DepartmentId, Timestamp, UserId};
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::{
    login_name_key, Credentials, NewDepartment, NewUser, ProfileChange, Store, StoreError, User,
    UserStore, STATUS_ACTIVE, STATUS_RESIGNED,
};
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::conf::ConfFile;
use teamtalk_servers::db_proxy_conf::DbProxyConf;
use teamtalk_servers::link::{ListenConfig, Listeners};
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_servers::trust::PeerGate;
use teamtalk_servers::{db_proxy, login_server, msg_server, roles, route_server, shutdown};
use teamtalk_store::{MysqlRedisConfig, MysqlRedisStore, SqliteConfig, SqliteStore};

const HELP: &str = "\
teamtalk — TeamTalk-compatible IM servers

USAGE:
  teamtalk serve [--config FILE] [--data-dir DIR]
      login_server, route_server, db_proxy_server, msg_server, msfs and http_msg_server in
      one process on the embedded SQLite store (default data dir ./teamtalk-data), listening
      on 127.0.0.1: HTTP discovery 8080 (http://127.0.0.1:8080/msg_server), clients 8000,
      msfs 8700, file_server 8600; on 127.0.0.1 whatever `listen` is (internal_listen):
      admin API 8400, login 8100, route 8200, db_proxy 10600, file_server 8601, and
      push_server (8500) with push_webhook or APNs keys.
  teamtalk user add NAME --password PW [--nick NICK] [--dept DEPT_ID] [--data-dir DIR | --config FILE]
  teamtalk user list [--all] [--data-dir DIR | --config FILE]   (--all: disabled accounts too)
  teamtalk user passwd NAME --password PW [--data-dir DIR | --config FILE]
  teamtalk user disable NAME | user enable NAME [--data-dir DIR | --config FILE]
  teamtalk user set NAME [--nick N] [--dept ID] [--email E] [--phone P] [--avatar URL] [--gender 0|1|2]
      A disabled user (status 3, as the original admin's \"delete\") cannot log in and is
      hidden by clients; enable opens the account again.
  teamtalk user add-many --prefix P --count N --password PW [--first 1] [--dept ID] [--data-dir DIR | --config FILE]
      Users P1 … PN (from --first), all with the same password: provisioning for benchmarks.
  teamtalk dept add NAME [--parent ID] [--data-dir DIR | --config FILE]
  teamtalk dept list [--data-dir DIR | --config FILE]
  teamtalk backup FILE [--data-dir DIR]
      A consistent copy of the embedded store's database, taken while it runs (FILE must not
      exist); msfs/ and offline_file/ in the data dir are plain files to copy beside it.
      Administration on the same store: SQLite in the data dir, or MySQL + Redis when the
      config file sets mysql_url and redis_url (or is an original dbproxyserver.conf).
      Passwords are stored with the original scheme: md5(md5(password) + salt), random salt.
  teamtalk db-proxy-server --config FILE
  teamtalk route-server --config FILE
  teamtalk login-server --config FILE
  teamtalk msg-server --config FILE
  teamtalk msfs --config FILE
  teamtalk http-msg-server --config FILE
  teamtalk push-server --config FILE
  teamtalk file-server --config FILE
      One role alone, reading the original .conf file (dbproxyserver.conf, routeserver.conf,
      loginserver.conf, msgserver.conf, msfs.conf …) or a .toml file with the same keys. A
      db-proxy-server config without DBInstances serves the embedded store in data_dir.
      Internal ports listen on 127.0.0.1 and serve only AllowedPeers (default loopback).
      Keys and defaults: docs/deploy.md.
  teamtalk --help | --version

SERVE CONFIG (TOML, every key optional):
  data_dir = \"./teamtalk-data\"   listen = \"127.0.0.1\" (client ports)   advertise = \"127.0.0.1\"
  internal_listen = \"127.0.0.1\" (internal ports)   http_msg_listen = internal_listen
  allowed_peers = \"10.0.0.5;10.0.1.0/24\" (on internal ports besides 127.0.0.1, ::1; * = any)
  tls_ca_file = \"ca.pem\"   tls_cert_file = \"node.pem\"   tls_key_file = \"node.key\" — mutual TLS
      on the internal links (build with --features tls); roles: TlsCaFile, TlsCertFile, TlsKeyFile
  http_port = 8080   msg_port = 8000   login_port = 8100   route_port = 8200
  db_proxy_port = 10600   msfs_port = 8700 (files in DATA_DIR/msfs)   max_msgs_per_sec = 20
  max_requests_in_flight = 2 (per client)   max_requests_in_flight_total = 4 (all clients)
  require_login_server = 1 (0: msg_servers accept logins with no login_server link)
  http_msg_port = 8400   http_api_key = \"…\" (default: generated into DATA_DIR/http_api_key)
  push_webhook = \"http://…\" (push notifications POSTed there; no pushes without)   push_port = 8500
  apns_key_file = \"AuthKey_KEYID.p8\"   apns_key_id = \"…\"   apns_team_id = \"…\"   apns_topic = \"…\"
  apns_sandbox = 0 (1: development endpoint) — iOS pushes through APNs (build with --features apns)
  file_port = 8600   file_ms_port = 8601 (offline files in DATA_DIR/offline_file)
  msfs = \"http://127.0.0.1:8700/\"   discovery = \"http://127.0.0.1/api/discovery\"
  mysql_url = \"mysql://user:pw@host:3306/teamtalk\"   redis_url = \"redis://127.0.0.1:6379\"
  listen_backlog = 1024   max_conn_per_ip = 256 (HTTP ports)   client_max_conn_per_ip = 0 (none)
  max_conn_cnt, http_max_conn, msfs_max_conn, file_max_conn, http_msg_max_conn = 0 (a share
  of the descriptor limit)   http_header_timeout = 10   http_idle_timeout = 30 (seconds)

ENVIRONMENT:
  TEAMTALK_LOG = error | warn | info (default) | debug | trace

EXIT CODES: 0 ok, 64 bad command line or configuration, 1 failure while running.
";

/// A command-line or configuration problem (exit code 64).
struct Usage(String);

fn usage(message: impl Into<String>) -> Usage {
    Usage(message.into())
}

enum Command {
    Help,
    Version,
    Serve(Options),
    UserAdd {
        name: String,
        password: String,
        nick: Option<String>,
        dept: u32,
        opts: Options,
    },
    /// `user list [--all]`: `true` also lists disabled accounts.
    UserList(Options, bool),
    /// `user passwd|disable|enable NAME`.
    UserChange {
        name: String,
        change: UserChange,
        opts: Options,
    },
    UserAddMany {
        prefix: String,
        first: u32,
        count: u32,
        password: String,
        dept: u32,
        opts: Options,
    },
    DeptAdd {
        name: String,
        parent: u32,
        opts: Options,
    },
    DeptList(Options),
    /// `backup FILE`: an online copy of the embedded store.
    Backup {
        file: PathBuf,
        opts: Options,
    },
    Role {
        role: String,
        config: PathBuf,
    },
}

/// What `user passwd|disable|enable|set` does.
enum UserChange {
    Password(String),
    Status(u32),
    Profile(ProfileChange),
}

#[derive(Default)]
struct Options {
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
}

/// Flags without a value.
const SWITCHES: &[&str] = &["all"];

fn parse(args: &[String]) -> Result<Command, Usage> {
    let mut positional = Vec::new();
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--help" || arg == "-h" || arg == "help" {
            return Ok(Command::Help);
        }
        if arg == "--version" || arg == "-V" || arg == "version" {
            return Ok(Command::Version);
        }
        if let Some(flag) = arg.strip_prefix("--") {
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                // Switches take no value.
                None if SWITCHES.contains(&flag) => (flag.to_owned(), "true".to_owned()),
                None => {
                    let value = iter
                        .next()
                        .ok_or_else(|| usage(format!("--{flag} needs a value")))?;
                    (flag.to_owned(), value.clone())
                }
            };
            flags.push((name, value));
        } else {
            positional.push(arg.as_str());
        }
    }
    let mut take = |name: &str| -> Option<String> {
        let i = flags.iter().position(|(n, _)| n == name)?;
        Some(flags.remove(i).1)
    };
    let opts = |take: &mut dyn FnMut(&str) -> Option<String>| Options {
        config: take("config").map(PathBuf::from),
        data_dir: take("data-dir").map(PathBuf::from),
    };
    let number = |value: Option<String>, flag: &str| -> Result<u32, Usage> {
        value.map_or(Ok(0), |v| {
            v.parse()
                .map_err(|_| usage(format!("--{flag} needs a number, got {v:?}")))
        })
    };
    let command = match positional.as_slice() {
        [] => return Ok(Command::Help),
        ["serve"] => Command::Serve(opts(&mut take)),
        ["user", "add", name] => Command::UserAdd {
            name: (*name).to_owned(),
            password: take("password").ok_or_else(|| usage("user add needs --password PW"))?,
            nick: take("nick"),
            dept: number(take("dept"), "dept")?,
            opts: opts(&mut take),
        },
        ["user", "list"] => {
            let all = match take("all").as_deref() {
                None => false,
                Some("true") => true,
                Some(other) => return Err(usage(format!("--all takes no value, got {other:?}"))),
            };
            Command::UserList(opts(&mut take), all)
        }
        ["user", "passwd", name] => Command::UserChange {
            name: (*name).to_owned(),
            change: UserChange::Password(
                take("password").ok_or_else(|| usage("user passwd needs --password PW"))?,
            ),
            opts: opts(&mut take),
        },
        ["user", "set", name] => {
            let gender = match take("gender") {
                Some(g) => Some(match g.as_str() {
                    "0" | "1" | "2" => number(Some(g), "gender")?,
                    _ => return Err(usage("--gender is 0 (unknown), 1 (male) or 2 (female)")),
                }),
                None => None,
            };
            let change = ProfileChange {
                nick: take("nick"),
                gender,
                avatar: take("avatar"),
                department: match take("dept") {
                    Some(d) => Some(DepartmentId(number(Some(d), "dept")?)),
                    None => None,
                },
                email: take("email"),
                phone: take("phone"),
            };
            if change.is_empty() {
                return Err(usage(
                    "user set needs one of --nick, --dept, --email, --phone, --avatar, --gender",
                ));
            }
            Command::UserChange {
                name: (*name).to_owned(),
                change: UserChange::Profile(change),
                opts: opts(&mut take),
            }
        }
        ["user", verb @ ("disable" | "enable"), name] => Command::UserChange {
            name: (*name).to_owned(),
            change: UserChange::Status(if *verb == "disable" {
                STATUS_RESIGNED
            } else {
                STATUS_ACTIVE
            }),
            opts: opts(&mut take),
        },
        ["user", "add-many"] => Command::UserAddMany {
            prefix: take("prefix").ok_or_else(|| usage("user add-many needs --prefix P"))?,
            first: match take("first") {
                Some(v) => v
                    .parse()
                    .map_err(|_| usage(format!("--first needs a number, got {v:?}")))?,
                None => 1,
            },
            count: number(take("count"), "count")?,
            password: take("password").ok_or_else(|| usage("user add-many needs --password PW"))?,
            dept: number(take("dept"), "dept")?,
            opts: opts(&mut take),
        },
        ["dept", "list"] => Command::DeptList(opts(&mut take)),
        ["backup", file] => Command::Backup {
            file: PathBuf::from(file),
            opts: opts(&mut take),
        },
        ["dept", "add", name] => Command::DeptAdd {
            name: (*name).to_owned(),
            parent: number(take("parent"), "parent")?,
            opts: opts(&mut take),
        },
        [role @ ("db-proxy-server" | "route-server" | "login-server" | "msg-server" | "msfs"
        | "http-msg-server" | "push-server" | "file-server")] => Command::Role {
            role: (*role).to_owned(),
            config: take("config")
                .map(PathBuf::from)
                .ok_or_else(|| usage(format!("{role} needs --config FILE")))?,
        },
        other => return Err(usage(format!("unknown command: {}", other.join(" ")))),
    };
    if let Some((name, _)) = flags.first() {
        return Err(usage(format!("unknown or misplaced flag --{name}")));
    }
    Ok(command)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(command) => command,
        Err(Usage(message)) => {
            eprintln!("teamtalk: {message}\nRun `teamtalk --help` for usage.");
            return ExitCode::from(64);
        }
    };
    if let Command::Help = command {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    init_logging();
    if matches!(command, Command::Serve(_) | Command::Role { .. }) {
        // Connection caps are derived from the limit in force after this.
        teamtalk_servers::limits::raise_descriptor_limit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("teamtalk: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(Usage(message))) => {
            eprintln!("teamtalk: {message}");
            ExitCode::from(64)
        }
        Err(Failure::Run(message)) => {
            eprintln!("teamtalk: {message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let level = match std::env::var("TEAMTALK_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("warn") => tracing::Level::WARN,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

enum Failure {
    Usage(Usage),
    Run(String),
}

impl From<Usage> for Failure {
    fn from(usage: Usage) -> Failure {
        Failure::Usage(usage)
    }
}

fn run_error(error: impl std::fmt::Display) -> Failure {
    Failure::Run(error.to_string())
}

fn conf_error(path: &Path, error: impl std::fmt::Display) -> Failure {
    Failure::Usage(usage(format!("{}: {error}", path.display())))
}

/// The serve / administration settings: the config file (if any) and the flags.
struct Settings {
    conf: ConfFile,
    data_dir: PathBuf,
}

fn settings(opts: &Options) -> Result<Settings, Failure> {
    let conf = match &opts.config {
        Some(path) => ConfFile::load_any(path).map_err(|e| Failure::Usage(usage(e)))?,
        None => ConfFile::default(),
    };
    let data_dir = opts
        .data_dir
        .clone()
        .or_else(|| conf.get("data_dir").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./teamtalk-data"));
    Ok(Settings { conf, data_dir })
}

enum AnyStore {
    Sqlite(SqliteStore),
    Mysql(MysqlRedisStore),
}

async fn open_store(settings: &Settings) -> Result<AnyStore, Failure> {
    let conf = &settings.conf;
    let mysql = if conf.get("DBInstances").is_some() {
        // An original dbproxyserver.conf: its MySQL pools and Redis instances.
        let db = DbProxyConf::from_conf(conf).map_err(|e| Failure::Usage(usage(e.to_string())))?;
        Some(db.store)
    } else {
        match (conf.get("mysql_url"), conf.get("redis_url")) {
            (Some(mysql), Some(redis)) => Some(MysqlRedisConfig::new(mysql, redis)),
            (None, None) => None,
            _ => return Err(usage("mysql_url and redis_url must be set together").into()),
        }
    };
    if let Some(config) = mysql {
        let store = MysqlRedisStore::connect(&config).await.map_err(run_error)?;
        // A fresh database gets the original tables; existing ones are left as they are.
        store.bootstrap().await.map_err(run_error)?;
        return Ok(AnyStore::Mysql(store));
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        run_error(format!(
            "cannot create {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    let path = settings.data_dir.join("teamtalk.db");
    let store = SqliteStore::open(&SqliteConfig::new(path))
        .await
        .map_err(run_error)?;
    Ok(AnyStore::Sqlite(store))
}

async fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Help => Ok(()),
        Command::Version => {
            let apns = if cfg!(feature = "apns") {
                " (apns)"
            } else {
                ""
            };
            println!("teamtalk {}{apns}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve(opts) => {
            let settings = settings(&opts)?;
            let mut config = serve_config(&settings.conf)?;
            config.msfs_dir = Some(settings.data_dir.join("msfs"));
            config.file_dir = Some(settings.data_dir.join("offline_file"));
            config.http_api_key = Some(match settings.conf.get("http_api_key") {
                Some(key) if !key.is_empty() => key.to_owned(),
                _ => api_key(&settings.data_dir)?,
            });
            match open_store(&settings).await? {
                AnyStore::Sqlite(store) => {
                    println!(
                        "teamtalk serve: data in {} (SQLite)",
                        settings.data_dir.display()
                    );
                    run_all(config, store).await
                }
                AnyStore::Mysql(store) => {
                    println!("teamtalk serve: data in MySQL + Redis");
                    run_all(config, store).await
                }
            }
        }
        Command::UserAdd {
            name,
            password,
            nick,
            dept,
            opts,
        } => {
            let store = open_store(&settings(&opts)?).await?;
            let user = NewUser {
                profile: User {
                    nick: nick.unwrap_or_else(|| name.clone()),
                    name,
                    department: DepartmentId(dept),
                    ..User::default()
                },
                credentials: Credentials::from_plain(&password, &random_salt()?),
            };
            let id = match &store {
                AnyStore::Sqlite(s) => s.add_user(&user, SystemClock.now()).await,
                AnyStore::Mysql(s) => s.add_user(&user, SystemClock.now()).await,
            }
            .map_err(add_error)?;
            println!("user {} added with id {}", user.profile.name, id.0);
            Ok(())
        }
        Command::UserAddMany {
            prefix,
            first,
            count,
            password,
            dept,
            opts,
        } => {
            let store = open_store(&settings(&opts)?).await?;
            let started = std::time::Instant::now();
            let added = match store {
                AnyStore::Sqlite(s) => add_many(s, &prefix, first, count, &password, dept).await,
                AnyStore::Mysql(s) => add_many(s, &prefix, first, count, &password, dept).await,
            }?;
            println!(
                "{} users added ({prefix}{first} … {prefix}{}) in {:.1} s",
                added.added,
                u64::from(first) + u64::from(count.max(1)) - 1,
                started.elapsed().as_secs_f64()
            );
            if let Some((name, id)) = &added.first_taken {
                println!(
                    "{} names already taken, skipped (e.g. {name:?}, id {}): one account per \
                     login name",
                    added.taken, id.0
                );
            }
            Ok(())
        }
        Command::UserList(opts, all) => {
            let store = open_store(&settings(&opts)?).await?;
            let users = match &store {
                AnyStore::Sqlite(s) => list_users(s, all).await,
                AnyStore::Mysql(s) => list_users(s, all).await,
            }
            .map_err(run_error)?;
            let every = match &store {
                AnyStore::Sqlite(s) => list_users(s, true).await,
                AnyStore::Mysql(s) => list_users(s, true).await,
            }
            .map_err(run_error)?;
            let shared = shared_names(&every);
            println!(
                "{:>8}  {:<20}  {:<20}  {:>6}  status",
                "id", "name", "nick", "dept"
            );
            for user in users {
                let status = if user.status == STATUS_RESIGNED {
                    "disabled"
                } else {
                    "active"
                };
                let flag = match shared.get(login_name_key(&user.name)) {
                    Some(Some(chosen)) => format!("  DUPLICATE NAME: logins use id {}", chosen.0),
                    Some(None) => "  DUPLICATE NAME: no active account".to_owned(),
                    None => String::new(),
                };
                println!(
                    "{:>8}  {:<20}  {:<20}  {:>6}  {status}{flag}",
                    user.id.0, user.name, user.nick, user.department.0
                );
            }
            if !shared.is_empty() {
                eprintln!(
                    "warning: {} login names belong to several accounts (stored by an older \
                     tool): a login uses the highest active id of the name; disable the others \
                     (teamtalk user disable works on the highest id, so fix older ones in the \
                     database) — see docs/compatibility.md",
                    shared.len()
                );
            }
            Ok(())
        }
        Command::UserChange { name, change, opts } => {
            let store = open_store(&settings(&opts)?).await?;
            let done = match &store {
                AnyStore::Sqlite(s) => change_user(s, &name, &change).await,
                AnyStore::Mysql(s) => change_user(s, &name, &change).await,
            }?;
            println!("{done}");
            Ok(())
        }
        Command::DeptAdd { name, parent, opts } => {
            let store = open_store(&settings(&opts)?).await?;
            let dept = NewDepartment {
                name,
                priority: 0,
                parent: DepartmentId(parent),
            };
            let id = match &store {
                AnyStore::Sqlite(s) => s.add_department(&dept, SystemClock.now()).await,
                AnyStore::Mysql(s) => s.add_department(&dept, SystemClock.now()).await,
            }
            .map_err(run_error)?;
            println!("department {} added with id {}", dept.name, id.0);
            Ok(())
        }
        Command::DeptList(opts) => {
            let store = open_store(&settings(&opts)?).await?;
            let departments = match &store {
                AnyStore::Sqlite(s) => s.departments_changed_since(Timestamp(0)).await,
                AnyStore::Mysql(s) => s.departments_changed_since(Timestamp(0)).await,
            }
            .map_err(run_error)?;
            println!("{:>8}  {:<30}  {:>6}", "id", "name", "parent");
            for dept in departments.iter().filter(|d| d.status == 0) {
                println!("{:>8}  {:<30}  {:>6}", dept.id.0, dept.name, dept.parent.0);
            }
            Ok(())
        }
        Command::Backup { file, opts } => {
            let started = std::time::Instant::now();
            let settings = settings(&opts)?;
            let on_mysql = ["DBInstances", "mysql_url"]
                .iter()
                .any(|key| settings.conf.get(key).is_some());
            if on_mysql {
                return Err(usage(
                    "backup copies the embedded SQLite store; on MySQL + Redis use mysqldump \
                     (and Redis's own persistence)",
                )
                .into());
            }
            match open_store(&settings).await? {
                AnyStore::Sqlite(store) => {
                    store.backup_to(&file).await.map_err(run_error)?;
                    println!(
                        "backup written to {} in {:.1} s",
                        file.display(),
                        started.elapsed().as_secs_f64()
                    );
                    Ok(())
                }
                AnyStore::Mysql(_) => Err(usage("backup copies the embedded SQLite store").into()),
            }
        }
        Command::Role { role, config } => run_role(&role, &config).await,
    }
}

/// The users of a first full sync (every account not disabled); with `all` the disabled ones
/// too (those changed at any time since the epoch: every account this tool or the original
/// admin closed).
async fn list_users<S: UserStore>(
    store: &S,
    all: bool,
) -> teamtalk_core::store::StoreResult<Vec<User>> {
    let mut users = store.users_changed_since(Timestamp(0)).await?;
    if all {
        let closed = store.users_changed_since(Timestamp(1)).await?;
        users.extend(closed.into_iter().filter(|u| u.status == STATUS_RESIGNED));
        users.sort_by_key(|u| u.id.0);
    }
    Ok(users)
}

/// Login names (as [`login_name_key`]) held by more than one account, each with the account a
/// login picks: the highest active id, `None` when none is active.
fn shared_names(users: &[User]) -> std::collections::BTreeMap<&str, Option<UserId>> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&User>> = Default::default();
    for user in users {
        by_name
            .entry(login_name_key(&user.name))
            .or_default()
            .push(user);
    }
    by_name
        .into_iter()
        .filter(|(_, accounts)| accounts.len() > 1)
        .map(|(name, accounts)| {
            let chosen = accounts
                .iter()
                .filter(|u| u.status == STATUS_ACTIVE)
                .map(|u| u.id)
                .max();
            (name, chosen)
        })
        .collect()
}

/// A failed user creation: a taken name is the operator's mistake (exit 64), with the account
/// that has it; anything else a run failure.
fn add_error(error: StoreError) -> Failure {
    match error {
        StoreError::NameTaken { name, existing } => Failure::Usage(usage(format!(
            "a user named {name:?} already exists (id {}); login names must be unique (names \
             that differ only by trailing spaces are the same name)",
            existing.0
        ))),
        other => run_error(other),
    }
}

/// Applies `change` to the user named `name` (any status); says what was done.
async fn change_user<S: UserStore>(
    store: &S,
    name: &str,
    change: &UserChange,
) -> Result<String, Failure> {
    let user = store
        .user_named(name)
        .await
        .map_err(run_error)?
        .ok_or_else(|| usage(format!("no user named {name:?}")))?;
    let now = SystemClock.now();
    let (changed, done) = match change {
        UserChange::Password(password) => {
            let credentials = Credentials::from_plain(password, &random_salt()?);
            let changed = store.set_credentials(user.id, &credentials, now).await;
            (changed, format!("password of {name} changed"))
        }
        UserChange::Profile(profile) => {
            let changed = store.update_profile(user.id, profile, now).await;
            (
                changed,
                format!("profile of {name} changed; clients see it at their next sync"),
            )
        }
        UserChange::Status(status) => {
            let changed = store.set_status(user.id, *status, now).await;
            let done = if *status == STATUS_RESIGNED {
                format!(
                    "{name} (id {}) disabled: no more logins; clients hide the user at their \
                     next sync. Connections already open stay until they close: to cut them \
                     now, POST {{\"user_id\":{}}} to http_msg_server's /query/KickUser",
                    user.id.0, user.id.0
                )
            } else {
                format!("{name} enabled")
            };
            (changed, done)
        }
    };
    if changed.map_err(run_error)? {
        Ok(done)
    } else {
        Err(run_error(format!(
            "user {name:?} vanished while being changed"
        )))
    }
}

/// What `user add-many` did.
struct AddedMany {
    added: u32,
    taken: u32,
    /// The first name found taken, with the account that has it.
    first_taken: Option<(String, UserId)>,
}

/// Creates `prefix{first}` … with up to 64 insertions in flight (the stores batch them); names
/// already taken are skipped and counted (so a run can be repeated after a partial one).
async fn add_many<S: UserStore + Clone + 'static>(
    store: S,
    prefix: &str,
    first: u32,
    count: u32,
    password: &str,
    dept: u32,
) -> Result<AddedMany, Failure> {
    let mut tasks: tokio::task::JoinSet<teamtalk_core::store::StoreResult<UserId>> =
        tokio::task::JoinSet::new();
    let mut done = AddedMany {
        added: 0,
        taken: 0,
        first_taken: None,
    };
    let settle = |done: &mut AddedMany, joined: Result<_, tokio::task::JoinError>| {
        match joined.map_err(run_error)? {
            Ok(_) => done.added += 1,
            Err(StoreError::NameTaken { name, existing }) => {
                done.taken += 1;
                done.first_taken.get_or_insert((name, existing));
            }
            Err(other) => return Err(run_error(other)),
        }
        Ok::<(), Failure>(())
    };
    for n in 0..count {
        let Some(number) = first.checked_add(n) else {
            return Err(usage("--first + --count overflows").into());
        };
        if tasks.len() >= 64 {
            if let Some(joined) = tasks.join_next().await {
                settle(&mut done, joined)?;
            }
        }
        let name = format!("{prefix}{number}");
        let user = NewUser {
            profile: User {
                nick: name.clone(),
                name,
                department: DepartmentId(dept),
                ..User::default()
            },
            credentials: Credentials::from_plain(password, &random_salt()?),
        };
        let store = store.clone();
        tasks.spawn(async move { store.add_user(&user, SystemClock.now()).await });
    }
    while let Some(joined) = tasks.join_next().await {
        settle(&mut done, joined)?;
    }
    Ok(done)
}

/// The data dir's http_msg_server API key, created (random, readable by the owner only) on
/// first use.
fn api_key(data_dir: &Path) -> Result<String, Failure> {
    let path = data_dir.join("http_api_key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        if !key.trim().is_empty() {
            return Ok(key.trim().to_owned());
        }
    }
    let key =
        teamtalk_servers::secret::api_key(teamtalk_servers::secret::os_fill).map_err(run_error)?;
    std::fs::create_dir_all(data_dir).map_err(run_error)?;
    std::fs::write(&path, format!("{key}\n"))
        .map_err(|e| run_error(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(key)
}

/// A salt as the original's (a decimal number below 10000), from the operating system's
/// random source.
fn random_salt() -> Result<String, Failure> {
    teamtalk_servers::secret::salt(teamtalk_servers::secret::os_fill).map_err(run_error)
}

fn serve_config(conf: &ConfFile) -> Result<ServeConfig, Failure> {
    let bad = |e: teamtalk_servers::conf::ConfError| Failure::Usage(usage(e.to_string()));
    let mut config = ServeConfig::default();
    if let Some(listen) = conf.get("listen") {
        config.listen = listen
            .parse()
            .map_err(|_| usage(format!("listen: not an IP address: {listen:?}")))?;
    }
    let ip_key = |key: &str| -> Result<Option<std::net::IpAddr>, Failure> {
        conf.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| usage(format!("{key}: not an IP address: {v:?}")).into())
            })
            .transpose()
    };
    if let Some(internal) = ip_key("internal_listen")? {
        config.internal_listen = internal;
    }
    config.http_msg_listen = ip_key("http_msg_listen")?;
    #[cfg(feature = "tls")]
    {
        config.tls = roles::tls_files(conf, &roles::TlsKeys::SERVE).map_err(bad)?;
    }
    #[cfg(not(feature = "tls"))]
    roles::tls_files(conf, &roles::TlsKeys::SERVE).map_err(bad)?;
    if let Some(list) = conf.get("allowed_peers") {
        config.allowed_peers = list
            .parse()
            .map_err(|e| usage(format!("allowed_peers: {e}")))?;
    }
    let port = |key: &str, default: u16| -> Result<u16, Failure> {
        Ok(conf
            .parsed(key, "a TCP port")
            .map_err(bad)?
            .unwrap_or(default))
    };
    config.http_port = port("http_port", 8080)?;
    config.msg_ports = vec![port("msg_port", 8000)?];
    config.login_port = port("login_port", 8100)?;
    config.route_port = port("route_port", 8200)?;
    config.db_proxy_port = port("db_proxy_port", 10600)?;
    config.advertise = conf.get("advertise").map(str::to_owned);
    if let Some(msfs) = conf.get("msfs") {
        config.login.msfs = msfs.to_owned();
    }
    if let Some(discovery) = conf.get("discovery") {
        config.login.discovery = discovery.to_owned();
    }
    if let Some(rate) = conf.parsed("max_msgs_per_sec", "a number").map_err(bad)? {
        config.msg.max_msgs_per_sec = rate;
    }
    if let Some(max) = conf
        .parsed("max_requests_in_flight", "a number")
        .map_err(bad)?
    {
        config.msg.max_requests_in_flight = max;
    }
    if let Some(max) = conf
        .parsed("max_requests_in_flight_total", "a number")
        .map_err(bad)?
    {
        config.msg.max_requests_in_flight_total = max;
    }
    config.msg.require_login_server = conf.switch("require_login_server", true).map_err(bad)?;
    config.msfs_port = port("msfs_port", 8700)?;
    let mut msfs = teamtalk_servers::msfs::MsfsConfig::new("");
    msfs.apply_upload_keys(conf, "msfs_upload_budget_mb", "msfs_upload_wait_secs")
        .map_err(bad)?;
    (config.msfs_upload_budget, config.msfs_upload_wait) = (msfs.upload_budget, msfs.upload_wait);
    config.http_msg_port = port("http_msg_port", 8400)?;
    config.push_port = port("push_port", 8500)?;
    config.file_client_port = port("file_port", 8600)?;
    config.file_ms_port = port("file_ms_port", 8601)?;
    config.push = roles::push_settings(conf, &roles::PushKeys::SERVE).map_err(bad)?;
    config.limits = serve_limits(conf)?;
    Ok(config)
}

/// `teamtalk serve`'s connection keys: `listen_backlog`, `max_conn_per_ip`,
/// `client_max_conn_per_ip`, `max_conn_cnt`, `http_max_conn`, `msfs_max_conn`,
/// `file_max_conn`, `http_msg_max_conn`, `http_header_timeout`, `http_idle_timeout`.
fn serve_limits(conf: &ConfFile) -> Result<teamtalk_servers::limits::ServeLimits, Failure> {
    let bad = |e: teamtalk_servers::conf::ConfError| Failure::Usage(usage(e.to_string()));
    let mut limits = teamtalk_servers::limits::ServeLimits::default();
    let count = |key: &str, value: &mut usize| -> Result<(), Failure> {
        if let Some(n) = conf.parsed(key, "a number (0: default)").map_err(bad)? {
            *value = n;
        }
        Ok(())
    };
    count("max_conn_per_ip", &mut limits.http_per_ip)?;
    count("client_max_conn_per_ip", &mut limits.client_per_ip)?;
    count("max_conn_cnt", &mut limits.msg_max)?;
    count("http_max_conn", &mut limits.http_max)?;
    count("msfs_max_conn", &mut limits.msfs_max)?;
    count("file_max_conn", &mut limits.file_max)?;
    count("http_msg_max_conn", &mut limits.http_msg_max)?;
    if let Some(backlog) = conf
        .parsed::<u32>("listen_backlog", "a number")
        .map_err(bad)?
    {
        limits.backlog = backlog.max(1);
    }
    let seconds = |key: &str| -> Result<Option<std::time::Duration>, Failure> {
        match conf
            .parsed::<u64>(key, "seconds (at least 1)")
            .map_err(bad)?
        {
            Some(0) => Err(usage(format!("{key}: must be at least 1 second")).into()),
            other => Ok(other.map(std::time::Duration::from_secs)),
        }
    };
    if let Some(header) = seconds("http_header_timeout")? {
        limits.http.header = header;
    }
    if let Some(idle) = seconds("http_idle_timeout")? {
        limits.http.idle = idle;
    }
    Ok(limits)
}

async fn run_all<S: Store + 'static>(config: ServeConfig, store: S) -> Result<(), Failure> {
    let mut running = serve::start(config, store).await.map_err(run_error)?;
    println!(
        "  clients:    http://{}/msg_server (discovery)",
        running.http
    );
    for addr in &running.msg_servers {
        println!("  msg_server: {addr}");
    }
    if let Some(http) = running.http_msg {
        println!("  admin API:  http://{http}/query/ (http_msg_server; API key in the data dir's http_api_key file unless configured)");
    }
    if let Some(msfs) = running.msfs {
        println!("  msfs:       http://{msfs}/ (images, audio)");
    }
    println!(
        "  internal:   login_server {}, route_server {}, db_proxy_server {}",
        running.login, running.route, running.db_proxy
    );
    println!("  stop with Ctrl-C or SIGTERM");
    tokio::select! {
        result = shutdown::signal() => {
            result.map_err(run_error)?;
            println!("teamtalk serve: shutting down");
            running.trigger().trigger();
            running.wait().await.map_err(run_error)
        }
        result = running.wait() => result.map_err(run_error),
    }
}

/// Binds every address of a role's `ListenIP` list with `config`'s backlog and caps.
async fn bind_all(
    addrs: &[std::net::SocketAddr],
    role: &str,
    config: &ListenConfig,
) -> Result<Listeners, Failure> {
    if addrs.is_empty() {
        return Err(usage(format!("{role}: no listen address")).into());
    }
    Listeners::bind_with(addrs, config)
        .await
        .map_err(|e| run_error(format!("{role}: {e}")))
}

/// A role's internal port: its allow-list (`AllowedPeers`) and, with the TLS keys, mutual
/// TLS (docs/deploy.md "Trust model").
fn internal(
    listeners: Listeners,
    conf: &ConfFile,
    path: &Path,
    role: &'static str,
) -> Result<Listeners, Failure> {
    let listeners = listeners.guarded(gate(conf, path, role)?);
    #[cfg(feature = "tls")]
    if let Some(files) =
        roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))?
    {
        let acceptor = files.acceptor().map_err(|e| conf_error(path, e))?;
        return Ok(listeners.with_tls(acceptor));
    }
    #[cfg(not(feature = "tls"))]
    roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))?;
    Ok(listeners)
}

/// The TLS identity of a role's dialed links, from its TLS keys (none: plain TCP).
fn tls_dial(
    conf: &ConfFile,
    path: &Path,
    link: &mut teamtalk_servers::link::LinkConfig,
) -> Result<(), Failure> {
    #[cfg(feature = "tls")]
    {
        link.tls =
            match roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))? {
                Some(files) => Some(files.connector().map_err(|e| conf_error(path, e))?),
                None => None,
            };
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = link;
        roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))?;
    }
    Ok(())
}

/// The gate of a role's internal port: its `AllowedPeers` (default loopback only).
fn gate(conf: &ConfFile, path: &Path, role: &'static str) -> Result<PeerGate, Failure> {
    let peers = roles::allowed_peers(conf).map_err(|e| conf_error(path, e))?;
    Ok(PeerGate::new(role, peers))
}

/// How a role alone in its process listens: the `.conf` keys (`MaxConnCnt`, `MaxConnPerIp`,
/// `ListenBacklog`, `HttpHeaderTimeout`, `HttpIdleTimeout`) over defaults that give each of
/// the role's `ports` listening ports an equal share of the descriptor budget, and HTTP ports
/// a per-address cap.
fn role_listen(
    conf: &ConfFile,
    path: &Path,
    ports: usize,
    http: bool,
) -> Result<ListenConfig, Failure> {
    let limit = teamtalk_servers::limits::descriptor_limit().unwrap_or(1 << 20);
    let budget = teamtalk_core::limits::connection_budget(limit);
    let per_ip = if http {
        teamtalk_servers::limits::DEFAULT_HTTP_PER_SOURCE
    } else {
        0
    };
    let defaults = ListenConfig::capped((budget / ports.max(1)).max(1), per_ip);
    roles::listen_config(conf, defaults).map_err(|e| conf_error(path, e))
}

async fn serve_db_proxy<S: Store + 'static>(
    listener: Listeners,
    store: S,
    business: DbProxyConfig,
    server: db_proxy::DbProxyServerConfig,
    shutdown: shutdown::Shutdown,
) -> Result<(), Failure> {
    let proxy = Arc::new(DbProxy::new(store, SystemClock, business));
    let sync = serve::sync_groups(
        proxy.clone(),
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    );
    let (served, _) = tokio::join!(db_proxy::run(server, listener, proxy, shutdown), sync);
    served.map_err(run_error)
}

async fn run_role(role: &str, path: &Path) -> Result<(), Failure> {
    let conf = ConfFile::load_any(path).map_err(|e| Failure::Usage(usage(e)))?;
    let (trigger, shutdown) = shutdown::channel();
    let signal = async move {
        let _ = shutdown::signal().await;
        tracing::info!("shutting down");
        trigger.trigger();
    };
    let task = async {
        let db_server = || roles::db_proxy_server(&conf).map_err(|e| conf_error(path, e));
        match role {
            "db-proxy-server" if conf.get("DBInstances").is_some() => {
                let conf_file = &conf;
                let listening = role_listen(&conf, path, 1, false)?;
                let conf = DbProxyConf::from_conf(&conf).map_err(|e| conf_error(path, e))?;
                let business = conf.business().map_err(|e| conf_error(path, e))?;
                let listener = internal(
                    bind_all(&conf.listen, role, &listening).await?,
                    conf_file,
                    path,
                    "db_proxy_server",
                )?;
                let store = MysqlRedisStore::connect(&conf.store)
                    .await
                    .map_err(run_error)?;
                serve_db_proxy(listener, store, business, db_server()?, shutdown.clone()).await
            }
            "db-proxy-server" => {
                // No MySQL pools configured: the embedded store in `data_dir`.
                let listen =
                    roles::listen_addrs(&conf, "ListenIP", "ListenPort", "127.0.0.1", 10600)
                        .map_err(|e| conf_error(path, e))?;
                let business = match conf.get("aesKey") {
                    Some(key) => {
                        let key = MessageKey::new(key)
                            .map_err(|_| conf_error(path, "aesKey must have 32 characters"))?;
                        DbProxyConfig {
                            audio_preview: key.encrypt("[语音]".as_bytes()).into(),
                            ..DbProxyConfig::default()
                        }
                    }
                    None => DbProxyConfig::default(),
                };
                let listening = role_listen(&conf, path, 1, false)?;
                let listener = internal(
                    bind_all(&listen, role, &listening).await?,
                    &conf,
                    path,
                    "db_proxy_server",
                )?;
                let settings = Settings {
                    data_dir: PathBuf::from(conf.get("data_dir").unwrap_or("./teamtalk-data")),
                    conf: ConfFile::default(),
                };
                match open_store(&settings).await? {
                    AnyStore::Sqlite(store) => {
                        serve_db_proxy(listener, store, business, db_server()?, shutdown.clone())
                            .await
                    }
                    AnyStore::Mysql(store) => {
                        serve_db_proxy(listener, store, business, db_server()?, shutdown.clone())
                            .await
                    }
                }
            }
            "route-server" => {
                let listen = roles::route_listen(&conf).map_err(|e| conf_error(path, e))?;
                let listening = role_listen(&conf, path, 1, false)?;
                let listener = internal(
                    bind_all(&listen, role, &listening).await?,
                    &conf,
                    path,
                    "route_server",
                )?;
                route_server::run(Default::default(), listener, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
            "msfs" => {
                let listen = roles::listen_addrs(&conf, "ListenIP", "ListenPort", "0.0.0.0", 8700)
                    .map_err(|e| conf_error(path, e))?;
                let base = conf.require("BaseDir").map_err(|e| conf_error(path, e))?;
                let mut config = teamtalk_servers::msfs::MsfsConfig::new(base);
                if let Some(n) = conf
                    .parsed("FilesPerDir", "a number")
                    .map_err(|e| conf_error(path, e))?
                {
                    config.files_per_dir = n;
                }
                config.upload_token = conf
                    .get("UploadToken")
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                config
                    .apply_upload_keys(&conf, "UploadBudgetMB", "UploadWaitSecs")
                    .map_err(|e| conf_error(path, e))?;
                let listening = role_listen(&conf, path, 1, true)?;
                let listener = bind_all(&listen, role, &listening).await?;
                teamtalk_servers::msfs::run(config, listener, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
            "http-msg-server" => {
                let listen =
                    roles::listen_addrs(&conf, "ListenIP", "ListenPort", "127.0.0.1", 8400)
                        .map_err(|e| conf_error(path, e))?;
                let key = conf.require("ApiKey").map_err(|e| conf_error(path, e))?;
                let db = roles::peer_addrs(&conf, "DBServerIP", "DBServerPort")
                    .map_err(|e| conf_error(path, e))?;
                let routes = roles::peer_addrs(&conf, "RouteServerIP", "RouteServerPort")
                    .map_err(|e| conf_error(path, e))?;
                let mut config = teamtalk_servers::http_msg::HttpMsgConfig::new(key, db, routes);
                if let Some(n) = conf
                    .parsed("ConcurrentDBConnCnt", "a number")
                    .map_err(|e| conf_error(path, e))?
                {
                    config.db_connections = n;
                }
                if let Some(aes) = conf.get("aesKey") {
                    config.message_key = aes.to_owned();
                }
                tls_dial(&conf, path, &mut config.upstream_link)?;
                let listening = role_listen(&conf, path, 1, true)?;
                let listener = bind_all(&listen, role, &listening).await?;
                teamtalk_servers::http_msg::run(config, listener, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
            "file-server" => {
                let clients = roles::listen_addrs(
                    &conf,
                    "ClientListenIP",
                    "ClientListenPort",
                    "0.0.0.0",
                    8600,
                )
                .map_err(|e| conf_error(path, e))?;
                let links = roles::listen_addrs(
                    &conf,
                    "MsgServerListenIP",
                    "MsgServerListenPort",
                    "127.0.0.1",
                    8601,
                )
                .map_err(|e| conf_error(path, e))?;
                let port = clients.first().map_or(8600, |a| u32::from(a.port()));
                let advertise: Vec<(String, u32)> = conf
                    .addresses("FileServerIp")
                    .into_iter()
                    .map(|ip| (ip, port))
                    .collect();
                if advertise.is_empty() {
                    return Err(conf_error(
                        path,
                        "FileServerIp (the addresses clients reach this server at) is required",
                    ));
                }
                let mut limits = teamtalk_core::file_transfer::FileLimits::default();
                if let Some(secs) = conf
                    .parsed::<u64>("TaskTimeout", "seconds")
                    .map_err(|e| conf_error(path, e))?
                {
                    limits.idle_ms = secs.saturating_mul(1000);
                }
                if let Some(days) = conf
                    .parsed::<u64>("OfflineRetentionDays", "days")
                    .map_err(|e| conf_error(path, e))?
                {
                    limits.offline_retention_ms = days.saturating_mul(86_400_000);
                }
                let config = teamtalk_servers::file_server::FileServerConfig {
                    dir: PathBuf::from(conf.get("OfflineDir").unwrap_or("./offline_file")),
                    advertise,
                    limits,
                };
                let listening = role_listen(&conf, path, 2, false)?;
                let clients = bind_all(&clients, role, &listening).await?;
                let link_listening = role_listen(&conf, path, 2, false)?;
                let links = internal(
                    bind_all(&links, role, &link_listening).await?,
                    &conf,
                    path,
                    "file_server",
                )?;
                teamtalk_servers::file_server::run(config, clients, links, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
            "push-server" => {
                let (listen, settings) =
                    roles::push_server(&conf).map_err(|e| conf_error(path, e))?;
                let backend = settings.backend().map_err(|e| conf_error(path, e))?;
                let listening = role_listen(&conf, path, 1, false)?;
                let listener = internal(
                    bind_all(&listen, role, &listening).await?,
                    &conf,
                    path,
                    "push_server",
                )?;
                teamtalk_servers::push::run(Arc::new(backend), listener, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
            "login-server" => {
                let (http, links, config) =
                    roles::login_server(&conf).map_err(|e| conf_error(path, e))?;
                let listening = role_listen(&conf, path, 2, true)?;
                let http = bind_all(&http, role, &listening).await?;
                let link_listening = role_listen(&conf, path, 2, false)?;
                let links = internal(
                    bind_all(&links, role, &link_listening).await?,
                    &conf,
                    path,
                    "login_server",
                )?;
                login_server::run(config, http, links, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
            _ => {
                let (listen, mut settings) =
                    roles::msg_server(&conf).map_err(|e| conf_error(path, e))?;
                tls_dial(&conf, path, &mut settings.upstream_link)?;
                let listening = role_listen(&conf, path, 1, false)?;
                let listener = bind_all(&listen, role, &listening).await?;
                msg_server::run(settings, listener, shutdown.clone())
                    .await
                    .map_err(run_error)
            }
        }
    };
    tokio::pin!(task);
    tokio::select! {
        result = &mut task => result,
        () = signal => task.await,
    }
}
