//! The system under test as black boxes: processes (`mirror`; or `publish`, `nats-server` and
//! `consume`) started, SIGKILLed and restarted by the runner like a process supervisor would.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::process::{Child, Command};

use crate::error::{ChaosError, Result};

/// How a process is run.
#[derive(Debug, Clone)]
pub struct ProcessCommand {
    /// Its name in reports (`mirror`, `publish`, …).
    pub name: &'static str,
    /// The binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where its stdout and stderr go (appended, across restarts).
    pub log: PathBuf,
}

/// An exit of a process the runner did not cause.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Which process.
    pub process: &'static str,
    /// Seconds since the campaign started.
    pub at_secs: f64,
    /// Its exit status.
    pub status: String,
    /// The last lines of its log.
    pub log_tail: String,
}

/// A supervised process.
#[derive(Debug)]
pub struct Process {
    command: ProcessCommand,
    child: Option<Child>,
    starts: u64,
    kills: u64,
}

impl Process {
    /// A supervisor for `command` (not started yet).
    pub fn new(command: ProcessCommand) -> Self {
        Process {
            command,
            child: None,
            starts: 0,
            kills: 0,
        }
    }

    /// The process's name.
    pub fn name(&self) -> &'static str {
        self.command.name
    }

    /// Starts the process (a no-op when it runs).
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let c = &self.command;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log)
            .map_err(|e| ChaosError::io(format!("opening {}", c.log.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ChaosError::io(format!("opening {}", c.log.display()), e))?;
        let child = Command::new(&c.program)
            .args(&c.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ChaosError::io(format!("starting {}", c.program.display()), e))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILLs the process and reaps it (a no-op when it does not run).
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            self.kills += 1;
            // `start_kill` sends SIGKILL; an already exited child is fine.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Stops the process at the end of a campaign (SIGKILL, not counted as a fault).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// If the process exited on its own, its status (and the process is forgotten, so the
    /// next [`start`](Self::start) runs it again).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How many times it was started.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// How many times the runner SIGKILLed it.
    pub fn kills(&self) -> u64 {
        self.kills
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.command.log, lines)
    }
}

/// The last `lines` lines of a text file.
pub fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(32 * 1024)))?;
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
