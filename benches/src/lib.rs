//! Benchmark support code: the recorded-pgoutput file format, the workload shared by the
//! recorder and the throughput runner, an RSS sampler and machine facts.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The directory of checked-in test data (`benches/data`).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Recorded pgoutput messages: `PSPGOUT1`, then per message a big-endian `u32` length and the
/// message bytes (one pgoutput message each, as `pg_logical_slot_peek_binary_changes` returns
/// it, i.e. the `data` of one XLogData).
pub mod recording {
    /// File magic.
    pub const MAGIC: &[u8; 8] = b"PSPGOUT1";

    /// Encodes messages in the recording format.
    pub fn encode<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for m in messages {
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    /// Splits a recording into its messages.
    pub fn decode(file: &[u8]) -> Result<Vec<&[u8]>, String> {
        let mut rest = file
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a pgoutput recording (bad magic)")?;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated length")?;
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err("truncated message".into());
            }
            let (msg, tail) = tail.split_at(len);
            out.push(msg);
            rest = tail;
        }
        Ok(out)
    }

    /// Wraps a pgoutput message into the XLogData (`w`) CopyData payload a walsender sends.
    pub fn xlogdata(lsn: u64, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 + message.len());
        out.push(b'w');
        out.extend_from_slice(&lsn.to_be_bytes());
        out.extend_from_slice(&lsn.to_be_bytes());
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(message);
        out
    }
}

/// The benchmark table: the shape of a typical replicated table (bigint key, int, text, float8,
/// timestamptz, numeric).
pub fn rows_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, n integer, s text, f double precision, \
         ts timestamptz, amount numeric(12,2))"
    )
}

/// `INSERT … SELECT generate_series` of rows `from..=to` into a [`rows_table_ddl`] table.
/// Deterministic (same bytes on every run, so the pgoutput size is the same every time); every
/// 50th row has a NULL float.
pub fn insert_rows_sql(table: &str, from: u64, to: u64) -> String {
    format!(
        "INSERT INTO {table} SELECT g, (g % 100000)::int, md5(g::text), \
         CASE WHEN g % 50 = 0 THEN NULL ELSE g * 1.25 END, \
         timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second', \
         (g * 1.01)::numeric(12,2) FROM generate_series({from}, {to}) AS g"
    )
}

/// Samples a process's resident set size (`VmRSS`) every `interval` in a background thread
/// and keeps the maximum: the peak RSS during a phase (`VmHWM` cannot be reset).
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    start_kb: u64,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Samples this process every 50 ms.
    pub fn start() -> Self {
        Self::start_for("self".into(), Duration::from_millis(50))
    }

    /// Samples `/proc/<pid>` (`"self"` for this process).
    pub fn start_for(pid: String, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let start_kb = status_kb(&pid, "VmRSS").unwrap_or(0);
        let peak_kb = Arc::new(AtomicU64::new(start_kb));
        let thread = {
            let (stop, peak_kb) = (stop.clone(), peak_kb.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = status_kb(&pid, "VmRSS") {
                        peak_kb.fetch_max(kb, Ordering::Relaxed);
                    }
                    std::thread::sleep(interval);
                }
            })
        };
        RssSampler {
            stop,
            peak_kb,
            start_kb,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns (RSS at start, peak RSS) in KiB.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.start_kb, self.peak_kb.load(Ordering::Relaxed))
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …).
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), field)
}

/// A field of `/proc/<pid>/io` (`wchar`, `rchar`, …).
pub fn io_field(pid: u32, field: &str) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

/// `nproc`, the CPU model and total memory, for the report.
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = kb_field("/proc/meminfo", "MemTotal")
        .map(|kb| kb as f64 / 1048576.0)
        .unwrap_or(0.0);
    format!("nproc {nproc}, {model}, {mem_gib:.0} GiB RAM")
}

fn kb_field(path: &str, field: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The median of some durations (the lower middle for an even count).
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// CPU time (user + system) of a process in clock ticks, and of its reaped children:
/// `(own, children)` from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: &str) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // After the command: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    Some((n(11)? + n(12)?, n(13)? + n(14)?))
}

/// CPU ticks of a server: the postmaster, its reaped children and its live children (so a
/// backend that exits between two readings is still counted exactly once).
pub fn tree_cpu_ticks(postmaster: u32) -> u64 {
    let (own, reaped) = cpu_ticks(&postmaster.to_string()).unwrap_or((0, 0));
    let mut live = 0;
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(postmaster) {
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                live += n(11) + n(12);
            }
        }
    }
    own + reaped + live
}

/// Clock ticks per second of `/proc` CPU times (`CLK_TCK`, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;
