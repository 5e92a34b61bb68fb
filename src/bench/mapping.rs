//! Scenario "mapping": records mapped per second on one core, through the same code path as the
//! mapping benchmark (benches/mapping.rs): the shipped deal-registration flow's `to_target`, and
//! the planner's whole forward decision for a record. Timed by the thread's CPU clock, so the
//! figure is per core even when other processes share the machine.

use std::hint::black_box;
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

use super::ceiling::flow;
use super::report::ScenarioResult;
use super::{Size, world};
use crate::engine::plan;
use crate::mapping::Op;
use crate::model::{Record, SystemKind};
use crate::sim::seed;

pub fn scenario(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new("mapping", ">= 200,000 records/s per core");
    let m = flow(SystemKind::HubSpot, "deal-registration")?;
    let n = match size {
        Size::Tiny => 2_000,
        Size::Full => 200_000,
    };
    let deals = seed::deals(n, 25);
    let started = thread_cpu();
    for d in &deals {
        black_box(m.to_target(black_box(d), Op::Create)?);
    }
    let to_target = world::rate(n as f64, thread_cpu().saturating_sub(started));
    let records: Vec<Record> = deals
        .into_iter()
        .enumerate()
        .map(|(i, fields)| Record {
            id: format!("deal_{}", i + 1),
            modified_ms: 1_767_223_800_000,
            fields,
        })
        .collect();
    let started = thread_cpu();
    for rec in &records {
        black_box(plan::forward(&m, black_box(rec), None));
    }
    let forward = world::rate(n as f64, thread_cpu().saturating_sub(started));
    r.metric("to_target", to_target, "records/CPU-s");
    r.metric("plan forward", forward, "records/CPU-s");
    r.judge(size, to_target >= 200_000.0 && forward >= 200_000.0);
    Ok(r)
}

/// CPU time this thread has used (the loops above never yield, so they stay on it).
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
