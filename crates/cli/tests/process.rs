//! The `pagewire` binary as people run it: zero-configuration start, restarts, a crash between
//! acknowledging and delivering, `config print`, and `simulate`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pagewire_testkit::{Kind, MetaBody, Receiver, TestApp};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_pagewire");
const STARTUP: Duration = Duration::from_secs(30);
const ADMIN: &str = "pwadm_process_test_operator_token";

/// A running `pagewire serve` and the lines it printed.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
    base_url: String,
}

impl Running {
    fn start(
        cwd: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut command = Command::new(BIN);
        command
            .current_dir(cwd)
            .arg("serve")
            .args(args)
            .env("PAGEWIRE_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env_remove("PAGEWIRE_ADMIN_TOKEN")
            .env_remove("PAGEWIRE_DATA_DIR")
            .env_remove("PAGEWIRE_MASTER_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            lines,
            printed: Vec::new(),
            base_url: String::new(),
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = running.lines.recv_timeout(left).map_err(|_| {
                format!(
                    "pagewire did not report listening within {STARTUP:?}; it printed {:?}",
                    running.printed
                )
            })?;
            if let Some(url) = line.strip_prefix("pagewire listening on ") {
                running.base_url = url.trim().to_owned();
                running.printed.push(line);
                return Ok(running);
            }
            running.printed.push(line);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> Result<std::process::ExitStatus, Box<dyn std::error::Error + Send + Sync>> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        assert!(status.success());
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                return Err("pagewire did not stop after SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies where it stands.
    fn crash(mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let mut request = client.request(method.clone(), url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let json: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!("{method} {url} answered {status}: {json}").into());
    }
    Ok(json)
}

#[tokio::test]
async fn serve_with_zero_configuration_prepares_the_data_dir_and_shows_the_token_once() -> TestResult {
    let cwd = tempfile::tempdir()?;
    let first = Running::start(cwd.path(), &[], &[])?;
    let token = first
        .printed
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("pwadm_"))
        .ok_or_else(|| format!("no admin token printed: {:?}", first.printed))?
        .to_owned();
    assert!(
        first.printed.iter().any(|l| l.contains("/v1/tenants")),
        "says what to do next"
    );
    let data = cwd.path().join("pagewire-data");
    assert!(data.join("pagewire.db").is_file());
    assert!(data.join("admin-token.sha256").is_file());
    let key = data.join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    }
    assert!(!std::fs::read_to_string(data.join("admin-token.sha256"))?.contains(&token));

    let client = reqwest::Client::new();
    let tenants = call(&client, reqwest::Method::GET, &first.url("/v1/tenants"), &token, None).await?;
    assert_eq!(tenants["data"], json!([]));
    let status = first.stop()?;
    assert!(status.success(), "a SIGTERM stop is clean: {status}");

    // A restart keeps the token and does not print it again.
    let second = Running::start(cwd.path(), &[], &[])?;
    assert!(!second.printed.iter().any(|l| l.contains(&token)));
    call(&client, reqwest::Method::GET, &second.url("/v1/tenants"), &token, None).await?;
    second.stop()?;
    Ok(())
}

#[tokio::test]
async fn delivers_everything_acknowledged_before_a_crash() -> TestResult {
    let cwd = tempfile::tempdir()?;
    let envs = [
        ("PAGEWIRE_ADMIN_TOKEN", ADMIN),
        ("PAGEWIRE_ALLOW_PRIVATE_ENDPOINTS", "true"),
    ];
    // The first node only ingests, so nothing can be delivered before it dies.
    let ingress = Running::start(cwd.path(), &["--role", "ingress"], &envs)?;
    let client = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let tenant = call(
        &client,
        post.clone(),
        &ingress.url("/v1/tenants"),
        ADMIN,
        Some(json!({"name": "Acme"})),
    )
    .await?;
    let tenant_id = tenant["id"].as_str().ok_or("no id")?;
    let key = call(
        &client,
        post.clone(),
        &ingress.url(&format!("/v1/tenants/{tenant_id}/api-keys")),
        ADMIN,
        Some(json!({})),
    )
    .await?;
    let key = key["key"].as_str().ok_or("no key")?;
    let secret = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";
    call(
        &client,
        post.clone(),
        &ingress.url("/v1/apps"),
        key,
        Some(json!({"app_id": "42", "app_secret": secret, "verify_token": "process-test-verify-token"})),
    )
    .await?;
    call(
        &client,
        post.clone(),
        &ingress.url("/v1/pages"),
        key,
        Some(json!({"page_id": "1001", "app_id": "42"})),
    )
    .await?;
    // Claimed without an access token, the Page is the tenant's once the operator approves it.
    call(
        &client,
        reqwest::Method::PUT,
        &ingress.url(&format!("/v1/tenants/{tenant_id}/pages/1001")),
        ADMIN,
        None,
    )
    .await?;
    let receiver = Receiver::start().await?;
    let endpoint = call(
        &client,
        post,
        &ingress.url("/v1/endpoints"),
        key,
        Some(json!({"url": receiver.url(), "max_concurrency": 1})),
    )
    .await?;
    let endpoint_secret = endpoint["secret"].as_str().ok_or("no secret")?.to_owned();

    let now = 1_747_231_892_100;
    for (n, kind) in [Kind::Message, Kind::Postback, Kind::QuickReply]
        .into_iter()
        .enumerate()
    {
        let body = MetaBody::page()
            .messaging("1001", now, vec![kind.item("1001", "77", now, "hi äöå", n as u64)])
            .to_bytes();
        let response = pagewire_testkit::post_signed(&client, &ingress.url("/webhooks/meta"), secret, body).await?;
        assert_eq!(response.status().as_u16(), 200);
    }
    ingress.crash()?;
    assert!(receiver.received().is_empty());

    let node = Running::start(cwd.path(), &[], &envs)?;
    let received = receiver.wait_for(3, STARTUP).await;
    let types: Vec<Value> = received.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(
        types,
        [
            json!("messenger.message"),
            json!("messenger.postback"),
            json!("messenger.quick_reply")
        ]
    );
    for request in &received {
        request.verify(&endpoint_secret)?;
    }
    node.stop()?;
    Ok(())
}

#[test]
fn config_print_shows_the_layers_and_redacts_secrets() -> TestResult {
    let cwd = tempfile::tempdir()?;
    std::fs::write(
        cwd.path().join("custom.toml"),
        "data_dir = \"/var/lib/pagewire\"\n[delivery]\nconcurrency = 7\n",
    )?;
    let output = Command::new(BIN)
        .current_dir(cwd.path())
        .args(["--config", "custom.toml", "config", "print", "--role", "worker"])
        .env("PAGEWIRE_LISTEN", "0.0.0.0:9090")
        .env("PAGEWIRE_ADMIN_TOKEN", "pwadm_do_not_print_me")
        .env("PAGEWIRE_MASTER_KEY", "ab".repeat(32))
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout)?;
    assert!(printed.contains("listen = \"0.0.0.0:9090\""), "{printed}");
    assert!(printed.contains("data_dir = \"/var/lib/pagewire\""), "{printed}");
    assert!(printed.contains("concurrency = 7"), "{printed}");
    assert!(printed.contains("role = \"worker\""), "{printed}");
    assert!(printed.contains("admin_token = \"[redacted]\""), "{printed}");
    assert!(!printed.contains("do_not_print_me") && !printed.contains("abab"));

    let bad = Command::new(BIN)
        .current_dir(cwd.path())
        .args(["config", "print"])
        .env("PAGEWIRE_LISTEN", "nowhere")
        .output()?;
    assert!(!bad.status.success());
    let complaint = String::from_utf8_lossy(&bad.stderr);
    assert!(
        complaint.starts_with("error: the configuration is not valid") && complaint.contains("LISTEN"),
        "{complaint}"
    );
    Ok(())
}

#[tokio::test]
async fn simulate_sends_a_signed_webhook_that_reaches_the_endpoint() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), "42", "sim-secret").await?;
    app.create_page(&tenant, "1001", "42").await?;
    let receiver = Receiver::start().await?;
    app.create_endpoint(&tenant, json!({"url": receiver.url()})).await?;

    let url = app.url("/webhooks/meta");
    let output = tokio::process::Command::new(BIN)
        .args([
            "simulate",
            "--app-secret",
            "sim-secret",
            "--page-id",
            "1001",
            "--kind",
            "postback",
            "--text",
            "TRACK_ORDER",
            "--url",
            &url,
        ])
        .output()
        .await?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("200"));
    assert_eq!(app.deliver_due().await?, 1);
    let event = receiver.wait_for(1, STARTUP).await[0].json();
    assert_eq!(event["type"], "messenger.postback");
    assert_eq!(event["data"]["payload"], "TRACK_ORDER");

    let wrong = tokio::process::Command::new(BIN)
        .args(["simulate", "--app-secret", "wrong", "--page-id", "1001", "--url", &url])
        .output()
        .await?;
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    Ok(())
}
