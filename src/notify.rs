//! The systemd notify protocol while the daemon runs: state changes (READY, RELOADING, STOPPING,
//! through [`notify`]) and the watch task, which sends `WATCHDOG=1` only while every stage task is
//! alive and has made progress within `daemon.stall_timeout_secs`, and keeps a one-line `STATUS=`
//! ("synced 1,234 today; lag 3 s; 0 dead letters") current. Outside systemd it does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::engine::progress::Stalled;
use crate::status::Summary;
use crate::telemetry::meters::meters;

/// Tells systemd about a state change; a no-op outside systemd.
pub fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `MONOTONIC_USEC=` for `RELOADING=1` (a plain status if the clock cannot be read).
pub fn monotonic() -> sd_notify::NotifyState<'static> {
    sd_notify::NotifyState::monotonic_usec_now()
        .unwrap_or(sd_notify::NotifyState::Status("reloading"))
}

/// What the watch task looks at.
#[derive(Debug, Clone)]
pub struct Watch {
    pub engine: Arc<Engine>,
    /// A stage quiet this long is stalled (`daemon.stall_timeout_secs`).
    pub stall_timeout: Duration,
    /// How often the `STATUS=` line is refreshed (without a watchdog; with one, at least every
    /// half watchdog interval).
    pub status_every: Duration,
}

/// Records synced today, from the ledger's running totals: the total at the start of the day
/// (or of this process, when it started today) is kept, so each refresh is one subtraction.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Today {
    day: jiff::civil::Date,
    base: i64,
    /// `HH:MM` this process started, while that was today.
    since: Option<String>,
}

impl Today {
    fn start(total: i64, now: &jiff::Zoned) -> Today {
        Today {
            day: now.date(),
            base: total,
            since: Some(now.strftime("%H:%M").to_string()),
        }
    }

    /// Records synced since the day (or the process) began, and when that was if not midnight.
    fn synced(&mut self, total: i64, now: &jiff::Zoned) -> (i64, Option<String>) {
        if now.date() != self.day {
            self.day = now.date();
            self.base = total;
            self.since = None;
        }
        ((total - self.base).max(0), self.since.clone())
    }
}

/// Runs until `stop`: pings the watchdog while no stage is stalled and refreshes `STATUS=`.
/// Returns at once when systemd is not listening (`NOTIFY_SOCKET` unset).
pub async fn watch(w: Watch, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    // WATCHDOG_USEC (and WATCHDOG_PID, if set, naming this process): ping at half of it.
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(w.status_every, |d| (d / 2).min(w.status_every));
    let every = every.max(Duration::from_millis(100));
    if let Some(d) = watchdog {
        tracing::info!(watchdog = ?d, stall_timeout = ?w.stall_timeout, "systemd watchdog on: pings while every stage makes progress");
    }
    let mut today: Option<Today> = None;
    let mut last_status = String::new();
    let mut was_stalled = false;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let stalled = w.engine.progress().stalled(w.stall_timeout);
        if stalled.is_empty() {
            if watchdog.is_some() {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            if was_stalled {
                tracing::info!("every stage makes progress again");
            }
        } else if !was_stalled {
            let stages: Vec<String> = stalled.iter().map(Stalled::to_string).collect();
            tracing::error!(stalled = %stages.join(", "), "a stage stopped making progress; watchdog pings stop so systemd restarts prmsync");
        }
        was_stalled = !stalled.is_empty();
        let line = status_line(&w.engine, &mut today, &stalled).await;
        if line != last_status {
            notify(&[sd_notify::NotifyState::Status(&line)]);
            last_status = line;
        }
    }
}

/// The current `STATUS=` line.
async fn status_line(engine: &Engine, today: &mut Option<Today>, stalled: &[Stalled]) -> String {
    let now_ms = (engine.clock())();
    let report = match engine.store().status(now_ms).await {
        Ok(r) => r,
        Err(e) => return format!("running; the state file did not answer: {e}"),
    };
    let total = crate::status::synced_total(&report);
    let now = jiff::Zoned::now();
    let (synced, since) = today
        .get_or_insert_with(|| Today::start(total, &now))
        .synced(total, &now);
    let lag = meters().lags(now_ms).into_iter().map(|(_, _, d)| d).max();
    crate::status::summary(&Summary {
        synced,
        since,
        lag,
        dead_letters: report.dead_letters,
        paused: report.holds.len(),
        stalled: stalled.iter().map(Stalled::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_counts_from_the_process_start_then_from_midnight() {
        let tz = jiff::tz::TimeZone::UTC;
        let at = |s: &str| {
            s.parse::<jiff::civil::DateTime>()
                .unwrap()
                .to_zoned(tz.clone())
                .unwrap()
        };
        let start = at("2026-12-01T09:14:00");
        let mut t = Today::start(100, &start);
        assert_eq!(
            t.synced(130, &at("2026-12-01T18:00:00")),
            (30, Some("09:14".into()))
        );
        assert_eq!(t.synced(150, &at("2026-12-02T00:00:30")), (0, None));
        assert_eq!(t.synced(175, &at("2026-12-02T08:00:00")), (25, None));
    }
}
