//! Where connectors keep OAuth credentials that the vendor rotates: a small trait the app wires
//! to the state store, so a rotated token is durable before the access token that came with it
//! is used. Each saved value carries the fingerprint of the configured token it descends from,
//! so a newly configured token wins over one saved for an older configuration. [`Sealer`]
//! encrypts values (ChaCha20-Poly1305, `ring`) so refresh tokens never rest in plain text.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Saving or loading a token failed; the connector treats it as temporary.
#[derive(Debug, thiserror::Error)]
#[error("token store: {0}")]
pub struct TokenStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl TokenStoreError {
    /// An error with only a message.
    pub fn msg(m: impl Into<String>) -> Self {
        TokenStoreError(m.into().into())
    }
}

/// A saved credential and the fingerprint of the configured token it was obtained from
/// (`None`: saved by an older prmsync that did not record it).
#[derive(Debug, Clone)]
pub struct Saved {
    pub value: SecretString,
    pub configured: Option<String>,
}

/// Durable storage for connector credentials, by name (e.g. `salesforce.refresh_token`).
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The last saved value for `name`, if any.
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Saved>, TokenStoreError>>;
    /// Saves `value` for `name` with the configured token's fingerprint; returns only once it is
    /// durable.
    fn save<'a>(
        &'a self,
        name: &'a str,
        value: &'a SecretString,
        configured: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>>;
    /// Whether this store may be written and so owns the token (`prmsync plan` reads only: it
    /// must not refresh a token that rotates, or the daemon's copy dies).
    fn owns_tokens(&self) -> bool {
        true
    }
}

/// The fingerprint saved next to a token: hex SHA-256 of the configured secret.
pub fn fingerprint(configured: &SecretString) -> String {
    hex::encode(Sha256::digest(configured.expose_secret().as_bytes()))
}

/// A digest of several secrets together (a connector's whole credential): hex SHA-256 of the
/// parts, each ended by a NUL byte so that no two lists digest alike.
pub fn fingerprint_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// An in-memory store, for the demo and tests that do not need durability.
#[derive(Debug, Default)]
pub struct MemoryTokens {
    tokens: Mutex<BTreeMap<String, (String, String)>>,
}

impl MemoryTokens {
    /// The value saved for `name`, exposed (tests compare it with the simulator's).
    pub fn get(&self, name: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|(v, _)| v.clone())
    }

    /// Replaces a value as another process would (tests of re-reads).
    pub fn put(&self, name: &str, value: &str, configured: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), (value.to_owned(), configured.to_owned()));
    }
}

impl TokenStore for MemoryTokens {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Saved>, TokenStoreError>> {
        let got = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|(v, c)| Saved {
                value: SecretString::from(v.clone()),
                configured: Some(c.clone()),
            });
        Box::pin(async move { Ok(got) })
    }

    fn save<'a>(
        &'a self,
        name: &'a str,
        value: &'a SecretString,
        configured: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        self.put(name, value.expose_secret(), configured);
        Box::pin(async { Ok(()) })
    }
}

/// A read-only store with nothing in it (`prmsync plan` before any state file exists).
#[derive(Debug, Default)]
pub struct ReadOnlyNothing;

impl TokenStore for ReadOnlyNothing {
    fn load<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Saved>, TokenStoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn save<'a>(
        &'a self,
        _: &'a str,
        _: &'a SecretString,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        Box::pin(async { Err(TokenStoreError::msg("read-only")) })
    }

    fn owns_tokens(&self) -> bool {
        false
    }
}

/// Seals and opens saved credentials with a key derived (SHA-256) from the state key secret.
/// A sealed value is base64 of a random 96-bit nonce followed by the ciphertext and tag; the
/// credential's name is the associated data, so a value cannot be moved to another name.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A sealed value could not be opened (wrong state key, or damaged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot decrypt the saved {0}: the state key differs from the one it was saved with, or the value is damaged"
)]
pub struct OpenError(pub String);

impl Sealer {
    pub fn new(state_key: &SecretString) -> Self {
        let digest = Sha256::digest(state_key.expose_secret().as_bytes());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &digest)
            .expect("a SHA-256 digest is a valid ChaCha20 key");
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    pub fn seal(&self, name: &str, plain: &SecretString) -> Result<String, TokenStoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| TokenStoreError::msg("no randomness for a nonce"))?;
        let mut buf = plain.expose_secret().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| TokenStoreError::msg("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend(buf);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub fn open(&self, name: &str, sealed: &str) -> Result<SecretString, OpenError> {
        let err = || OpenError(name.to_owned());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| err())?;
        if raw.len() < NONCE_LEN {
            return Err(err());
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .map_err(|_| err())?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_name() {
        let s = Sealer::new(&SecretString::from("state key"));
        let token = SecretString::from("5Aep861.refresh");
        let sealed = s.seal("salesforce.refresh_token", &token).unwrap();
        assert!(!sealed.contains("5Aep861"), "not plain text");
        assert_ne!(
            sealed,
            s.seal("salesforce.refresh_token", &token).unwrap(),
            "a fresh nonce each time"
        );
        let opened = s.open("salesforce.refresh_token", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "5Aep861.refresh");
        assert!(s.open("salesforce.session", &sealed).is_err(), "name bound");
        let other = Sealer::new(&SecretString::from("another key"));
        assert!(other.open("salesforce.refresh_token", &sealed).is_err());
        assert!(s.open("salesforce.refresh_token", "AAAA").is_err());
        assert_eq!(fingerprint(&token).len(), 64);
    }
}
