//! Scenario "million": a million deals backfilled into HubSpot by `prmsync run` in its own
//! process (so its memory is measured alone), killed half-way and restarted, then left idle:
//! stalls, re-reads after the restart, peak RSS, state-file bytes per link, requests and CPU per
//! idle poll interval, and `/metrics` latency.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::report::ScenarioResult;
use super::{Size, world};
use crate::demo;
use crate::sim::hubspot::HubSpotSim;
use crate::sim::partnerstack::PartnerStackSim;

/// Seconds between polls in the child's config (the idle interval measured).
fn poll_secs(size: Size) -> u64 {
    match size {
        Size::Tiny => 1,
        Size::Full => 5,
    }
}

/// The child's config: the simulators' URLs; secrets from its environment.
fn write_config(
    state: &world::TempState,
    ps: &str,
    hs: &str,
    ports: (u16, u16),
    poll: u64,
) -> anyhow::Result<PathBuf> {
    let (port, admin_port) = ports;
    let dir = state.path().with_file_name("");
    let path = dir.join("prmsync.toml");
    let toml = format!(
        r#"[daemon]
state_path = "{state}"
poll_interval_secs = {poll}

[log]
level = "warn"

[http]
listen = "127.0.0.1:{port}"

[admin]
listen = "127.0.0.1:{admin_port}"

[partnerstack]
base_url = "{ps}"
api_key = {{ env = "PRMSYNC_BENCH_PS_KEY" }}
rate_limit = {{ requests = {n}, window_ms = {ms} }}

[hubspot]
base_url = "{hs}"
access_token = {{ env = "PRMSYNC_BENCH_HS_TOKEN" }}
client_secret = {{ env = "PRMSYNC_BENCH_HS_SECRET" }}
rate_limit = {{ requests = {n}, window_ms = {ms} }}
"#,
        state = state.path().display(),
        // The simulators have no short-window limit (see `world::NO_SHORT_WINDOW`).
        n = world::NO_SHORT_WINDOW.n,
        ms = world::NO_SHORT_WINDOW.per.as_millis(),
    );
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Starts `prmsync run` (this executable) with `config`; its log goes beside the config.
fn spawn(exe: &Path, config: &Path, run: usize) -> anyhow::Result<Child> {
    let log = std::fs::File::create(config.with_file_name(format!("run-{run}.log")))?;
    Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("PRMSYNC_BENCH_PS_KEY", demo::PS_KEY)
        .env("PRMSYNC_BENCH_HS_TOKEN", demo::HS_TOKEN)
        .env("PRMSYNC_BENCH_HS_SECRET", demo::HS_SECRET)
        .env_remove(crate::failpoint::ENV_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting prmsync run")
}

/// A field of `/proc/PID/status` in KiB (e.g. `VmHWM`, the peak resident set).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User plus system CPU time of a process so far, from `/proc/PID/stat` (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

/// Kills the child and waits for it.
pub(super) fn stop(child: &mut Child) {
    if let Err(e) = child.kill() {
        tracing::warn!(error = %e, "could not kill the bench's prmsync child");
    }
    if let Err(e) = child.wait() {
        tracing::warn!(error = %e, "could not reap the bench's prmsync child");
    }
}

/// A free loopback port (bound and released).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the daemon is idle: its queues are empty (see [`queues_empty`]) and two
/// poll intervals pass without a CRM write or a PRM write-back; gives up after twenty intervals
/// (then says so). Returns whether it settled.
async fn settle(hs: &HubSpotSim, ps: &PartnerStackSim, poll: u64, admin_port: u16) -> bool {
    let http = crate::connector::http_client(Duration::from_secs(10));
    let writes = || (hs.stats().batch_upserts, ps.stats().patches);
    let mut last = writes();
    let started = Instant::now();
    let mut quiet = Instant::now();
    while started.elapsed() < Duration::from_secs(20 * poll) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = writes();
        if now != last || !queues_empty(&http, admin_port).await {
            last = now;
            quiet = Instant::now();
        } else if quiet.elapsed() >= Duration::from_secs(2 * poll) {
            return true;
        }
    }
    false
}

/// The daemon's `/metrics` text.
async fn metrics_text(http: &reqwest::Client, admin_port: u16) -> Option<String> {
    let resp = http
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

/// How many objects the daemon polls: one cursor series each in its `/metrics`.
async fn polled_objects(http: &reqwest::Client, admin_port: u16) -> Option<usize> {
    let text = metrics_text(http, admin_port).await?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("prmsync_cursor_age_seconds{"))
            .count(),
    )
}

/// Whether the daemon's `/metrics` says its inbox and outbox hold nothing and every
/// registration is decided.
async fn queues_empty(http: &reqwest::Client, admin_port: u16) -> bool {
    let Some(text) = metrics_text(http, admin_port).await else {
        return false;
    };
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    sum("prmsync_inbox_pending") == 0.0
        && sum("prmsync_outbox_depth") == 0.0
        && sum("prmsync_registrations{status=\"undecided\"}") == 0.0
}

/// Waits for `cond` at most `deadline`; returns whether it held.
async fn wait(cond: impl FnMut() -> bool, deadline: Duration) -> bool {
    tokio::time::timeout(deadline, world::until(cond))
        .await
        .is_ok()
}

pub async fn scenario(size: Size, exe: &Path) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new(
        "million",
        "no stall; restart re-reads <= 1 page per object; peak RSS <= 100 MiB; <= 300 bytes/link; \
         one request per polled object per idle interval; /metrics <= 5 ms",
    );
    let n: usize = match size {
        Size::Tiny => 2_000,
        Size::Full => 1_000_000,
    };
    let deadline = match size {
        Size::Tiny => Duration::from_secs(60),
        // Within the suite's 10 minutes; the backfill rate is reported either way.
        Size::Full => Duration::from_secs(150),
    };
    let poll = poll_secs(size);
    let seeded = Instant::now();
    let (ps, ps_server) = world::partnerstack(n).await?;
    ps.track_rereads();
    r.notes.push(format!(
        "seeded {n} deals in {:.1} s",
        seeded.elapsed().as_secs_f64()
    ));
    let (hs, hs_server) = world::hubspot().await?;
    let state = world::TempState::new("million")?;
    let (port, admin_port) = (free_port()?, free_port()?);
    let config = write_config(
        &state,
        ps_server.url("/api/v2").as_str(),
        hs_server.url("").as_str(),
        (port, admin_port),
        poll,
    )?;

    // First run: until half the deals are in HubSpot, then killed.
    let started = Instant::now();
    let mut child = spawn(exe, &config, 1)?;
    let half = wait(|| hs.stats().created >= n as u64 / 2, deadline * 2 / 3).await;
    let first_half = started.elapsed();
    let rss1 = status_kib(child.id(), "VmHWM").unwrap_or(0);
    stop(&mut child);
    ps.client_restarted(crate::engine::EngineSettings::default().overlap);

    // Second run: to the end, then idle.
    let mut child = spawn(exe, &config, 2)?;
    let left = deadline.saturating_sub(started.elapsed());
    let done = wait(|| hs.stats().created >= n as u64, left).await;
    let total = started.elapsed();
    let created = hs.stats().created;
    // The idle figures mean something only once the backfill is done: a daemon still
    // backfilling is not idle, and waiting for it to settle would only spend the run's budget.
    let idle = if done {
        if !settle(&hs, &ps, poll, admin_port).await {
            r.notes.push(format!(
                "the daemon was still writing {} s after the backfill: the idle figures include that work",
                20 * poll
            ));
        }
        let intervals = 3;
        let (req0, cpu0) = (
            ps.stats().requests + hs.stats().requests,
            cpu_ms(child.id()),
        );
        tokio::time::sleep(Duration::from_secs(intervals * poll)).await;
        let (req1, cpu1) = (
            ps.stats().requests + hs.stats().requests,
            cpu_ms(child.id()),
        );
        let cpu = match (cpu0, cpu1) {
            (Some(a), Some(b)) => (b - a) / intervals as f64,
            _ => f64::NAN,
        };
        Some(((req1 - req0) as f64 / intervals as f64, cpu))
    } else {
        r.notes.push(
            "idle interval not measured: the backfill had not finished by the deadline".into(),
        );
        None
    };
    let http = crate::connector::http_client(Duration::from_secs(10));
    let mut metrics_ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let ok = http
            .get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .send()
            .await
            .is_ok_and(|resp| resp.status().is_success());
        if ok {
            metrics_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let objects = polled_objects(&http, admin_port).await;
    metrics_ms.sort_by(f64::total_cmp);
    let rss2 = status_kib(child.id(), "VmHWM").unwrap_or(0);
    stop(&mut child);
    let state_bytes = state.bytes();

    r.metric("deals in HubSpot", created as f64, "");
    r.metric("backfill", world::rate(created as f64, total), "records/s");
    r.metric("first half", first_half.as_secs_f64(), "s");
    r.metric(
        "re-read after restart",
        ps.rereads() as f64 / 250.0,
        "pages of 250 (beyond the 2 s overlap each pass re-reads)",
    );
    r.metric("peak RSS", rss1.max(rss2) as f64 / 1024.0, "MiB");
    r.metric(
        "state file",
        state_bytes as f64 / created.max(1) as f64,
        "bytes/link",
    );
    if let Some((requests, cpu)) = idle {
        r.metric("requests per idle interval", requests, "");
        if let Some(objects) = objects {
            r.metric("polled objects", objects as f64, "");
        }
        r.metric("CPU per idle interval", cpu, "ms");
    }
    r.metric(
        "/metrics p50",
        metrics_ms
            .get(metrics_ms.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        "ms",
    );
    r.metric(
        "/metrics max",
        metrics_ms.last().copied().unwrap_or(f64::NAN),
        "ms",
    );
    if !half || !done {
        r.notes.push(format!(
            "stalled: {created} of {n} deals in HubSpot after {:.0} s",
            total.as_secs_f64()
        ));
    }
    let p50 = metrics_ms
        .get(metrics_ms.len() / 2)
        .copied()
        .unwrap_or(f64::MAX);
    r.judge(
        size,
        half && done
            && ps.rereads() <= 250
            && rss1.max(rss2) <= 100 * 1024
            && state_bytes <= 300 * created.max(1)
            && p50 <= 5.0,
    );
    hs_server.stop().await;
    ps_server.stop().await;
    Ok(r)
}
