//! One campaign: a source server, the proxy, the system under test, the workload, the checkers
//! and the fault schedule, run together for the fault window; then convergence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bank::{Bank, BankSettings, Outcome, Planner, TABLE};
use crate::check::{differences, StateChecker, Violation};
use crate::error::{ChaosError, Result};
use crate::mirror_file::MirrorFile;
use crate::proxy::{Proxy, ProxyMode};
use crate::schedule::{Fault, FaultKind, Schedule, ScheduleSettings};
use crate::source::{SourceKind, SourceServer};
use crate::target::{Exit, Process, ProcessCommand};

/// The system under test and its binaries.
#[derive(Debug, Clone)]
pub enum Target {
    /// `mirror <source> <file>`.
    Mirror {
        /// The `mirror` binary.
        mirror: PathBuf,
    },
    /// `publish <source> --nats …` → `nats-server -js` → `consume --nats … --db <file>`.
    JetStream {
        /// The `publish` binary.
        publish: PathBuf,
        /// The `consume` binary.
        consume: PathBuf,
        /// The `nats-server` binary.
        nats_server: PathBuf,
    },
}

impl Target {
    /// `mirror` or `jetstream`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Mirror { .. } => "mirror",
            Target::JetStream { .. } => "jetstream",
        }
    }
}

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct CampaignSettings {
    /// The source.
    pub kind: SourceKind,
    /// Seed of the fault schedule and the workload's choices.
    pub seed: u64,
    /// The fault schedule's settings (its window is the campaign's length).
    pub schedule: ScheduleSettings,
    /// The workload.
    pub bank: BankSettings,
    /// Upper bound on workload transactions per second.
    pub rate: u32,
    /// The system under test.
    pub target: Target,
    /// Extra arguments of the connector process (`mirror` or `publish`).
    pub target_args: Vec<String>,
    /// Directory for the SQLite file and logs (kept after the campaign).
    pub work_dir: PathBuf,
    /// How long the copy may take to equal the source once faults and writes stop.
    pub converge_within: Duration,
    /// How often the checkers read the copy.
    pub poll: Duration,
}

/// A violation with when and after which faults it was seen.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Seconds since the fault window started (negative: before it).
    pub at_secs: f64,
    /// What was violated.
    pub violation: Violation,
    /// The last faults injected before it.
    pub after_faults: Vec<String>,
}

/// What a campaign did and found.
#[derive(Debug, Clone, Default)]
pub struct CampaignReport {
    /// The source.
    pub kind: Option<SourceKind>,
    /// The seed.
    pub seed: u64,
    /// Faults injected, by kind.
    pub faults: Vec<(FaultKind, usize)>,
    /// The faults as injected (`t+12.3s restart-server for 2.0s`).
    pub fault_log: Vec<String>,
    /// Committed workload transactions, by operation.
    pub transactions: BTreeMap<&'static str, u64>,
    /// Operations rolled back because a row was missing (stale view after an uncertain one).
    pub skipped: u64,
    /// Operations whose outcome is unknown (the connection broke during them).
    pub uncertain: u64,
    /// Distinct committed states of the copy seen.
    pub states: u64,
    /// Of those, states checked (after the initial snapshot).
    pub states_checked: u64,
    /// Per process of the system under test: its name, how many times it was started, and
    /// how many times the runner SIGKILLed it.
    pub processes: Vec<(&'static str, u64, u64)>,
    /// Exits of those processes the runner did not cause.
    pub exits: Vec<Exit>,
    /// Seconds from the end of faults and writes until the copy equalled the source.
    pub converged_after: Option<f64>,
    /// Violations.
    pub findings: Vec<Finding>,
    /// Connections the proxy forwarded, refused and dropped.
    pub proxy: (u64, u64, u64),
    /// What the source reports about how it sent the changes (PostgreSQL: transactions
    /// streamed in progress and spilled since its last start), one line, if it has such.
    pub source_note: Option<String>,
}

impl CampaignReport {
    /// Committed workload transactions.
    pub fn committed(&self) -> u64 {
        self.transactions.values().sum()
    }
}

/// State shared by the campaign's tasks.
#[derive(Debug)]
struct Shared {
    started: Instant,
    /// Set when the fault window ends: the workload stops.
    stop_workload: AtomicBool,
    /// Set when the campaign ends: the checker and the supervisor stop.
    stop_all: AtomicBool,
    findings: Mutex<Vec<Finding>>,
    fault_log: Mutex<Vec<String>>,
}

impl Shared {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn report(&self, violation: Violation) {
        let after_faults = lock(&self.fault_log)
            .iter()
            .rev()
            .take(3)
            .rev()
            .cloned()
            .collect();
        lock(&self.findings).push(Finding {
            at_secs: self.elapsed(),
            violation,
            after_faults,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Runs one campaign and reports. `progress` receives one line per notable event (faults,
/// mirror exits, violations) as they happen.
pub async fn run(
    settings: &CampaignSettings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<CampaignReport> {
    std::fs::create_dir_all(&settings.work_dir)
        .map_err(|e| ChaosError::io(format!("creating {}", settings.work_dir.display()), e))?;
    let schedule = Schedule::plan(settings.seed, &settings.schedule);
    let server = Arc::new(SourceServer::start(settings.kind).await?);
    progress(&format!(
        "{} server on 127.0.0.1:{}",
        settings.kind,
        server.port()
    ));
    let mut bank = server.bank().await?;
    bank.create(&settings.bank).await?;

    let upstream: SocketAddr = ([127, 0, 0, 1], server.port()).into();
    let proxy = Arc::new(
        Proxy::start(upstream)
            .await
            .map_err(|e| ChaosError::io("starting the proxy", e))?,
    );
    let name = format!("{}-{}", settings.kind, settings.target.name());
    let sqlite = settings.work_dir.join(format!("{name}.sqlite"));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = sqlite.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let processes = Arc::new(tokio::sync::Mutex::new(
        system_under_test(settings, &name, &server.url_at(proxy.port()), &sqlite).await?,
    ));

    // The initial snapshot runs without faults or writes: a fuzzy snapshot (MongoDB) is only
    // consistent once its replay window has passed, and its states are not checked anyway.
    let mut file = MirrorFile::new(&sqlite);
    let snapshot_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(state) = file.read(false)? {
            if state.is_streaming() && state.rows.len() == settings.bank.accounts as usize {
                break;
            }
        }
        let exited = processes.lock().await.exited();
        if let Some((process, status, log)) = exited {
            return Err(ChaosError::Other(format!(
                "{process} exited ({status}) before the initial snapshot was done:\n{log}"
            )));
        }
        if Instant::now() > snapshot_deadline {
            return Err(ChaosError::Other(format!(
                "the initial snapshot was not done within 120 s:\n{}",
                processes.lock().await.log_tails(20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress("initial snapshot done; faults and workload start");

    let shared = Arc::new(Shared {
        started: Instant::now(),
        stop_workload: AtomicBool::new(false),
        stop_all: AtomicBool::new(false),
        findings: Mutex::new(Vec::new()),
        fault_log: Mutex::new(Vec::new()),
    });

    let expected_total = settings.bank.total();
    let checker = {
        let shared = shared.clone();
        let poll = settings.poll;
        let exact_images = settings.kind.exact_row_images();
        std::thread::spawn(move || -> Result<(u64, u64)> {
            let mut checker = StateChecker::new(expected_total);
            if !exact_images {
                checker = checker.without_totals();
            }
            while !shared.stop_all.load(Ordering::Relaxed) {
                if let Some(state) = file.read(false)? {
                    for v in checker.observe(state) {
                        shared.report(v);
                    }
                }
                std::thread::sleep(poll);
            }
            Ok((checker.states(), checker.checked()))
        })
    };

    let exits: Arc<Mutex<Vec<Exit>>> = Arc::default();
    let supervisor = {
        let shared = shared.clone();
        let processes = processes.clone();
        let exits = exits.clone();
        tokio::spawn(async move {
            while !shared.stop_all.load(Ordering::Relaxed) {
                let down = {
                    let mut p = processes.lock().await;
                    while let Some((process, status, log_tail)) = p.exited() {
                        // Nothing asked it to stop: a connector's stream (or `consume`) must
                        // not end by itself.
                        if status.success() {
                            shared.report(Violation::StreamEnded {
                                log_tail: format!("{process}: {log_tail}"),
                            });
                        }
                        lock(&exits).push(Exit {
                            process,
                            at_secs: shared.elapsed(),
                            status: status.to_string(),
                            log_tail,
                        });
                    }
                    // Exited on its own, or killed by a fault.
                    p.any_down()
                };
                if down {
                    // Like a process supervisor: a short pause, then start it again.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Err(e) = processes.lock().await.start_all().await {
                        tracing_line(&shared, &format!("could not restart a process: {e}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let workload = {
        let shared = shared.clone();
        let server = server.clone();
        let planner = Planner::new(settings.seed, settings.bank.clone());
        let rate = settings.rate.max(1);
        tokio::spawn(run_workload(shared, server, bank, planner, rate))
    };

    // The fault schedule.
    for fault in &schedule.faults {
        let start = shared.started + fault.at;
        tokio::time::sleep_until(start.into()).await;
        let line = fault.to_string();
        lock(&shared.fault_log).push(line.clone());
        progress(&format!("fault {line}"));
        inject(fault, &server, &proxy, &processes).await?;
    }
    let window_end = shared.started + settings.schedule.window;
    tokio::time::sleep_until(window_end.into()).await;

    // Heal, stop writing, and wait for the copy to equal the source.
    proxy.set_mode(ProxyMode::Pass);
    if !server.is_running().await {
        server.restart().await?;
    }
    let _ = server.resume().await;
    shared.stop_workload.store(true, Ordering::Relaxed);
    let workload = workload
        .await
        .map_err(|e| ChaosError::Other(format!("the workload task failed: {e}")))?;
    progress(&format!(
        "faults and writes stopped after {:.1} s; waiting for convergence",
        shared.elapsed()
    ));
    let quiet = Instant::now();
    let mut source_bank = reconnect(&server, &shared, true).await?;
    let mut final_file = MirrorFile::new(&sqlite);
    let mut converged_after = None;
    let mut last_differences = Vec::new();
    let source_rows = source_bank.rows().await?;
    let source_total = source_rows
        .iter()
        .fold(0i64, |sum, r| sum.saturating_add(r.balance));
    if source_total != expected_total {
        shared.report(Violation::SourceTotal {
            total: source_total,
            expected: expected_total,
        });
    }
    while quiet.elapsed() < settings.converge_within {
        if let Some(state) = final_file.read(true)? {
            last_differences = differences(&source_rows, &state.rows, 5);
            if last_differences.is_empty() {
                converged_after = Some(quiet.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let source_note = match &source_bank {
        Bank::Postgres(b) => b
            .streamed_transactions()
            .await
            .ok()
            .map(|(streamed, spilled)| {
                format!(
                    "transactions streamed in progress {streamed}, spilled by the server \
                 {spilled} (since its last start)"
                )
            }),
        _ => None,
    };
    if converged_after.is_none() {
        shared.report(Violation::NotConverged {
            waited_secs: quiet.elapsed().as_secs_f64(),
            differences: last_differences,
        });
    }

    shared.stop_all.store(true, Ordering::Relaxed);
    let _ = supervisor.await;
    let (states, states_checked) = checker
        .join()
        .map_err(|_| ChaosError::Other("the checker thread panicked".into()))??;
    let mut p = processes.lock().await;
    p.stop_all().await;
    let report = CampaignReport {
        kind: Some(settings.kind),
        seed: settings.seed,
        faults: schedule.counts(),
        fault_log: lock(&shared.fault_log).clone(),
        transactions: workload.committed,
        skipped: workload.skipped,
        uncertain: workload.uncertain,
        states,
        states_checked,
        processes: p
            .list
            .iter()
            .map(|p| (p.name(), p.starts(), p.kills()))
            .collect(),
        exits: lock(&exits).clone(),
        converged_after,
        findings: lock(&shared.findings).clone(),
        proxy: (
            proxy.counters().accepted(),
            proxy.counters().refused(),
            proxy.counters().dropped(),
        ),
        source_note,
    };
    Ok(report)
}

fn tracing_line(shared: &Shared, line: &str) {
    lock(&shared.fault_log).push(format!("t+{:.1}s {line}", shared.elapsed()));
}

/// Injects one fault and waits for its hold time to pass (then heals it).
async fn inject(
    fault: &Fault,
    server: &SourceServer,
    proxy: &Proxy,
    processes: &tokio::sync::Mutex<Processes>,
) -> Result<()> {
    match fault.kind {
        FaultKind::KillTarget => processes.lock().await.kill(0).await?,
        FaultKind::KillNats => processes.lock().await.kill_named("nats-server").await?,
        FaultKind::KillConsumer => processes.lock().await.kill_named("consume").await?,
        FaultKind::RestartServer => {
            server.kill().await?;
            tokio::time::sleep(fault.hold).await;
            server.restart().await?;
        }
        FaultKind::PauseServer => {
            server.pause().await?;
            tokio::time::sleep(fault.hold).await;
            server.resume().await?;
        }
        FaultKind::DropConnections => proxy.drop_all(),
        FaultKind::BlackHole => {
            proxy.set_mode(ProxyMode::BlackHole);
            tokio::time::sleep(fault.hold).await;
            // The far end is gone for good: the connections that fell into the hole end.
            proxy.drop_all();
            proxy.set_mode(ProxyMode::Pass);
        }
        FaultKind::Trickle => {
            proxy.set_mode(ProxyMode::Trickle {
                chunk: 64,
                delay: Duration::from_millis(20),
            });
            tokio::time::sleep(fault.hold).await;
            proxy.set_mode(ProxyMode::Pass);
        }
        FaultKind::RefuseConnections => {
            // Open connections are cut too, so the connector's reconnects meet the refusal.
            proxy.set_mode(ProxyMode::Refuse);
            proxy.drop_all();
            tokio::time::sleep(fault.hold).await;
            proxy.set_mode(ProxyMode::Pass);
        }
    }
    Ok(())
}

/// What the workload did.
#[derive(Debug, Default)]
struct WorkloadTally {
    committed: BTreeMap<&'static str, u64>,
    skipped: u64,
    uncertain: u64,
}

/// How long one workload transaction may take before its connection is given up.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_workload(
    shared: Arc<Shared>,
    server: Arc<SourceServer>,
    mut bank: Bank,
    mut planner: Planner,
    rate: u32,
) -> WorkloadTally {
    let mut tally = WorkloadTally::default();
    let pace = Duration::from_secs(1) / rate;
    let mut bank_ok = true;
    while !shared.stop_workload.load(Ordering::Relaxed) {
        if !bank_ok {
            match reconnect(&server, &shared, false).await {
                Ok(mut b) => {
                    // The last operation's outcome is unknown: ask the source what exists.
                    match tokio::time::timeout(OP_TIMEOUT, b.rows()).await {
                        Ok(Ok(rows)) => {
                            planner.resync(rows.iter().map(|r| r.id));
                            bank = b;
                            bank_ok = true;
                        }
                        _ => continue,
                    }
                }
                Err(_) => break,
            }
        }
        let op = planner.next_op();
        match tokio::time::timeout(OP_TIMEOUT, bank.apply(&op)).await {
            Ok(Ok(Outcome::Committed)) => {
                planner.committed(&op);
                *tally.committed.entry(op.name()).or_default() += 1;
            }
            Ok(Ok(Outcome::Skipped)) => tally.skipped += 1,
            Ok(Err(_)) | Err(_) => {
                tally.uncertain += 1;
                bank_ok = false;
            }
        }
        tokio::time::sleep(pace).await;
    }
    tally
}

/// Connects a workload client, retrying while the server is down. Gives up when the workload
/// is told to stop (unless `until_connected`), or after two minutes.
async fn reconnect(server: &SourceServer, shared: &Shared, until_connected: bool) -> Result<Bank> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout(OP_TIMEOUT, server.bank()).await {
            Ok(Ok(bank)) => return Ok(bank),
            Ok(Err(e)) if Instant::now() > deadline => return Err(e),
            _ if Instant::now() > deadline => {
                return Err(ChaosError::Other(
                    "could not reconnect to the source within 120 s".into(),
                ))
            }
            _ => {}
        }
        if !until_connected && shared.stop_workload.load(Ordering::Relaxed) {
            return Err(ChaosError::Other("the workload stopped".into()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The processes of the system under test; the first is the connector process.
#[derive(Debug)]
struct Processes {
    list: Vec<Process>,
    /// `nats-server`'s port: the other processes start once it accepts connections.
    nats_port: Option<u16>,
}

impl Processes {
    /// Starts every process that does not run (`nats-server` first, and the others once it
    /// listens).
    async fn start_all(&mut self) -> Result<()> {
        for i in 0..self.list.len() {
            let is_nats = self.list[i].name() == "nats-server";
            if is_nats && !self.list[i].is_running() {
                self.list[i].start()?;
                if let Some(port) = self.nats_port {
                    wait_for_port(port, Duration::from_secs(10)).await;
                }
            }
        }
        for p in &mut self.list {
            p.start()?;
        }
        Ok(())
    }

    fn any_down(&self) -> bool {
        self.list.iter().any(|p| !p.is_running())
    }

    /// A process that exited on its own: its name, status and last log lines.
    fn exited(&mut self) -> Option<(&'static str, std::process::ExitStatus, String)> {
        self.list
            .iter_mut()
            .find_map(|p| p.exited().map(|status| (p.name(), status, p.log_tail(8))))
    }

    fn log_tails(&self, lines: usize) -> String {
        self.list
            .iter()
            .map(|p| format!("{}:\n{}", p.name(), p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn kill(&mut self, i: usize) -> Result<()> {
        match self.list.get_mut(i) {
            Some(p) => p.kill().await,
            None => Ok(()),
        }
    }

    async fn kill_named(&mut self, name: &str) -> Result<()> {
        match self.list.iter_mut().find(|p| p.name() == name) {
            Some(p) => p.kill().await,
            None => Ok(()),
        }
    }

    async fn stop_all(&mut self) {
        for p in &mut self.list {
            p.stop().await;
        }
    }
}

/// Waits (bounded) until 127.0.0.1:`port` accepts a TCP connection.
async fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the system under test: `mirror`, or `nats-server`, `publish` and `consume`.
async fn system_under_test(
    settings: &CampaignSettings,
    name: &str,
    source_url: &str,
    sqlite: &std::path::Path,
) -> Result<Processes> {
    let dir = &settings.work_dir;
    let log = |process: &str| {
        let path = dir.join(format!("{name}-{process}.log"));
        let _ = std::fs::remove_file(&path);
        path
    };
    let sqlite = sqlite.display().to_string();
    let mut processes = match &settings.target {
        Target::Mirror { mirror } => {
            let mut args = vec![
                source_url.to_owned(),
                sqlite,
                "--table".into(),
                TABLE.into(),
            ];
            args.extend(settings.target_args.iter().cloned());
            Processes {
                list: vec![Process::new(ProcessCommand {
                    name: "mirror",
                    program: mirror.clone(),
                    args,
                    log: log("mirror"),
                })],
                nats_port: None,
            }
        }
        Target::JetStream {
            publish,
            consume,
            nats_server,
        } => {
            let port = powersync_source_testkit::free_port()
                .map_err(|e| ChaosError::server("choosing a port for nats-server", e))?;
            let store = dir.join(format!("{name}-nats"));
            let _ = std::fs::remove_dir_all(&store);
            let nats = format!("nats://127.0.0.1:{port}");
            let mut publish_args = vec![
                source_url.to_owned(),
                "--nats".into(),
                nats.clone(),
                "--table".into(),
                TABLE.into(),
            ];
            publish_args.extend(settings.target_args.iter().cloned());
            Processes {
                list: vec![
                    Process::new(ProcessCommand {
                        name: "publish",
                        program: publish.clone(),
                        args: publish_args,
                        log: log("publish"),
                    }),
                    Process::new(ProcessCommand {
                        name: "nats-server",
                        program: nats_server.clone(),
                        args: vec![
                            "-js".into(),
                            "-a".into(),
                            "127.0.0.1".into(),
                            "-p".into(),
                            port.to_string(),
                            "-sd".into(),
                            store.display().to_string(),
                        ],
                        log: log("nats"),
                    }),
                    Process::new(ProcessCommand {
                        name: "consume",
                        program: consume.clone(),
                        args: vec!["--nats".into(), nats, "--db".into(), sqlite],
                        log: log("consume"),
                    }),
                ],
                nats_port: Some(port),
            }
        }
    };
    processes.start_all().await?;
    Ok(processes)
}
