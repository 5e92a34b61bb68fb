//! The operator verbs for deal registrations and the review queue: `prmsync registrations
//! list|show|explain` and `prmsync review list|approve|reject`, over the store's verbs.

use anyhow::bail;

use crate::cli::{RegistrationsAction, ReviewAction};
use crate::rules::Status;
use crate::store::{DecisionChange, Store, StoredCredits, StoredRegistration};

fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || "-".to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// A partner as a person knows it: its name in the PRM, with the key.
fn partner(r: &StoredRegistration) -> String {
    match &r.partner_name {
        Some(name) => format!("{name} ({})", r.partner),
        None => r.partner.clone(),
    }
}

fn table(regs: &[StoredRegistration]) -> String {
    if regs.is_empty() {
        return "no registrations\n".into();
    }
    let mut out = format!(
        "{:<14} {:<28} {:<10} {:<28} {}\n",
        "ID", "PARTNER", "STATUS", "KEY", "REASON"
    );
    for r in regs {
        out.push_str(&format!(
            "{:<14} {:<28} {:<10} {:<28} {}\n",
            r.id,
            partner(r),
            r.status.as_deref().unwrap_or("undecided"),
            r.key,
            r.reason
                .as_deref()
                .unwrap_or("not decided yet (the daemon decides on its next pass)")
        ));
    }
    out
}

/// A deal's partner credits as `show` prints them, and as its JSON carries them.
fn credits_json(c: Option<&StoredCredits>) -> serde_json::Value {
    let Some(c) = c else {
        return serde_json::Value::Null;
    };
    let partners: serde_json::Value = c
        .reasons
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| serde_json::json!([]));
    serde_json::json!({
        "partners": partners,
        "confirmed": c.sent.as_deref() == Some(c.desired.as_str()),
        "last_error": c.last_error,
    })
}

fn show_credits(out: &mut String, credits: &serde_json::Value) {
    let Some(partners) = credits["partners"].as_array().filter(|p| !p.is_empty()) else {
        return;
    };
    out.push_str("partner credits:\n");
    for p in partners {
        let role = p["role"].as_str().unwrap_or_default();
        let role = if p["primary"] == true {
            format!("{role} (primary)")
        } else {
            role.to_owned()
        };
        out.push_str(&format!(
            "  {:<14} {:<20} {}\n",
            p["partner"].as_str().unwrap_or_default(),
            role,
            p["reason"].as_str().unwrap_or_default()
        ));
    }
    let state = match (credits["confirmed"] == true, credits["last_error"].as_str()) {
        (true, _) => "confirmed by the CRM".to_owned(),
        (false, Some(e)) => format!("not written yet: {e}"),
        (false, None) => {
            "not written yet (waits for the CRM deal and the partners' companies)".to_owned()
        }
    };
    out.push_str(&format!("  in the CRM: {state}\n"));
}

fn show(r: &StoredRegistration, history: &[DecisionChange], credits: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line("registration", r.id.clone());
    line("partner", partner(r));
    line("duplicate key", r.key.clone());
    line(
        "status",
        r.status.clone().unwrap_or_else(|| "undecided".into()),
    );
    line(
        "decided by",
        match (&r.rule, r.line) {
            (Some(rule), Some(l)) => format!("{rule} (line {l})"),
            _ => "-".into(),
        },
    );
    line("reason", r.reason.clone().unwrap_or_default());
    line("protected until", when(r.protected_until));
    line(
        "duplicate of",
        r.duplicate_of.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "rules version",
        r.rules_version.clone().unwrap_or_else(|| "-".into()),
    );
    show_credits(&mut out, credits);
    out.push_str("history:\n");
    for h in history {
        out.push_str(&format!(
            "  {}  {} -> {}  [{} @ rules {}] {}\n",
            when(Some(h.at_ms)),
            h.before.as_deref().unwrap_or("none"),
            h.after,
            h.rule,
            h.rules_version,
            h.reason
        ));
    }
    out
}

fn explain(r: &StoredRegistration) -> String {
    let mut out = format!(
        "{} ({}, partner {}): {}\n",
        r.id,
        r.status.as_deref().unwrap_or("undecided"),
        partner(r),
        r.reason.as_deref().unwrap_or("not decided yet")
    );
    for (i, t) in r.trace.iter().enumerate() {
        out.push_str(&format!(
            "  {}. {} (line {}): {}\n",
            i + 1,
            t.rule,
            t.line,
            t.outcome
        ));
    }
    out
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

async fn one(store: &Store, id: &str) -> anyhow::Result<(StoredRegistration, Vec<DecisionChange>)> {
    match store.registration(id.to_owned()).await? {
        Some(r) => Ok(r),
        None => {
            bail!("no registration {id:?} in the state file (see `prmsync registrations list`)")
        }
    }
}

/// Runs a `registrations` verb; returns what to print.
pub async fn registrations(
    store: &Store,
    action: RegistrationsAction,
    as_json: bool,
) -> anyhow::Result<String> {
    match action {
        RegistrationsAction::List { status } => {
            if let Some(s) = status.as_deref().filter(|s| Status::parse(s).is_none()) {
                bail!(
                    "unknown status {s:?}: use approved, influenced, rejected, duplicate, pending, review or expired"
                );
            }
            let regs = store.registrations(status).await?;
            if as_json {
                json(&regs)
            } else {
                Ok(table(&regs))
            }
        }
        RegistrationsAction::Show { id } => {
            let (r, history) = one(store, &id).await?;
            let credits = credits_json(store.credits_of(id).await?.as_ref());
            if as_json {
                json(
                    &serde_json::json!({"registration": r, "history": history, "credits": credits}),
                )
            } else {
                Ok(show(&r, &history, &credits))
            }
        }
        RegistrationsAction::Explain { id } => {
            let (r, _) = one(store, &id).await?;
            if as_json {
                json(&serde_json::json!({
                    "registration": r.id,
                    "partner": r.partner,
                    "partner_name": r.partner_name,
                    "status": r.status,
                    "rule": r.rule,
                    "line": r.line,
                    "reason": r.reason,
                    "protected_until": r.protected_until,
                    "duplicate_of": r.duplicate_of,
                    "rules_version": r.rules_version,
                    "trace": r.trace,
                }))
            } else {
                Ok(explain(&r))
            }
        }
    }
}

/// Runs a `review` verb at `now_ms`; returns what to print.
pub async fn review(
    store: &Store,
    action: ReviewAction,
    as_json: bool,
    now_ms: i64,
) -> anyhow::Result<String> {
    let (id, approve, reason) = match action {
        ReviewAction::List => {
            let regs = store
                .registrations(Some(Status::Review.as_str().into()))
                .await?;
            return if as_json {
                json(&regs)
            } else {
                Ok(table(&regs))
            };
        }
        ReviewAction::Approve { id, reason } => (id, true, reason),
        ReviewAction::Reject { id, reason } => {
            if reason.trim().is_empty() {
                bail!("--reason must say why (the partner sees it)");
            }
            (id, false, reason)
        }
    };
    let (before, _) = one(store, &id).await?;
    if !store
        .add_review(id.clone(), approve, reason.clone(), now_ms)
        .await?
    {
        bail!("no registration {id:?} in the state file");
    }
    let verb = if approve { "approved" } else { "rejected" };
    Ok(format!(
        "{id}: {verb} by review ({reason}); it was {}. The daemon applies it and writes it back on its next pass.\n",
        before.status.as_deref().unwrap_or("undecided")
    ))
}
