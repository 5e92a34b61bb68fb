//! Deterministic seed data for the demo and tests: partners and deal registrations.

use serde_json::{Map, Value, json};

const COMPANIES: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Hooli",
    "Stark Logistics",
    "Wayne Foods",
    "Wonka Retail",
    "Soylent Energy",
    "Tyrell Robotics",
    "Cyberdyne Systems",
    "Massive Dynamic",
];
const PARTNER_NAMES: &[&str] = &[
    "Northwind Partners",
    "Blue Harbor",
    "Summit Resellers",
    "Keystone IT",
    "Cobalt Cloud",
];
const TIERS: &[&str] = &["gold", "silver", "bronze"];
const STAGES: &[&str] = &["submitted", "approved", "demo", "evaluation", "negotiation"];

/// `n` partners with keys `part_1` .. `part_n`.
pub fn partners(n: usize) -> Vec<Map<String, Value>> {
    (1..=n)
        .map(|i| {
            obj(json!({
                "key": format!("part_{i}"),
                "name": PARTNER_NAMES[(i - 1) % PARTNER_NAMES.len()],
                "tier": TIERS[(i - 1) % TIERS.len()],
            }))
        })
        .collect()
}

/// `n` deal registrations spread over `partners` partners, keys `deal_1` .. `deal_n`. Every
/// deal's customer is one of twelve companies (one domain each), so registrations compete: the
/// demo's conflicts.
pub fn deals(n: usize, partners: usize) -> Vec<Map<String, Value>> {
    deals_over(n, partners, |_| String::new())
}

/// Registrations per customer domain in [`program`].
pub const PER_CUSTOMER: usize = 3;

/// `n` deal registrations as a partner program at scale holds them: each customer (domain) is
/// registered by at most [`PER_CUSTOMER`] partners, so a million deals are about 333,000
/// duplicate-key groups of three, not twelve groups of 83,000 as [`deals`] would make. The
/// benchmarks seed this.
pub fn program(n: usize, partners: usize) -> Vec<Map<String, Value>> {
    deals_over(n, partners, |i| ((i - 1) / PER_CUSTOMER).to_string())
}

fn deals_over(
    n: usize,
    partners: usize,
    customer: impl Fn(usize) -> String,
) -> Vec<Map<String, Value>> {
    (1..=n)
        .map(|i| {
            let company = COMPANIES[(i - 1) % COMPANIES.len()];
            let domain = format!(
                "{}{}.example",
                company.to_lowercase().replace(' ', ""),
                customer(i)
            );
            obj(json!({
                "key": format!("deal_{i}"),
                "account_name": format!("{company} #{i}"),
                "amount": 250_000 + (i as i64 * 137_531) % 9_000_000,
                "close_date": format!("2027-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
                "contact_first_name": "Sam",
                "contact_last_name": format!("Buyer{i}"),
                "contact_email": format!("sam.buyer{i}@{domain}"),
                "customer_key": format!("cust_{i}"),
                "partner_key": format!("part_{}", 1 + (i - 1) % partners.max(1)),
                "source": if i % 4 == 0 { "vendor" } else { "partner" },
                "stage": STAGES[(i - 1) % STAGES.len()],
                "lost_reason": null,
            }))
        })
        .collect()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
