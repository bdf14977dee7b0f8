//! The fault schedule: which fault happens when, drawn from a seed before the campaign starts,
//! so that the same seed (and the same settings) replays the same schedule.

use std::fmt;
use std::time::Duration;

use crate::seed::SeededRng;

/// One kind of fault the runner can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of the connector process of the system under test (`mirror`, or `publish`);
    /// the runner restarts it.
    KillTarget,
    /// SIGKILL of `nats-server` (JetStream target); the runner restarts it on the same
    /// storage.
    KillNats,
    /// SIGKILL of `consume` (JetStream target); the runner restarts it.
    KillConsumer,
    /// SIGKILL of the source server (and all its processes), restarted after a while.
    RestartServer,
    /// SIGSTOP of the source server, SIGCONT after the hold time (connections stay open but
    /// nothing answers: longer than the connector's silence timeout, it must reconnect).
    PauseServer,
    /// The proxy closes every open connection between connector and server at once.
    DropConnections,
    /// The proxy stops forwarding bytes in both directions without closing anything
    /// (half-open connections), for the hold time; then it closes them.
    BlackHole,
    /// The proxy forwards a few bytes at a time with a delay between them, for the hold time.
    Trickle,
    /// The proxy closes every open connection, then every new one as soon as it is accepted,
    /// for the hold time.
    RefuseConnections,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillTarget,
        FaultKind::KillNats,
        FaultKind::KillConsumer,
        FaultKind::RestartServer,
        FaultKind::PauseServer,
        FaultKind::DropConnections,
        FaultKind::BlackHole,
        FaultKind::Trickle,
        FaultKind::RefuseConnections,
    ];

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillTarget => "kill-target",
            FaultKind::KillNats => "kill-nats",
            FaultKind::KillConsumer => "kill-consumer",
            FaultKind::RestartServer => "restart-server",
            FaultKind::PauseServer => "pause-server",
            FaultKind::DropConnections => "drop-connections",
            FaultKind::BlackHole => "black-hole",
            FaultKind::Trickle => "trickle",
            FaultKind::RefuseConnections => "refuse-connections",
        }
    }

    /// Parses [`FaultKind::name`].
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s.trim())
    }

    /// Whether the fault lasts a while (has a hold time) rather than being a single blow.
    pub fn has_hold(self) -> bool {
        !matches!(
            self,
            FaultKind::KillTarget
                | FaultKind::KillNats
                | FaultKind::KillConsumer
                | FaultKind::DropConnections
        )
    }

    /// The kinds that apply to a target: the JetStream ones only with `jetstream`.
    pub fn for_target(jetstream: bool) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| jetstream || !matches!(k, FaultKind::KillNats | FaultKind::KillConsumer))
            .collect()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// When it starts, from the start of the fault window.
    pub at: Duration,
    /// What it is.
    pub kind: FaultKind,
    /// How long it lasts (zero for single blows; for [`FaultKind::RestartServer`], how long
    /// the server stays down).
    pub hold: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:.1}s {}", self.at.as_secs_f64(), self.kind)?;
        if !self.hold.is_zero() {
            write!(f, " for {:.1}s", self.hold.as_secs_f64())?;
        }
        Ok(())
    }
}

/// What a schedule is drawn from.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Faults start within this window (the last one may end a little after it).
    pub window: Duration,
    /// Quiet time between the end of one fault and the start of the next, drawn uniformly
    /// from this range.
    pub gap: (Duration, Duration),
    /// The kinds to draw from, each equally likely. Empty: no faults.
    pub kinds: Vec<FaultKind>,
    /// Hold time of [`FaultKind::PauseServer`]: make its lower end longer than the connector's
    /// silence timeout.
    pub pause_hold: (Duration, Duration),
    /// Hold time of the other lasting faults.
    pub hold: (Duration, Duration),
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            window: Duration::from_secs(60),
            gap: (Duration::from_secs(1), Duration::from_secs(5)),
            kinds: FaultKind::for_target(false),
            pause_hold: (Duration::from_secs(4), Duration::from_secs(8)),
            hold: (Duration::from_secs(1), Duration::from_secs(5)),
        }
    }
}

/// The ordered list of faults of one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The faults, in time order, never overlapping.
    pub faults: Vec<Fault>,
}

/// The [`SeededRng::fork`] stream of the schedule (the workload uses others).
const SCHEDULE_STREAM: u64 = 1;

impl Schedule {
    /// Draws the schedule for `seed`. Faults run one at a time: each starts after the previous
    /// one ended plus a gap, so every fault's effect can be told apart in the output.
    pub fn plan(seed: u64, settings: &ScheduleSettings) -> Schedule {
        let mut rng = SeededRng::fork(seed, SCHEDULE_STREAM);
        let draw = |rng: &mut SeededRng, (low, high): (Duration, Duration)| {
            let ms = rng.between(millis(low), millis(high));
            Duration::from_millis(ms)
        };
        let mut faults = Vec::new();
        let mut at = Duration::ZERO;
        if !settings.kinds.is_empty() {
            loop {
                at += draw(&mut rng, settings.gap);
                if at >= settings.window {
                    break;
                }
                let kind = settings.kinds[rng.index(settings.kinds.len())];
                let hold = match kind {
                    FaultKind::PauseServer => draw(&mut rng, settings.pause_hold),
                    k if k.has_hold() => draw(&mut rng, settings.hold),
                    _ => Duration::ZERO,
                };
                faults.push(Fault { at, kind, hold });
                at += hold;
            }
        }
        Schedule { seed, faults }
    }

    /// How many faults of each kind, in [`FaultKind::ALL`] order (kinds with none left out).
    pub fn counts(&self) -> Vec<(FaultKind, usize)> {
        FaultKind::ALL
            .into_iter()
            .map(|k| (k, self.faults.iter().filter(|f| f.kind == k).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let settings = ScheduleSettings::default();
        let a = Schedule::plan(1234, &settings);
        let b = Schedule::plan(1234, &settings);
        assert_eq!(a, b);
        assert!(
            a.faults.len() > 5,
            "a 60 s window with 1-5 s gaps has faults"
        );
        let c = Schedule::plan(1235, &settings);
        assert_ne!(a.faults, c.faults);
    }

    #[test]
    fn faults_do_not_overlap_and_respect_the_settings() {
        let settings = ScheduleSettings {
            window: Duration::from_secs(600),
            ..ScheduleSettings::default()
        };
        let schedule = Schedule::plan(99, &settings);
        let mut end = Duration::ZERO;
        for fault in &schedule.faults {
            assert!(fault.at >= end + settings.gap.0, "{fault} starts too early");
            assert!(fault.at < settings.window);
            match fault.kind {
                FaultKind::PauseServer => {
                    assert!(
                        fault.hold >= settings.pause_hold.0 && fault.hold <= settings.pause_hold.1
                    )
                }
                k if k.has_hold() => {
                    assert!(fault.hold >= settings.hold.0 && fault.hold <= settings.hold.1)
                }
                _ => assert!(fault.hold.is_zero()),
            }
            end = fault.at + fault.hold;
        }
        // Over 600 s every kind shows up, and only those of the mirror target.
        assert_eq!(schedule.counts().len(), FaultKind::for_target(false).len());
        assert!(schedule
            .faults
            .iter()
            .all(|f| !matches!(f.kind, FaultKind::KillNats | FaultKind::KillConsumer)));
    }

    #[test]
    fn only_enabled_kinds() {
        let settings = ScheduleSettings {
            kinds: vec![FaultKind::KillTarget],
            ..ScheduleSettings::default()
        };
        let schedule = Schedule::plan(5, &settings);
        assert!(schedule
            .faults
            .iter()
            .all(|f| f.kind == FaultKind::KillTarget));
        let none = Schedule::plan(
            5,
            &ScheduleSettings {
                kinds: Vec::new(),
                ..ScheduleSettings::default()
            },
        );
        assert!(none.faults.is_empty());
    }

    #[test]
    fn names_round_trip() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(FaultKind::parse("nope"), None);
    }
}
