//! The command line as a user meets it: `hubcast config` (the effective
//! configuration, secrets redacted), and the error each bad input gets on
//! stderr — naming the user's path, key or value, with its real cause, once.
//!
//! Every process runs with a limit that only turns "never" into a failure;
//! nothing asserts a duration.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::{within, STEP};

/// What a finished `hubcast` process left.
struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `hubcast ARGS` in `dir` with `env` added (and no `HUBCAST_*` or
/// `NO_COLOR` from the test's own environment), to its end.
async fn hubcast(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubcast"));
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("HUBCAST_") || key == "NO_COLOR" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = within(STEP, &format!("hubcast {args:?}"), command.output())
        .await
        .expect("hubcast runs");
    Outcome {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hubcast.toml"),
        "[[auth.api_keys]]\nkey = \"file-key-0123456789\"\nname = \"backend\"\n\
         [[auth.jwt]]\nalg = \"HS256\"\nsecret = \"jwt-secret-0123456789-0123456789-01\"\n\
         [limits]\nmax_page = 77\n",
    )
    .unwrap();
    let out = hubcast(
        dir.path(),
        &["config", "--bus", "nats://u:nats-pass@127.0.0.1:4222"],
        &[
            ("HUBCAST_STORE", "postgres://app:pg-pass@db/hubcast"),
            ("HUBCAST_HUB__TAIL", "99"),
        ],
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let printed: toml::Table = toml::from_str(&out.stdout).expect("TOML on stdout");
    // Every layer: the file, the environment, the flags.
    assert_eq!(printed["limits"]["max_page"].as_integer(), Some(77));
    assert_eq!(printed["hub"]["tail"].as_integer(), Some(99));
    assert_eq!(
        printed["store"].as_str(),
        Some("postgres://app:[redacted]@db/hubcast")
    );
    assert_eq!(
        printed["bus"].as_str(),
        Some("nats://u:[redacted]@127.0.0.1:4222")
    );
    assert_eq!(
        printed["auth"]["api_keys"][0]["key"].as_str(),
        Some("[redacted]")
    );
    assert_eq!(
        printed["auth"]["api_keys"][0]["name"].as_str(),
        Some("backend")
    );
    assert_eq!(
        printed["auth"]["jwt"][0]["secret"].as_str(),
        Some("[redacted]")
    );
    for secret in ["file-key", "jwt-secret", "pg-pass", "nats-pass"] {
        assert!(
            !out.stdout.contains(secret),
            "{secret} printed:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn a_config_file_named_but_missing_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["serve", "--config", "missing.toml"], vec![]),
        (vec!["config", "--config", "missing.toml"], vec![]),
        (vec!["serve"], vec![("HUBCAST_CONFIG", "missing.toml")]),
    ] {
        let out = hubcast(dir.path(), &args, &env).await;
        assert!(!out.success, "{args:?} {env:?} must fail");
        assert!(
            out.stderr.contains("missing.toml") && out.stderr.contains("No such file"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // Without --config, a missing hubcast.toml is fine: the defaults apply.
    let out = hubcast(dir.path(), &["config"], &[]).await;
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("listen = \"127.0.0.1:8787\""));
}

/// `hubcast serve` with a bad input: it exits with an error on stderr.
async fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = hubcast(dir.path(), args, &[]).await;
    assert!(!out.success, "{args:?} must fail; stderr: {}", out.stderr);
    out.stderr
}

/// The error line, checked to be said once (no cause repeated).
fn error_line(stderr: &str) -> &str {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part) || part.len() < 12,
            "`{part}` said twice: {line}"
        );
    }
    line
}

#[tokio::test]
async fn store_paths_name_the_path_and_the_real_problem() {
    let line = refused(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "sqlite:///etc/passwd/h.db",
    ])
    .await;
    let line = error_line(&line);
    assert!(
        line.contains("/etc/passwd is a file, not a directory"),
        "{line}"
    );
    // /sys refuses new files even to root: the operating system's reason,
    // not SQLite's "unable to open database file".
    let stderr = refused(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "sqlite:///sys/hubcast-test.db",
    ])
    .await;
    let line = error_line(&stderr);
    assert!(
        line.contains("/sys/hubcast-test.db") && line.contains("Permission denied"),
        "{line}"
    );
}

#[tokio::test]
async fn a_listen_address_without_a_port_or_address_gets_an_example() {
    let stderr = refused(&["serve", "--listen", "8788"]).await;
    assert!(stderr.contains("127.0.0.1:8788"), "{stderr}");
    let stderr = refused(&["serve", "--listen", "10.1.2.3"]).await;
    assert!(stderr.contains("10.1.2.3:8787"), "{stderr}");
    // The same from the file and the environment.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hubcast.toml"), "listen = \"8788\"\n").unwrap();
    let out = hubcast(dir.path(), &["serve"], &[]).await;
    assert!(!out.success);
    assert!(
        error_line(&out.stderr).contains("`listen` in hubcast.toml"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("127.0.0.1:8788"), "{}", out.stderr);
    let out = hubcast(
        tempfile::tempdir().unwrap().path(),
        &["serve"],
        &[("HUBCAST_LISTEN", "8788")],
    )
    .await;
    assert!(
        out.stderr.contains("HUBCAST_LISTEN") && out.stderr.contains("127.0.0.1:8788"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn each_config_error_is_said_once_with_the_users_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hubcast.toml"),
        "[heartbeat]\nstale_msec = 5\n",
    )
    .unwrap();
    let out = hubcast(dir.path(), &["serve"], &[]).await;
    assert!(!out.success);
    let line = error_line(&out.stderr);
    assert!(
        line.contains("`heartbeat.stale_msec` in hubcast.toml"),
        "{line}"
    );
    assert!(
        !line.contains("default."),
        "figment's profile leaked: {line}"
    );
    assert_eq!(line.matches("unknown field").count(), 1, "{line}");
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1
    );

    let out = hubcast(
        tempfile::tempdir().unwrap().path(),
        &["serve"],
        &[("HUBCAST_LIMITS__MAX_PAGE", "lots")],
    )
    .await;
    let line = error_line(&out.stderr);
    assert!(
        line.contains("`limits.max_page` in the environment variable HUBCAST_LIMITS__MAX_PAGE"),
        "{line}"
    );
}

#[tokio::test]
async fn postgres_causes_are_shown_in_full() {
    let url = support::test_pg_url();
    let answers = support::pg_connect(&url, None).await.is_ok();
    let missing = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/hubcast_no_such_database"),
        None => panic!("{url} names no database"),
    };
    let stderr = refused(&["serve", "--listen", "127.0.0.1:0", "--store", &missing]).await;
    let line = error_line(&stderr);
    assert!(line.contains("cannot connect to postgres"), "{line}");
    if answers {
        assert!(
            line.contains("database \"hubcast_no_such_database\" does not exist"),
            "{line}"
        );
    } else {
        // No server here: the operating system's reason, still in full.
        assert!(
            line.contains("refused") || line.contains("timed out"),
            "{line}"
        );
    }
}

/// Starts `hubcast serve` (or `script` around it) and returns what it wrote
/// until a line containing `needle`; the process is killed after.
async fn serve_until(program: &str, args: &[&str], env: &[(&str, &str)], needle: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("HUBCAST_") || key == "NO_COLOR" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn");
    // `script` writes the terminal's output on stdout; hubcast logs on stderr.
    let output: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if program.ends_with("script") {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    let mut lines = tokio::io::BufReader::new(output).lines();
    let mut seen = String::new();
    within(STEP, &format!("`{needle}` from {args:?}"), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return;
            }
        }
        panic!("ended before `{needle}`: {seen}");
    })
    .await;
    let _ = child.kill().await;
    seen
}

#[tokio::test]
async fn serve_says_where_the_dashboard_is_without_colour_in_a_pipe() {
    let bin = env!("CARGO_BIN_EXE_hubcast");
    let log = serve_until(
        bin,
        &["serve", "--listen", "127.0.0.1:0"],
        &[],
        "dashboard at",
    )
    .await;
    let line = log.lines().find(|l| l.contains("dashboard at")).unwrap();
    assert!(line.contains("dashboard at http://127.0.0.1:"), "{line}");
    assert!(line.contains("/v1/docs"), "{line}");
    assert!(!log.contains('\u{1b}'), "escape codes in a pipe: {log:?}");
}

#[tokio::test]
async fn colours_on_a_terminal_unless_no_color() {
    // `script` runs the server on a pseudo-terminal.
    let command = format!(
        "{} serve --listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_hubcast")
    );
    let script = "/usr/bin/script";
    assert!(
        Path::new(script).exists(),
        "util-linux `script` is needed for this test"
    );
    let args = ["-qec", command.as_str(), "/dev/null"];
    let coloured = serve_until(script, &args, &[], "dashboard at").await;
    assert!(
        coloured.contains('\u{1b}'),
        "a terminal gets colours: {coloured:?}"
    );
    let plain = serve_until(script, &args, &[("NO_COLOR", "1")], "dashboard at").await;
    assert!(
        !plain.contains("\u{1b}["),
        "NO_COLOR is honoured: {plain:?}"
    );
}

#[tokio::test]
async fn an_unreachable_bus_is_warned_about_at_start() {
    let bin = env!("CARGO_BIN_EXE_hubcast");
    // Port 1 answers nothing; the node starts and keeps retrying.
    let log = serve_until(
        bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bus",
            "nats://127.0.0.1:1",
        ],
        &[],
        "cannot reach nats",
    )
    .await;
    assert!(log.contains("nats://127.0.0.1:1"), "{log}");
}
