//! Throwaway MariaDB servers with a GTID row binlog.
//!
//! Uses Debian's `mariadbd`, `mariadb-install-db` and `mariadb` (package `mariadb-server`),
//! looked up in `$POWERSYNC_MARIADB_BIN`, `/usr/sbin`, `/usr/bin`, `/usr/local/{s,}bin` and
//! `PATH`. Every program runs with `--no-defaults`, so `/etc/mysql` and `~/.my.cnf` do not leak
//! in. As root, the server runs with `--user=root` (files in the temporary directory stay
//! root's).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::process::{find_program, is_root, log_tail, Helper, Launch, Lifecycle, Readiness};
use crate::{free_port, Result, TestkitError};

/// Options for a [`MariaDbServer`]; start it with [`MariaDbBuilder::start`].
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    settings: Vec<(String, String)>,
    args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        MariaDbBuilder {
            settings: Vec::new(),
            args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl MariaDbBuilder {
    /// An extra server option, passed as `--name=value` after the defaults (so it overrides
    /// them, e.g. `.setting("binlog_row_image", "MINIMAL")`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// An extra raw server argument, e.g. `--skip-log-bin`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long to wait for the server to accept connections (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Creates the data directory (`mariadb-install-db`), starts the server, waits until it
    /// accepts connections and creates the database `test`.
    pub async fn start(self) -> Result<MariaDbServer> {
        let bins = Binaries::find()?;
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("powersync-mariadb-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating a temporary directory", e))?;
        let data_dir = dir.path().join("data");

        let mut install = Helper::new(&bins.install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data_dir.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            // A private temporary directory for the bootstrap server: two installs started at
            // the same moment in one test binary otherwise collided on the shared /tmp
            // ("Unknown table 'mysql.tmp_user_sys'").
            .arg(format!("--tmpdir={}", dir.path().display()))
            .cwd(dir.path());
        if root {
            install = install.arg("--user=root");
        }
        install.run().await?;

        let tmp = dir.path().to_path_buf();
        let build_args = |port: u16| -> Vec<OsString> {
            let mut args: Vec<String> = vec![
                "--no-defaults".into(),
                format!("--datadir={}", data_dir.display()),
            ];
            if root {
                args.push("--user=root".into());
            }
            args.extend([
                format!("--port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--socket={}", tmp.join("mariadb.sock").display()),
                format!("--pid-file={}", tmp.join("mariadbd.pid").display()),
                format!("--tmpdir={}", tmp.display()),
                format!("--log-bin={}", tmp.join("binlog").display()),
                "--binlog-format=ROW".into(),
                "--binlog-row-image=FULL".into(),
                "--binlog-row-metadata=FULL".into(),
                "--server-id=1".into(),
                "--gtid-strict-mode=ON".into(),
                "--skip-name-resolve".into(),
            ]);
            args.extend(self.settings.iter().map(|(k, v)| format!("--{k}={v}")));
            args.extend(self.args.iter().cloned());
            args.into_iter().map(OsString::from).collect()
        };

        let mut port = free_port()?;
        let life = Lifecycle::new(
            "MariaDB",
            Launch {
                program: bins.server.clone(),
                args: build_args(port),
                envs: Vec::new(),
                user: None,
                cwd: dir.path().to_path_buf(),
                log: dir.path().join("mariadb.log"),
            },
            libc::SIGTERM,
            Duration::from_secs(30),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            life.spawn().await?;
            match life
                .wait_ready(self.startup_timeout, || accepts_connections(port))
                .await
            {
                Readiness::Ready => break,
                Readiness::Exited(status)
                    if attempt < 5
                        && log_tail(&life.log_path(), 20).contains("Address already in use") =>
                {
                    tracing::debug!(port, %status, "port taken; retrying on another");
                    port = free_port()?;
                    life.set_args(build_args(port));
                }
                outcome => {
                    let _ = life.kill().await;
                    return Err(start_error(&life, port, outcome, self.startup_timeout));
                }
            }
        }

        let server = MariaDbServer {
            life,
            port,
            client: bins.client,
            data_dir,
            startup_timeout: self.startup_timeout,
            dir,
        };
        server.sql("CREATE DATABASE IF NOT EXISTS test").await?;
        Ok(server)
    }
}

/// A MariaDB server on 127.0.0.1 writing a row-based binlog with GTIDs, in a temporary
/// directory removed on drop (the server is SIGKILLed first).
///
/// Options: `--log-bin=<tmp>/binlog --binlog-format=ROW --binlog-row-image=FULL
/// --binlog-row-metadata=FULL --server-id=1 --gtid-strict-mode=ON --skip-name-resolve`, real
/// authentication (no `--skip-grant-tables`): `root` has an empty password and may connect from
/// 127.0.0.1. A database `test` exists. The server's output goes to `mariadb.log` in the
/// temporary directory (see [`log_tail`](Self::log_tail)).
#[derive(Debug)]
pub struct MariaDbServer {
    // Declared before `dir`: the server dies before its directory is removed.
    life: Lifecycle,
    port: u16,
    client: PathBuf,
    data_dir: PathBuf,
    startup_timeout: Duration,
    dir: tempfile::TempDir,
}

impl MariaDbServer {
    /// Options for a new server.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::default()
    }

    /// Starts a server with the default options.
    pub async fn start() -> Result<MariaDbServer> {
        MariaDbBuilder::default().start().await
    }

    /// `mysql://root@127.0.0.1:PORT/` (no default database).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }

    /// `mysql://root@127.0.0.1:PORT/<database>`.
    pub fn database_url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the data directory, binlogs, socket and log.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Clean shutdown (SIGTERM). A no-op when the server is not running.
    pub async fn stop(&self) -> Result<()> {
        self.life.stop().await
    }

    /// SIGKILL, like a crash; the next start runs InnoDB and binlog recovery. A no-op when the
    /// server is not running.
    pub async fn kill(&self) -> Result<()> {
        self.life.kill().await
    }

    /// SIGSTOP: connections stay open but nothing answers.
    pub async fn pause(&self) -> Result<()> {
        self.life.signal_tree(libc::SIGSTOP).await
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub async fn resume(&self) -> Result<()> {
        self.life.signal_tree(libc::SIGCONT).await
    }

    /// Starts the server again on the same port and data directory (after [`stop`](Self::stop)
    /// or [`kill`](Self::kill), or if it died) and waits until it accepts connections.
    pub async fn restart(&self) -> Result<()> {
        self.life.spawn().await?;
        let port = self.port;
        match self
            .life
            .wait_ready(self.startup_timeout, || accepts_connections(port))
            .await
        {
            Readiness::Ready => Ok(()),
            outcome => {
                let _ = self.life.kill().await;
                Err(start_error(
                    &self.life,
                    self.port,
                    outcome,
                    self.startup_timeout,
                ))
            }
        }
    }

    /// Whether the server process is alive (a paused server is alive).
    pub async fn is_running(&self) -> bool {
        self.life.is_running().await
    }

    /// Runs SQL through the `mariadb` client as root over TCP, with no default database
    /// (qualify names or start with `USE test;`), in batch mode: statements separated by `;`,
    /// stopping at the first error. Returns the result rows, tab-separated, without headers.
    pub async fn sql(&self, sql: &str) -> Result<String> {
        Helper::new(&self.client)
            .arg("--no-defaults")
            .args([
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "-N",
                "-B",
            ])
            .arg(format!("--port={}", self.port))
            .arg("--connect-timeout=10")
            .stdin(sql.as_bytes().to_vec())
            .timeout(Duration::from_secs(120))
            .run()
            .await
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.life.log_path(), lines)
    }

    /// Path of the server log.
    pub fn log_path(&self) -> PathBuf {
        self.life.log_path()
    }
}

struct Binaries {
    server: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
}

impl Binaries {
    fn find() -> Result<Binaries> {
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::var_os("POWERSYNC_MARIADB_BIN").filter(|v| !v.is_empty()) {
            dirs.push(PathBuf::from(dir));
        }
        dirs.extend(
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
                .into_iter()
                .map(PathBuf::from),
        );
        let find = |names: &[&str]| names.iter().find_map(|name| find_program(name, &dirs));
        let missing = |program: &str| {
            TestkitError::missing(
                "MariaDB",
                format!(
                    "`{program}` not found in /usr/sbin, /usr/bin or PATH: install with \
                     `apt-get install mariadb-server mariadb-client`, or set \
                     POWERSYNC_MARIADB_BIN to the directory holding it"
                ),
            )
        };
        Ok(Binaries {
            server: find(&["mariadbd", "mysqld"]).ok_or_else(|| missing("mariadbd"))?,
            install_db: find(&["mariadb-install-db", "mysql_install_db"])
                .ok_or_else(|| missing("mariadb-install-db"))?,
            client: find(&["mariadb", "mysql"]).ok_or_else(|| missing("mariadb"))?,
        })
    }
}

fn start_error(life: &Lifecycle, port: u16, outcome: Readiness, timeout: Duration) -> TestkitError {
    let what = match outcome {
        Readiness::Exited(status) => format!("exited ({status})"),
        Readiness::TimedOut => format!("did not accept connections within {timeout:?}"),
        Readiness::Ready => "started".to_owned(),
    };
    TestkitError::failed(format!(
        "MariaDB on 127.0.0.1:{port} {what}; log {}:\n{}",
        life.log_path().display(),
        log_tail(&life.log_path(), 30)
    ))
}

/// Whether the server sends a protocol-10 handshake (rather than refusing or an error packet).
async fn accepts_connections(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.ok()?;
        Some(header[4] == 10)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
