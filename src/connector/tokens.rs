//! Where connectors keep OAuth refresh tokens that the vendor rotates: a small trait the app wires
//! to the state store, so a rotated token is durable before the access token that came with it is used.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Saving or loading a token failed; the connector treats it as temporary.
#[derive(Debug, thiserror::Error)]
#[error("token store: {0}")]
pub struct TokenStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Durable storage for refresh tokens, keyed by connector (e.g. `salesforce`).
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The last saved token for `key`, if any (it wins over the configured one: it is newer).
    fn load<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretString>, TokenStoreError>>;
    /// Saves `token` for `key`; returns only once it is durable.
    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a SecretString,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>>;
}

/// An in-memory store, for the demo and tests that do not need durability.
#[derive(Debug, Default)]
pub struct MemoryTokens {
    tokens: Mutex<BTreeMap<String, String>>,
}

impl MemoryTokens {
    /// The token saved for `key`, exposed (tests compare it with the simulator's).
    pub fn get(&self, key: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

impl TokenStore for MemoryTokens {
    fn load<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretString>, TokenStoreError>> {
        let got = self.get(key).map(SecretString::from);
        Box::pin(async move { Ok(got) })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a SecretString,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), token.expose_secret().to_owned());
        Box::pin(async { Ok(()) })
    }
}
