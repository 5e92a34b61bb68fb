//! Per-stage progress: when each pipeline task last finished a cycle and whether it is still
//! running, so a watchdog (or `status`) can tell a stuck pipeline from an idle one. Every stage
//! task cycles at least once per poll interval even when idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One stage task's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageProgress {
    /// When it last finished a cycle (`None`: not yet).
    pub last_cycle: Option<Instant>,
    /// Cycles finished since it started.
    pub cycles: u64,
    /// Whether the task is running (it ended: cancelled, or a panic).
    pub alive: bool,
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
                last_cycle: None,
                cycles: 0,
                alive: true,
            },
        );
        StageGuard {
            progress: self.clone(),
            name,
        }
    }

    /// Every stage task, by name.
    pub fn snapshot(&self) -> BTreeMap<String, StageProgress> {
        self.lock().clone()
    }

    /// The stage tasks that ended, or whose last cycle (or start, before the first) is older
    /// than `max_age`: what a watchdog should not vouch for.
    pub fn stalled(&self, started: Instant, max_age: Duration) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, s)| {
                !s.alive || now.duration_since(s.last_cycle.unwrap_or(started)) > max_age
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Held by a running stage task.
#[derive(Debug)]
pub struct StageGuard {
    progress: Arc<Progress>,
    name: String,
}

impl StageGuard {
    /// The task finished one cycle (did its work, or found none).
    pub fn cycle(&self) {
        if let Some(s) = self.progress.lock().get_mut(&self.name) {
            s.last_cycle = Some(Instant::now());
            s.cycles += 1;
        }
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
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
        let started = Instant::now();
        let g = p.start("planner");
        assert_eq!(p.snapshot()["planner"].cycles, 0);
        g.cycle();
        g.cycle();
        let s = &p.snapshot()["planner"];
        assert!(s.alive && s.cycles == 2 && s.last_cycle.is_some());
        assert!(p.stalled(started, Duration::from_secs(60)).is_empty());
        drop(g);
        assert!(!p.snapshot()["planner"].alive);
        assert_eq!(p.stalled(started, Duration::from_secs(60)), vec!["planner"]);
    }
}
