//! HubSpot rate limits: the `X-HubSpot-RateLimit-*` headers (two families, every one optional) and
//! 429 bodies whose `policyName` says which limit was hit (secondly or daily: very different waits).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::api;
use crate::connector::ConnectorError;

/// Wait after a secondly (10-second window) limit when HubSpot names no time.
const SECONDLY_WAIT: Duration = Duration::from_secs(1);

/// What the last response said about the limits; absent headers stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub daily: Option<u64>,
    pub daily_remaining: Option<u64>,
    pub secondly: Option<u64>,
    pub secondly_remaining: Option<u64>,
    /// The `-Max` / `-Remaining` / `-Interval-Milliseconds` family.
    pub max: Option<u64>,
    pub remaining: Option<u64>,
    pub interval_ms: Option<u64>,
}

impl RateLimits {
    pub fn from_headers(h: &HeaderMap) -> RateLimits {
        let n = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        RateLimits {
            daily: n("x-hubspot-ratelimit-daily"),
            daily_remaining: n("x-hubspot-ratelimit-daily-remaining"),
            secondly: n("x-hubspot-ratelimit-secondly"),
            secondly_remaining: n("x-hubspot-ratelimit-secondly-remaining"),
            max: n("x-hubspot-ratelimit-max"),
            remaining: n("x-hubspot-ratelimit-remaining"),
            interval_ms: n("x-hubspot-ratelimit-interval-milliseconds"),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == RateLimits::default()
    }
}

/// Typed error for a HubSpot error answer. A 429 waits for `Retry-After` if sent; otherwise a
/// `DAILY` policy waits until the next UTC midnight and a secondly one for the window.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    now: jiff::Timestamp,
) -> ConnectorError {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return crate::connector::classify(status, headers, body);
    }
    let parsed: Option<api::RateLimitBody> = serde_json::from_str(body).ok();
    let policy = parsed
        .as_ref()
        .and_then(|b| b.policy_name.clone())
        .unwrap_or_else(|| "UNKNOWN".into());
    let detail = format!(
        "HTTP 429 {policy}: {}",
        parsed
            .as_ref()
            .and_then(|b| b.message.as_deref())
            .unwrap_or("rate limited")
    );
    let wait = crate::connector::retry_after(headers).unwrap_or_else(|| {
        if policy == "DAILY" {
            until_midnight_utc(now)
        } else {
            RateLimits::from_headers(headers)
                .interval_ms
                .map(Duration::from_millis)
                .unwrap_or(SECONDLY_WAIT)
        }
    });
    ConnectorError::RateLimited {
        retry_after: wait,
        detail,
    }
}

fn until_midnight_utc(now: jiff::Timestamp) -> Duration {
    let day = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let next = day
        .tomorrow()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp());
    next.and_then(|n| Duration::try_from(n.duration_since(now)).ok())
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn body(policy: &str) -> String {
        format!(
            r#"{{"status":"error","message":"You have reached your {} limit.","errorType":"RATE_LIMIT","correlationId":"c033cdaa","policyName":"{policy}","requestId":"3d3e35b7"}}"#,
            policy.to_lowercase()
        )
    }

    #[test]
    fn secondly_and_daily_policies_wait_differently() {
        let now: jiff::Timestamp = "2026-11-24T23:30:00Z".parse().unwrap();
        let h = HeaderMap::new();
        let wait = |b: &str, h: &HeaderMap| {
            classify(StatusCode::TOO_MANY_REQUESTS, h, b, now)
                .retry_after()
                .unwrap()
        };
        assert_eq!(wait(&body("SECONDLY"), &h), Duration::from_secs(1));
        assert_eq!(wait(&body("DAILY"), &h), Duration::from_secs(30 * 60));
        assert_eq!(wait("not json", &h), Duration::from_secs(1));
        let mut with = HeaderMap::new();
        with.insert("retry-after", HeaderValue::from_static("4"));
        assert_eq!(wait(&body("DAILY"), &with), Duration::from_secs(4));
        let mut interval = HeaderMap::new();
        interval.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            HeaderValue::from_static("10000"),
        );
        assert_eq!(wait(&body("SECONDLY"), &interval), Duration::from_secs(10));
    }

    #[test]
    fn headers_are_all_optional() {
        let mut h = HeaderMap::new();
        assert!(RateLimits::from_headers(&h).is_empty());
        h.insert(
            "x-hubspot-ratelimit-secondly-remaining",
            HeaderValue::from_static("7"),
        );
        h.insert(
            "x-hubspot-ratelimit-daily",
            HeaderValue::from_static("junk"),
        );
        let l = RateLimits::from_headers(&h);
        assert_eq!((l.secondly_remaining, l.daily), (Some(7), None));
    }
}
