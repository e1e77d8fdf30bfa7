//! Short-lived tokens for the dashboard: `POST /v1/auth/token` exchanges an API key (or the admin
//! token) for a JWT signed with HMAC-SHA256.
//!
//! Signing keys live in the store, sealed, so every node verifies what any node signed. The newest
//! key signs; rotating adds a new key and retires the old one, which still verifies the tokens it
//! signed until they expire, so a rotation logs nobody out. Expiry is checked against the gateway's
//! clock, not the system's, so tests can move time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pagewire_core::{Clock, Secret};
use pagewire_store::{SigningKey, Store, StoreError};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Who issues and who may accept the tokens.
const ISSUER: &str = "pagewire";
const AUDIENCE: &str = "pagewire-api";
/// How far a token's `iat` may lie ahead of this node's clock (clock skew between nodes).
const MAX_SKEW_MS: i64 = 60_000;
/// Unknown key ids re-read the keys at most this often.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// The keys are re-read at least this often, so a node signs with a key another node rotated in.
const RELOAD_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The API key the token was exchanged for, or `operator`.
    pub sub: String,
    /// The tenant, for tenant tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// `operator`, `tenant:admin` or `tenant:read_only`.
    pub scope: String,
    /// Seconds since the epoch.
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// A token just issued.
#[derive(Debug)]
pub struct Issued {
    pub token: Secret,
    pub expires_at_ms: i64,
}

/// Why a token was not accepted. Callers answer 401 whatever the reason; the reason is logged.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed or wrongly signed token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token names no key, or a key that no longer verifies")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued in the future")]
    NotYetValid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issues and verifies tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// How long the keys read from the store are trusted before they are read again.
    refresh: Duration,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    loaded: Arc<Vec<SigningKey>>,
    loaded_at: Option<Instant>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self::with_refresh(store, clock, ttl, RELOAD_AT_LEAST_EVERY)
    }

    /// Re-reads the keys every `refresh` instead of every minute (tests of several nodes).
    pub fn with_refresh(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl: Duration, refresh: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                ttl,
                refresh,
                keys: Mutex::new(Keys::default()),
            }),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Signs a token for `sub` with `scope` (and `tenant` for tenant tokens).
    pub async fn issue(&self, sub: &str, tenant: Option<&str>, scope: &str) -> Result<Issued, TokenError> {
        let key = match self.signing_key().await? {
            Some(key) => key,
            None => {
                // The first token ever: make the first key.
                self.rotate(false).await?;
                self.signing_key().await?.ok_or(TokenError::UnknownKey)?
            }
        };
        let now = self.inner.clock.now_ms();
        let expires_at_ms = now.saturating_add(self.ttl_ms());
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: sub.to_owned(),
            tid: tenant.map(str::to_owned),
            scope: scope.to_owned(),
            iat: now / 1000,
            exp: expires_at_ms / 1000,
            jti: ulid::Ulid::new().to_string(),
        };
        let header = Header {
            kid: Some(key.kid.clone()),
            ..Header::new(Algorithm::HS256)
        };
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(key.secret.expose().as_bytes()),
        )?;
        Ok(Issued {
            token: Secret::new(token),
            expires_at_ms: claims.exp * 1000,
        })
    }

    /// Checks a token: HS256 only, a key that still verifies, our issuer and audience, not expired.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let now = self.inner.clock.now_ms();
        let key = match self.verifying_key(&kid, now, false).await? {
            Some(key) => key,
            None => self
                .verifying_key(&kid, now, true)
                .await?
                .ok_or(TokenError::UnknownKey)?,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the gateway's clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(key.secret.expose().as_bytes()),
            &validation,
        )?;
        let claims = data.claims;
        if claims.exp.saturating_mul(1000) <= now {
            return Err(TokenError::Expired);
        }
        if claims.iat.saturating_mul(1000) > now.saturating_add(MAX_SKEW_MS) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Starts signing with a new key. The previous one verifies until its tokens expire, or, with
    /// `retire_at_once`, no more: every token signed before is refused (on other nodes once they
    /// re-read the keys, within a minute).
    pub async fn rotate(&self, retire_at_once: bool) -> Result<String, TokenError> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let kid = format!("sk_{}", ulid::Ulid::new().to_string().to_lowercase());
        let now = self.inner.clock.now_ms();
        let forget_before = if retire_at_once {
            now.saturating_add(1)
        } else {
            now.saturating_sub(self.ttl_ms())
        };
        self.inner
            .store
            .rotate_signing_key(&kid, &Secret::new(hex::encode(bytes)), now, forget_before)
            .await?;
        self.reload().await?;
        tracing::info!(kid, retire_at_once, "token signing key rotated");
        Ok(kid)
    }

    async fn signing_key(&self) -> Result<Option<SigningKey>, TokenError> {
        let keys = self.keys(false).await?;
        Ok(keys.iter().find(|k| k.retired_at.is_none()).cloned())
    }

    async fn verifying_key(&self, kid: &str, now: i64, reload: bool) -> Result<Option<SigningKey>, TokenError> {
        let keys = self.keys(reload).await?;
        let ttl = self.ttl_ms();
        Ok(keys
            .iter()
            .find(|k| k.kid == kid && k.retired_at.is_none_or(|retired| retired.saturating_add(ttl) > now))
            .cloned())
    }

    /// The keys, read from the store the first time, then at least every minute (another node may
    /// have rotated), and when `reload` asks for it (at most once a second, so tokens naming
    /// made-up keys cannot hammer the database).
    async fn keys(&self, reload: bool) -> Result<Arc<Vec<SigningKey>>, TokenError> {
        {
            let keys = self.inner.keys.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh = keys.loaded_at.is_some_and(|at| {
                let age = at.elapsed();
                age < self.inner.refresh && (!reload || age < RELOAD_AT_MOST_EVERY)
            });
            if fresh {
                return Ok(Arc::clone(&keys.loaded));
            }
        }
        self.reload().await
    }

    async fn reload(&self) -> Result<Arc<Vec<SigningKey>>, TokenError> {
        let loaded = Arc::new(self.inner.store.signing_keys().await?);
        let mut keys = self.inner.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.loaded = Arc::clone(&loaded);
        keys.loaded_at = Some(Instant::now());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use pagewire_core::{ManualClock, MasterKey};
    use pagewire_store::{SqliteStore, SqliteStoreOptions};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Two nodes on one store: what one rotates, the other signs with and verifies.
    #[tokio::test]
    async fn nodes_follow_a_rotation_made_elsewhere() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                &dir.path().join("p.db"),
                MasterKey::generate(),
                SqliteStoreOptions::default(),
            )
            .await?,
        );
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_now());
        let ttl = Duration::from_secs(900);
        let a = TokenService::with_refresh(Arc::clone(&store), Arc::clone(&clock), ttl, Duration::ZERO);
        let b = TokenService::with_refresh(Arc::clone(&store), Arc::clone(&clock), ttl, Duration::ZERO);
        let before = b.issue("key_x", Some("ten_x"), "tenant:admin").await?;
        let kid = a.rotate(false).await?;
        let after = b.issue("key_x", Some("ten_x"), "tenant:admin").await?;
        let header = jsonwebtoken::decode_header(after.token.expose())?;
        assert_eq!(
            header.kid.as_deref(),
            Some(kid.as_str()),
            "b signs with the key a rotated in"
        );
        a.verify(before.token.expose()).await?;
        a.verify(after.token.expose()).await?;
        Ok(())
    }
}
