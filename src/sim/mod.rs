//! Loopback simulators of the vendor APIs, for `prmsync demo`, the tests and the benchmarks. Each
//! follows the published contract (paths, shapes, paging, errors, headers) in ../shared/specs.

pub mod hubspot;
mod hubspot_table;
mod index;
pub mod partnerstack;
mod partnerstack_table;
pub mod rereads;
pub mod rest;
pub mod salesforce;
mod salesforce_table;
pub mod seed;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A simulator listening on 127.0.0.1 on a free port, until dropped or stopped.
#[derive(Debug)]
pub struct SimServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl SimServer {
    /// Binds 127.0.0.1:0 and serves `router` until [`SimServer::stop`] or drop.
    pub async fn start(router: Router) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let token = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator stopped with an error");
            }
        });
        tasks.close();
        Ok(SimServer { addr, stop, tasks })
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}{}", self.addr, path)).expect("loopback URL parses")
    }

    /// Stops accepting and waits for open requests to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A clock that never returns the same millisecond twice, so every modification is ordered.
#[derive(Debug, Default)]
pub struct SimClock {
    last: AtomicI64,
}

impl SimClock {
    pub fn tick(&self) -> i64 {
        let wall = jiff::Timestamp::now().as_millisecond();
        let mut prev = self.last.load(Ordering::SeqCst);
        loop {
            let next = wall.max(prev + 1);
            match self
                .last
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }
}

/// A fault the next matching requests will get instead of a normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub status: u16,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

/// What a simulator does instead of answering, for faults beyond a plain status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// A status with the system's usual error body, and `Retry-After` in seconds if set.
    Fault(Fault),
    /// A status with `Retry-After` as an HTTP-date `secs` from now.
    RetryAtDate { status: u16, secs: u64 },
    /// A 200 whose body is not the documented JSON.
    Malformed,
}

impl From<Fault> for Injected {
    fn from(f: Fault) -> Self {
        Injected::Fault(f)
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for epoch milliseconds.
pub fn http_date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// One request as a simulator saw it, for tests that check timing (e.g. Retry-After honoured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub at_ms: i64,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// The request log as JSON, for the simulators' `/_sim/requests` inspection endpoint.
pub fn log_json(log: &[LoggedRequest]) -> serde_json::Value {
    log.iter()
        .map(|r| {
            serde_json::json!({"at_ms": r.at_ms, "method": r.method, "path": r.path, "status": r.status})
        })
        .collect()
}

/// Network misbehaviour a simulator applies around its handlers: latency before answering, and
/// writes that commit but whose answer is lost (a 502 from a proxy after the work is done).
#[derive(Debug, Default)]
pub struct Turbulence {
    latency_ms: std::sync::atomic::AtomicU64,
    lose_writes: std::sync::atomic::AtomicU32,
}

impl Turbulence {
    /// Every answer waits `latency` first (e.g. beyond the client's timeout).
    pub fn set_latency(&self, latency: std::time::Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `n` writes (non-GET requests) are applied, then answered with 502.
    pub fn lose_next_write_responses(&self, n: u32) {
        self.lose_writes.store(n, Ordering::SeqCst);
    }

    /// Runs the handler under the configured latency and response loss.
    pub async fn around(
        &self,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        let write = req.method() != axum::http::Method::GET;
        let resp = next.run(req).await;
        let lose = write
            && self
                .lose_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lose {
            return (
                axum::http::StatusCode::BAD_GATEWAY,
                "upstream connection lost",
            )
                .into_response();
        }
        resp
    }
}
