//! Salesforce OAuth 2.0: the refresh-token flow (with rotation persisted before use) and the JWT
//! bearer flow (RS256), one token fetch shared by every concurrent request.

use std::sync::Arc;

use base64::Engine as _;
use reqwest::Url;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};

use super::api;
use crate::connector::tokens::TokenStore;
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
    /// The newest refresh token (rotated ones replace the configured one).
    refresh_token: Option<SecretString>,
    loaded: bool,
    generation: u64,
}

/// Fetches and shares sessions. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Authenticator {
    http: reqwest::Client,
    token_url: Url,
    grant: Grant,
    tokens: Option<Arc<dyn TokenStore>>,
    store_key: String,
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
            grant,
            tokens,
            store_key: "salesforce".into(),
            state: tokio::sync::Mutex::new(State::default()),
        }
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
        if let Some(s) = &state.session
            && s.generation != stale
        {
            return Ok(s.clone());
        }
        state.session = None;
        self.fetch(&mut state).await
    }

    async fn fetch(&self, state: &mut State) -> Result<Arc<Session>, ConnectorError> {
        let form: Vec<(&str, String)> = match &self.grant {
            Grant::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                if !state.loaded {
                    if let Some(store) = &self.tokens {
                        state.refresh_token = store.load(&self.store_key).await.map_err(|e| {
                            ConnectorError::Transient(format!(
                                "could not read the saved refresh token: {e}"
                            ))
                        })?;
                    }
                    state.loaded = true;
                }
                let current = state.refresh_token.as_ref().unwrap_or(refresh_token);
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", current.expose_secret().to_owned()),
                    ("client_id", client_id.clone()),
                ];
                if let Some(s) = client_secret {
                    form.push(("client_secret", s.expose_secret().to_owned()));
                }
                form
            }
            Grant::JwtBearer {
                client_id,
                username,
                audience,
                key,
            } => {
                let now = jiff::Timestamp::now().as_second();
                vec![
                    ("grant_type", api::JWT_BEARER_GRANT.to_owned()),
                    (
                        "assertion",
                        assertion(key, client_id, username, audience, now)?,
                    ),
                ]
            }
        };
        let resp = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(transport)?;
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
        let token: api::TokenResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unreadable Salesforce token response: {e}"))
        })?;
        let instance_url = Url::parse(&token.instance_url).map_err(|e| {
            ConnectorError::Permanent(format!("Salesforce sent a bad instance_url: {e}"))
        })?;
        // Rotation: the old refresh token is now dead. Keep the new one in memory and make it
        // durable before the access token that came with it is used.
        if let (Some(new), Grant::RefreshToken { .. }) = (token.refresh_token, &self.grant) {
            let new = SecretString::from(new);
            state.refresh_token = Some(new.clone());
            if let Some(store) = &self.tokens {
                store.save(&self.store_key, &new).await.map_err(|e| {
                    ConnectorError::Transient(format!(
                        "rotated refresh token not persisted, access token withheld: {e}"
                    ))
                })?;
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
