//! Throwaway SecantusDB servers: a MongoDB-wire-compatible server (Python, on WiredTiger) from
//! PyPI (`secantusdb`, GPL — a test tool only, never a library dependency).
//!
//! # Installation
//! On first use, [`SecantusServer`] creates a virtualenv (`python3 -m venv`) at
//! `$POWERSYNC_SECANTUS_VENV`, default `/tmp/powersync-secantus-venv`, and installs
//! [`SECANTUS_PACKAGE`] into it with pip (about 10 s; it pulls in `pymongo`). A lock file next to
//! the virtualenv (`<venv>.lock`) keeps parallel tests from installing at the same time, and a
//! marker in the virtualenv records the installed version so later runs start at once. A
//! virtualenv given in `$POWERSYNC_SECANTUS_VENV` that already imports `secantus` is used as is.
//!
//! # What it presents (secantusdb 0.7.0b3, checked by running it)
//! - `hello` reports a one-node replica set named `secantus` ([`REPLICA_SET`]), this node as
//!   writable primary, `hosts: ["127.0.0.1:PORT"]`, version 8.2.11, `maxWireVersion` 27. Both
//!   [`url`](SecantusServer::url) (`directConnection=true`) and
//!   [`replica_set_url`](SecantusServer::replica_set_url) (`replicaSet=secantus`) work.
//! - Change streams work on a collection, a database and the whole deployment, including
//!   `resumeAfter` with a resume token (`{_data: "<hex>"}`, treat as opaque), `clusterTime`, and
//!   `updateDescription`.
//! - Pre- and post-images: `changeStreamPreAndPostImages: {enabled: true}` on `create` (or
//!   `collMod`), then `fullDocumentBeforeChange: "required"|"whenAvailable"` gives the pre-image
//!   on update and delete, `fullDocument: "required"` the post-image on update;
//!   `fullDocument: "updateLookup"` reads the current document (null once it is deleted).
//! - Data survives stop, SIGKILL and restart on the same `--storage-path`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{
    find_program, is_executable, log_tail, FileLock, Helper, Launch, Lifecycle, Readiness,
};
use crate::{free_port, Result, TestkitError};

/// The pip requirement installed into the virtualenv.
pub const SECANTUS_PACKAGE: &str = "secantusdb==0.7.0b3";

/// The replica-set name SecantusDB reports in `hello`.
pub const REPLICA_SET: &str = "secantus";

/// Default virtualenv location (overridden by `$POWERSYNC_SECANTUS_VENV`).
pub const DEFAULT_VENV: &str = "/tmp/powersync-secantus-venv";

const MARKER: &str = ".powersync-installed";

/// Options for a [`SecantusServer`]; start it with [`SecantusBuilder::start`].
#[derive(Debug, Clone)]
pub struct SecantusBuilder {
    venv: Option<PathBuf>,
    args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for SecantusBuilder {
    fn default() -> Self {
        SecantusBuilder {
            venv: None,
            args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl SecantusBuilder {
    /// Use (and if needed, create) the virtualenv at `dir` instead of the default.
    pub fn venv(mut self, dir: impl Into<PathBuf>) -> Self {
        self.venv = Some(dir.into());
        self
    }

    /// An extra server argument (see `python -m secantus --help`), e.g.
    /// `"--oplog-max-entries=100"` or `"--noop-heartbeat-seconds=1"`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long to wait for the server to answer `hello` (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Installs SecantusDB if needed, starts a server on a fresh storage directory and waits
    /// until it answers `hello`.
    pub async fn start(self) -> Result<SecantusServer> {
        let (venv, explicit) = match self.venv {
            Some(dir) => (dir, true),
            None => match std::env::var_os("POWERSYNC_SECANTUS_VENV").filter(|v| !v.is_empty()) {
                Some(dir) => (PathBuf::from(dir), true),
                None => (PathBuf::from(DEFAULT_VENV), false),
            },
        };
        let python = ensure_installed(&venv, explicit).await?;

        let dir = tempfile::Builder::new()
            .prefix("powersync-secantus-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating a temporary directory", e))?;
        let storage = dir.path().join("data");
        // An explicit (empty) config file turns off the discovery of ./secantusd.toml,
        // ~/.secantus/secantusd.toml and /etc/secantus/secantusd.toml.
        let config = dir.path().join("secantusd.toml");
        std::fs::write(&config, "")
            .map_err(|e| TestkitError::io(format!("writing {}", config.display()), e))?;

        let build_args = |port: u16| -> Vec<OsString> {
            let mut args: Vec<OsString> = vec!["-m".into(), "secantus".into()];
            args.push("--config".into());
            args.push(config.clone().into());
            args.extend(["--host".into(), "127.0.0.1".into(), "--port".into()]);
            args.push(port.to_string().into());
            args.push("--storage-path".into());
            args.push(storage.clone().into());
            args.extend(self.args.iter().map(OsString::from));
            args
        };

        let mut port = free_port()?;
        let life = Lifecycle::new(
            "SecantusDB",
            Launch {
                program: python.clone(),
                args: build_args(port),
                envs: vec![("PYTHONUNBUFFERED".into(), "1".into())],
                user: None,
                cwd: dir.path().to_path_buf(),
                log: dir.path().join("secantus.log"),
            },
            libc::SIGTERM,
            Duration::from_secs(30),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            life.spawn().await?;
            match life
                .wait_ready(self.startup_timeout, || answers_hello(port))
                .await
            {
                Readiness::Ready => break,
                Readiness::Exited(status)
                    if attempt < 5
                        && log_tail(&life.log_path(), 20).contains("ddress already in use") =>
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

        Ok(SecantusServer {
            life,
            port,
            python,
            storage,
            startup_timeout: self.startup_timeout,
            dir,
        })
    }
}

/// A SecantusDB server on 127.0.0.1 (a one-node replica set `secantus` with change streams and
/// pre/post images; see the [module docs](self)), storing into a temporary directory removed on
/// drop (the server is SIGKILLed first). Output goes to `secantus.log` in that directory.
#[derive(Debug)]
pub struct SecantusServer {
    // Declared before `dir`: the server dies before its directory is removed.
    life: Lifecycle,
    port: u16,
    python: PathBuf,
    storage: PathBuf,
    startup_timeout: Duration,
    dir: tempfile::TempDir,
}

impl SecantusServer {
    /// Options for a new server.
    pub fn builder() -> SecantusBuilder {
        SecantusBuilder::default()
    }

    /// Starts a server with the default options.
    pub async fn start() -> Result<SecantusServer> {
        SecantusBuilder::default().start().await
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// `mongodb://127.0.0.1:PORT/?replicaSet=secantus` (replica-set discovery).
    pub fn replica_set_url(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?replicaSet={REPLICA_SET}",
            self.port
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The WiredTiger storage directory (`--storage-path`).
    pub fn data_dir(&self) -> &Path {
        &self.storage
    }

    /// The temporary directory holding the storage directory and the log.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The virtualenv's Python, which can `import pymongo` (for test helpers of your own).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Clean shutdown (SIGTERM). A no-op when the server is not running.
    pub async fn stop(&self) -> Result<()> {
        self.life.stop().await
    }

    /// SIGKILL, like a crash. A no-op when the server is not running.
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

    /// Starts the server again on the same port and storage (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill), or if it died) and waits until it answers `hello`.
    pub async fn restart(&self) -> Result<()> {
        self.life.spawn().await?;
        let port = self.port;
        match self
            .life
            .wait_ready(self.startup_timeout, || answers_hello(port))
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

    /// Runs a Python script with pymongo against this server and returns its stdout. The
    /// script starts with `pymongo` imported, `client` connected to [`url`](Self::url) and
    /// `db = client["test"]`, e.g. `server.pymongo("print(db.t.count_documents({}))")`.
    pub async fn pymongo(&self, script: &str) -> Result<String> {
        let program = format!(
            "import os, pymongo\n\
             client = pymongo.MongoClient(os.environ['POWERSYNC_MONGODB_URL'], \
             serverSelectionTimeoutMS=10000)\n\
             db = client['test']\n\
             {script}\n"
        );
        Helper::new(&self.python)
            .arg("-c")
            .arg(program)
            .env("POWERSYNC_MONGODB_URL", self.url())
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

fn start_error(life: &Lifecycle, port: u16, outcome: Readiness, timeout: Duration) -> TestkitError {
    let what = match outcome {
        Readiness::Exited(status) => format!("exited ({status})"),
        Readiness::TimedOut => format!("did not answer hello within {timeout:?}"),
        Readiness::Ready => "started".to_owned(),
    };
    TestkitError::failed(format!(
        "SecantusDB on 127.0.0.1:{port} {what}; log {}:\n{}",
        life.log_path().display(),
        log_tail(&life.log_path(), 30)
    ))
}

/// Makes sure `venv` holds SecantusDB; returns its Python.
async fn ensure_installed(venv: &Path, explicit: bool) -> Result<PathBuf> {
    let python = venv.join("bin").join("python");
    let marker = venv.join(MARKER);
    let installed = |marker: &Path| {
        std::fs::read_to_string(marker)
            .map(|v| v.trim() == SECANTUS_PACKAGE)
            .unwrap_or(false)
    };
    if installed(&marker) && is_executable(&python) {
        return Ok(python);
    }

    let lock_path = match (venv.parent(), venv.file_name()) {
        (Some(parent), Some(name)) => {
            let mut name = name.to_os_string();
            name.push(".lock");
            parent.join(name)
        }
        _ => PathBuf::from(format!("{}.lock", venv.display())),
    };
    let _lock = FileLock::acquire(lock_path).await?;
    if installed(&marker) && is_executable(&python) {
        return Ok(python);
    }
    if explicit
        && is_executable(&python)
        && Helper::new(&python)
            .args(["-c", "import secantus, pymongo"])
            .run()
            .await
            .is_ok()
    {
        return Ok(python);
    }

    let what = "SecantusDB";
    let base = find_program("python3", &[]).ok_or_else(|| {
        TestkitError::missing(
            what,
            "python3 is needed to install it: `apt-get install python3 python3-venv`",
        )
    })?;
    tracing::info!(venv = %venv.display(), "installing {SECANTUS_PACKAGE}");
    let _ = std::fs::remove_dir_all(venv);
    if let Err(err) = Helper::new(&base)
        .args(["-m", "venv"])
        .arg(venv)
        .run()
        .await
    {
        return Err(TestkitError::missing(
            what,
            format!(
                "could not create a virtualenv at {} (`apt-get install python3-venv`?): {err}",
                venv.display()
            ),
        ));
    }
    if let Err(err) = Helper::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .arg(SECANTUS_PACKAGE)
        .timeout(Duration::from_secs(900))
        .run()
        .await
    {
        return Err(TestkitError::missing(
            what,
            format!(
                "could not install {SECANTUS_PACKAGE} into {} with pip: {err}",
                venv.display()
            ),
        ));
    }
    std::fs::write(&marker, SECANTUS_PACKAGE)
        .map_err(|e| TestkitError::io(format!("writing {}", marker.display()), e))?;
    Ok(python)
}

/// Whether the server answers an OP_MSG `hello` on the admin database.
async fn answers_hello(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        // BSON {hello: 1, $db: "admin"}
        let mut doc = Vec::new();
        doc.push(0x10);
        doc.extend_from_slice(b"hello\0");
        doc.extend_from_slice(&1i32.to_le_bytes());
        doc.push(0x02);
        doc.extend_from_slice(b"$db\0");
        doc.extend_from_slice(&6i32.to_le_bytes());
        doc.extend_from_slice(b"admin\0");
        doc.push(0);
        let doc_len = i32::try_from(doc.len() + 4).ok()?;
        let mut body = Vec::new();
        body.extend_from_slice(&0u32.to_le_bytes()); // flagBits
        body.push(0); // section kind 0: body document
        body.extend_from_slice(&doc_len.to_le_bytes());
        body.extend_from_slice(&doc);
        let msg_len = i32::try_from(body.len() + 16).ok()?;
        let mut msg = Vec::new();
        msg.extend_from_slice(&msg_len.to_le_bytes());
        msg.extend_from_slice(&1i32.to_le_bytes()); // requestID
        msg.extend_from_slice(&0i32.to_le_bytes()); // responseTo
        msg.extend_from_slice(&2013i32.to_le_bytes()); // OP_MSG
        msg.extend_from_slice(&body);
        stream.write_all(&msg).await.ok()?;
        let mut header = [0u8; 16];
        stream.read_exact(&mut header).await.ok()?;
        let response_to = i32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let op_code = i32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        Some(response_to == 1 && op_code == 2013)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
