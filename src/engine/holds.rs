//! Per-system holds: a system that asked prmsync to wait (429 + Retry-After) gets no request until
//! the wait ends; one whose credential died (401/403, `invalid_grant`) gets none until a probe or
//! a newly loaded credential shows it works again. Only that system pauses; its changes queue.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::connector::ConnectorError;
use crate::model::SystemKind;

/// Why a system is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// It asked for a pause; nothing is sent before `until_ms`.
    RateLimited { until_ms: i64 },
    /// Its credential was refused; it needs re-authorisation (or a refreshed credential).
    NeedsReauth { since_ms: i64, detail: String },
}

/// How often a connection paused on a dead credential is probed with one cheap call.
pub const REAUTH_PROBE_MS: i64 = 30_000;

/// The holds in force, shared by pollers and writers.
#[derive(Debug, Default)]
pub struct Holds {
    inner: Mutex<BTreeMap<SystemKind, Hold>>,
    /// When each paused connection was last probed.
    probed: Mutex<BTreeMap<SystemKind, i64>>,
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SystemKind, Hold>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hold on `system` at `now_ms`, if any (an ended rate-limit wait is dropped).
    pub fn get(&self, system: SystemKind, now_ms: i64) -> Option<Hold> {
        let mut holds = self.lock();
        if let Some(Hold::RateLimited { until_ms }) = holds.get(&system)
            && *until_ms <= now_ms
        {
            holds.remove(&system);
        }
        holds.get(&system).cloned()
    }

    /// When the earliest rate-limit wait ends, if any system is waiting one out.
    pub fn next_end(&self) -> Option<i64> {
        self.lock()
            .values()
            .filter_map(|h| match h {
                Hold::RateLimited { until_ms } => Some(*until_ms),
                Hold::NeedsReauth { .. } => None,
            })
            .min()
    }

    /// Records the hold an error calls for; returns it when the error is one that holds.
    pub fn note(&self, system: SystemKind, error: &ConnectorError, now_ms: i64) -> Option<Hold> {
        let hold = match error {
            ConnectorError::RateLimited { retry_after, .. } => Hold::RateLimited {
                until_ms: now_ms + i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX / 4),
            },
            ConnectorError::Auth(detail) => Hold::NeedsReauth {
                since_ms: now_ms,
                detail: detail.clone(),
            },
            _ => return None,
        };
        let mut holds = self.lock();
        // A dead credential outranks a rate limit; a longer wait outranks a shorter one.
        let keep = match (holds.get(&system), &hold) {
            (Some(Hold::NeedsReauth { .. }), Hold::RateLimited { .. }) => true,
            (Some(Hold::RateLimited { until_ms: a }), Hold::RateLimited { until_ms: b }) => a >= b,
            _ => false,
        };
        if !keep {
            holds.insert(system, hold.clone());
        }
        Some(hold)
    }

    /// Lifts a re-authorisation hold on `system` (a probe succeeded or a new credential was
    /// loaded); a rate-limit hold stays until its wait ends.
    pub fn release_reauth(&self, system: SystemKind) -> Option<Hold> {
        let mut holds = self.lock();
        if !matches!(holds.get(&system), Some(Hold::NeedsReauth { .. })) {
            return None;
        }
        self.probed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&system);
        holds.remove(&system)
    }

    /// Whether a connection paused on a dead credential is due for a probe (at most one per
    /// [`REAUTH_PROBE_MS`], the first one a full interval after the pause); records the probe.
    pub fn probe_due(&self, system: SystemKind, now_ms: i64) -> bool {
        let since = match self.lock().get(&system) {
            Some(Hold::NeedsReauth { since_ms, .. }) => *since_ms,
            _ => return false,
        };
        let mut probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        let last = probed.get(&system).copied().unwrap_or(since);
        if now_ms - last < REAUTH_PROBE_MS {
            return false;
        }
        probed.insert(system, now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limits_end_by_themselves_and_auth_holds_until_released() {
        let h = Holds::default();
        let hs = SystemKind::HubSpot;
        let limited = ConnectorError::RateLimited {
            retry_after: Duration::from_secs(2),
            detail: "x".into(),
        };
        assert_eq!(
            h.note(hs, &limited, 1_000),
            Some(Hold::RateLimited { until_ms: 3_000 })
        );
        assert!(h.get(hs, 2_999).is_some());
        assert_eq!(h.get(hs, 3_000), None);
        assert_eq!(h.note(hs, &ConnectorError::Transient("x".into()), 0), None);
        h.note(hs, &ConnectorError::Auth("invalid_grant".into()), 5);
        h.note(hs, &limited, 6);
        assert!(matches!(
            h.get(hs, i64::MAX),
            Some(Hold::NeedsReauth { .. })
        ));
        assert_eq!(h.get(SystemKind::PartnerStack, 0), None);
        assert!(!h.probe_due(hs, 5 + REAUTH_PROBE_MS - 1));
        assert!(h.probe_due(hs, 5 + REAUTH_PROBE_MS));
        assert!(!h.probe_due(hs, 5 + REAUTH_PROBE_MS + 1));
        assert!(h.probe_due(hs, 5 + 2 * REAUTH_PROBE_MS));
        assert!(h.release_reauth(hs).is_some());
        assert_eq!(h.get(hs, 0), None);
        // A new credential lifts a re-authorisation hold, never a rate-limit wait.
        h.note(hs, &limited, 10);
        assert_eq!(h.release_reauth(hs), None);
        assert!(h.get(hs, 11).is_some());
        assert_eq!(h.get(hs, 2_010), None, "it ends by itself");
        h.note(hs, &ConnectorError::Auth("401".into()), 20);
        assert!(h.release_reauth(hs).is_some());
        assert_eq!(h.get(hs, 21), None);
        assert!(!h.probe_due(hs, i64::MAX / 2));
    }
}
