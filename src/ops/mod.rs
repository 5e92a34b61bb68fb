//! Operator verbs that act on the state file outside the daemon (`prmsync dlq ...`).

pub mod dlq;
