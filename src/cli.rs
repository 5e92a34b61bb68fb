//! Command-line types (clap). Parsing only; `main` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  runtime failure (a system or the state file failed)
  2  bad configuration, mapping or usage";

/// prmsync keeps a PRM and a CRM in step, both ways.
#[derive(Debug, Parser)]
#[command(name = "prmsync", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text (overrides log.format).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// With a config that runs several tenants (`daemon.tenants_dir`): the tenant the command acts
    /// on (its state file, mappings and credentials). Required then, except by `status` (which
    /// lists the tenants without it), `check` (which checks them all) and `run` (which runs them all).
    #[arg(long, global = true, value_name = "NAME")]
    pub tenant: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sync daemon.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The config file.
        #[arg(long, short, env = "PRMSYNC_CONFIG")]
        config: PathBuf,
    },
    /// Check the config, the mapping files and their examples; print every problem.
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The config file (or use --config).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also read the CRM's live schema (HubSpot properties, Salesforce describe) and report
        /// every mapped field that no longer fits it, with file:line (exit 2 on drift, 1 when
        /// the CRM cannot be read). Read-only, like `plan`.
        #[arg(long)]
        live: bool,
    },
    /// Dry run: what each flow would create, update, skip or fail, from the state file and the
    /// live systems. Only reads; writes nothing anywhere.
    #[command(after_help = EXIT_CODES)]
    Plan {
        /// The config file.
        #[arg(long, short, env = "PRMSYNC_CONFIG")]
        config: PathBuf,
        /// Only this flow (a mapping's name).
        #[arg(long)]
        flow: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show cursors, queue depths, dead letters and recent errors from the state file.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// The config file (its daemon.state_path is read).
        #[arg(
            long,
            short,
            required_unless_present = "state",
            conflicts_with = "state"
        )]
        config: Option<PathBuf>,
        /// A state file, directly.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: list, show, replay (put back in the queue) or drop them.
    #[command(after_help = EXIT_CODES)]
    Dlq {
        /// The config file (its daemon.state_path is used); or give --state.
        #[arg(long, short, global = true, conflicts_with = "state")]
        config: Option<PathBuf>,
        /// A state file, directly.
        #[arg(long, global = true)]
        state: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Deal registrations and the rules-of-engagement decisions on them.
    #[command(after_help = EXIT_CODES)]
    Registrations {
        #[command(flatten)]
        state: StateArgs,
        #[command(subcommand)]
        action: RegistrationsAction,
    },
    /// The manual review queue: registrations the rules leave to a person.
    #[command(after_help = EXIT_CODES)]
    Review {
        #[command(flatten)]
        state: StateArgs,
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// Read a flow's source again and plan every record (or the named ones) with the mapping in
    /// force: after a mapping change, existing records get the new values. Records the request in
    /// the state file; the daemon (`prmsync run`) carries it out through its normal pipeline,
    /// resuming after a restart. `prmsync plan` shows first what it would write.
    #[command(after_help = EXIT_CODES)]
    Resync {
        /// The config file (its mappings and daemon.state_path are used).
        #[arg(long, short, env = "PRMSYNC_CONFIG")]
        config: PathBuf,
        /// The flow (a mapping's name).
        #[arg(long, required_unless_present = "list")]
        flow: Option<String>,
        /// Only records modified at or after this date (YYYY-MM-DD, UTC) or RFC 3339 instant.
        #[arg(long, conflicts_with = "ids")]
        since: Option<String>,
        /// Only these source record ids.
        #[arg(long, num_args = 1..)]
        ids: Vec<String>,
        /// List the resyncs recorded in the state file and how far each has come, instead.
        #[arg(long, conflicts_with_all = ["since", "ids"])]
        list: bool,
    },
    /// Erase a person (GDPR Art. 17 / CCPA): their records in both systems per `[erasure]`
    /// (HubSpot gdpr-delete, a delete or field scrub elsewhere) and their data in the state file,
    /// keeping an audit row without personal data. Without a person: list the audit.
    #[command(after_help = EXIT_CODES)]
    Erase {
        /// The config file (its systems, mappings, [erasure] and daemon.state_path are used).
        #[arg(long, short, env = "PRMSYNC_CONFIG")]
        config: PathBuf,
        /// Everyone's records holding this address (any case).
        #[arg(long, conflicts_with = "record")]
        email: Option<String>,
        /// One record, SYSTEM/OBJECT/ID (e.g. hubspot/contacts/101), and the person it holds.
        #[arg(long)]
        record: Option<String>,
        /// Show what would be erased and purged; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Start the built-in simulators, sync seeded data through the real daemon, print a summary.
    #[command(after_help = EXIT_CODES)]
    Demo {
        /// Where to keep the demo's state file (recreated on each run).
        #[arg(long)]
        state: Option<PathBuf>,
        /// How many deal registrations to seed.
        #[arg(long, default_value_t = 50)]
        deals: usize,
        /// How many partners to seed.
        #[arg(long, default_value_t = 5)]
        partners: usize,
        /// Which systems: PartnerStack and HubSpot, or a REST PRM and Salesforce (with MDF
        /// requests, and a fixed seed).
        #[arg(long, value_enum, default_value_t = DemoProfile::PartnerstackHubspot)]
        profile: DemoProfile,
    },
    /// Credentials prmsync saved in the state file (rotated refresh tokens, the last session):
    /// `status` shows each one (never its value) and whether it descends from the configured
    /// token; `reset` deletes them so the configured credential is used again.
    #[command(after_help = EXIT_CODES)]
    Auth {
        /// The config file (its daemon.state_path and daemon.state_key are used).
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: AuthAction,
    },
    /// Copy the state file to PATH while the daemon runs (one consistent snapshot), and check the
    /// copy with PRAGMA integrity_check before it is put in place. Never overwrites.
    #[command(after_help = EXIT_CODES)]
    Backup {
        #[command(flatten)]
        state: StateArgs,
        /// Where to write the backup (must not exist yet).
        path: PathBuf,
    },
    /// Move the state between backends: `state copy` copies a state file into an empty
    /// PostgreSQL schema (moving up without re-syncing).
    #[command(after_help = EXIT_CODES)]
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Run the built-in PartnerStack and HubSpot simulators on loopback ports, seeded, until
    /// Ctrl-C, and write a config that points prmsync at them (for `run`, `plan` and `check`).
    #[command(after_help = EXIT_CODES)]
    Sim {
        /// Where to write the config (its secrets and state file go next to it).
        #[arg(long, short, default_value = "prmsync-sim/prmsync.toml")]
        config: PathBuf,
        /// How many deal registrations to seed.
        #[arg(long, default_value_t = 50)]
        deals: usize,
        /// How many partners to seed.
        #[arg(long, default_value_t = 5)]
        partners: usize,
        /// The address the generated config gives prmsync's webhook listener.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// The address the generated config gives prmsync's admin listener.
        #[arg(long, default_value = "127.0.0.1:8788")]
        admin_listen: std::net::SocketAddr,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), or write one page per command into --dir.
    Man {
        /// Write prmsync.1 and prmsync-COMMAND.1 pages into this folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Reports computed from the state file (`report attribution`).
    #[command(after_help = EXIT_CODES)]
    Report {
        #[command(subcommand)]
        report: ReportKind,
    },
    /// Run the benchmark suite on the built-in simulators: print a table, optionally write JSON.
    #[command(after_help = EXIT_CODES)]
    Bench {
        /// Scenarios to run (all when none is named).
        scenarios: Vec<String>,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// tiny: seconds in total (smoke run); full: the sizes of the README's targets.
        #[arg(long, value_enum, default_value_t = BenchSize::Full)]
        size: BenchSize,
        /// A PostgreSQL server (`postgres://...`) for the "fleet" scenario, which creates its
        /// schemas there; without it that scenario is skipped.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
}

/// `prmsync state` actions.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Copy a SQLite state file (cursors, links, outbox, dead letters, registrations, ledger,
    /// credentials, counters...) into an empty PostgreSQL schema in one transaction, checking
    /// every table's row count. Refuses while a daemon holds the state file.
    Copy {
        /// The state file: sqlite:PATH.
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL database: postgres://user@host:port/db (never printed).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The schema to copy into (created when missing; must hold no prmsync state).
        #[arg(long, default_value = "prmsync")]
        schema: String,
    },
}

/// Which systems `prmsync demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoProfile {
    /// PartnerStack and HubSpot (the default).
    PartnerstackHubspot,
    /// A REST PRM (the declarative `rest` profile) and Salesforce, with MDF requests; a fixed
    /// seed (`--deals` and `--partners` do not apply).
    RestSalesforce,
}

/// How much data `prmsync bench` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSize {
    Tiny,
    Full,
}

/// What `prmsync dlq` does.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DlqAction {
    /// The oldest dead letters, one line each.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One dead letter with its payload and reason.
    Show { id: i64 },
    /// Put dead letters back: failed writes into the outbox, unplannable changes into the inbox.
    Replay {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good.
    Drop {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// `prmsync auth` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthAction {
    /// One line per saved credential: name, when saved, sealed or not, current or outdated.
    Status,
    /// Delete what is saved for SYSTEM (default salesforce): the next token request uses the
    /// configured credential. Safe while the daemon runs (it re-reads before each refresh).
    Reset {
        #[arg(default_value = "salesforce")]
        system: String,
    },
}

/// Where the state file is: from a config file or given directly.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The config file (its daemon.state_path is read).
    #[arg(long, short, global = true, conflicts_with = "state")]
    pub config: Option<PathBuf>,
    /// A state file, directly.
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReportKind {
    /// Partner-sourced and partner-influenced pipeline and won revenue, win rate and cycle time
    /// against deals without partner credit, registrations by decision and deciding rule,
    /// protection expiries, and MDF spend against sourced revenue by tier.
    Attribution(AttributionArgs),
}

/// `prmsync report attribution`'s options.
#[derive(Debug, clap::Args)]
pub struct AttributionArgs {
    /// The config file (its daemon.state_path and rules file are read).
    #[arg(long, short, conflicts_with = "state")]
    pub config: Option<PathBuf>,
    /// A state file, directly (the built-in rules give the tiers).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Deals submitted on or after this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// Deals submitted on or before this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// How partner credit is grouped: partner, tier or month.
    #[arg(long, default_value = "partner", value_parser = ["partner", "tier", "month"])]
    pub by: String,
    /// table, csv, json or html.
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json", "html"])]
    pub format: String,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RegistrationsAction {
    /// List registrations with their decisions.
    List {
        /// Only this status: approved, influenced, rejected, duplicate, pending, review, expired.
        #[arg(long)]
        status: Option<String>,
    },
    /// One registration: its decision, its partner credits with their reasons, and the history
    /// of decision changes.
    Show {
        /// The registration's id: the PRM deal's key, as `registrations list` shows it.
        id: String,
    },
    /// The full trace of the rules evaluated for a registration (`--json`: the decision and the
    /// trace as one object).
    Explain {
        /// The registration's id: the PRM deal's key, as `registrations list` shows it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewAction {
    /// Registrations waiting for a person.
    List,
    /// Approve a registration; the daemon applies it and writes it back on its next pass.
    Approve {
        /// The registration's id: the PRM deal's key, as `review list` shows it.
        id: String,
        #[arg(long, default_value = "approved by an operator")]
        reason: String,
    },
    /// Reject a registration with a reason the partner will see.
    Reject {
        /// The registration's id: the PRM deal's key, as `review list` shows it.
        id: String,
        #[arg(long)]
        reason: String,
    },
}
