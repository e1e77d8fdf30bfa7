//! `pagewire tenant …` and `pagewire key …` as an operator runs them: on the data dir of a gateway
//! that has not started yet, then beside the running gateway, whose API honours the keys they create
//! and revoke.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_pagewire");
const STARTUP: Duration = Duration::from_secs(30);
const ADMIN: &str = "pwadm_admin_commands_test_token";

/// `pagewire` with the given arguments, in `cwd`, with no settings from the environment.
fn pagewire(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("PAGEWIRE_CONFIG")
        .env_remove("PAGEWIRE_ADMIN_TOKEN")
        .env_remove("PAGEWIRE_DATA_DIR")
        .env_remove("PAGEWIRE_DATABASE_URL")
        .env_remove("PAGEWIRE_MASTER_KEY");
    command
}

/// Runs a command that must succeed; its stdout.
fn succeed(command: &mut Command) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Runs a command that must fail; its stderr.
fn fail(command: &mut Command) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let Output { status, stdout, stderr } = command.output()?;
    if status.success() {
        return Err(format!("{command:?} succeeded: {}", String::from_utf8_lossy(&stdout)).into());
    }
    Ok(String::from_utf8(stderr)?)
}

/// A running `pagewire serve`.
struct Server {
    child: Child,
    base_url: String,
}

impl Server {
    fn start(cwd: &Path, data_dir: &Path) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut child = pagewire(cwd)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .env("PAGEWIRE_LISTEN", "127.0.0.1:0")
            .env("PAGEWIRE_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            base_url: String::new(),
        };
        let deadline = Instant::now() + STARTUP;
        let mut printed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .map_err(|_| format!("pagewire did not report listening within {STARTUP:?}; it printed {printed:?}"))?;
            if let Some(url) = line.strip_prefix("pagewire listening on ") {
                server.base_url = url.trim().to_owned();
                // Keep draining stdout so the server never blocks on a full pipe.
                std::thread::spawn(move || while lines.recv().is_ok() {});
                return Ok(server);
            }
            printed.push(line);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn endpoints_status(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let response = client.get(server.url("/v1/endpoints")).bearer_auth(key).send().await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn tenants_and_keys_made_on_the_command_line_work_against_the_running_gateway() -> TestResult {
    let cwd = tempfile::tempdir()?;
    let data = cwd.path().join("data");
    let data_arg = data.to_str().ok_or("temp path is not UTF-8")?;

    // Before the first `serve`: the data dir is created and migrated.
    let tenant_id = succeed(pagewire(cwd.path()).args(["tenant", "create", "Acme Bots", "--data-dir", data_arg]))?
        .trim()
        .to_owned();
    assert!(tenant_id.starts_with("ten_"), "{tenant_id}");
    assert!(data.join("pagewire.db").is_file());
    assert!(data.join("master.key").is_file());

    let other: Value = serde_json::from_str(&succeed(pagewire(cwd.path()).args([
        "tenant",
        "create",
        "Other Co",
        "--json",
        "--data-dir",
        data_arg,
    ]))?)?;
    assert_eq!(other["name"], "Other Co");
    assert!(other["id"].as_str().is_some_and(|id| id.starts_with("ten_")));
    assert!(other["created_at"].as_str().is_some_and(|at| at.ends_with('Z')));

    // The data dir from the environment, as `serve` reads it.
    let tenants: Value = serde_json::from_str(&succeed(
        pagewire(cwd.path())
            .args(["tenant", "list", "--json"])
            .env("PAGEWIRE_DATA_DIR", &data),
    )?)?;
    let tenants = tenants.as_array().ok_or("not an array")?;
    assert_eq!(tenants.len(), 2, "{tenants:?}");
    let acme = tenants
        .iter()
        .find(|t| t["id"] == tenant_id.as_str())
        .ok_or("the tenant is not listed")?;
    assert_eq!(acme["name"], "Acme Bots");
    assert!(acme["created_at"].as_str().is_some_and(|at| at.ends_with('Z')));

    let table = succeed(pagewire(cwd.path()).args(["tenant", "list", "--data-dir", data_arg]))?;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.lines().any(|l| l.contains(&tenant_id) && l.contains("Acme Bots")),
        "{table}"
    );

    // An admin key, shown once.
    let output = pagewire(cwd.path())
        .args([
            "key",
            "create",
            "--tenant",
            &tenant_id,
            "--name",
            "ops",
            "--json",
            "--data-dir",
            data_arg,
        ])
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("shown only this once"));
    let created: Value = serde_json::from_slice(&output.stdout)?;
    let key = created["key"].as_str().ok_or("no key")?.to_owned();
    let key_id = created["id"].as_str().ok_or("no id")?.to_owned();
    assert!(key.starts_with("pw_"), "{key}");
    assert!(key_id.starts_with("key_"), "{key_id}");
    assert_eq!(created["tenant_id"], tenant_id.as_str());
    assert_eq!(created["name"], "ops");
    assert_eq!(created["role"], "admin");

    // A read-only one, printed bare for scripts.
    let read_only = succeed(pagewire(cwd.path()).args([
        "key",
        "create",
        "--tenant",
        &tenant_id,
        "--role",
        "read_only",
        "--data-dir",
        data_arg,
    ]))?;
    let read_only = read_only.trim();
    assert!(read_only.starts_with("pw_") && !read_only.contains('\n'), "{read_only}");

    let keys_json =
        succeed(pagewire(cwd.path()).args(["key", "list", "--tenant", &tenant_id, "--json", "--data-dir", data_arg]))?;
    assert!(
        !keys_json.contains(&key) && !keys_json.contains(read_only),
        "a list never shows keys"
    );
    let keys: Value = serde_json::from_str(&keys_json)?;
    let keys = keys.as_array().ok_or("not an array")?;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let listed = keys
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .ok_or("key not listed")?;
    assert_eq!(listed["prefix"], &key[..7]);
    assert_eq!(listed["role"], "admin");
    assert!(listed["revoked_at"].is_null());
    assert!(keys.iter().any(|k| k["role"] == "read_only"));

    // The gateway accepts the key ...
    let server = Server::start(cwd.path(), &data)?;
    let client = reqwest::Client::new();
    assert_eq!(endpoints_status(&client, &server, &key).await?, 200);
    assert_eq!(endpoints_status(&client, &server, read_only).await?, 200);

    // ... until it is revoked, beside the running gateway.
    let revoked =
        succeed(pagewire(cwd.path()).args(["key", "revoke", "--tenant", &tenant_id, &key_id, "--data-dir", data_arg]))?;
    assert!(revoked.contains(&key_id), "{revoked}");
    assert_eq!(endpoints_status(&client, &server, &key).await?, 401);
    assert_eq!(endpoints_status(&client, &server, read_only).await?, 200);

    let table = succeed(pagewire(cwd.path()).args(["key", "list", "--tenant", &tenant_id, "--data-dir", data_arg]))?;
    let line = table
        .lines()
        .find(|l| l.contains(&key_id))
        .ok_or("revoked key not listed")?;
    assert!(line.contains("ops") && line.contains(&key[..7]), "{table}");
    assert!(line.trim_end().ends_with('Z'), "the revoked column shows when: {table}");

    // Revoking again is harmless.
    let again =
        succeed(pagewire(cwd.path()).args(["key", "revoke", "--tenant", &tenant_id, &key_id, "--data-dir", data_arg]))?;
    assert!(again.contains("already revoked"), "{again}");
    drop(server);
    Ok(())
}

#[test]
fn unknown_tenants_and_keys_fail_with_a_clear_message() -> TestResult {
    let cwd = tempfile::tempdir()?;
    let data = cwd.path().join("data");
    let data_arg = data.to_str().ok_or("temp path is not UTF-8")?;
    let tenant_id = succeed(pagewire(cwd.path()).args(["tenant", "create", "Acme", "--data-dir", data_arg]))?
        .trim()
        .to_owned();
    let unknown_tenant = pagewire_core::TenantId::new().to_string();
    let unknown_key = pagewire_core::ApiKeyId::new().to_string();

    let complaint =
        fail(pagewire(cwd.path()).args(["key", "create", "--tenant", &unknown_tenant, "--data-dir", data_arg]))?;
    assert_eq!(complaint.trim(), format!("error: no tenant {unknown_tenant}"));

    let complaint =
        fail(pagewire(cwd.path()).args(["key", "list", "--tenant", &unknown_tenant, "--data-dir", data_arg]))?;
    assert_eq!(complaint.trim(), format!("error: no tenant {unknown_tenant}"));

    let complaint = fail(pagewire(cwd.path()).args([
        "key",
        "revoke",
        "--tenant",
        &tenant_id,
        &unknown_key,
        "--data-dir",
        data_arg,
    ]))?;
    assert_eq!(
        complaint.trim(),
        format!("error: no API key {unknown_key} for tenant {tenant_id}")
    );

    let complaint = fail(pagewire(cwd.path()).args(["key", "list", "--tenant", "acme", "--data-dir", data_arg]))?;
    assert!(complaint.contains("not a valid tenant id"), "{complaint}");

    let complaint = fail(pagewire(cwd.path()).args(["tenant", "create", "  ", "--data-dir", data_arg]))?;
    assert_eq!(complaint.trim(), "error: the tenant name must not be empty");

    let long = "x".repeat(201);
    let complaint = fail(pagewire(cwd.path()).args([
        "key",
        "create",
        "--tenant",
        &tenant_id,
        "--name",
        &long,
        "--data-dir",
        data_arg,
    ]))?;
    assert!(complaint.contains("at most 200"), "{complaint}");

    let complaint = fail(pagewire(cwd.path()).args([
        "key",
        "create",
        "--tenant",
        &tenant_id,
        "--role",
        "root",
        "--data-dir",
        data_arg,
    ]))?;
    assert!(complaint.contains("read_only"), "{complaint}");
    Ok(())
}
