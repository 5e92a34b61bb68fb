//! Per-stage progress: when each pipeline task last finished a cycle (or a step of a long one)
//! and whether it is still running, so the systemd watchdog (`crate::notify`) can tell a stuck
//! pipeline from an idle one. Every stage task cycles at least once per poll interval even when
//! idle or waiting out a hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One stage task's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageProgress {
    /// When the task started.
    pub started: Instant,
    /// When it last finished a cycle or a step (`None`: not yet).
    pub last_cycle: Option<Instant>,
    /// Cycles and steps finished since it started.
    pub cycles: u64,
    /// Whether the task is running (`false`: it ended by a panic or a cancellation).
    pub alive: bool,
}

/// A stage the watchdog should not vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// The stage task's name (`planner`, `poller partnerstack/deals`).
    pub stage: String,
    /// How long since its last cycle (or its start); `None` when the task ended.
    pub quiet_for: Option<Duration>,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quiet_for {
            Some(d) => write!(f, "{} (no progress for {} s)", self.stage, d.as_secs()),
            None => write!(f, "{} (task ended)", self.stage),
        }
    }
}

/// The progress of every stage task, by name (`poller partnerstack/deals`, `planner`,
/// `decider`, `writer hubspot`).
#[derive(Debug, Default)]
pub struct Progress {
    stages: Mutex<BTreeMap<String, StageProgress>>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StageProgress>> {
        self.stages.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a running stage task; the guard marks it ended when dropped (also on a panic).
    pub fn start(self: &Arc<Self>, name: impl Into<String>) -> StageGuard {
        let name = name.into();
        self.lock().insert(
            name.clone(),
            StageProgress {
                started: Instant::now(),
                last_cycle: None,
                cycles: 0,
                alive: true,
            },
        );
        StageGuard {
            progress: self.clone(),
            name,
            retired: false,
        }
    }

    /// A step inside a long cycle finished (a planned batch, a read page): the running task
    /// `name` is making progress. Nothing happens when no such task runs (`Engine::tick`).
    pub fn step(&self, name: &str) {
        if let Some(s) = self.lock().get_mut(name) {
            s.last_cycle = Some(Instant::now());
            s.cycles += 1;
        }
    }

    /// Every stage task, by name.
    pub fn snapshot(&self) -> BTreeMap<String, StageProgress> {
        self.lock().clone()
    }

    /// The stage tasks that ended, or whose last cycle (or start, before the first) is older
    /// than `deadline`: what a watchdog should not vouch for. Empty: every stage is healthy.
    pub fn stalled(&self, deadline: Duration) -> Vec<Stalled> {
        stalled_at(&self.lock(), Instant::now(), deadline)
    }
}

/// The stalled stages of `stages` as of `now` (pure).
fn stalled_at(
    stages: &BTreeMap<String, StageProgress>,
    now: Instant,
    deadline: Duration,
) -> Vec<Stalled> {
    stages
        .iter()
        .filter_map(|(name, s)| {
            let quiet = now.saturating_duration_since(s.last_cycle.unwrap_or(s.started));
            let quiet_for = s.alive.then_some(quiet);
            (!s.alive || quiet > deadline).then(|| Stalled {
                stage: name.clone(),
                quiet_for,
            })
        })
        .collect()
}

/// Held by a running stage task.
#[derive(Debug)]
pub struct StageGuard {
    progress: Arc<Progress>,
    name: String,
    retired: bool,
}

impl StageGuard {
    /// The task finished one cycle (did its work, or found none).
    pub fn cycle(&self) {
        self.progress.step(&self.name);
    }

    /// The task ends on purpose (a poller whose object is no longer polled): it is forgotten
    /// rather than reported as ended.
    pub fn retire(mut self) {
        self.progress.lock().remove(&self.name);
        self.retired = true;
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if self.retired {
            return;
        }
        if let Some(s) = self.progress.lock().get_mut(&self.name) {
            s.alive = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_alive_while_its_guard_lives_and_counts_cycles() {
        let p = Arc::new(Progress::default());
        let g = p.start("planner");
        assert_eq!(p.snapshot()["planner"].cycles, 0);
        g.cycle();
        p.step("planner");
        p.step("no such stage");
        let s = &p.snapshot()["planner"];
        assert!(s.alive && s.cycles == 2 && s.last_cycle.is_some());
        assert!(p.stalled(Duration::from_secs(60)).is_empty());
        drop(g);
        assert!(!p.snapshot()["planner"].alive);
        let stalled = p.stalled(Duration::from_secs(60));
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].to_string(), "planner (task ended)");
    }

    #[test]
    fn a_stage_quiet_past_the_deadline_is_stalled_and_a_retired_one_is_forgotten() {
        let p = Arc::new(Progress::default());
        let planner = p.start("planner");
        let poller = p.start("poller hubspot/deals");
        planner.cycle();
        let snap = p.snapshot();
        let t0 = snap["planner"].last_cycle.unwrap();
        let deadline = Duration::from_secs(10);
        assert!(stalled_at(&snap, t0 + Duration::from_secs(5), deadline).is_empty());
        let later = stalled_at(&snap, t0 + Duration::from_secs(11), deadline);
        let names: Vec<&str> = later.iter().map(|s| s.stage.as_str()).collect();
        // The poller never cycled: it is judged from its start.
        assert_eq!(names, ["planner", "poller hubspot/deals"]);
        assert!(later[0].quiet_for.unwrap() >= Duration::from_secs(11));
        poller.retire();
        assert!(!p.snapshot().contains_key("poller hubspot/deals"));
        drop(planner);
    }
}
