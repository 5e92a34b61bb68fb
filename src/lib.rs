//! prmsync: a daemon that keeps a PRM and a CRM in step, both ways, with its state in one SQLite file.
//!
//! Codemap (see also `ARCHITECTURE.md`):
//! - [`cli`]: clap types only; [`app`]: the one place everything is assembled and shut down.
//! - [`config`]: raw TOML mirror -> validated typed [`config::Config`]; every error with its key path.
//! - [`model`]: domain types (records, changes, cursors) with no vendor wire formats.
//! - [`mapping`]: mapping files: parse, compile, apply (pure).
//! - [`rules`]: deal-registration rules of engagement: compile and decide (pure).
//! - [`registrations_cli`]: operator verbs for registrations and the review queue.
//! - [`engine`]: plan (pure) and execute: pollers, inbox processing, outbox writers.
//! - [`connector`]: one folder per vendor system behind one closed enum.
//! - [`credentials`]: rotated tokens sealed in the state file; [`auth_cli`] is `prmsync auth status|reset`.
//! - [`webhook`]: the internet-facing HTTP listener: webhook intake.
//! - [`admin`]: the loopback admin listener: `/livez`, `/readyz`, `/metrics`.
//! - [`notify`]: the systemd notify protocol: state changes, `STATUS=`, the progress watchdog.
//! - [`store`]: the only module that knows SQL.
//! - [`ops`]: operator verbs on the state file (`prmsync dlq`, `backup`, `state copy`).
//! - [`failpoint`]: named abort points for crash tests, armed only by `PRMSYNC_FAILPOINTS`.
//! - [`sim`]: loopback simulators of the vendor APIs, used by `demo`, tests and benchmarks.
//! - [`bench`]: `prmsync bench`: the benchmark suite (real daemon vs. a minimal client) on the simulators.

pub mod admin;
pub mod app;
pub mod assembly;
pub mod auth_cli;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connector;
pub mod credentials;
pub mod demo;
pub mod engine;
pub mod erase_cli;
pub mod failpoint;
pub mod file_error;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod ops;
pub mod registrations_cli;
pub mod report;
pub mod report_cli;
pub mod resync_cli;
pub mod rules;
pub mod shutdown;
pub mod sim;
pub mod state_lock;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod webhook;
