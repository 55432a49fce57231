//! `hubcast pub`, `hubcast sub` and `hubcast bench` against a server with
//! auth on: credentials from flags and from `HUBCAST_API_KEY` /
//! `HUBCAST_TOKEN`, a clear error without them; and through a real TLS
//! endpoint (nginx, with a certificate `openssl` makes here, trusted through
//! `--ca-file` or `SSL_CERT_FILE`) over `https://` and `wss://`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{eventually, within, Server, PHASE};

const API_KEY: &str = "cli-test-api-key-0123456789";
const HS_SECRET: &str = "cli-test-hs256-secret-at-least-32-bytes-long";

fn config() -> String {
    format!(
        r#"
[sqlite]
synchronous = "normal"

[[auth.api_keys]]
key = "{API_KEY}"
name = "cli"

[[auth.jwt]]
kid = "hs"
alg = "HS256"
secret = "{HS_SECRET}"

[[namespaces]]
prefix = "typing:"
ephemeral = "allowed"
"#
    )
}

/// A token that may subscribe and publish to every room, valid for ten minutes.
fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".into());
    let claims = json!({"sub": "cli", "exp": exp, "subscribe": ["*"], "publish": ["*"]});
    hubcast_protocol::token::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()).expect("a non-empty secret"),
    )
    .unwrap()
}

/// Runs the binary with `args` and extra environment; no `HUBCAST_*`
/// credential leaks in from the test's own environment.
async fn hubcast(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubcast"));
    command
        .args(args)
        .env_remove("HUBCAST_API_KEY")
        .env_remove("HUBCAST_TOKEN")
        .env_remove("SSL_CERT_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    within(PHASE, &format!("hubcast {args:?}"), command.output())
        .await
        .expect("run hubcast")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON lines a command printed.
fn lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_send_credentials_from_flags_and_environment() {
    let server = Server::start(&config()).await;
    let url = server.base();
    let token = token();

    let refused = hubcast(&["pub", "--url", &url, "cli:1", r#"{"n":1}"#], &[]).await;
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("HTTP 401") && stderr(&refused).contains("--api-key"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(lines(&refused)[0]["error"], "unauthenticated");

    let published = hubcast(
        &[
            "pub",
            "--url",
            &url,
            "--api-key",
            API_KEY,
            "cli:1",
            r#"{"n":1}"#,
        ],
        &[],
    )
    .await;
    assert!(published.status.success(), "{}", stderr(&published));
    assert_eq!(lines(&published)[0]["seq"], 1);
    let from_env = hubcast(
        &["pub", "--url", &url, "cli:1", r#"{"n":2}"#],
        &[("HUBCAST_API_KEY", API_KEY)],
    )
    .await;
    assert!(from_env.status.success(), "{}", stderr(&from_env));
    assert_eq!(lines(&from_env)[0]["seq"], 2);
    let ephemeral = hubcast(
        &[
            "pub",
            "--url",
            &url,
            "--ephemeral",
            "typing:1",
            r#"{"t":1}"#,
        ],
        &[("HUBCAST_API_KEY", API_KEY)],
    )
    .await;
    assert!(ephemeral.status.success(), "{}", stderr(&ephemeral));
    assert_eq!(lines(&ephemeral)[0]["ephemeral"], true);

    let sub = [
        "sub", "--url", &url, "--cursor", "0", "--count", "2", "cli:1",
    ];
    let refused = hubcast(&sub, &[]).await;
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("unauthenticated") && stderr(&refused).contains("--token"),
        "{}",
        stderr(&refused)
    );
    for env in [vec![("HUBCAST_TOKEN", token.as_str())], vec![]] {
        let mut args = sub.to_vec();
        if env.is_empty() {
            args.extend(["--token", token.as_str()]);
        }
        let followed = hubcast(&args, &env).await;
        assert!(followed.status.success(), "{}", stderr(&followed));
        let seqs: Vec<Value> = lines(&followed).iter().map(|l| l["seq"].clone()).collect();
        assert_eq!(seqs, [json!(1), json!(2)]);
    }
    // An API key opens a socket too.
    let with_key = hubcast(&[&sub[..], &["--api-key", API_KEY]].concat(), &[]).await;
    assert!(with_key.status.success(), "{}", stderr(&with_key));
}

/// A CA and a certificate it signed for `localhost` and `127.0.0.1`, made
/// with `openssl` in `dir`: (ca.pem, cert.pem, key.pem).
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=hubcast test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// nginx terminating TLS on a local port and proxying (WebSockets too) to
/// `upstream`. Stopped on drop.
struct Nginx {
    child: tokio::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(upstream: std::net::SocketAddr) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("hubcast-nginx-")
            .tempdir()
            .unwrap();
        let (_, cert, key) = make_certificates(dir.path());
        // The kernel picks a free port; nginx binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = dir.path().display();
        let conf = format!(
            r#"
master_process off;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|n| std::process::Command::new(n).arg("-v").output().is_ok())
            .expect("nginx (apt-get install nginx)");
        let child = tokio::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, port, dir };
        eventually("nginx listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        nginx
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
            eprintln!("---- nginx error.log ----\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_and_bench_through_a_tls_endpoint() {
    let server = Server::start(&config()).await;
    let nginx = Nginx::start(server.addr()).await;
    let url = format!("https://localhost:{}", nginx.port);
    let ca = nginx.ca();
    let ca = ca.to_str().unwrap();
    let token = token();

    // The certificate is not trusted without the CA: a TLS error, nothing sent.
    let untrusted = hubcast(
        &[
            "pub",
            "--url",
            &url,
            "--api-key",
            API_KEY,
            "tls:1",
            r#"{"n":0}"#,
        ],
        &[],
    )
    .await;
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).to_lowercase().contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
    // (Nothing was appended: the first trusted publish below gets seq 1.)

    for n in 1..=2 {
        let published = hubcast(
            &[
                "pub",
                "--url",
                &url,
                "--api-key",
                API_KEY,
                "--ca-file",
                ca,
                "tls:1",
                &format!(r#"{{"n":{n}}}"#),
            ],
            &[],
        )
        .await;
        assert!(published.status.success(), "{}", stderr(&published));
        assert_eq!(lines(&published)[0]["seq"], n);
    }
    // `sub` over wss:// (the https:// URL's socket), the CA from SSL_CERT_FILE.
    let followed = hubcast(
        &[
            "sub", "--url", &url, "--cursor", "0", "--count", "2", "tls:1",
        ],
        &[("HUBCAST_TOKEN", token.as_str()), ("SSL_CERT_FILE", ca)],
    )
    .await;
    assert!(followed.status.success(), "{}", stderr(&followed));
    let data: Vec<Value> = lines(&followed).iter().map(|l| l["data"].clone()).collect();
    assert_eq!(data, [json!({"n": 1}), json!({"n": 2})]);

    // `bench publish` over https:// with the key, and `bench fanout` with
    // its subscribers on wss://.
    let results = tempfile::tempdir().unwrap();
    for (scenario, extra) in [
        ("publish", vec!["--events", "40", "--concurrency", "2"]),
        (
            "fanout",
            vec!["--subscribers", "3", "--events", "10", "--rate", "0"],
        ),
    ] {
        let json_path = results.path().join(format!("{scenario}.json"));
        let mut args = vec!["bench", scenario];
        args.extend(extra);
        args.extend(["--url", &url, "--ca-file", ca, "--quiet", "--json"]);
        args.push(json_path.to_str().unwrap());
        let env: Vec<(&str, &str)> = if scenario == "fanout" {
            vec![("HUBCAST_TOKEN", token.as_str())]
        } else {
            vec![("HUBCAST_API_KEY", API_KEY)]
        };
        let ran = hubcast(&args, &env).await;
        assert!(ran.status.success(), "{}\n{}", stdout(&ran), stderr(&ran));
        let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        let results = &report["results"];
        if scenario == "publish" {
            assert_eq!(
                (&results["failed"], &results["events"]),
                (&json!(0), &json!(40)),
                "{results}"
            );
        } else {
            assert_eq!(results["connect_failures"], 0, "{results}");
            assert_eq!(results["deliveries"], 30, "{results}");
        }
    }
}
