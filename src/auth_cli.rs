//! `prmsync auth status|reset`: what is saved for the configured systems, shown without values,
//! and deleting it so the configured credential is used again.

use crate::credentials;

/// One line of `prmsync auth status`.
pub fn describe(s: &credentials::CredentialStatus) -> String {
    let when = jiff::Timestamp::from_millisecond(s.saved_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!(
        "{:<28} saved {when}  {}  configured token: {}",
        s.name, s.storage, s.configured
    )
}

/// `prmsync auth status|reset` for `config`; the text to print.
pub async fn auth_command(
    config: &crate::config::Config,
    action: crate::cli::AuthAction,
) -> anyhow::Result<String> {
    let path = &config.daemon.state_path;
    if config.state.postgres.is_none() && !path.exists() {
        return Ok(format!(
            "no state file at {}: nothing is saved\n",
            path.display()
        ));
    }
    let store = crate::store::Store::open_configured(config.state.postgres.as_ref(), path)?;
    let key = config.daemon.state_key.as_ref();
    match action {
        crate::cli::AuthAction::Status => {
            let configured = match &config.crm {
                crate::config::CrmConfig::Salesforce(sf) => match &sf.auth {
                    crate::config::SalesforceAuthConfig::RefreshToken { refresh_token, .. } => {
                        Some(refresh_token)
                    }
                    crate::config::SalesforceAuthConfig::JwtBearer { .. } => None,
                },
                crate::config::CrmConfig::HubSpot(_) => None,
            };
            let rows = credentials::status(&store, key, configured).await?;
            if rows.is_empty() {
                return Ok("no saved credentials: the configured ones are used\n".into());
            }
            Ok(rows.iter().map(|r| describe(r) + "\n").collect())
        }
        crate::cli::AuthAction::Reset { system } => {
            let n = credentials::reset(&store, &system).await?;
            Ok(format!(
                "deleted {n} saved credential(s) for {system}; the configured credential is used at the next token request\n"
            ))
        }
    }
}
