//! The `prmsync` binary: parse the CLI, set up logging, dispatch, and map errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory as _, Parser};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use prmsync::cli::{BenchSize, Cli, Command, DemoProfile, DlqAction, StateArgs};
use prmsync::config::{self, Config, Environment, LogFormat};
use prmsync::failpoint::{self, FailPoints};
use prmsync::mapping::{MappingErrors, run_examples};
use prmsync::rules::Rules;
use prmsync::store::Store;
use prmsync::telemetry::redact::Redactor;
use prmsync::{app, bench, demo, registrations_cli, shutdown, status, telemetry};

/// Exit code for runtime failures.
const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad configuration, mappings or usage.
const EXIT_CONFIG: u8 = 2;

/// `--tenant NAME`, set once from the command line: the config loaders below resolve it.
static TENANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn tenant() -> Option<&'static str> {
    TENANT.get().and_then(Option::as_deref)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let takes_tenant = !matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Bench { .. }
            | Command::Sim { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
    );
    if cli.tenant.is_some() && !takes_tenant {
        eprintln!("prmsync: --tenant applies to commands that read a config file");
        return ExitCode::from(EXIT_CONFIG);
    }
    let _ = TENANT.set(cli.tenant.clone());
    match cli.command {
        Command::Run { config } => run(&config, cli.log_json),
        Command::Check { file, config, live } => match file.or(config) {
            Some(path) => check(&path, live),
            None => {
                eprintln!("prmsync check: name the config file (prmsync check FILE)");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Plan { config, flow, json } => plan_cmd(&config, flow.as_deref(), json),
        Command::Status {
            config,
            state,
            json,
        } => status_cmd(config.as_deref(), state.as_deref(), json),
        Command::Dlq {
            config,
            state,
            json,
            action,
        } => dlq_cmd(config.as_deref(), state.as_deref(), json, action),
        Command::Registrations { state, action } => operator(&state, |store, json| {
            Box::pin(registrations_cli::registrations(store, action, json))
        }),
        Command::Review { state, action } => operator(&state, |store, json| {
            let now = jiff::Timestamp::now().as_millisecond();
            Box::pin(registrations_cli::review(store, action, json, now))
        }),
        Command::Resync {
            config,
            flow,
            since,
            ids,
            list,
        } => resync_cmd(
            &config,
            prmsync::resync_cli::ResyncArgs {
                flow,
                since,
                ids,
                list,
            },
        ),
        Command::Report {
            report: prmsync::cli::ReportKind::Attribution(args),
        } => report_cmd(&args),
        Command::Erase {
            config,
            email,
            record,
            dry_run,
        } => erase_cmd(
            &config,
            prmsync::erase_cli::EraseArgs {
                email,
                record,
                dry_run,
            },
        ),
        Command::Bench {
            scenarios,
            json,
            size,
            postgres,
        } => bench_cmd(&scenarios, json.as_deref(), size, postgres),
        Command::Backup { state, path } => backup_cmd(&state, &path),
        Command::State {
            action: prmsync::cli::StateAction::Copy { from, to, schema },
        } => state_copy_cmd(&from, &to, &schema),
        Command::Auth { config, action } => auth_cmd(&config, action),
        Command::Sim {
            config,
            deals,
            partners,
            listen,
            admin_listen,
        } => sim_cmd(prmsync::ops::sim::SimOptions {
            config,
            deals,
            partners,
            listen,
            admin_listen,
        }),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "prmsync",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { dir } => man_cmd(dir.as_deref()),
        Command::Demo {
            state,
            deals,
            partners,
            profile,
        } => {
            telemetry::init(
                if cli.log_json {
                    LogFormat::Json
                } else {
                    LogFormat::Human
                },
                "warn",
                Redactor::new(Vec::new(), true),
            );
            let opts = demo::DemoOptions {
                state: state.unwrap_or_else(demo::DemoOptions::default_state),
                deals,
                partners,
            };
            let printed = runtime().and_then(|rt| match profile {
                DemoProfile::PartnerstackHubspot => {
                    rt.block_on(demo::run(opts)).map(|s| demo::render(&s))
                }
                DemoProfile::RestSalesforce => rt
                    .block_on(demo::rest_salesforce::run(opts))
                    .map(|s| demo::rest_salesforce::render(&s)),
            });
            match printed {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("demo failed: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    }
}

/// `prmsync bench`: runs the scenarios, prints the table, writes the JSON if asked.
fn bench_cmd(
    scenarios: &[String],
    json: Option<&Path>,
    size: BenchSize,
    postgres: Option<String>,
) -> ExitCode {
    telemetry::init(LogFormat::Human, "error", Redactor::new(Vec::new(), true));
    if let Err(e) = bench::check_names(scenarios) {
        eprintln!("{e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let size = match size {
        BenchSize::Tiny => bench::Size::Tiny,
        BenchSize::Full => bench::Size::Full,
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench failed: cannot find the prmsync executable: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let opts = bench::Options {
        size,
        exe,
        postgres,
    };
    let report = match runtime().and_then(|rt| rt.block_on(bench::run(scenarios, &opts))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    print!("{}", bench::render_table(&report));
    if let Some(path) = json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(std::fs::write(path, b)?));
        if let Err(e) = written {
            eprintln!("could not write {}: {e:#}", path.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    ExitCode::SUCCESS
}

/// Warnings and errors only, as text (operator verbs); personal data redacted.
fn quiet_logs() {
    telemetry::init(LogFormat::Human, "warn", Redactor::new(Vec::new(), true));
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The config a verb acts on: the file's, or with `daemon.tenants_dir` the `--tenant`'s.
fn load(path: &Path) -> Result<Config, ExitCode> {
    let env = Environment::from_process();
    let fail = |message: String| {
        eprintln!("prmsync: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let loaded = config::load_any(path, &env).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    match (loaded, tenant()) {
        (config::Loaded::Single(c), None) => Ok(*c),
        (config::Loaded::Single(_), Some(t)) => Err(fail(format!(
            "--tenant {t}: {} runs one tenant (it has no daemon.tenants_dir); leave --tenant out",
            path.display()
        ))),
        (config::Loaded::Tenants(fleet), t) => {
            let names = config::tenant_names(&fleet).map_err(|e| {
                fail(format!(
                    "cannot read daemon.tenants_dir {}: {e}",
                    fleet.tenants_dir.display()
                ))
            })?;
            let Some(t) = t else {
                return Err(fail(format!(
                    "{} runs several tenants: name one with --tenant NAME (tenants: {})",
                    path.display(),
                    names.join(", ")
                )));
            };
            if !names.iter().any(|n| n == t) {
                return Err(fail(format!(
                    "unknown tenant {t:?}: no folder {} (tenants: {})",
                    fleet.tenant_dir(t).display(),
                    names.join(", ")
                )));
            }
            config::load_tenant(&fleet, t, &env).map_err(|e| {
                eprint!("{e}");
                ExitCode::from(EXIT_CONFIG)
            })
        }
    }
}

/// The multi-tenant config at `path` when it is one and no `--tenant` is given (`status`
/// lists, `check` checks every tenant); errors are printed.
fn fleet_without_tenant(path: &Path) -> Result<Option<config::FleetConfig>, ExitCode> {
    if tenant().is_some() {
        return Ok(None);
    }
    match config::load_any(path, &Environment::from_process()) {
        Ok(config::Loaded::Tenants(f)) => Ok(Some(*f)),
        Ok(config::Loaded::Single(_)) => Ok(None),
        Err(e) => {
            eprint!("{e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn run(path: &Path, log_json: bool) -> ExitCode {
    if let Some(t) = tenant() {
        eprintln!(
            "prmsync run: --tenant {t}: run starts every tenant of daemon.tenants_dir; leave --tenant out"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let env = Environment::from_process();
    let loaded = match config::load_any(path, &env) {
        Ok(l) => l,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (log, secrets) = match &loaded {
        config::Loaded::Single(c) => (c.log.clone(), telemetry::secrets(c)),
        config::Loaded::Tenants(f) => (f.log.clone(), prmsync::tenants::secrets(f, &env)),
    };
    let format = if log_json {
        LogFormat::Json
    } else {
        log.format
    };
    let redactor = Redactor::new(secrets, log.redact_personal_data);
    telemetry::init(format, &log.level, redactor);
    let failpoints = match std::env::var(failpoint::ENV_VAR) {
        Ok(spec) => match FailPoints::parse(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Err(std::env::VarError::NotPresent) => FailPoints::none(),
        Err(e) => {
            eprintln!("{}: {e}", failpoint::ENV_VAR);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let shutdown_token = CancellationToken::new();
            let reload = Arc::new(Notify::new());
            let done = CancellationToken::new();
            let signals = tokio::spawn(shutdown::handle_signals(
                shutdown_token.clone(),
                reload.clone(),
                done.clone(),
            ));
            let result = match loaded {
                config::Loaded::Single(config) => {
                    app::run(*config, path, shutdown_token, reload, failpoints).await
                }
                config::Loaded::Tenants(fleet) => {
                    prmsync::tenants::run(*fleet, shutdown_token, reload, failpoints).await
                }
            };
            done.cancel();
            match signals.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "signal handling failed"),
                Err(e) => tracing::warn!(error = %e, "signal task panicked"),
            }
            result
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "prmsync failed");
            eprintln!("prmsync: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn check(path: &Path, live: bool) -> ExitCode {
    quiet_logs();
    let fleet = match fleet_without_tenant(path) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Some(fleet) = fleet {
        return check_tenants(&fleet, live);
    }
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    check_config(&config, path, live)
}

/// `prmsync check` of a multi-tenant config: every tenant, each under its name.
fn check_tenants(fleet: &config::FleetConfig, live: bool) -> ExitCode {
    let names = match config::tenant_names(fleet) {
        Ok(n) => n,
        Err(e) => {
            eprintln!(
                "cannot read daemon.tenants_dir {}: {e}",
                fleet.tenants_dir.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut broken = Vec::new();
    for name in &names {
        println!("tenant {name}:");
        let file = fleet.tenant_dir(name).join(config::TENANT_FILE);
        let ok = match config::load_tenant(fleet, name, &Environment::from_process()) {
            Ok(c) => check_config(&c, &file, live) == ExitCode::SUCCESS,
            Err(e) => {
                eprint!("{e}");
                false
            }
        };
        if !ok {
            broken.push(name.as_str());
        }
    }
    // Like the daemon: a broken tenant is reported and skipped, the others run, so only the
    // fleet's own file fails this check (the unit runs it before start and reload);
    // `check --tenant NAME` fails for that tenant's problems.
    if broken.is_empty() {
        println!("ok: {} tenant(s)", names.len());
    } else {
        eprintln!(
            "{} of {} tenant(s) have problems (the daemon skips a tenant whose config, mappings or rules do not load): {}",
            broken.len(),
            names.len(),
            broken.join(", ")
        );
    }
    ExitCode::SUCCESS
}

/// `prmsync check` of one config (`path` names it in the summary); `live`: also `--live`.
fn check_config(config: &Config, path: &Path, live: bool) -> ExitCode {
    let mut problems = 0;
    let mut examples = 0;
    // Mapping errors do not stop the check: the rules file's errors are reported in the same run.
    let set = match app::load_mappings(config) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            problems += e.0.len();
            prmsync::mapping::MappingSet::default()
        }
    };
    for m in &set.mappings {
        examples += m.examples.len();
        for f in run_examples(m) {
            eprintln!("{f}");
            problems += 1;
        }
    }
    if problems == 0
        && let Err(e) = app::active_mappings(config, &set)
    {
        eprintln!("{e}");
        problems += 1;
    }
    // Rules of engagement: the file's errors, then its [[example]]s.
    let rules = match Rules::load(config.daemon.mappings_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprint!("{e}");
            problems += e.0.len();
            None
        }
    };
    for f in rules.iter().flat_map(prmsync::rules::run_examples) {
        eprintln!("{f}");
        problems += 1;
    }
    if problems > 0 {
        eprintln!("{problems} problem(s)");
        return ExitCode::from(EXIT_CONFIG);
    }
    let source = config
        .daemon
        .mappings_dir
        .as_ref()
        .map_or_else(|| "built-in".to_owned(), |d| d.display().to_string());
    println!(
        "ok: {} valid; {} mapping(s) from {source}, {examples} example(s) passed",
        path.display(),
        set.mappings.len()
    );
    match &rules {
        Some(r) => println!(
            "ok: rules of engagement {} (version {}), {} example(s) passed",
            r.file,
            r.version,
            r.examples.len()
        ),
        None => println!(
            "note: no {} in the mappings folder; registrations are not decided",
            prmsync::rules::RULES_FILE
        ),
    }
    if live {
        return check_live(config);
    }
    ExitCode::SUCCESS
}

/// `prmsync check --live`: the mapped fields against the CRM's live schema.
fn check_live(config: &Config) -> ExitCode {
    use prmsync::ops::check_live;
    match runtime().and_then(|rt| rt.block_on(check_live::check_config(config))) {
        Ok(r) if r.drift.is_empty() => {
            print!("{}", check_live::render(&r));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprint!("{}", check_live::render(&r));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("check --live failed: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The part of `prmsync plan` about the rules of engagement: which registrations the rules file
/// on disk would move, before the daemon applies it.
fn plan_registrations(config: &prmsync::config::Config) -> ExitCode {
    match runtime().and_then(|rt| rt.block_on(app::plan_registrations(config))) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some((version, moves))) => {
            println!();
            if moves.is_empty() {
                println!("rules of engagement (version {version}): no registration would change");
            } else {
                println!(
                    "rules of engagement (version {version}): {} registration(s) would change",
                    moves.len()
                );
            }
            for m in moves {
                println!(
                    "  {:<14} {:<10} -> {:<10} {}",
                    m.registration_id,
                    m.before.as_deref().unwrap_or("undecided"),
                    m.after.as_str(),
                    m.reason
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plan failed: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn plan_cmd(path: &Path, flow: Option<&str>, json: bool) -> ExitCode {
    quiet_logs();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match runtime().and_then(|rt| rt.block_on(app::plan(&config, flow))) {
        Ok(plans) if json => match serde_json::to_string_pretty(&plans) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Ok(plans) => {
            print!("{}", prmsync::engine::dryrun::render(&plans));
            plan_registrations(&config)
        }
        Err(e) => match e.downcast_ref::<MappingErrors>() {
            Some(errors) => {
                eprint!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
            None => {
                eprintln!("plan failed: {e:#}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
    }
}

/// Where an operator verb's state is: a SQLite file or a PostgreSQL schema.
enum StateRef {
    File(PathBuf),
    Postgres(prmsync::store::pg::PgTarget),
}

impl StateRef {
    /// Opens the state as a store (a file must exist; it is not created here).
    fn open(&self) -> anyhow::Result<Store> {
        Ok(match self {
            StateRef::File(path) => Store::open(path)?,
            StateRef::Postgres(target) => Store::open_postgres(target)?,
        })
    }
}

/// The state an operator verb acts on: `--state FILE`, else the config's `state.url` or
/// `daemon.state_path`.
fn state_ref(config: Option<&Path>, state: Option<&Path>) -> Result<StateRef, ExitCode> {
    let path = match (config, state) {
        (_, Some(s)) => s.to_owned(),
        (Some(c), None) => {
            let config = load(c)?;
            if let Some(target) = config.state.postgres {
                return Ok(StateRef::Postgres(target));
            }
            config.daemon.state_path
        }
        (None, None) => {
            eprintln!("prmsync: name the state file: --config FILE or --state FILE");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    if !path.exists() {
        eprintln!("no state file at {} (has prmsync run yet?)", path.display());
        return Err(ExitCode::from(EXIT_RUNTIME));
    }
    Ok(StateRef::File(path))
}

/// `prmsync report attribution`: reads the state (file or PostgreSQL schema) read-only and prints
/// or writes the report.
fn report_cmd(args: &prmsync::cli::AttributionArgs) -> ExitCode {
    quiet_logs();
    let state = match state_ref(args.config.as_deref(), args.state.as_deref()) {
        Ok(StateRef::File(path)) => prmsync::store::ReadOnlyStore::open(&path),
        Ok(StateRef::Postgres(target)) => prmsync::store::ReadOnlyStore::open_postgres(&target),
        Err(code) => return code,
    };
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            eprintln!("prmsync report attribution: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let mappings_dir = match args.config.as_deref().map(load).transpose() {
        Ok(c) => c.and_then(|c| c.daemon.mappings_dir),
        Err(code) => return code,
    };
    match prmsync::report_cli::attribution(&state, mappings_dir.as_deref(), args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(prmsync::report_cli::ReportError::Usage(m)) => {
            eprintln!("prmsync report attribution: {m}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("prmsync report attribution: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn auth_cmd(path: &Path, action: prmsync::cli::AuthAction) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match runtime().and_then(|rt| rt.block_on(prmsync::auth_cli::auth_command(&config, action))) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("auth failed: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn status_cmd(config: Option<&Path>, state: Option<&Path>, json: bool) -> ExitCode {
    if let (Some(file), None) = (config, state) {
        match fleet_without_tenant(file) {
            Ok(Some(fleet)) => return tenants_status(&fleet, json),
            Ok(None) => {}
            Err(code) => return code,
        }
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let (path, report) = match state_ref(config, state) {
        Ok(StateRef::File(p)) => {
            let r = prmsync::store::status_read_only(&p, now);
            (p.display().to_string(), r.map_err(anyhow::Error::from))
        }
        Ok(StateRef::Postgres(target)) => {
            let r = runtime().and_then(|rt| {
                rt.block_on(async {
                    let store = Store::open_postgres(&target)?;
                    Ok(store.status(now).await?)
                })
            });
            (format!("PostgreSQL schema {}", target.schema), r)
        }
        Err(code) => return code,
    };
    match report {
        Ok(r) if json => match serde_json::to_string_pretty(&r) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Ok(r) => {
            println!("state file: {path}");
            print!("{}", status::render(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot read {path}: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `prmsync status` of a multi-tenant config without `--tenant`: one line per tenant.
fn tenants_status(fleet: &config::FleetConfig, json: bool) -> ExitCode {
    quiet_logs();
    let now = jiff::Timestamp::now().as_millisecond();
    let env = Environment::from_process();
    let list = if fleet.state.postgres.is_some() {
        match runtime()
            .and_then(|rt| rt.block_on(prmsync::tenants::status::list_fleet(fleet, &env, now)))
        {
            Ok(l) => Ok(l),
            Err(e) => {
                eprintln!("cannot read the fleet's PostgreSQL state: {e:#}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        prmsync::tenants::status::list(fleet, &env, now)
    };
    let list = match list {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cannot read daemon.tenants_dir {}: {e}",
                fleet.tenants_dir.display()
            );
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if json {
        match serde_json::to_string_pretty(&list) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        print!("{}", prmsync::tenants::status::render(&list));
    }
    ExitCode::SUCCESS
}

fn dlq_cmd(config: Option<&Path>, state: Option<&Path>, json: bool, action: DlqAction) -> ExitCode {
    let state = match state_ref(config, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let now = jiff::Timestamp::now().as_millisecond();
    match runtime().and_then(|rt| {
        rt.block_on(async {
            let store = state.open()?;
            Ok(prmsync::ops::dlq::run_on(&store, action, json, now).await?)
        })
    }) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("prmsync dlq: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The boxed future an operator verb returns.
type Verb<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>> + 'a>>;

/// Runs an operator verb (`registrations`, `review`) against an existing state file.
fn operator(args: &StateArgs, verb: impl for<'a> FnOnce(&'a Store, bool) -> Verb<'a>) -> ExitCode {
    quiet_logs();
    let state = match state_ref(args.config.as_deref(), args.state.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let store = state.open()?;
            verb(&store, args.json).await
        })
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("prmsync: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `prmsync resync`: records a resync for the daemon, or lists them.
fn resync_cmd(path: &Path, args: prmsync::resync_cli::ResyncArgs) -> ExitCode {
    quiet_logs();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = jiff::Timestamp::now().as_millisecond();
    match runtime().and_then(|rt| rt.block_on(prmsync::resync_cli::run(&config, args, now))) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e)
            if e.downcast_ref::<prmsync::engine::EngineError>()
                .is_some_and(|e| matches!(e, prmsync::engine::EngineError::Resync(_)))
                || e.downcast_ref::<prmsync::engine::resync::ResyncError>()
                    .is_some() =>
        {
            eprintln!("prmsync resync: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("prmsync resync: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `prmsync erase`: erases a person, or lists the audit.
fn erase_cmd(path: &Path, args: prmsync::erase_cli::EraseArgs) -> ExitCode {
    quiet_logs();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = jiff::Timestamp::now().as_millisecond();
    match runtime().and_then(|rt| rt.block_on(prmsync::erase_cli::run(&config, args, now))) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            use prmsync::engine::erase::EraseError;
            let usage = matches!(
                e.downcast_ref::<EraseError>(),
                Some(EraseError::BadEmail | EraseError::BadRecord(_))
            );
            eprintln!("prmsync erase: {e:#}");
            ExitCode::from(if usage { EXIT_CONFIG } else { EXIT_RUNTIME })
        }
    }
}

/// `prmsync state copy`: a state file into an empty PostgreSQL schema.
fn state_copy_cmd(from: &str, to: &str, schema: &str) -> ExitCode {
    quiet_logs();
    use prmsync::ops::state_copy::{self, StateCopyError};
    let parsed =
        state_copy::parse_from(from).and_then(|from| Ok((from, state_copy::parse_to(to, schema)?)));
    let (from, target) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("prmsync state copy: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match state_copy::run(&from, &target) {
        Ok(report) => {
            print!("{}", state_copy::render(&from, &target, &report));
            ExitCode::SUCCESS
        }
        Err(e @ (StateCopyError::Usage(_) | StateCopyError::Busy(_))) => {
            eprintln!("prmsync state copy: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            // A PostgreSQL error says what failed in its source ("db error" alone says nothing).
            let e = anyhow::Error::from(e);
            eprintln!("prmsync state copy: {e:#}; nothing was committed in PostgreSQL");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `prmsync backup PATH`: a checked, consistent copy of the state file. A PostgreSQL state is
/// the database's to back up: refused, with the `pg_dump` command that does it.
fn backup_cmd(args: &StateArgs, dest: &Path) -> ExitCode {
    quiet_logs();
    let path = match state_ref(args.config.as_deref(), args.state.as_deref()) {
        Ok(StateRef::File(p)) => p,
        Ok(StateRef::Postgres(target)) => {
            eprint!(
                "{}",
                prmsync::ops::backup::postgres_refusal(&target.schema, dest)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(code) => return code,
    };
    match prmsync::ops::backup::backup(&path, dest) {
        Ok(r) if args.json => match serde_json::to_string_pretty(&r) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Ok(r) => {
            print!("{}", prmsync::ops::backup::render(&r));
            ExitCode::SUCCESS
        }
        Err(e @ prmsync::ops::backup::BackupError::Exists(_)) => {
            eprintln!("prmsync backup: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("prmsync backup: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `prmsync sim`: simulators until SIGINT/SIGTERM.
fn sim_cmd(opts: prmsync::ops::sim::SimOptions) -> ExitCode {
    quiet_logs();
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let running = prmsync::ops::sim::start(&opts).await?;
            print!("{}", running.describe());
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                _ = term.recv() => {}
            }
            running.stop().await;
            anyhow::Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prmsync sim: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `prmsync man [--dir DIR]`: the man page on stdout, or every command's page into DIR.
fn man_cmd(dir: Option<&Path>) -> ExitCode {
    let result = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).and_then(|()| clap_mangen::generate_to(Cli::command(), d))
        }
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prmsync man: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
