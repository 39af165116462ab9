//! A private PostgreSQL server started from the machine's PostgreSQL binaries.
//!
//! `initdb` once into a data directory, then `pg_ctl start` listening on 127.0.0.1 and on a
//! socket inside the data directory. When the current user is root, PostgreSQL refuses to run,
//! so every server command runs as the `postgres` system user and the directory is given to it.
//! (Crates that embed PostgreSQL download binaries at build or run time, which this project's
//! machines cannot do; this launcher only drives the installed ones.)

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_shared::config::Env;
use thiserror::Error;

/// Failures of the launcher, each saying what to do.
#[derive(Debug, Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL server binaries found (looked in FERRY_PG_BIN, /usr/lib/postgresql/*/bin \
         and `pg_config --bindir`); install them, e.g. `apt-get install postgresql`"
    )]
    NoBinaries,
    #[error("running as root, but there is no `postgres` system user to run the server as")]
    NoPostgresUser,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// A local PostgreSQL cluster: a data directory, a port, the binaries to drive it.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    pub data_dir: PathBuf,
    pub port: u16,
    bin_dir: PathBuf,
    /// (uid, gid) to run server commands as, when we are root.
    run_as: Option<(u32, u32)>,
    /// Extra `-c name=value` server settings.
    settings: Vec<(String, String)>,
}

/// The superuser and database that `initdb` creates.
pub const SUPERUSER: &str = "ferry";

impl LocalPostgres {
    /// Describes a cluster in `data_dir` on `port` (nothing is started yet).
    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> Result<LocalPostgres, PgError> {
        Ok(LocalPostgres {
            data_dir: data_dir.into(),
            port,
            bin_dir: find_bin_dir()?,
            run_as: run_as()?,
            settings: Vec::new(),
        })
    }

    /// Adds a server setting, e.g. `("fsync", "off")` for throwaway test clusters.
    pub fn setting(mut self, name: &str, value: &str) -> LocalPostgres {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The connection URL for `database` over TCP on loopback.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `initdb` unless the data directory already holds a cluster.
    pub fn init(&self) -> Result<(), PgError> {
        if self.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| PgError::Io(format!("create {}", self.data_dir.display()), e))?;
        // The server needs to traverse every parent and own the data directory.
        if let Some(parent) = self.data_dir.parent() {
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
        }
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::Io(format!("chmod {}", self.data_dir.display()), e))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))
                .map_err(|e| PgError::Io(format!("chown {}", self.data_dir.display()), e))?;
        }
        let data = self.data_dir.to_string_lossy().into_owned();
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        )?;
        Ok(())
    }

    /// Starts the server (waits until it accepts connections). No-op if already running.
    pub fn start(&self) -> Result<(), PgError> {
        if self.is_running() {
            return Ok(());
        }
        let data = self.data_dir.to_string_lossy().into_owned();
        let log = self.log_file().to_string_lossy().into_owned();
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port, data
        );
        for (k, v) in &self.settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
            ],
        )
        .map_err(|e| match e {
            PgError::Command { what, detail } => PgError::Command {
                what,
                detail: format!("{detail}\n--- {log} ---\n{}", tail(&self.log_file(), 20)),
            },
            other => other,
        })?;
        Ok(())
    }

    /// Stops the server. `mode` is `fast` (roll back sessions) or `immediate` (crash-like).
    pub fn stop(&self, mode: &str) -> Result<(), PgError> {
        if !self.is_running() {
            return Ok(());
        }
        let data = self.data_dir.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"])?;
        Ok(())
    }

    /// True while the server is running.
    pub fn is_running(&self) -> bool {
        let data = self.data_dir.to_string_lossy().into_owned();
        self.command("pg_ctl")
            .args(["-D", &data, "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops the server and deletes `remove` once the current process has exited, by way of a
    /// small watchdog shell. Used for throwaway clusters in tests, which have no teardown hook.
    pub fn stop_when_process_exits(&self, remove: &Path) -> Result<(), PgError> {
        let script = r#"while kill -0 "$FERRY_PARENT" 2>/dev/null; do sleep 0.5; done
if [ -f "$FERRY_PGDATA/postmaster.pid" ]; then kill -INT "$(head -n 1 "$FERRY_PGDATA/postmaster.pid")" 2>/dev/null; sleep 3; fi
rm -rf "$FERRY_REMOVE""#;
        Command::new("sh")
            .args(["-c", script])
            .env("FERRY_PARENT", std::process::id().to_string())
            .env("FERRY_PGDATA", &self.data_dir)
            .env("FERRY_REMOVE", remove)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| PgError::Io("spawn watchdog".into(), e))?;
        Ok(())
    }

    pub fn log_file(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).current_dir("/");
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), PgError> {
        if program == "pg_ctl" && args.last() == Some(&"start") {
            // pg_ctl must be able to create the log file as the server user.
            let log = self.log_file();
            if let (Some((uid, gid)), Ok(_)) = (self.run_as, std::fs::File::create(&log)) {
                let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
            }
        }
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PgError::Io(format!("run {program}"), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(PgError::Command {
                what: format!("{program} {}", args.join(" ")),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}

/// Replaces the database name in a PostgreSQL URL (keeping user, host and query parameters).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// Picks a free TCP port on loopback.
pub fn free_port() -> Result<u16, PgError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| PgError::Io("bind 127.0.0.1:0".into(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| PgError::Io("local_addr".into(), e))
}

/// The directory of the newest PostgreSQL server binaries (FERRY_PG_BIN, else /usr/lib/postgresql/*/bin).
pub fn find_bin_dir() -> Result<PathBuf, PgError> {
    if let Some(dir) = Env::process().get("FERRY_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|_| PgError::NoBinaries)?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if dir.join("initdb").exists() {
        Ok(dir)
    } else {
        Err(PgError::NoBinaries)
    }
}

/// When we are root, the uid/gid of the `postgres` user to run the server as.
fn run_as() -> Result<Option<(u32, u32)>, PgError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(0) {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or(PgError::NoPostgresUser)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_keeps_everything_but_the_name() {
        assert_eq!(
            with_database("postgres://u@h:5/a", "b"),
            "postgres://u@h:5/b"
        );
        assert_eq!(with_database("postgres://u@h:5", "b"), "postgres://u@h:5/b");
        assert_eq!(
            with_database("postgres://u:p@h/a?sslmode=require", "b"),
            "postgres://u:p@h/b?sslmode=require"
        );
    }
}
