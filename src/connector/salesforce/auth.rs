//! Salesforce OAuth 2.0: the refresh-token flow (with rotation persisted before use, one owner
//! per state file) and the JWT bearer flow (RS256), one token fetch shared by every concurrent
//! request.

use std::sync::Arc;

use base64::Engine as _;
use reqwest::Url;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};

use super::api;
use crate::connector::tokens::{TokenStore, fingerprint};
use crate::connector::{ConnectorError, transport};

/// How long a JWT assertion is valid (Salesforce allows at most 3 minutes).
const ASSERTION_TTL_SECS: i64 = 180;

/// How prmsync obtains access tokens.
#[derive(Clone)]
pub enum Grant {
    /// `grant_type=refresh_token`; the configured token is the first one, rotated ones are stored.
    RefreshToken {
        client_id: String,
        client_secret: Option<SecretString>,
        refresh_token: SecretString,
    },
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256 assertion.
    JwtBearer {
        client_id: String,
        username: String,
        /// `https://login.salesforce.com`, `https://test.salesforce.com` or a community URL.
        audience: String,
        key: Arc<RsaKeyPair>,
    },
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::RefreshToken { client_id, .. } => f
                .debug_struct("RefreshToken")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Grant::JwtBearer {
                client_id,
                username,
                audience,
                ..
            } => f
                .debug_struct("JwtBearer")
                .field("client_id", client_id)
                .field("username", username)
                .field("audience", audience)
                .finish_non_exhaustive(),
        }
    }
}

/// A private key for the JWT bearer flow could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no PEM block found (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)")]
    NoPem,
    #[error("the PEM body is not valid base64")]
    Base64,
    #[error("not a usable RSA key: {0} (use a 2048-bit or larger RSA key)")]
    Rejected(String),
}

/// Reads an RSA private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub fn parse_private_key(pem: &str) -> Result<RsaKeyPair, KeyError> {
    let (label, der) = pem_block(pem)?;
    let key = if label == "RSA PRIVATE KEY" {
        RsaKeyPair::from_der(&der)
    } else {
        RsaKeyPair::from_pkcs8(&der)
    };
    key.map_err(|e| KeyError::Rejected(e.to_string()))
}

fn pem_block(pem: &str) -> Result<(String, Vec<u8>), KeyError> {
    let start = pem.find("-----BEGIN ").ok_or(KeyError::NoPem)?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----").ok_or(KeyError::NoPem)?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end = rest.find("-----END ").ok_or(KeyError::NoPem)?;
    let body: String = rest[body_start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| KeyError::Base64)?;
    Ok((label, der))
}

/// Salesforce's production login host, the JWT `aud` for production orgs and My Domains.
pub const LOGIN_AUDIENCE: &str = "https://login.salesforce.com";
/// The sandbox login host, the JWT `aud` for sandboxes.
pub const TEST_AUDIENCE: &str = "https://test.salesforce.com";

/// The JWT `aud` claim for a token request sent to `login_url`. Salesforce wants the login or
/// test URL (or a community URL, which only `configured` can name), never a My Domain, even when
/// the token request goes to the My Domain: `test.salesforce.com` and sandbox My Domains
/// (`*.sandbox.my.salesforce.com`) get the test URL, everything else the login URL.
pub fn jwt_audience(login_url: &Url, configured: Option<&str>) -> String {
    if let Some(a) = configured {
        return a.trim_end_matches('/').to_owned();
    }
    let host = login_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        TEST_AUDIENCE.to_owned()
    } else {
        LOGIN_AUDIENCE.to_owned()
    }
}

/// Builds the RS256 JWT bearer assertion `{iss, sub, aud, exp}`.
pub fn assertion(
    key: &RsaKeyPair,
    client_id: &str,
    username: &str,
    audience: &str,
    now_secs: i64,
) -> Result<String, ConnectorError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": username,
        "aud": audience,
        "exp": now_secs + ASSERTION_TTL_SECS,
    });
    let claims = b64.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| ConnectorError::Permanent("could not sign the JWT assertion".into()))?;
    Ok(format!("{signing_input}.{}", b64.encode(sig)))
}

/// An access token and the instance it is valid for.
#[derive(Clone)]
pub struct Session {
    pub access_token: SecretString,
    pub instance_url: Url,
    /// Increases with every fetch, so a request that saw an expired token refreshes only once.
    pub generation: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("instance_url", &self.instance_url.as_str())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    session: Option<Arc<Session>>,
    /// The newest refresh token when no token store is wired (tests, the demo).
    refresh_token: Option<SecretString>,
    generation: u64,
}

/// The saved names: the newest refresh token, and the last session (for `prmsync plan`).
const REFRESH_NAME: &str = "salesforce.refresh_token";
const SESSION_NAME: &str = "salesforce.session";

/// Why `prmsync plan` (which must not rotate the daemon's refresh token) cannot authenticate.
const READ_ONLY_HINT: &str = "prmsync plan does not refresh Salesforce tokens (a refresh rotates \
the daemon's refresh token): it uses the session the daemon saved, which is missing or expired; \
let the daemon run a pass first, or use auth = \"jwt_bearer\"";

/// The session as saved for read-only users.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSession {
    access_token: String,
    instance_url: String,
}

/// Fetches and shares sessions. Cheap to share behind an `Arc`.
///
/// With a token store that owns the tokens (the daemon), the refresh token is read from the
/// store before every refresh (another owner may have rotated it), a configured token whose
/// fingerprint differs from the one saved wins, a refused token is re-read once before it is
/// declared dead, and every session is saved for read-only users. With a read-only store
/// (`prmsync plan`), the refresh-token grant is never sent: the saved session is used.
#[derive(Debug)]
pub struct Authenticator {
    http: reqwest::Client,
    token_url: Url,
    /// Replaced when a reload loads a new credential ([`Authenticator::replace_grant`]).
    grant: std::sync::RwLock<Grant>,
    tokens: Option<Arc<dyn TokenStore>>,
    state: tokio::sync::Mutex<State>,
}

impl Authenticator {
    /// `login_url` is e.g. `https://login.salesforce.com`; tokens come from `/services/oauth2/token`.
    pub fn new(
        http: reqwest::Client,
        login_url: &Url,
        grant: Grant,
        tokens: Option<Arc<dyn TokenStore>>,
    ) -> Self {
        let mut token_url = login_url.clone();
        let path = format!(
            "{}/services/oauth2/token",
            token_url.path().trim_end_matches('/')
        );
        token_url.set_path(&path);
        Authenticator {
            http,
            token_url,
            grant: std::sync::RwLock::new(grant),
            tokens,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub(super) fn grant(&self) -> Grant {
        self.grant.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A digest of the configured credential (refresh token and client, or JWT client, user,
    /// audience and public key), to tell whether a reload brings a new one.
    pub fn credential_fingerprint(&self) -> String {
        match self.grant() {
            Grant::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => crate::connector::tokens::fingerprint_of(&[
                "refresh_token",
                &client_id,
                client_secret.as_ref().map_or("", |s| s.expose_secret()),
                refresh_token.expose_secret(),
            ]),
            Grant::JwtBearer {
                client_id,
                username,
                audience,
                key,
            } => crate::connector::tokens::fingerprint_of(&[
                "jwt_bearer",
                &client_id,
                &username,
                &audience,
                &hex::encode(key.public().as_ref()),
            ]),
        }
    }

    /// Uses `grant` from now on: the session and any rotated token kept in memory are dropped,
    /// so the next request fetches a session with it. A changed configured refresh token wins
    /// over the saved one (its fingerprint differs), as at start.
    pub async fn replace_grant(&self, grant: Grant) {
        let mut state = self.state.lock().await;
        *self.grant.write().unwrap_or_else(|p| p.into_inner()) = grant;
        state.session = None;
        state.refresh_token = None;
    }

    fn owns_tokens(&self) -> bool {
        self.tokens.as_ref().is_none_or(|t| t.owns_tokens())
    }

    /// The current session, fetching one if there is none. Concurrent callers wait for one fetch.
    pub async fn session(&self) -> Result<Arc<Session>, ConnectorError> {
        let mut state = self.state.lock().await;
        if let Some(s) = &state.session {
            return Ok(s.clone());
        }
        self.fetch(&mut state).await
    }

    /// Called after `stale` was rejected as expired: refreshes unless another caller already did.
    pub async fn renew(&self, stale: u64) -> Result<Arc<Session>, ConnectorError> {
        let mut state = self.state.lock().await;
        let stale_token = match &state.session {
            Some(s) if s.generation != stale => return Ok(s.clone()),
            Some(s) => Some(s.access_token.expose_secret().to_owned()),
            None => None,
        };
        state.session = None;
        let fresh = self.fetch(&mut state).await?;
        if !self.owns_tokens() && stale_token.as_deref() == Some(fresh.access_token.expose_secret())
        {
            state.session = None;
            return Err(ConnectorError::Auth(READ_ONLY_HINT.into()));
        }
        Ok(fresh)
    }

    /// The refresh token to send: the saved one (re-read every time), unless the configured one
    /// changed since it was saved.
    async fn current_refresh(
        &self,
        state: &State,
        configured: &SecretString,
    ) -> Result<SecretString, ConnectorError> {
        let Some(store) = &self.tokens else {
            return Ok(state
                .refresh_token
                .clone()
                .unwrap_or_else(|| configured.clone()));
        };
        let saved = store.load(REFRESH_NAME).await.map_err(|e| {
            ConnectorError::Transient(format!("could not read the saved refresh token: {e}"))
        })?;
        let fp = fingerprint(configured);
        Ok(match saved {
            Some(s) if s.configured.as_deref().is_none_or(|c| c == fp) => s.value,
            Some(_) => {
                tracing::info!(
                    system = "salesforce",
                    "the configured refresh token changed since one was saved: using the configured one"
                );
                configured.clone()
            }
            None => configured.clone(),
        })
    }

    /// The session the owner saved (read-only users).
    async fn saved_session(&self, state: &mut State) -> Result<Arc<Session>, ConnectorError> {
        let saved = match &self.tokens {
            Some(store) => store.load(SESSION_NAME).await.map_err(|e| {
                ConnectorError::Transient(format!("could not read the saved session: {e}"))
            })?,
            None => None,
        };
        let Some(saved) = saved else {
            return Err(ConnectorError::Auth(READ_ONLY_HINT.into()));
        };
        let s: SavedSession = serde_json::from_str(saved.value.expose_secret())
            .map_err(|_| ConnectorError::Auth(READ_ONLY_HINT.into()))?;
        let instance_url =
            Url::parse(&s.instance_url).map_err(|_| ConnectorError::Auth(READ_ONLY_HINT.into()))?;
        state.generation += 1;
        let session = Arc::new(Session {
            access_token: SecretString::from(s.access_token),
            instance_url,
            generation: state.generation,
        });
        state.session = Some(session.clone());
        Ok(session)
    }

    async fn fetch(&self, state: &mut State) -> Result<Arc<Session>, ConnectorError> {
        let grant = self.grant();
        let token = match &grant {
            Grant::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                if !self.owns_tokens() {
                    return self.saved_session(state).await;
                }
                let form = |current: &SecretString| {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_owned()),
                        ("refresh_token", current.expose_secret().to_owned()),
                        ("client_id", client_id.clone()),
                    ];
                    if let Some(s) = client_secret {
                        form.push(("client_secret", s.expose_secret().to_owned()));
                    }
                    form
                };
                let current = self.current_refresh(state, refresh_token).await?;
                match self.request(&form(&current)).await {
                    // Another owner may have rotated it, or an operator configured a new one:
                    // read it again before declaring it dead.
                    Err(ConnectorError::Auth(detail)) => {
                        let again = self.current_refresh(state, refresh_token).await?;
                        if again.expose_secret() == current.expose_secret() {
                            return Err(ConnectorError::Auth(detail));
                        }
                        tracing::info!(
                            system = "salesforce",
                            "the saved refresh token changed meanwhile; trying it"
                        );
                        self.request(&form(&again)).await?
                    }
                    other => other?,
                }
            }
            Grant::JwtBearer {
                client_id,
                username,
                audience,
                key,
            } => {
                let now = jiff::Timestamp::now().as_second();
                let form = vec![
                    ("grant_type", api::JWT_BEARER_GRANT.to_owned()),
                    (
                        "assertion",
                        assertion(key, client_id, username, audience, now)?,
                    ),
                ];
                self.request(&form).await?
            }
        };
        let instance_url = Url::parse(&token.instance_url).map_err(|e| {
            ConnectorError::Permanent(format!("Salesforce sent a bad instance_url: {e}"))
        })?;
        // Rotation: the old refresh token is now dead. Keep the new one in memory and make it
        // durable before the access token that came with it is used.
        if let (Some(new), Grant::RefreshToken { refresh_token, .. }) =
            (token.refresh_token, &grant)
        {
            let new = SecretString::from(new);
            state.refresh_token = Some(new.clone());
            if let Some(store) = &self.tokens {
                store
                    .save(REFRESH_NAME, &new, &fingerprint(refresh_token))
                    .await
                    .map_err(|e| {
                        ConnectorError::Transient(format!(
                            "rotated refresh token not persisted, access token withheld: {e}"
                        ))
                    })?;
            }
        }
        if let (Some(store), Grant::RefreshToken { refresh_token, .. }) = (&self.tokens, &grant) {
            let saved = serde_json::to_string(&SavedSession {
                access_token: token.access_token.clone(),
                instance_url: token.instance_url.clone(),
            })
            .map(SecretString::from);
            if let Ok(saved) = saved
                && let Err(e) = store
                    .save(SESSION_NAME, &saved, &fingerprint(refresh_token))
                    .await
            {
                tracing::warn!(system = "salesforce", error = %e, "could not save the session for prmsync plan");
            }
        }
        state.generation += 1;
        let session = Arc::new(Session {
            access_token: SecretString::from(token.access_token),
            instance_url,
            generation: state.generation,
        });
        state.session = Some(session.clone());
        tracing::info!(
            system = "salesforce",
            generation = state.generation,
            "obtained an access token"
        );
        Ok(session)
    }

    /// One token request; a refusal is `Auth`, a server failure `Transient`.
    async fn request(&self, form: &[(&str, String)]) -> Result<api::TokenResponse, ConnectorError> {
        let resp = crate::connector::send_token_request(
            crate::model::SystemKind::Salesforce,
            self.http.post(self.token_url.clone()).form(form),
        )
        .await?;
        let status = resp.status();
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            let err: Option<api::TokenError> = serde_json::from_str(&body).ok();
            let detail = match &err {
                Some(e) => format!(
                    "{}: {}",
                    e.error,
                    e.error_description.as_deref().unwrap_or("")
                ),
                None => format!("HTTP {}", status.as_u16()),
            };
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                ConnectorError::Transient(format!("Salesforce token endpoint: {detail}"))
            } else {
                ConnectorError::Auth(format!(
                    "Salesforce token request refused ({detail}); re-authorize the connected app"
                ))
            });
        }
        serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unreadable Salesforce token response: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_audience_is_the_login_or_test_url_even_for_a_my_domain() {
        let aud = |u: &str, c: Option<&str>| jwt_audience(&Url::parse(u).unwrap(), c);
        assert_eq!(aud("https://login.salesforce.com", None), LOGIN_AUDIENCE);
        assert_eq!(aud("https://test.salesforce.com/", None), TEST_AUDIENCE);
        assert_eq!(aud("https://acme.my.salesforce.com", None), LOGIN_AUDIENCE);
        assert_eq!(
            aud("https://acme--uat.sandbox.my.salesforce.com", None),
            TEST_AUDIENCE
        );
        assert_eq!(
            aud(
                "https://acme.my.salesforce.com",
                Some("https://partners.acme.com/")
            ),
            "https://partners.acme.com"
        );
    }

    #[test]
    fn pem_errors_are_clear() {
        assert_eq!(parse_private_key("nothing").err(), Some(KeyError::NoPem));
        assert_eq!(
            parse_private_key("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----").err(),
            Some(KeyError::Base64)
        );
        assert!(matches!(
            parse_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Err(KeyError::Rejected(_))
        ));
    }
}
