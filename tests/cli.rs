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
