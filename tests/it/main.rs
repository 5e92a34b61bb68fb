//! prmsync's integration tests: one binary, real SQLite files, real HTTP against the simulators on
//! 127.0.0.1, and the real `prmsync` binary for CLI behaviour.

mod admin;
mod associations;
mod bench;
mod cli;
mod compat;
mod connector_contract;
mod connectors;
mod contract;
mod conversion;
mod crash;
mod crash_salesforce;
mod credentials;
mod credits;
mod crm_facts;
mod deletion_webhook;
mod erase;
mod erase_salesforce;
mod fleet;
mod fleet_ops;
mod guarantees;
// Helpers are shared by every test module; not each branch uses all of them.
#[allow(dead_code, unused_imports)]
mod harness;
mod lifecycle;
mod limits;
mod mapping;
mod matching;
mod merges;
mod notify;
mod ops;
mod pipeline;
mod poison;
mod reload;
mod report;
mod resync;
mod retention;
mod rules;
mod rules_salesforce;
mod schema;
mod shipped;
mod sim_strict;
mod state_copy;
mod sync;
mod tenants;
mod webhooks;
