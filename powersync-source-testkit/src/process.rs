//! Child-process plumbing shared by the starters: spawning a server into its own process group
//! with its output in a log file, signalling it, waiting for it, plus small helpers (users,
//! programs on disk, helper commands, lock files).

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::{Result, TestkitError};

/// An operating-system user to run a server as.
#[derive(Debug, Clone)]
pub(crate) struct UnixUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Whether this process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks a user up in the password database.
pub(crate) fn lookup_user(name: &str) -> Option<UnixUser> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; an all-zero value is valid and getpwnam_r overwrites it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf` is as long as stated.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(UnixUser {
        name: name.to_owned(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Gives `path` to `user` (no-op without a user).
pub(crate) fn chown_to(path: &Path, user: Option<&UnixUser>) -> Result<()> {
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
            TestkitError::io(
                format!("giving {} to user {}", path.display(), user.name),
                e,
            )
        })?;
    }
    Ok(())
}

/// Whether `path` is an executable regular file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds `name` in the first of `dirs` that holds it, then on `PATH`.
pub(crate) fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The last `lines` lines of a log file (or a note saying it could not be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Renders a command line for error messages.
fn describe(program: &Path, args: &[OsString]) -> String {
    let mut s = program.display().to_string();
    for arg in args {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Tail of a helper command's output for error messages.
fn output_tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A helper command to run to completion (initdb, psql, pip, …).
#[derive(Debug)]
pub(crate) struct Helper {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    user: Option<UnixUser>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Helper {
    pub(crate) fn new(program: impl Into<PathBuf>) -> Self {
        Helper {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            user: None,
            cwd: None,
            stdin: None,
            timeout: Duration::from_secs(120),
        }
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub(crate) fn user(mut self, user: Option<&UnixUser>) -> Self {
        self.user = user.cloned();
        self
    }

    pub(crate) fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub(crate) fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the command; returns its stdout, or an error with its stderr when it fails.
    pub(crate) async fn run(self) -> Result<String> {
        let shown = describe(&self.program, &self.args);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid).env("USER", &user.name);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| TestkitError::io(format!("running `{shown}`"), e))?;
        if let (Some(input), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            // A helper that exits early closes its stdin; its exit status tells the story.
            let _ = pipe.write_all(&input).await;
            drop(pipe);
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                TestkitError::failed(format!(
                    "`{shown}` did not finish within {:?}",
                    self.timeout
                ))
            })?
            .map_err(|e| TestkitError::io(format!("waiting for `{shown}`"), e))?;
        if !output.status.success() {
            return Err(TestkitError::failed(format!(
                "`{shown}` failed ({}):\n{}{}",
                output.status,
                output_tail(&output.stderr),
                if output.stderr.is_empty() {
                    output_tail(&output.stdout)
                } else {
                    String::new()
                }
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// An exclusive `flock` on a file, held until dropped (guards installs shared between test
/// processes).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks (on a blocking thread) until the lock on `path` is ours.
    pub(crate) async fn acquire(path: PathBuf) -> Result<FileLock> {
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<FileLock> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            use std::os::fd::AsRawFd;
            loop {
                // SAFETY: the descriptor is open for the whole call.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
                if rc == 0 {
                    return Ok(FileLock { _file: file });
                }
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        })
        .await
        .map_err(|e| TestkitError::failed(format!("locking {shown}: {e}")))?
        .map_err(|e| TestkitError::io(format!("locking {shown}"), e))
    }
}

/// How to (re)start a server process.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) envs: Vec<(OsString, OsString)>,
    pub(crate) user: Option<UnixUser>,
    pub(crate) cwd: PathBuf,
    pub(crate) log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<Running> {
        let shown = describe(&self.program, &self.args);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| TestkitError::io(format!("opening {}", self.log.display()), e))?;
        let _ = writeln!(log, "--- testkit: starting `{shown}` ---");
        let log_err = log
            .try_clone()
            .map_err(|e| TestkitError::io(format!("opening {}", self.log.display()), e))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own process group, so signals reach the server's helper processes too.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid).env("USER", &user.name);
        }
        let child = cmd
            .spawn()
            .map_err(|e| TestkitError::io(format!("starting `{shown}`"), e))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| TestkitError::failed(format!("`{shown}` exited immediately")))?;
        Ok(Running { child, pid })
    }
}

#[derive(Debug)]
struct Running {
    child: Child,
    /// Process id, which is also the process group id.
    pid: i32,
}

impl Running {
    /// Whether the leader has not been reaped yet, so its pid (and group id) are still ours
    /// and cannot have been reused.
    fn unreaped(&self) -> bool {
        self.child.id().is_some()
    }

    fn signal(&self, signal: libc::c_int) {
        if self.unreaped() {
            send(self.pid, signal);
        }
    }

    /// Signals the leader, its process group, and every descendant: PostgreSQL's children
    /// call `setsid()`, so they are not in the leader's group. With SIGSTOP the leader goes
    /// first (so it cannot fork meanwhile), with anything else it goes last.
    fn signal_tree(&self, signal: libc::c_int) {
        if !self.unreaped() {
            return;
        }
        if signal == libc::SIGSTOP {
            self.signal(signal);
        }
        for pid in descendants(self.pid) {
            send(pid, signal);
        }
        send(-self.pid, signal);
        self.signal(signal);
    }

    async fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    /// SIGKILLs the leader, its group and all descendants, and waits until the leader is
    /// reaped and the others are gone (bounded: they are reaped by init, not by us).
    async fn kill_group(&mut self) {
        if !self.unreaped() {
            return;
        }
        self.signal(libc::SIGSTOP);
        let others = descendants(self.pid);
        self.signal_tree(libc::SIGKILL);
        let _ = self.wait_for(Duration::from_secs(10)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && others.iter().any(|p| alive(*p)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn send(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether a process exists (or is a zombie not reaped yet).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// All descendants of `root` (children, their children, …), from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == parent && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// What became of a server while waiting for it to accept connections.
#[derive(Debug)]
pub(crate) enum Readiness {
    Ready,
    /// The process exited; carries its exit status.
    Exited(String),
    TimedOut,
}

/// One server process: started, stopped, killed, paused and restarted from the same [`Launch`].
/// Dropping it SIGKILLs the process, its group and its descendants.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    name: &'static str,
    launch: std::sync::Mutex<Launch>,
    stop_signal: libc::c_int,
    stop_timeout: Duration,
    running: Mutex<Option<Running>>,
}

impl Lifecycle {
    pub(crate) fn new(
        name: &'static str,
        launch: Launch,
        stop_signal: libc::c_int,
        stop_timeout: Duration,
    ) -> Self {
        Lifecycle {
            name,
            launch: std::sync::Mutex::new(launch),
            stop_signal,
            stop_timeout,
            running: Mutex::new(None),
        }
    }

    fn launch(&self) -> Launch {
        match self.launch.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the launch arguments (used when a start is retried on another port).
    pub(crate) fn set_args(&self, args: Vec<OsString>) {
        match self.launch.lock() {
            Ok(mut l) => l.args = args,
            Err(poisoned) => poisoned.into_inner().args = args,
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.launch().log
    }

    /// Starts the process unless it is running.
    pub(crate) async fn spawn(&self) -> Result<()> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_mut() {
            if r.child.try_wait().ok().flatten().is_none() {
                return Err(TestkitError::failed(format!(
                    "{} is already running (stop or kill it before restarting)",
                    self.name
                )));
            }
            // It died on its own: make sure nothing of the old group is left.
            r.kill_group().await;
        }
        *running = Some(self.launch().spawn()?);
        Ok(())
    }

    /// Whether the process is alive (paused counts as alive).
    pub(crate) async fn is_running(&self) -> bool {
        let mut running = self.running.lock().await;
        match running.as_mut() {
            Some(r) => r.child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Polls `probe` every 50 ms until it returns true, the process exits, or `timeout`.
    pub(crate) async fn wait_ready<F, Fut>(&self, timeout: Duration, mut probe: F) -> Readiness
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut running = self.running.lock().await;
                match running.as_mut() {
                    None => return Readiness::Exited("not started".into()),
                    Some(r) => {
                        if let Ok(Some(status)) = r.child.try_wait() {
                            // Take down whatever it left behind.
                            r.kill_group().await;
                            *running = None;
                            return Readiness::Exited(status.to_string());
                        }
                    }
                }
            }
            if probe().await {
                return Readiness::Ready;
            }
            if Instant::now() >= deadline {
                return Readiness::TimedOut;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clean shutdown: the stop signal to the leader, then SIGKILL to everything if it is not
    /// gone within the stop timeout. A no-op when not running.
    pub(crate) async fn stop(&self) -> Result<()> {
        let mut running = self.running.lock().await;
        if let Some(mut r) = running.take() {
            r.signal_tree(libc::SIGCONT);
            r.signal(self.stop_signal);
            if r.wait_for(self.stop_timeout).await.is_none() {
                tracing::warn!(
                    server = self.name,
                    "did not stop within {:?}; killing it",
                    self.stop_timeout
                );
            }
            r.kill_group().await;
        }
        Ok(())
    }

    /// SIGKILL to the process, its group and its descendants, like a crash. A no-op when not
    /// running.
    pub(crate) async fn kill(&self) -> Result<()> {
        let mut running = self.running.lock().await;
        if let Some(mut r) = running.take() {
            r.kill_group().await;
        }
        Ok(())
    }

    /// SIGSTOP / SIGCONT to the server and all its descendants.
    pub(crate) async fn signal_tree(&self, signal: libc::c_int) -> Result<()> {
        let running = self.running.lock().await;
        match running.as_ref() {
            Some(r) => {
                r.signal_tree(signal);
                Ok(())
            }
            None => Err(TestkitError::failed(format!(
                "{} is not running",
                self.name
            ))),
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(r) = self.running.get_mut().as_mut() {
            r.signal(libc::SIGSTOP);
            r.signal_tree(libc::SIGKILL);
            // Reap the leader so its data directory can go; bounded, and blocking only briefly.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match r.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    _ => break,
                }
            }
        }
    }
}
