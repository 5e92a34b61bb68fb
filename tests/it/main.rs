//! prmsync's integration tests: one binary, real SQLite files, real HTTP against the simulators on
//! 127.0.0.1, and the real `prmsync` binary for CLI behaviour.

mod cli;
mod crash;
mod guarantees;
mod harness;
mod sync;
mod webhooks;
