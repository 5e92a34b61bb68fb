//! Operator verbs that act on the state file or the host outside the daemon (`prmsync dlq`,
//! `backup`, `state copy`, `sim`, `check --live`).

pub mod backup;
pub mod check_live;
pub mod dlq;
pub mod sim;
pub mod state_copy;
