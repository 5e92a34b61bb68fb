//! The state file as the connectors' token store: rotated refresh tokens and the last session are
//! saved sealed with the state key (`daemon.state_key`), next to the fingerprint of the configured
//! token they descend from; and the status and reset of those rows (`prmsync auth`, in
//! `auth_cli.rs`).

use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::connector::tokens::{
    BoxFuture, Saved, Sealer, TokenStore, TokenStoreError, fingerprint,
};
use crate::store::{ReadOnlyStore, Store};

/// One saved row's value: `{"configured_sha256": "<hex>", "sealed": "<base64>"}`. A value that is
/// not this JSON is a plain-text token saved by an older prmsync; it is read, and replaced by a
/// sealed one at the next save.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    configured_sha256: String,
    sealed: String,
}

#[derive(Debug)]
enum Backend {
    /// The daemon: reads and writes, and so owns the tokens.
    Owner(Store),
    /// `prmsync plan`: reads only (its connection is not shared between threads).
    ReadOnly(Mutex<ReadOnlyStore>),
}

/// A [`TokenStore`] on the state file.
#[derive(Debug)]
pub struct StateTokens {
    backend: Backend,
    sealer: Option<Arc<Sealer>>,
}

impl StateTokens {
    /// The owner's store; without a state key nothing can be saved (no plain text at rest).
    pub fn owner(store: Store, state_key: Option<&SecretString>) -> Self {
        StateTokens {
            backend: Backend::Owner(store),
            sealer: state_key.map(|k| Arc::new(Sealer::new(k))),
        }
    }

    /// A reader that never writes and never owns the tokens.
    pub fn read_only(store: ReadOnlyStore, state_key: Option<&SecretString>) -> Self {
        StateTokens {
            backend: Backend::ReadOnly(Mutex::new(store)),
            sealer: state_key.map(|k| Arc::new(Sealer::new(k))),
        }
    }

    fn decode(&self, name: &str, raw: String) -> Result<Saved, TokenStoreError> {
        let Ok(stored) = serde_json::from_str::<Stored>(&raw) else {
            return Ok(Saved {
                value: SecretString::from(raw),
                configured: None,
            });
        };
        let Some(sealer) = &self.sealer else {
            return Err(TokenStoreError::msg(format!(
                "the saved {name} is encrypted and daemon.state_key is not set"
            )));
        };
        let value = sealer
            .open(name, &stored.sealed)
            .map_err(|e| TokenStoreError(Box::new(e)))?;
        Ok(Saved {
            value,
            configured: Some(stored.configured_sha256).filter(|c| !c.is_empty()),
        })
    }

    /// Seals every row an older prmsync saved in plain text (the daemon calls this at start, so
    /// no refresh token stays readable until its next rotation); returns how many it sealed. Its
    /// configured token is unknown, so it is saved with an empty fingerprint (read as unknown).
    pub async fn seal_plain_text(&self) -> Result<usize, TokenStoreError> {
        let (Backend::Owner(store), Some(_)) = (&self.backend, &self.sealer) else {
            return Ok(0);
        };
        let err = |e: crate::store::StoreError| TokenStoreError(Box::new(e));
        let mut sealed = 0;
        for (name, _) in store.credential_names().await.map_err(err)? {
            let Some(raw) = store.credential(name.clone()).await.map_err(err)? else {
                continue;
            };
            if serde_json::from_str::<Stored>(&raw).is_ok() {
                continue;
            }
            self.save(&name, &SecretString::from(raw), "").await?;
            sealed += 1;
        }
        Ok(sealed)
    }
}

impl TokenStore for StateTokens {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Saved>, TokenStoreError>> {
        Box::pin(async move {
            let raw = match &self.backend {
                Backend::Owner(store) => store.credential(name.to_owned()).await,
                Backend::ReadOnly(ro) => ro
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .credential(name),
            }
            .map_err(|e| TokenStoreError(Box::new(e)))?;
            raw.map(|r| self.decode(name, r)).transpose()
        })
    }

    fn save<'a>(
        &'a self,
        name: &'a str,
        value: &'a SecretString,
        configured: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        Box::pin(async move {
            let Backend::Owner(store) = &self.backend else {
                return Err(TokenStoreError::msg("the state file is open read-only"));
            };
            let Some(sealer) = &self.sealer else {
                return Err(TokenStoreError::msg(
                    "daemon.state_key is not set: refusing to save a credential in plain text",
                ));
            };
            let stored = Stored {
                configured_sha256: configured.to_owned(),
                sealed: sealer.seal(name, value)?,
            };
            let json = serde_json::to_string(&stored).map_err(|e| TokenStoreError(Box::new(e)))?;
            store
                .save_credential(
                    name.to_owned(),
                    json,
                    jiff::Timestamp::now().as_millisecond(),
                )
                .await
                .map_err(|e| TokenStoreError(Box::new(e)))
        })
    }

    fn owns_tokens(&self) -> bool {
        matches!(self.backend, Backend::Owner(_))
    }
}

/// One saved credential as `prmsync auth status` shows it (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialStatus {
    pub name: String,
    pub saved_ms: i64,
    /// `sealed`, `plain text (older prmsync)`, or `unreadable: …`.
    pub storage: String,
    /// Whether it descends from the token configured now: `current`, `outdated` (the configured
    /// token changed, so the configured one is used), or `unknown` (saved before fingerprints).
    pub configured: String,
}

/// Every saved credential, checked against the configured token (`configured`: the secret whose
/// fingerprint the saved ones carry, when one is configured).
pub async fn status(
    store: &Store,
    state_key: Option<&SecretString>,
    configured: Option<&SecretString>,
) -> anyhow::Result<Vec<CredentialStatus>> {
    let tokens = StateTokens::owner(store.clone(), state_key);
    let fp = configured.map(fingerprint);
    let mut out = Vec::new();
    for (name, saved_ms) in store.credential_names().await? {
        let raw = store.credential(name.clone()).await?.unwrap_or_default();
        let sealed = serde_json::from_str::<Stored>(&raw).is_ok();
        let (storage, configured) = match tokens.decode(&name, raw) {
            Ok(s) => (
                if sealed {
                    "sealed"
                } else {
                    "plain text (older prmsync)"
                }
                .to_owned(),
                match (&s.configured, &fp) {
                    (None, _) | (_, None) => "unknown".to_owned(),
                    (Some(c), Some(f)) if c == f => "current".to_owned(),
                    _ => "outdated".to_owned(),
                },
            ),
            Err(e) => (format!("unreadable: {e}"), "unknown".to_owned()),
        };
        out.push(CredentialStatus {
            name,
            saved_ms,
            storage,
            configured,
        });
    }
    Ok(out)
}

/// Deletes what is saved for `system` (e.g. `salesforce`): the next start uses the configured
/// credential. Returns how many rows were deleted.
pub async fn reset(store: &Store, system: &str) -> anyhow::Result<usize> {
    Ok(store.delete_credentials(system.to_owned()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn tokens_rest_sealed_and_plain_text_is_refused_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let key = SecretString::from("k");
        let tokens = StateTokens::owner(store.clone(), Some(&key));
        let t = SecretString::from("5Aep.rotated");
        tokens
            .save("salesforce.refresh_token", &t, "fp1")
            .await
            .unwrap();
        let raw = store
            .credential("salesforce.refresh_token".into())
            .await
            .unwrap()
            .unwrap();
        assert!(!raw.contains("5Aep.rotated"), "{raw}");
        let back = tokens
            .load("salesforce.refresh_token")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.value.expose_secret(), "5Aep.rotated");
        assert_eq!(back.configured.as_deref(), Some("fp1"));

        let keyless = StateTokens::owner(store.clone(), None);
        assert!(
            keyless
                .save("salesforce.refresh_token", &t, "fp1")
                .await
                .is_err()
        );
        assert!(keyless.load("salesforce.refresh_token").await.is_err());

        let st = status(&store, Some(&key), Some(&SecretString::from("other")))
            .await
            .unwrap();
        assert_eq!(
            (st[0].storage.as_str(), st[0].configured.as_str()),
            ("sealed", "outdated")
        );
        assert_eq!(reset(&store, "salesforce").await.unwrap(), 1);
        assert!(
            tokens
                .load("salesforce.refresh_token")
                .await
                .unwrap()
                .is_none()
        );
    }
}
