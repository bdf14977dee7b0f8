//! `chaos`: fault campaigns against the `mirror` binary.
//!
//! ```text
//! chaos [--source postgres|mariadb|secantus|all]... [--seconds 60] [--seed N]
//!       [--accounts 20] [--rate 40] [--faults KIND,...] [--mirror PATH] [--work-dir DIR]
//! ```
//!
//! For each source in turn: starts a throwaway server, creates the bank, starts `mirror`
//! through the fault proxy, waits for its initial snapshot, then runs the workload and the seeded
//! fault schedule for `--seconds`, checking every committed state of the SQLite file; then heals
//! everything, stops writing and waits for the copy to equal the source. Prints the seed first
//! and a report per source. Exit status: 0 no violation, 1 a violation, 2 the campaign could not
//! run (a server would not start, the mirror binary is missing, …).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use powersync_source_chaos::bank::BankSettings;
use powersync_source_chaos::campaign::{self, CampaignReport, CampaignSettings, Target};
use powersync_source_chaos::schedule::{FaultKind, ScheduleSettings};
use powersync_source_chaos::seed::SeededRng;
use powersync_source_chaos::source::SourceKind;

/// Fault campaigns against `mirror`: kills, pauses, restarts and network faults under a bank
/// workload, with consistency checkers.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Args {
    /// Source to run against: postgres, mariadb, secantus or all (repeatable; default all).
    #[arg(long = "source", value_name = "SOURCE")]
    sources: Vec<String>,
    /// Length of the fault window per source, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the fault schedule and the workload (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Accounts in the bank.
    #[arg(long, default_value_t = 20)]
    accounts: u32,
    /// Upper bound on workload transactions per second.
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// Fault kinds to draw from, comma-separated (default: all): kill-target, restart-server,
    /// pause-server, drop-connections, black-hole, trickle, refuse-connections; or `none` for
    /// a baseline without faults.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Smallest and largest gap between faults, in seconds.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], default_values_t = [1.0, 5.0])]
    gap: Vec<f64>,
    /// The system under test: `mirror`, or `jetstream` (`publish` → `nats-server` →
    /// `consume`).
    #[arg(long, default_value = "mirror")]
    target: String,
    /// The `mirror` binary (default: `mirror` next to this binary, then target/release/).
    #[arg(long)]
    mirror: Option<PathBuf>,
    /// The `publish` binary (default: next to `mirror`).
    #[arg(long)]
    publish: Option<PathBuf>,
    /// The `consume` binary (default: next to `mirror`).
    #[arg(long)]
    consume: Option<PathBuf>,
    /// The `nats-server` binary (default: /usr/sbin/nats-server, then PATH).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Extra argument for `mirror` or `publish` (repeatable), e.g. `--target-arg=--group-ms=0`.
    #[arg(long = "target-arg", allow_hyphen_values = true)]
    target_args: Vec<String>,
    /// Where the SQLite files and mirror logs go (kept afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Seconds the copy may take to equal the source after the faults stop.
    #[arg(long, default_value_t = 120)]
    converge_within: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("chaos: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let sources = sources(&args.sources)?;
    let target = target(&args)?;
    let jetstream = matches!(target, Target::JetStream { .. });
    let kinds = if args.faults.is_empty() {
        FaultKind::for_target(jetstream)
    } else if args.faults.iter().any(|f| f == "none") {
        // A baseline: the workload and the checkers without faults.
        Vec::new()
    } else {
        args.faults
            .iter()
            .map(|f| FaultKind::parse(f).ok_or_else(|| format!("unknown fault kind `{f}`")))
            .collect::<Result<Vec<_>, _>>()?
    };
    let gap = |v: f64| Duration::from_secs_f64(v.clamp(0.0, 3600.0));
    let seed = args.seed.unwrap_or_else(SeededRng::fresh_seed);
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("powersync-chaos-{seed}")),
    };
    println!(
        "chaos: seed {seed} ({} s per source; replay with --seed {seed}); target {}; files in {}",
        args.seconds,
        target.name(),
        work_dir.display()
    );

    let mut violations = 0;
    let mut reports = Vec::new();
    for kind in sources {
        let mut schedule = ScheduleSettings {
            window: Duration::from_secs(args.seconds),
            gap: (gap(args.gap[0]), gap(args.gap[1])),
            kinds: kinds.clone(),
            ..ScheduleSettings::default()
        };
        if let Some(silence) = kind.silence_timeout() {
            // Pauses that outlast the connector's silence timeout, so it must reconnect.
            schedule.pause_hold = (silence + Duration::from_secs(1), silence * 3);
        }
        let settings = CampaignSettings {
            kind,
            seed,
            schedule,
            bank: BankSettings {
                accounts: args.accounts,
                ..BankSettings::default()
            },
            rate: args.rate,
            target: target.clone(),
            target_args: args.target_args.clone(),
            work_dir: work_dir.clone(),
            converge_within: Duration::from_secs(args.converge_within),
            poll: Duration::from_millis(50),
        };
        println!("== {kind} ==");
        let progress = |line: &str| println!("  {line}");
        let report = campaign::run(&settings, &progress)
            .await
            .map_err(|e| format!("{kind}: {e}"))?;
        print_report(&report);
        violations += report.findings.len();
        reports.push(report);
    }
    println!("== summary (seed {seed}) ==");
    println!("source    faults  txns    states  converged  violations");
    for r in &reports {
        println!(
            "{:<9} {:<7} {:<7} {:<7} {:<10} {}",
            r.kind.map(|k| k.name()).unwrap_or("?"),
            r.faults.iter().map(|(_, n)| n).sum::<usize>(),
            r.committed(),
            r.states_checked,
            r.converged_after
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "no".into()),
            r.findings.len()
        );
    }
    Ok(if violations > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &CampaignReport) {
    let faults: Vec<String> = r.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("  faults injected: {}", faults.join(", "));
    let ops: Vec<String> = r
        .transactions
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "  transactions committed: {} ({}); skipped {}, outcome unknown {}",
        r.committed(),
        ops.join(", "),
        r.skipped,
        r.uncertain
    );
    println!(
        "  states: {} distinct, {} checked",
        r.states, r.states_checked
    );
    if r.kind.is_some_and(|k| !k.exact_row_images()) {
        println!(
            "  (totals of intermediate states not checked: this server's change events carry \
             rows as they are when read, not as of the change)"
        );
    }
    for (name, starts, kills) in &r.processes {
        let exits = r.exits.iter().filter(|e| e.process == *name).count();
        println!(
            "  {name}: started {starts} times, killed {kills} times, exited on its own {exits} times"
        );
    }
    // The first few exits in full (lines cut), then a count: a crash loop repeats itself.
    for exit in r.exits.iter().take(3) {
        println!(
            "    {} exit at t+{:.1}s ({}):",
            exit.process, exit.at_secs, exit.status
        );
        for line in exit.log_tail.lines() {
            println!("      {}", clip(line, 400));
        }
    }
    if r.exits.len() > 3 {
        println!("    … and {} more exits", r.exits.len() - 3);
    }
    println!(
        "  proxy: {} connections, {} refused, {} dropped",
        r.proxy.0, r.proxy.1, r.proxy.2
    );
    if let Some(note) = &r.source_note {
        println!("  source: {note}");
    }
    match r.converged_after {
        Some(s) => println!("  converged {s:.1} s after the faults stopped"),
        None => println!("  did NOT converge"),
    }
    println!("  violations: {}", r.findings.len());
    for f in &r.findings {
        println!(
            "    t+{:.1}s {}",
            f.at_secs,
            clip(&f.violation.to_string(), 2000)
        );
        if !f.after_faults.is_empty() {
            println!("      after: {}", f.after_faults.join(" | "));
        }
    }
}

/// `line` cut to at most `max` characters.
fn clip(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

fn sources(names: &[String]) -> Result<Vec<SourceKind>, String> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(SourceKind::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            SourceKind::parse(n)
                .ok_or_else(|| format!("unknown source `{n}` (postgres, mariadb, secantus, all)"))
        })
        .collect()
}

fn target(args: &Args) -> Result<Target, String> {
    let mirror = binary("mirror", args.mirror.clone(), None)?;
    match args.target.as_str() {
        "mirror" => Ok(Target::Mirror { mirror }),
        "jetstream" => {
            let dir = mirror.parent().map(PathBuf::from);
            let nats_server = match &args.nats_server {
                Some(path) => path.clone(),
                None => ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("nats-server")),
            };
            Ok(Target::JetStream {
                publish: binary("publish", args.publish.clone(), dir.clone())?,
                consume: binary("consume", args.consume.clone(), dir)?,
                nats_server,
            })
        }
        other => Err(format!("unknown target `{other}` (mirror, jetstream)")),
    }
}

/// A binary of the examples: `explicit`, else in `dir`, else next to this binary, else in
/// target/release.
fn binary(name: &str, explicit: Option<PathBuf>, dir: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("no {name} binary at {}", path.display()))
        };
    }
    let mut candidates: Vec<PathBuf> = dir.iter().map(|d| d.join(name)).collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        candidates.push(dir.join(name));
        if let Some(target) = dir.parent() {
            candidates.push(target.join("release").join(name));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "no {name} binary next to chaos: build it with \
             `cargo build --release -p examples --bin {name}` or pass --{name} PATH"
        )
    })
}
