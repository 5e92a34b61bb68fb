//! Operator verbs that act on the state file or the host outside the daemon (`prmsync dlq`,
//! `backup`, `sim`).

pub mod backup;
pub mod dlq;
pub mod sim;
