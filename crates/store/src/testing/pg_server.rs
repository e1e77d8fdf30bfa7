//! A throwaway PostgreSQL server for tests, started from the machine's own binaries.
//!
//! The first call to [`fresh_database`] in a test process runs `initdb` into a temporary directory
//! and starts `postgres` listening only on a unix socket in that directory (no TCP port, so test
//! processes running side by side never collide), with durability off (`fsync=off`): the cluster
//! is thrown away. Every call then creates an empty database, `test_<n>`, and returns its URL.
//!
//! PostgreSQL refuses to run as root, and CI runs tests as root: there, `initdb` and `postgres` run
//! as the `postgres` user (through `setpriv`, else `runuser`) in a directory it owns.
//!
//! The server lives exactly as long as the test process. A small guardian shell reads a pipe whose
//! other end only the test process holds; when the process exits, however it exits, the pipe
//! closes and the guardian stops the server and removes the directory.
//!
//! The binaries are looked for in `PAGEWIRE_PG_BIN` if set, then in `/usr/lib/postgresql/*/bin`
//! (newest first), then on `PATH`. Without them this fails and says how to install them: the
//! PostgreSQL suite never skips silently.
//!
//! The load harness measures PostgreSQL as an operator runs it, with every commit durable:
//! [`fresh_durable_database`] starts a second server, with PostgreSQL's default durability (and
//! the settings of [`set_durable_settings`], if any).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::Result;

/// How long the server may take to accept connections once started (`initdb` aside): generous,
/// as CI machines are shared.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How often starting is checked on.
const START_POLL: Duration = Duration::from_millis(20);
/// Only names the socket file (`.s.PGSQL.5432`), which is in the server's own directory.
const PORT: u16 = 5432;
/// The superuser `initdb` creates; the socket trusts it.
const SUPERUSER: &str = "postgres";
/// The OS user the server runs as when the tests run as root.
const OS_USER: &str = "postgres";

/// Stops the server and removes its directory once the test process has gone. `$1` is the
/// server's pid, `$2` its directory; stdin reaches its end when the test process exits.
const GUARDIAN: &str = r#"
cat >/dev/null
kill -INT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "$1" 2>/dev/null
rm -rf "$2"
"#;

/// The servers (throwaway, durable), or why one could not start (kept, so that every test says the
/// same thing).
static SERVERS: [OnceLock<std::result::Result<Server, String>>; 2] = [OnceLock::new(), OnceLock::new()];
static DATABASES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Server {
    /// The socket's directory, which also holds the cluster.
    dir: PathBuf,
    /// Never waited for: the server runs until the test process exits.
    _postgres: Child,
    /// Never written to: it closes when the test process exits, which wakes the guardian.
    _guardian: ChildStdin,
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}",
            self.dir.display()
        )
    }
}

/// Whether a server's commits survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `fsync`, synchronous commit and full-page writes off: for tests, whose cluster is thrown away.
    Off,
    /// PostgreSQL's defaults: a commit returns once its log is on disk.
    Full,
}

/// The URL of a new, empty database on this test process's server, which starts on first use.
pub async fn fresh_database() -> Result<String> {
    database_on(Durability::Off).await
}

/// The URL of a new, empty database on a server with PostgreSQL's default durability (every
/// commit flushed to disk), started on first use: for measurements comparable with SQLite's
/// `synchronous = FULL`.
pub async fn fresh_durable_database() -> Result<String> {
    database_on(Durability::Full).await
}

/// The process id of the durable server (its postmaster, whose children are the server's other
/// processes), once it runs: for measuring the CPU the server uses.
pub fn durable_server_pid() -> Option<u32> {
    let server = SERVERS[Durability::Full as usize].get()?.as_ref().ok()?;
    let pid = std::fs::read_to_string(server.dir.join("data").join("postmaster.pid")).ok()?;
    pid.lines().next()?.trim().parse().ok()
}

/// Settings (`name=value`, as `postgres -c` takes them) for the durable server, over PostgreSQL's
/// defaults: for measuring an operator's tuning. Only before that server starts, once.
pub fn set_durable_settings(settings: Vec<String>) -> std::result::Result<(), String> {
    if SERVERS[Durability::Full as usize].get().is_some() {
        return Err(String::from("the durable server has already started"));
    }
    DURABLE_SETTINGS
        .set(settings)
        .map_err(|_| String::from("the durable server's settings are already set"))
}

/// What [`set_durable_settings`] asked for.
static DURABLE_SETTINGS: OnceLock<Vec<String>> = OnceLock::new();

async fn database_on(durability: Durability) -> Result<String> {
    let server = tokio::task::spawn_blocking(move || {
        SERVERS[durability as usize]
            .get_or_init(|| start(durability))
            .as_ref()
            .map_err(Clone::clone)
    })
    .await??;
    let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&server.url("postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(server.url(&name))
}

/// The programs a cluster needs.
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// Who the server runs as when the tests run as root.
struct OsUser {
    uid: u32,
    gid: u32,
    /// The command that runs a program as this user, before the program's path.
    switch: Vec<String>,
}

fn start(durability: Durability) -> std::result::Result<Server, String> {
    let binaries = find_binaries()?;
    let user = if running_as_root() { Some(os_user()?) } else { None };
    let dir = tempfile::Builder::new()
        .prefix("pagewire-pg-")
        .tempdir()
        .map_err(|e| format!("cannot create a directory for the test PostgreSQL server: {e}"))?
        .keep();
    start_in(&binaries, user.as_ref(), &dir, durability).inspect_err(|_| {
        // The guardian removes it too once started; whichever comes second finds nothing.
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn start_in(
    binaries: &Binaries,
    user: Option<&OsUser>,
    dir: &Path,
    durability: Durability,
) -> std::result::Result<Server, String> {
    if let Some(user) = user {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("cannot give {} to the {OS_USER} user: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let initdb = as_user(&binaries.initdb, user, dir)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binaries.initdb.display()))?;
    if !initdb.status.success() {
        return Err(format!(
            "initdb failed ({}):\n{}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        ));
    }

    let log_path = dir.join("postgres.log");
    let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| format!("cannot share the log file: {e}"))?;
    let mut postgres = as_user(&binaries.postgres, user, dir)
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(dir)
        .arg("-p")
        .arg(PORT.to_string())
        .args(["-c", "listen_addresses=", "-c", "max_connections=200"])
        .args(match durability {
            Durability::Off => &[
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ][..],
            Durability::Full => &[],
        })
        .args(
            DURABLE_SETTINGS
                .get()
                .filter(|_| durability == Durability::Full)
                .into_iter()
                .flatten()
                .flat_map(|setting| ["-c", setting.as_str()]),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Out of the terminal's process group, as is the guardian: a Ctrl-C stops the tests, and
        // the guardian, finding them gone, stops the server and cleans up (the signal would
        // otherwise kill the guardian before it could).
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binaries.postgres.display()))?;

    let guardian = Command::new("sh")
        .arg("-c")
        .arg(GUARDIAN)
        .arg("pagewire-pg-guardian")
        .arg(postgres.id().to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .and_then(|mut guardian| {
            guardian
                .stdin
                .take()
                .ok_or_else(|| std::io::Error::other("the guardian has no stdin"))
        });
    let guardian = match guardian {
        Ok(stdin) => stdin,
        Err(e) => {
            let _ = postgres.kill();
            let _ = postgres.wait();
            return Err(format!("cannot start the shell that stops the test server: {e}"));
        }
    };

    if let Err(e) = wait_until_ready(&mut postgres, &data, &log_path) {
        let _ = postgres.kill();
        let _ = postgres.wait();
        drop(guardian);
        return Err(e);
    }
    Ok(Server {
        dir: dir.to_owned(),
        _postgres: postgres,
        _guardian: guardian,
    })
}

/// Waits until the server says it is ready in `postmaster.pid` (as `pg_ctl -w` does), failing as
/// soon as it exits, or at the deadline.
fn wait_until_ready(postgres: &mut Child, data: &Path, log: &Path) -> std::result::Result<(), String> {
    let deadline = Instant::now() + START_DEADLINE;
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        match postgres.try_wait() {
            Ok(Some(status)) => return Err(format!("postgres stopped while starting ({status}):\n{}", log())),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot check on postgres: {e}")),
        }
        // The eighth line of postmaster.pid is the server's state.
        let ready = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .is_some_and(|pid| pid.lines().nth(7).is_some_and(|state| state.trim() == "ready"));
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "postgres did not accept connections within {START_DEADLINE:?}:\n{}",
                log()
            ));
        }
        std::thread::sleep(START_POLL);
    }
}

/// `program` run as `user` (as this process's user when `None`), from `dir`: the `postgres` user
/// may not be allowed into the current directory.
fn as_user(program: &Path, user: Option<&OsUser>, dir: &Path) -> Command {
    let mut command = match user.and_then(|user| user.switch.split_first()) {
        Some((switch, args)) => {
            let mut command = Command::new(switch);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    };
    command.current_dir(dir);
    command
}

fn find_binaries() -> std::result::Result<Binaries, String> {
    let in_dir = |dir: &Path| {
        let binaries = Binaries {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
        };
        (binaries.initdb.is_file() && binaries.postgres.is_file()).then_some(binaries)
    };
    if let Some(dir) = std::env::var_os("PAGEWIRE_PG_BIN") {
        return in_dir(Path::new(&dir)).ok_or_else(|| {
            format!(
                "PAGEWIRE_PG_BIN is {}, which does not hold PostgreSQL's initdb and postgres",
                Path::new(&dir).display()
            )
        });
    }
    // Debian and Ubuntu keep each major version apart and put none of them on PATH.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let path = std::env::var_os("PATH").unwrap_or_default();
    versions
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(std::env::split_paths(&path))
        .find_map(|dir| in_dir(&dir))
        .ok_or_else(|| {
            String::from(
                "PostgreSQL's server programs (initdb, postgres) are in neither /usr/lib/postgresql/*/bin \
                 nor PATH, and the PostgreSQL tests need them. Install them (Debian/Ubuntu: \
                 `apt-get install -y --no-install-recommends postgresql`; macOS: `brew install postgresql@16`; \
                 scripts/test.sh installs them when missing), or set PAGEWIRE_PG_BIN to the directory that \
                 holds them.",
            )
        })
}

fn running_as_root() -> bool {
    match std::fs::metadata("/proc/self") {
        Ok(proc) => proc.uid() == 0,
        // No procfs (macOS): ask `id`.
        Err(_) => id(&["-u"]) == Some(0),
    }
}

fn os_user() -> std::result::Result<OsUser, String> {
    let (Some(uid), Some(gid)) = (id(&["-u", OS_USER]), id(&["-g", OS_USER])) else {
        return Err(format!(
            "the tests run as root, which PostgreSQL refuses; they run it as the `{OS_USER}` user, \
             which does not exist: create it (the postgresql package does) or run the tests as \
             another user"
        ));
    };
    // setpriv execs the program, so the server's pid is the one the guardian stops; runuser
    // stays in between and forwards the signal.
    let switch = if on_path("setpriv") {
        vec![
            String::from("setpriv"),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            String::from("--init-groups"),
            String::from("--"),
        ]
    } else if on_path("runuser") {
        vec![
            String::from("runuser"),
            String::from("-u"),
            String::from(OS_USER),
            String::from("--"),
        ]
    } else {
        return Err(format!(
            "the tests run as root, which PostgreSQL refuses, and neither setpriv nor runuser \
             (util-linux) is installed to run it as the `{OS_USER}` user"
        ));
    };
    Ok(OsUser { uid, gid, switch })
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).stderr(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}
