//! The `prmsync` binary: parse the CLI, set up logging, dispatch, and map errors to exit codes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use prmsync::cli::{BenchSize, Cli, Command, DlqAction, StateArgs};
use prmsync::config::{self, Config, Environment, LogFormat};
use prmsync::failpoint::{self, FailPoints};
use prmsync::mapping::{MappingErrors, run_examples};
use prmsync::rules::Rules;
use prmsync::store::Store;
use prmsync::{app, bench, demo, registrations_cli, shutdown, status, telemetry};

/// Exit code for runtime failures.
const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad configuration, mappings or usage.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config, cli.log_json),
        Command::Check { file, config } => match file.or(config) {
            Some(path) => check(&path),
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
        Command::Bench {
            scenarios,
            json,
            size,
        } => bench_cmd(&scenarios, json.as_deref(), size),
        Command::Demo {
            state,
            deals,
            partners,
        } => {
            telemetry::init(
                if cli.log_json {
                    LogFormat::Json
                } else {
                    LogFormat::Human
                },
                "warn",
            );
            let opts = demo::DemoOptions {
                state: state.unwrap_or_else(demo::DemoOptions::default_state),
                deals,
                partners,
            };
            match runtime().and_then(|rt| rt.block_on(demo::run(opts))) {
                Ok(summary) => {
                    print!("{}", demo::render(&summary));
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
fn bench_cmd(scenarios: &[String], json: Option<&Path>, size: BenchSize) -> ExitCode {
    telemetry::init(LogFormat::Human, "error");
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
    let opts = bench::Options { size, exe };
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path, &Environment::from_process()).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(path: &Path, log_json: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let format = if log_json {
        LogFormat::Json
    } else {
        config.log.format
    };
    telemetry::init(format, &config.log.level);
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
            let result = app::run(config, shutdown_token, reload, failpoints).await;
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

fn check(path: &Path) -> ExitCode {
    telemetry::init(LogFormat::Human, "warn");
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let set = match app::load_mappings(&config) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut problems = 0;
    let mut examples = 0;
    for m in &set.mappings {
        examples += m.examples.len();
        for f in run_examples(m) {
            eprintln!("{f}");
            problems += 1;
        }
    }
    if let Err(e) = app::active_mappings(&config, &set) {
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
    ExitCode::SUCCESS
}

fn plan_cmd(path: &Path, flow: Option<&str>, json: bool) -> ExitCode {
    telemetry::init(LogFormat::Human, "warn");
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
            ExitCode::SUCCESS
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

fn status_cmd(config: Option<&Path>, state: Option<&Path>, json: bool) -> ExitCode {
    let path = match (config, state) {
        (_, Some(s)) => s.to_owned(),
        (Some(c), None) => match load(c) {
            Ok(c) => c.daemon.state_path,
            Err(code) => return code,
        },
        (None, None) => return ExitCode::from(EXIT_CONFIG),
    };
    if !path.exists() {
        eprintln!("no state file at {} (has prmsync run yet?)", path.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    match prmsync::store::status_read_only(&path, jiff::Timestamp::now().as_millisecond()) {
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
            println!("state file: {}", path.display());
            print!("{}", status::render(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn dlq_cmd(config: Option<&Path>, state: Option<&Path>, json: bool, action: DlqAction) -> ExitCode {
    let path = match (config, state) {
        (_, Some(s)) => s.to_owned(),
        (Some(c), None) => match load(c) {
            Ok(c) => c.daemon.state_path,
            Err(code) => return code,
        },
        (None, None) => {
            eprintln!(
                "prmsync dlq: name the config (--config FILE) or the state file (--state FILE)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if !path.exists() {
        eprintln!("no state file at {} (has prmsync run yet?)", path.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    let now = jiff::Timestamp::now().as_millisecond();
    match runtime()
        .and_then(|rt| Ok(rt.block_on(prmsync::ops::dlq::run(&path, action, json, now))?))
    {
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
    telemetry::init(LogFormat::Human, "warn");
    let path = match (&args.config, &args.state) {
        (_, Some(s)) => s.clone(),
        (Some(c), None) => match load(c) {
            Ok(c) => c.daemon.state_path,
            Err(code) => return code,
        },
        (None, None) => {
            eprintln!("name the state file: --config FILE or --state FILE");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if !path.exists() {
        eprintln!("no state file at {} (has prmsync run yet?)", path.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let store = Store::open(&path)?;
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
