//! The `teamtalk` command line itself: `--help` of every command, shell completion scripts,
//! and exit code 64 with clap's explanation on a bad command line (help and version exit 0).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Output};

fn teamtalk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teamtalk"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every command, as typed before `--help`, with a flag its help must describe.
const COMMANDS: &[(&[&str], &str)] = &[
    (&["serve"], "--data-dir"),
    (&["user"], "add-many"),
    (&["user", "add"], "--password"),
    (&["user", "list"], "--all"),
    (&["user", "passwd"], "--password"),
    (&["user", "disable"], "--config"),
    (&["user", "enable"], "--config"),
    (&["user", "set"], "--gender"),
    (&["user", "add-many"], "--prefix"),
    (&["dept"], "list"),
    (&["dept", "add"], "--parent"),
    (&["dept", "list"], "--data-dir"),
    (&["backup"], "<FILE>"),
    (&["db-proxy-server"], "--config"),
    (&["route-server"], "--config"),
    (&["login-server"], "--config"),
    (&["msg-server"], "--config"),
    (&["msfs"], "--config"),
    (&["http-msg-server"], "--config"),
    (&["push-server"], "--config"),
    (&["file-server"], "--config"),
    (&["completions"], "<SHELL>"),
];

#[test]
fn every_command_has_its_help() {
    for (command, flag) in COMMANDS {
        for help in ["--help", "-h"] {
            let mut args = command.to_vec();
            args.push(help);
            let out = teamtalk(&args);
            let stdout = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?}: {}",
                text(&out.stderr)
            );
            let usage = format!("Usage: teamtalk {}", command.join(" "));
            assert!(
                stdout.contains(&usage),
                "{args:?} shows its usage: {stdout}"
            );
            assert!(stdout.contains(flag), "{args:?} describes {flag}: {stdout}");
        }
    }
    // `teamtalk help COMMAND` is the same text as `teamtalk COMMAND --help`.
    let out = teamtalk(&["help", "user", "add"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        text(&teamtalk(&["user", "add", "--help"]).stdout)
    );
    // serve's help lists the keys of its config file; the roles' name the original files.
    let serve = text(&teamtalk(&["serve", "--help"]).stdout);
    for key in [
        "http_port = 8080",
        "mysql_url",
        "max_conn_per_ip",
        "push_webhook",
    ] {
        assert!(serve.contains(key), "serve --help has {key}: {serve}");
    }
    let role = text(&teamtalk(&["msg-server", "--help"]).stdout);
    assert!(role.contains("msgserver.conf"), "{role}");
}

#[test]
fn without_a_command_the_help_is_printed() {
    for args in [&[][..], &["help"], &["--help"]] {
        let out = teamtalk(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: teamtalk"), "{args:?}: {stdout}");
        assert!(
            stdout.contains("Exit codes: 0 ok, 64"),
            "{args:?}: {stdout}"
        );
    }
    for args in [&["--version"][..], &["-V"], &["version"]] {
        let out = teamtalk(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            text(&out.stdout).starts_with(&format!("teamtalk {}", env!("CARGO_PKG_VERSION"))),
            "{args:?}"
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_teamtalk()"),
        ("zsh", "#compdef teamtalk"),
        ("fish", "complete -c teamtalk"),
        ("elvish", "edit:completion:arg-completer[teamtalk]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = teamtalk(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        // The script knows the commands and their flags.
        for word in ["db-proxy-server", "add-many", "data-dir", "gender"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
}

#[test]
fn a_bad_command_line_exits_64_with_clap_s_explanation() {
    for (args, says) in [
        (
            &["user", "list", "--bogus"][..],
            "unexpected argument '--bogus'",
        ),
        (
            &["serve", "--data-dir"],
            "a value is required for '--data-dir <DIR>'",
        ),
        (&["user", "add", "x"], "--password <PW>"),
        (&["user", "set", "x"], "<--nick <N>|"),
        (
            &["user", "set", "x", "--gender", "7"],
            "invalid value '7' for '--gender",
        ),
        (
            &[
                "user",
                "add-many",
                "--prefix",
                "u",
                "--password",
                "p",
                "--count",
                "-1",
            ],
            "invalid value '-1' for '--count <N>'",
        ),
        (
            &["dept", "add", "x", "--parent", "two"],
            "invalid value 'two' for '--parent",
        ),
        (&["user", "lst"], "similar subcommand exists: 'list'"),
        (&["user"], "Usage: teamtalk user <COMMAND>"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["msg-server"], "--config <FILE>"),
        (
            &["msg-server", "--config", "a.conf", "--data-dir", "d"],
            "'--data-dir'",
        ),
        (&["completions", "tcsh"], "invalid value 'tcsh'"),
        (
            &["user", "add", "x", "--password", "a", "--password", "b"],
            "multiple times",
        ),
    ] {
        let out = teamtalk(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} says {says:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// Flag values are taken as given, also when they start with a dash (as the hand-written
/// parser did: a password may begin with `-`).
#[test]
fn values_may_start_with_a_dash() {
    let dir = std::env::temp_dir().join(format!("teamtalk-cli-usage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.to_str().unwrap();
    let out = teamtalk(&[
        "user",
        "add",
        "dash",
        "--password",
        "-secret",
        "--nick=--nick--",
        "--data-dir",
        data_dir,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = teamtalk(&["user", "list", "--data-dir", data_dir]);
    assert!(
        text(&out.stdout).contains("--nick--"),
        "{}",
        text(&out.stdout)
    );
    // The password is "-secret", checked the way a login checks it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use teamtalk_core::store::UserStore;
        let config = teamtalk_store::SqliteConfig::new(dir.join("teamtalk.db"));
        let store = teamtalk_store::SqliteStore::open(&config).await.unwrap();
        let (_, credentials) = store.login_candidate("dash").await.unwrap().unwrap();
        assert!(teamtalk_core::password::verify_password(
            &teamtalk_core::password::client_password("-secret"),
            &credentials.salt,
            &credentials.password_hash,
        ));
    });
    let _ = std::fs::remove_dir_all(&dir);
}
