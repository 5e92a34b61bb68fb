//! Scenario "mapping": records mapped per second on one core, through the same code path as the
//! mapping benchmark (benches/mapping.rs): the shipped deal-registration flow's `to_target`, and
//! the planner's whole forward decision for a record.

use std::hint::black_box;
use std::time::Instant;

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
    let started = Instant::now();
    for d in &deals {
        black_box(m.to_target(black_box(d), Op::Create)?);
    }
    let to_target = world::rate(n as f64, started.elapsed());
    let records: Vec<Record> = deals
        .into_iter()
        .enumerate()
        .map(|(i, fields)| Record {
            id: format!("deal_{}", i + 1),
            modified_ms: 1_767_223_800_000,
            fields,
        })
        .collect();
    let started = Instant::now();
    for rec in &records {
        black_box(plan::forward(&m, black_box(rec), None));
    }
    let forward = world::rate(n as f64, started.elapsed());
    r.metric("to_target", to_target, "records/s");
    r.metric("plan forward", forward, "records/s");
    r.judge(size, to_target >= 200_000.0 && forward >= 200_000.0);
    Ok(r)
}
