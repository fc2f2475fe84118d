//! The command line of `teamtalk`: its commands, flags and help texts (clap's derive). What a
//! command does lives in the module named after it; this one only parses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::roles::Role;

/// `teamtalk --version` (and `teamtalk version`): the crate's version, and whether this build
/// has the APNs backend.
pub(crate) const VERSION: &str = if cfg!(feature = "apns") {
    concat!(env!("CARGO_PKG_VERSION"), " (apns)")
} else {
    env!("CARGO_PKG_VERSION")
};

const AFTER_HELP: &str = "\
Run `teamtalk COMMAND --help` for a command's flags; `teamtalk serve --help` lists the keys of
its config file, docs/deploy.md those of every role.

Environment:
  TEAMTALK_LOG = error | warn | info (default) | debug | trace

Exit codes: 0 ok, 64 bad command line or configuration, 1 failure while running.";

const SERVE_ABOUT: &str = "\
login_server, route_server, db_proxy_server, msg_server, msfs and http_msg_server in one
process on the embedded SQLite store (default data dir ./teamtalk-data), listening on
127.0.0.1: HTTP discovery 8080 (http://127.0.0.1:8080/msg_server), clients 8000, msfs 8700,
file_server 8600; on 127.0.0.1 whatever `listen` is (internal_listen): admin API 8400,
login 8100, route 8200, db_proxy 10600, file_server 8601, and push_server (8500) with
push_webhook or APNs keys. MySQL + Redis instead of SQLite when the config file sets
mysql_url and redis_url.";

const SERVE_CONFIG: &str = "\
Config file (TOML, every key optional):
  data_dir = \"./teamtalk-data\"   listen = \"127.0.0.1\" (client ports)   advertise = \"127.0.0.1\"
  internal_listen = \"127.0.0.1\" (internal ports)   http_msg_listen = internal_listen
  allowed_peers = \"10.0.0.5;10.0.1.0/24\" (on internal ports besides 127.0.0.1, ::1; * = any)
  tls_ca_file = \"ca.pem\"   tls_cert_file = \"node.pem\"   tls_key_file = \"node.key\" — mutual TLS
      on the internal links (build with --features tls); roles: TlsCaFile, TlsCertFile, TlsKeyFile
  http_port = 8080   msg_port = 8000   login_port = 8100   route_port = 8200
  db_proxy_port = 10600   msfs_port = 8700 (files in DATA_DIR/msfs)   max_msgs_per_sec = 20
  max_requests_in_flight = 2 (per client)   max_requests_in_flight_total = 4 (all clients)
  require_login_server = 1 (0: msg_servers accept logins with no login_server link)
  msfs_upload_budget_mb = 64   msfs_upload_wait_secs = 5
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
Keys and defaults: docs/deploy.md.";

const ADMIN_HELP: &str = "\
Administration on the same store as `teamtalk serve`: SQLite in the data dir, or MySQL + Redis
when the config file sets mysql_url and redis_url (or is an original dbproxyserver.conf; on
MySQL the original tables are created when missing). Passwords are stored with the original
scheme: md5(md5(password) + salt), random salt. A disabled user (status 3, as the original
admin's \"delete\") cannot log in and is hidden by clients; enable opens the account again.";

const BACKUP_ABOUT: &str = "\
A consistent copy of the embedded store's database, taken while it runs (FILE must not
exist); msfs/ and offline_file/ in the data dir are plain files to copy beside it. On MySQL +
Redis use mysqldump (and Redis's own persistence).";

const COMPLETIONS_ABOUT: &str = "\
Prints the completion script of teamtalk for SHELL, e.g.
  teamtalk completions bash > /etc/bash_completion.d/teamtalk
  teamtalk completions zsh > \"${fpath[1]}/_teamtalk\"
  teamtalk completions fish > ~/.config/fish/completions/teamtalk.fish";

/// `teamtalk`: the whole system in one process, each server role alone, and administration.
#[derive(Parser)]
#[command(
    name = "teamtalk",
    version = VERSION,
    about = "teamtalk — TeamTalk-compatible IM servers",
    after_help = AFTER_HELP,
    subcommand_value_name = "COMMAND"
)]
pub(crate) struct Cli {
    /// The command; none prints the help.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// What `teamtalk` is asked to do.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Every role in one process on the embedded store (or MySQL + Redis)
    #[command(long_about = SERVE_ABOUT, after_help = SERVE_CONFIG)]
    Serve(Options),
    /// User accounts: user add, user list, user passwd, user set, user disable, user enable,
    /// user add-many
    #[command(subcommand, after_help = ADMIN_HELP)]
    User(UserCommand),
    /// Departments: dept add, dept list
    #[command(subcommand, after_help = ADMIN_HELP)]
    Dept(DeptCommand),
    /// A consistent copy of the embedded store's database, taken while it runs
    #[command(long_about = BACKUP_ABOUT)]
    Backup {
        /// Where the copy goes (must not exist)
        file: PathBuf,
        #[command(flatten)]
        opts: Options,
    },
    /// One server role alone, from its config file.
    #[command(flatten)]
    Role(Role),
    /// Prints the shell completion script of teamtalk
    #[command(long_about = COMPLETIONS_ABOUT)]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the version (as --version).
    #[command(hide = true)]
    Version,
}

/// Where the store (and `serve`'s settings) are: `--config FILE` and `--data-dir DIR`.
#[derive(Args, Default)]
pub(crate) struct Options {
    /// TOML settings (data_dir; mysql_url + redis_url for MySQL + Redis) or an original
    /// dbproxyserver.conf
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub(crate) config: Option<PathBuf>,
    /// The embedded store's directory [default: the config's data_dir, else ./teamtalk-data]
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    pub(crate) data_dir: Option<PathBuf>,
}

/// `teamtalk user …`.
#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Adds a user
    Add {
        /// The login name (unique; trailing spaces do not make a name new)
        name: String,
        /// The password
        #[arg(long, value_name = "PW", allow_hyphen_values = true)]
        password: String,
        /// The nickname [default: NAME]
        #[arg(long, allow_hyphen_values = true)]
        nick: Option<String>,
        /// The department
        #[arg(
            long,
            value_name = "DEPT_ID",
            default_value_t = 0,
            allow_hyphen_values = true
        )]
        dept: u32,
        #[command(flatten)]
        opts: Options,
    },
    /// Lists the active users (--all: the disabled ones too)
    List {
        /// Disabled accounts too
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        opts: Options,
    },
    /// Sets a user's password (a new salt and hash)
    Passwd {
        /// The login name
        name: String,
        /// The new password
        #[arg(long, value_name = "PW", allow_hyphen_values = true)]
        password: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Disables an account: no more logins, clients hide the user at their next sync
    Disable {
        /// The login name (the highest id of the name)
        name: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Opens a disabled account again
    Enable {
        /// The login name (the highest id of the name)
        name: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Changes a user's profile (clients see it at their next sync)
    Set {
        /// The login name
        name: String,
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(flatten)]
        opts: Options,
    },
    /// Adds users P1 … PN (from --first), all with the same password: provisioning for
    /// benchmarks
    AddMany {
        /// The names' prefix P
        #[arg(long, value_name = "P", allow_hyphen_values = true)]
        prefix: String,
        /// How many users (N)
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            allow_hyphen_values = true
        )]
        count: u32,
        /// The password of every one
        #[arg(long, value_name = "PW", allow_hyphen_values = true)]
        password: String,
        /// The number of the first name
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1,
            allow_hyphen_values = true
        )]
        first: u32,
        /// The department
        #[arg(
            long,
            value_name = "ID",
            default_value_t = 0,
            allow_hyphen_values = true
        )]
        dept: u32,
        #[command(flatten)]
        opts: Options,
    },
}

/// `user set`'s changes: one at least.
#[derive(Args)]
#[group(required = true, multiple = true)]
pub(crate) struct ProfileArgs {
    /// The nickname
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) nick: Option<String>,
    /// The department
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub(crate) dept: Option<u32>,
    /// The e-mail address
    #[arg(long, value_name = "E", allow_hyphen_values = true)]
    pub(crate) email: Option<String>,
    /// The phone number
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub(crate) phone: Option<String>,
    /// The avatar's URL
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    pub(crate) avatar: Option<String>,
    /// 0 (unknown), 1 (male) or 2 (female)
    #[arg(
        long,
        value_name = "0|1|2",
        value_parser = clap::value_parser!(u32).range(0..=2),
        allow_hyphen_values = true
    )]
    pub(crate) gender: Option<u32>,
}

/// `teamtalk dept …`.
#[derive(Subcommand)]
pub(crate) enum DeptCommand {
    /// Adds a department
    Add {
        /// The department's name
        name: String,
        /// The parent department (0: none)
        #[arg(
            long,
            value_name = "ID",
            default_value_t = 0,
            allow_hyphen_values = true
        )]
        parent: u32,
        #[command(flatten)]
        opts: Options,
    },
    /// Lists the departments
    List {
        #[command(flatten)]
        opts: Options,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap's own consistency checks (conflicting names, bad defaults, groups) over the whole
    /// command tree.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
