//! A webhook receiver in Python ([`Receiver`], `tests/webhooks/receiver.py`)
//! that verifies every delivery with the `standardwebhooks` package, the
//! Standard Webhooks reference library: hubcast's signing code is not what
//! checks hubcast's signatures.
//!
//! The package lives in a venv at `tests/webhooks/.venv`, created (under a
//! lock, tests run in parallel) the first time a test needs it.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::{within, STEP};

/// A secret both sides know.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks")
}

/// The venv's Python, installing `requirements.txt` into it when it is missing or stale.
fn python() -> PathBuf {
    let dir = dir();
    let script = r#"
set -e
exec 9>.venv.lock
flock 9
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/.installed; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/.installed
fi
"#;
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(&dir)
        .status()
        .expect("run bash to set up the webhook receiver's venv");
    assert!(status.success(), "could not set up tests/webhooks/.venv");
    dir.join(".venv/bin/python")
}

/// A running receiver; killed on drop.
pub struct Receiver {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    http: reqwest::Client,
}

impl Receiver {
    /// Starts a receiver for [`SECRET`].
    pub async fn start() -> Receiver {
        let python = python();
        let mut child = Command::new(python)
            .arg(dir().join("receiver.py"))
            .arg(SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the webhook receiver");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = within(
            STEP,
            "the webhook receiver to listen",
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .expect("read the receiver's stdout");
                line
            }),
        )
        .await
        .expect("reader task");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected receiver output: {line:?}"))
            .to_owned();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(STEP)
            .build()
            .expect("http client");
        Receiver { child, base, http }
    }

    /// The URL hubcast posts to.
    pub fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    /// How to answer from now on: `ok` (204), `fail` (500) or `hang` (never).
    pub async fn set_mode(&self, mode: &str) {
        let response = within(
            STEP,
            "the receiver's control",
            self.http
                .post(format!("{}/control", self.base))
                .json(&json!({"mode": mode}))
                .send(),
        )
        .await
        .expect("POST /control");
        assert!(response.status().is_success());
    }

    /// Every verified delivery so far, in arrival order:
    /// `{"id", "type", "timestamp", "data", "answered"}`.
    pub async fn received(&self) -> Vec<Value> {
        self.get("/received")
            .await
            .as_array()
            .cloned()
            .expect("a list")
    }

    /// Requests that failed signature verification.
    pub async fn rejected(&self) -> u64 {
        self.get("/rejected").await.as_u64().expect("a count")
    }

    async fn get(&self, path: &str) -> Value {
        within(STEP, "the receiver's records", async {
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("GET the receiver")
                .json::<Value>()
                .await
                .expect("JSON")
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
