//! Records mapped per second for the shipped deal-registration mapping: the pure `to_target` step,
//! and the planner's whole decision for a record (mapping, diff against the link, content hash).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prmsync::engine::plan;
use prmsync::mapping::{MappingSet, Op};
use prmsync::model::Record;
use prmsync::sim::seed;

const RECORDS: usize = 1_000;

fn deal_registration(c: &mut Criterion) {
    let set = MappingSet::builtin().expect("the built-in mappings compile");
    let mapping = set
        .mappings
        .iter()
        .find(|m| m.name == "deal-registration")
        .expect("deal-registration flow")
        .clone();
    let deals = seed::deals(RECORDS, 25);
    let records: Vec<Record> = deals
        .iter()
        .enumerate()
        .map(|(i, fields)| Record {
            id: format!("deal_{}", i + 1),
            modified_ms: 1_767_223_800_000,
            fields: fields.clone(),
        })
        .collect();

    let mut group = c.benchmark_group("deal-registration");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("to_target", |b| {
        b.iter(|| {
            for d in &deals {
                black_box(mapping.to_target(black_box(d), Op::Create).expect("maps"));
            }
        })
    });
    group.bench_function("plan_forward", |b| {
        b.iter(|| {
            for r in &records {
                black_box(plan::forward(&mapping, black_box(r), None));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, deal_registration);
criterion_main!(benches);
