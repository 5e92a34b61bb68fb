//! Process-wide event counters for `/metrics` and the systemd `STATUS=` line: what the running
//! process saw (errors, polls, webhooks, HTTP calls, rate-limit waits, token refreshes, SQLite
//! busy events) as opposed to what the state file keeps. Every update is an atomic add or one
//! small map entry per stream: O(1) whatever the data size. One daemon runs per process, so the
//! counters are process-wide (like any Prometheus client's default registry); they start at 0
//! with the process, which Prometheus reads as a counter reset.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::connector::ConnectorError;
use crate::model::SystemKind;

/// The kinds `prmsync_errors_total` counts (every one is exported, at 0 until it happens).
pub const ERROR_KINDS: &[&str] = &[
    "rate_limited",
    "transient",
    "auth",
    "permanent",
    "conflict",
    "store",
    "resync",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamResult {
    system: String,
    object: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SystemResult {
    system: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    system: String,
    status_class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    system: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DaemonLabel {
    daemon: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    system: String,
    object: String,
    field: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    system: String,
    object: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// One polled stream's freshness, in epoch milliseconds of the engine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Freshness {
    /// Everything changed before this is staged: the start of the last read that reached its end
    /// (before the first one, when this process first polled the stream).
    synced_to_ms: i64,
    /// When the read under way started (`None`: no read under way).
    read_started_ms: Option<i64>,
}

/// The process's counters.
#[derive(Debug)]
pub struct Meters {
    errors: Family<KindLabel, Counter>,
    polls: Family<StreamResult, Counter>,
    webhooks: Family<SystemResult, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<HttpLabels, Histogram, fn() -> Histogram>,
    rate_limit_waits: Family<WaitLabels, Counter>,
    token_refreshes: Family<SystemResult, Counter>,
    sqlite_busy: Counter,
    fenced_commits: Counter,
    leases_held: Family<DaemonLabel, Gauge>,
    schema_skipped: Family<FieldLabels, Counter>,
    streams: Mutex<BTreeMap<(String, String), Freshness>>,
    /// Poll cycles ended, all streams (the bench reads it: webhooks must cause none).
    poll_cycles: std::sync::atomic::AtomicU64,
}

static METERS: LazyLock<Meters> = LazyLock::new(|| {
    let m = Meters {
        errors: Family::default(),
        polls: Family::default(),
        webhooks: Family::default(),
        http_requests: Family::default(),
        http_seconds: Family::new_with_constructor(latency_histogram),
        rate_limit_waits: Family::default(),
        token_refreshes: Family::default(),
        sqlite_busy: Counter::default(),
        fenced_commits: Counter::default(),
        leases_held: Family::default(),
        schema_skipped: Family::default(),
        streams: Mutex::default(),
        poll_cycles: std::sync::atomic::AtomicU64::new(0),
    };
    for kind in ERROR_KINDS {
        m.errors
            .get_or_create(&KindLabel {
                kind: (*kind).to_owned(),
            })
            .inc_by(0);
    }
    m
});

/// The process's counters.
pub fn meters() -> &'static Meters {
    &METERS
}

/// The `status_class` label of an HTTP answer (`error`: no answer, a network failure or timeout).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) | None => "error",
    }
}

/// The `kind` label of a connector error.
pub fn error_kind(e: &ConnectorError) -> &'static str {
    match e {
        ConnectorError::RateLimited { .. } => "rate_limited",
        ConnectorError::Transient(_) => "transient",
        ConnectorError::Auth(_) => "auth",
        ConnectorError::Permanent(_) => "permanent",
        ConnectorError::Conflict(_) => "conflict",
    }
}

impl Meters {
    /// An error the engine met (a failed poll, write, match search or store step).
    pub fn error(&self, kind: &'static str) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A poll cycle of `system/object` starts at `now_ms`; `fresh_read`: it starts a read (no
    /// stored page to continue).
    pub fn poll_started(&self, system: SystemKind, object: &str, fresh_read: bool, now_ms: i64) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let s = streams
            .entry((system.to_string(), object.to_owned()))
            .or_insert(Freshness {
                synced_to_ms: now_ms,
                read_started_ms: None,
            });
        if fresh_read || s.read_started_ms.is_none() {
            s.read_started_ms = Some(now_ms);
        }
    }

    /// A poll cycle of `system/object` ended: `Ok(true)` reached the read's end, `Ok(false)`
    /// left pages for the next cycle.
    pub fn poll_ended(&self, system: SystemKind, object: &str, finished: Result<bool, ()>) {
        self.poll_cycles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = if finished.is_ok() { "ok" } else { "failed" };
        self.polls
            .get_or_create(&StreamResult {
                system: system.to_string(),
                object: object.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if finished == Ok(true) {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = streams.get_mut(&(system.to_string(), object.to_owned()))
                && let Some(started) = s.read_started_ms.take()
            {
                s.synced_to_ms = s.synced_to_ms.max(started);
            }
        }
    }

    /// Poll cycles this process has ended (every stream, every result).
    pub fn poll_cycles(&self) -> u64 {
        self.poll_cycles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How far behind each polled stream is at `now_ms`: the time since the start of its last
    /// complete read (a quiet stream that polls fine stays within one poll interval).
    pub fn lags(&self, now_ms: i64) -> Vec<(String, String, Duration)> {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams
            .iter()
            .map(|((system, object), f)| {
                let ms = u64::try_from(now_ms - f.synced_to_ms).unwrap_or(0);
                (system.clone(), object.clone(), Duration::from_millis(ms))
            })
            .collect()
    }

    /// A webhook answered: `result` is `accepted` (2xx, repeats included), `rejected` (signature),
    /// `malformed`, `too_large`, `unavailable` (503), `not_configured` or `error`.
    pub fn webhook(&self, system: &str, result: &'static str) {
        self.webhooks
            .get_or_create(&SystemResult {
                system: system.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// An HTTP request to `system` ended after `took` (`status`: `None` without an answer).
    pub fn http_request(&self, system: SystemKind, status: Option<u16>, took: Duration) {
        let labels = HttpLabels {
            system: system.to_string(),
            status_class: status_class(status).to_owned(),
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A request to `system` waited for the rate limit: `reason` is `budget` (prmsync's own
    /// quota for the credential) or `retry_after` (the system answered 429).
    pub fn rate_limit_wait(&self, system: SystemKind, reason: &'static str) {
        self.rate_limit_waits
            .get_or_create(&WaitLabels {
                system: system.to_string(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// An access-token request (OAuth refresh, JWT bearer grant) to `system` ended.
    pub fn token_refresh(&self, system: SystemKind, ok: bool) {
        self.token_refreshes
            .get_or_create(&SystemResult {
                system: system.to_string(),
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// Exports `system`'s rate-limit waits and token refreshes at 0 until they happen, so
    /// dashboards and alerts see the series from the start.
    pub fn known_system(&self, system: SystemKind) {
        for reason in ["budget", "retry_after"] {
            self.rate_limit_waits
                .get_or_create(&WaitLabels {
                    system: system.to_string(),
                    reason: reason.to_owned(),
                })
                .inc_by(0);
        }
        for result in ["ok", "failed"] {
            self.token_refreshes
                .get_or_create(&SystemResult {
                    system: system.to_string(),
                    result: result.to_owned(),
                })
                .inc_by(0);
        }
    }

    /// A write to `system`/`object` went out without `field` (drifted in the live schema, or a
    /// picklist value the live schema refuses).
    pub fn schema_skipped(&self, system: SystemKind, object: &str, field: &str) {
        self.schema_skipped
            .get_or_create(&FieldLabels {
                system: system.to_string(),
                object: object.to_owned(),
                field: field.to_owned(),
            })
            .inc();
    }

    /// SQLite answered "busy" (another connection held the lock) and the statement waited.
    pub fn sqlite_busy(&self) {
        self.sqlite_busy.inc();
    }

    /// A PostgreSQL commit was refused because its lease's generation moved on (fleet mode).
    pub fn fenced_commit(&self) {
        self.fenced_commits.inc();
    }

    /// Fenced commits refused so far.
    pub fn fenced_commits(&self) -> u64 {
        self.fenced_commits.get()
    }

    /// How many tenant leases this daemon (`daemon`, its fleet id) holds now.
    pub fn leases_held(&self, daemon: &str, held: usize) {
        self.leases_held
            .get_or_create(&DaemonLabel {
                daemon: daemon.to_owned(),
            })
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Busy events so far.
    pub fn sqlite_busy_events(&self) -> u64 {
        self.sqlite_busy.get()
    }

    /// Registers every family (they share state with the process's counters) in `registry`,
    /// with the cursor lag as of `now_ms`.
    pub fn register(&self, registry: &mut Registry, now_ms: i64) {
        registry.register(
            "prmsync_errors",
            "Errors the engine met, by kind (rate_limited, transient, auth, permanent, conflict, store, resync)",
            self.errors.clone(),
        );
        registry.register(
            "prmsync_polls",
            "Poll cycles per stream, by result (ok, failed)",
            self.polls.clone(),
        );
        registry.register(
            "prmsync_webhooks",
            "Webhook requests answered, by system and result",
            self.webhooks.clone(),
        );
        registry.register(
            "prmsync_http_client_requests",
            "HTTP requests to the vendor APIs, by system and status class (error: no answer)",
            self.http_requests.clone(),
        );
        registry.register(
            "prmsync_http_client_request_duration_seconds",
            "Time until a vendor API answered (response headers), by system and status class",
            self.http_seconds.clone(),
        );
        registry.register(
            "prmsync_rate_limit_waits",
            "Requests that waited for a rate limit, by system and reason (budget, retry_after)",
            self.rate_limit_waits.clone(),
        );
        registry.register(
            "prmsync_token_refreshes",
            "Access-token requests (OAuth refresh, JWT bearer), by system and result",
            self.token_refreshes.clone(),
        );
        registry.register(
            "prmsync_schema_skipped_values",
            "Values left out of CRM writes because the live schema no longer takes them (a drifted field, a refused picklist value), by system, object and field",
            self.schema_skipped.clone(),
        );
        registry.register(
            "prmsync_sqlite_busy_events",
            "Times SQLite found the state file locked and waited",
            self.sqlite_busy.clone(),
        );
        registry.register(
            "prmsync_fleet_fenced_commits",
            "Commits of a PostgreSQL tenant state refused because the lease's generation moved on (fleet mode)",
            self.fenced_commits.clone(),
        );
        registry.register(
            "prmsync_fleet_leases_held",
            "Tenant leases this daemon holds now, by daemon id (fleet mode; absent otherwise)",
            self.leases_held.clone(),
        );
        let lag = Family::<StreamLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for (system, object, d) in self.lags(now_ms) {
            lag.get_or_create(&StreamLabels { system, object })
                .set(d.as_secs_f64());
        }
        registry.register(
            "prmsync_cursor_lag_seconds",
            "Per polled stream, seconds since the start of its last complete read: changes older than this are staged",
            lag,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_stream_stays_fresh_and_a_failing_one_falls_behind() {
        let m = Meters {
            errors: Family::default(),
            polls: Family::default(),
            webhooks: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram),
            rate_limit_waits: Family::default(),
            token_refreshes: Family::default(),
            sqlite_busy: Counter::default(),
            fenced_commits: Counter::default(),
            leases_held: Family::default(),
            schema_skipped: Family::default(),
            streams: Mutex::default(),
            poll_cycles: std::sync::atomic::AtomicU64::new(0),
        };
        let hs = SystemKind::HubSpot;
        m.poll_started(hs, "deals", true, 1_000);
        m.poll_ended(hs, "deals", Ok(true));
        // Quiet: each poll finds nothing and finishes; the lag is the time since the last start.
        m.poll_started(hs, "deals", true, 31_000);
        m.poll_ended(hs, "deals", Ok(true));
        assert_eq!(m.lags(33_000)[0].2, Duration::from_secs(2));
        // A read over several cycles counts from its first cycle's start.
        m.poll_started(hs, "deals", true, 61_000);
        m.poll_ended(hs, "deals", Ok(false));
        m.poll_started(hs, "deals", false, 62_000);
        m.poll_ended(hs, "deals", Ok(true));
        assert_eq!(m.lags(70_000)[0].2, Duration::from_secs(9));
        // Failing polls: the lag grows.
        m.poll_started(hs, "deals", true, 91_000);
        m.poll_ended(hs, "deals", Err(()));
        m.poll_started(hs, "deals", true, 121_000);
        m.poll_ended(hs, "deals", Err(()));
        assert_eq!(m.lags(130_000)[0].2, Duration::from_secs(69));
        let failed = m.polls.get_or_create(&StreamResult {
            system: "hubspot".into(),
            object: "deals".into(),
            result: "failed".into(),
        });
        assert_eq!(failed.get(), 2);
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(429)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }
}
