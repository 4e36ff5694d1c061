//! OpenID Connect login on the `openidconnect` crate: discovery, authorization code flow with
//! PKCE, `state` (bound to the browser by a cookie, single use) and `nonce` checked, id_token
//! signature and claims verified (issuer, audience, expiry with `leeway_secs`), `at_hash`
//! checked, userinfo when configured; refresh tokens kept encrypted and used before a token is
//! handed out; RP-initiated logout (revocation at the provider, then its end-session endpoint).
//!
//! # Layout
//! - `config`: `[auth.oidc]`.
//! - `claims`: claims → user name, roles, groups, admin; the allowed-roles check.
//! - `binding`: users bound to their provider account (issuer + `sub`), checked at each login.
//! - `crypto`: tokens encrypted at rest.
//! - `store`: the `oidc_logins` and `oidc_tokens` tables.
//! - `tokens`: sealing, opening and refreshing the stored tokens.
//! - `routes`: `GET /hub/oauth_login`, `GET /hub/oauth_callback`.
//!
//! The provider's metadata and keys are fetched at first use and cached for five minutes; a
//! signature that does not verify triggers one re-fetch (key rotation) before the login is
//! refused.

pub(crate) mod binding;
pub(crate) mod claims;
pub(crate) use crate::config::oidc as config;
mod crypto;
pub(crate) mod store;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, AdditionalProviderMetadata, AuthorizationCode,
    Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, LogoutRequest, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadata, RedirectUrl, RefreshToken, RevocationUrl, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use self::config::OidcConfig;
use self::crypto::TokenCipher;
use crate::db;

/// Claims beyond the standard ones (`realm_access`, `groups`, ...), kept as JSON.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct ExtraClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

impl AdditionalClaims for ExtraClaims {}

/// Provider metadata beyond the core: end-session and revocation endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct ExtraMetadata {
    end_session_endpoint: Option<EndSessionUrl>,
    revocation_endpoint: Option<RevocationUrl>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type TokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type Tokens = StandardTokenResponse<TokenFields, CoreTokenType>;

type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type UserInfo = openidconnect::UserInfoClaims<ExtraClaims, CoreGenderClaim>;

/// How long discovered metadata and keys are trusted before being fetched again.
const METADATA_TTL: Duration = Duration::from_secs(300);
/// How long a login may take at the provider.
pub(crate) const LOGIN_TTL_SECS: i64 = 600;

/// A login or token operation failed. Messages name what failed, never a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum OidcError {
    /// The provider could not be reached or its metadata is unusable.
    #[error("cannot reach the identity provider: {0}")]
    Provider(String),
    /// The provider refused the code (expired, replayed, wrong verifier, ...).
    #[error("the identity provider refused the login: {0}")]
    Exchange(String),
    /// The provider answered without an id_token.
    #[error("the identity provider sent no id_token")]
    NoIdToken,
    /// The id_token failed verification (signature, issuer, audience, expiry, nonce).
    #[error("the id_token is not valid: {0}")]
    IdToken(String),
    /// The userinfo request failed.
    #[error("the userinfo request failed: {0}")]
    UserInfo(String),
    /// Refreshing failed.
    #[error("refreshing the access token failed: {0}")]
    Refresh(String),
}

/// Tokens from the provider (plain, in memory only; `Debug` hides them).
#[derive(Clone)]
pub(crate) struct TokenSet {
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: Option<String>,
    /// The raw id_token (for `id_token_hint`).
    pub id_token: Option<String>,
    /// Access token expiry (µs since the epoch).
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A started login: where to send the browser and what to remember.
#[derive(Debug)]
pub(crate) struct LoginStart {
    /// The provider's authorization URL.
    pub url: url::Url,
    /// The `state` value (also set as a cookie).
    pub state: String,
    /// The pending login to store under the state's hash.
    pub pending: store::PendingLogin,
}

struct Provider {
    client: OidcClient,
    revocation: Option<RevocationUrl>,
    end_session: Option<EndSessionUrl>,
    fetched: Instant,
}

/// The OpenID Connect login: config, HTTP client, cached provider metadata, token cipher.
pub struct OidcAuth {
    config: OidcConfig,
    http: reqwest::Client,
    cipher: TokenCipher,
    provider: RwLock<Option<Arc<Provider>>>,
    /// One refresh at a time per user (providers rotate refresh tokens).
    refresh_locks: Mutex<HashMap<i64, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for OidcAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcAuth")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcAuth {
    /// From `[auth.oidc]`; `cookie_secret` (hex) derives the token key when none is set.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(config: OidcConfig, cookie_secret: Option<&[u8]>) -> Result<Self, reqwest::Error> {
        let cipher = match config
            .token_key
            .as_ref()
            .and_then(|k| hex::decode(k.expose()).ok())
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
        {
            Some(key) => TokenCipher::new(&key),
            None => match cookie_secret {
                Some(secret) => TokenCipher::derived(secret),
                None => {
                    tracing::warn!(
                        "no auth.oidc.token_key or cookie_secret: identity-provider tokens are \
                         encrypted with a random key and unusable after a restart"
                    );
                    TokenCipher::new(&rand::random())
                }
            },
        };
        let http = reqwest::Client::builder()
            // Following redirects would open the hub to SSRF through the provider's answers.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Self {
            config,
            http,
            cipher,
            provider: RwLock::new(None),
            refresh_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The config.
    pub(crate) fn config(&self) -> &OidcConfig {
        &self.config
    }

    async fn provider(&self, force: bool) -> Result<Arc<Provider>, OidcError> {
        if !force
            && let Some(p) = self.provider.read().await.as_ref()
            && p.fetched.elapsed() < METADATA_TTL
        {
            return Ok(Arc::clone(p));
        }
        let mut slot = self.provider.write().await;
        if !force
            && let Some(p) = slot.as_ref()
            && p.fetched.elapsed() < METADATA_TTL
        {
            return Ok(Arc::clone(p));
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| OidcError::Provider(format!("issuer URL: {e}")))?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Provider(error_chain(&e)))?;
        let extra = metadata.additional_metadata().clone();
        let client: OidcClient = Client::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        );
        let p = Arc::new(Provider {
            client,
            revocation: extra.revocation_endpoint,
            end_session: extra.end_session_endpoint,
            fetched: Instant::now(),
        });
        *slot = Some(Arc::clone(&p));
        tracing::info!(issuer = %self.config.issuer, "identity provider metadata loaded");
        Ok(p)
    }

    /// Start a login: PKCE, state and nonce, and the authorization URL.
    ///
    /// # Errors
    /// The provider's metadata cannot be loaded, or `redirect` is not a URL.
    pub(crate) async fn begin(
        &self,
        redirect: &str,
        next: String,
    ) -> Result<LoginStart, OidcError> {
        let p = self.provider(false).await?;
        let redirect = RedirectUrl::new(redirect.to_owned())
            .map_err(|e| OidcError::Provider(format!("redirect URL: {e}")))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = p
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_redirect_uri(std::borrow::Cow::Owned(redirect))
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            if scope != "openid" {
                req = req.add_scope(Scope::new(scope.clone()));
            }
        }
        let (url, state, nonce) = req.url();
        Ok(LoginStart {
            url,
            state: state.secret().clone(),
            pending: store::PendingLogin {
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                next_url: next,
            },
        })
    }

    /// Finish a login: exchange the code (with the PKCE verifier), verify the id_token against
    /// the stored nonce, fetch userinfo when configured. Returns the merged claims and tokens.
    ///
    /// # Errors
    /// [`OidcError`] for each refusal.
    pub(crate) async fn finish(
        &self,
        code: &str,
        pending: &store::PendingLogin,
        redirect: &str,
    ) -> Result<(Value, TokenSet), OidcError> {
        let p = self.provider(false).await?;
        let redirect = RedirectUrl::new(redirect.to_owned())
            .map_err(|e| OidcError::Provider(format!("redirect URL: {e}")))?;
        let tokens: Tokens = p
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_redirect_uri(std::borrow::Cow::Owned(redirect))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let mut claims = match self.verify(&p, &tokens, &nonce) {
            Ok(c) => c,
            Err(OidcError::IdToken(msg))
                if msg.to_lowercase().contains("signature") || msg.contains("key") =>
            {
                // The provider may have rotated its keys: fetch them again, then decide.
                let p = self.provider(true).await?;
                self.verify(&p, &tokens, &nonce)?
            }
            Err(e) => return Err(e),
        };
        if self.config.userinfo {
            let subject = claims
                .get("sub")
                .and_then(Value::as_str)
                .map(|s| openidconnect::SubjectIdentifier::new(s.to_owned()));
            let info: UserInfo = p
                .client
                .user_info(tokens.access_token().clone(), subject)
                .map_err(|e| OidcError::UserInfo(e.to_string()))?
                .request_async(&self.http)
                .await
                .map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
            if let (Some(obj), Ok(Value::Object(more))) =
                (claims.as_object_mut(), serde_json::to_value(&info))
            {
                obj.extend(more);
            }
        }
        Ok((claims, token_set(&tokens)))
    }

    fn verify(&self, p: &Provider, tokens: &Tokens, nonce: &Nonce) -> Result<Value, OidcError> {
        let id_token = tokens.id_token().ok_or(OidcError::NoIdToken)?;
        let leeway = chrono::Duration::seconds(i64::try_from(self.config.leeway_secs).unwrap_or(0));
        let verifier = p
            .client
            .id_token_verifier()
            .set_time_fn(move || chrono::Utc::now() - leeway);
        let claims = id_token
            .claims(&verifier, nonce)
            .map_err(|e| OidcError::IdToken(error_chain(&e)))?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| OidcError::IdToken(e.to_string()))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| OidcError::IdToken(e.to_string()))?;
            let actual = AccessTokenHash::from_token(tokens.access_token(), alg, key)
                .map_err(|e| OidcError::IdToken(e.to_string()))?;
            if actual != *expected {
                return Err(OidcError::IdToken(
                    "the access token does not match the id_token's at_hash".to_owned(),
                ));
            }
        }
        serde_json::to_value(claims).map_err(|e| OidcError::IdToken(e.to_string()))
    }

    /// Exchange a refresh token for new tokens.
    ///
    /// # Errors
    /// [`OidcError::Refresh`] if the provider refuses (revoked, expired) or is unreachable.
    pub(crate) async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, OidcError> {
        let p = self.provider(false).await?;
        let tokens: Tokens = p
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
            .map_err(|e| OidcError::Refresh(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refresh(error_chain(&e)))?;
        Ok(token_set(&tokens))
    }

    /// Revoke tokens at the provider (best effort: failures are logged).
    pub(crate) async fn revoke(&self, set: &TokenSet) {
        let Ok(p) = self.provider(false).await else {
            return;
        };
        let Some(revocation) = p.revocation.clone() else {
            tracing::debug!("the identity provider has no revocation endpoint");
            return;
        };
        let client = p.client.clone().set_revocation_url(revocation);
        let mut tokens = vec![CoreRevocableToken::AccessToken(AccessToken::new(
            set.access.clone(),
        ))];
        if let Some(r) = &set.refresh {
            tokens.insert(
                0,
                CoreRevocableToken::RefreshToken(RefreshToken::new(r.clone())),
            );
        }
        for token in tokens {
            let kind = match &token {
                CoreRevocableToken::RefreshToken(_) => "refresh",
                _ => "access",
            };
            match client.revoke_token(token) {
                Ok(req) => {
                    if let Err(e) = req.request_async(&self.http).await {
                        tracing::warn!(kind, error = %error_chain(&e), "token revocation failed");
                    }
                }
                Err(e) => tracing::warn!(kind, error = %e, "token revocation not possible"),
            }
        }
    }

    /// The provider's end-session URL for RP-initiated logout, if it has one and it is enabled.
    /// It carries `client_id` and `post_logout_redirect_uri` but no `id_token_hint`: an id_token
    /// holds personal data and the house rule keeps tokens out of URLs (RP-initiated logout
    /// accepts `client_id` instead; Keycloak does since version 18).
    pub(crate) async fn end_session_url(&self, post_logout: &str) -> Option<String> {
        if !self.config.end_session {
            return None;
        }
        let p = self.provider(false).await.ok()?;
        let endpoint = p.end_session.clone()?;
        let mut req = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Ok(url) = PostLogoutRedirectUrl::new(post_logout.to_owned()) {
            req = req.set_post_logout_redirect_uri(url);
        }
        Some(req.http_get_url().to_string())
    }
}

#[async_trait::async_trait]
impl crate::auth::Authenticator for OidcAuth {
    fn kind(&self) -> &'static str {
        "oidc"
    }

    /// OpenID Connect logins go through `/hub/oauth_login`; the password form is refused.
    async fn authenticate(
        &self,
        _form: &crate::auth::LoginForm,
    ) -> Option<crate::auth::AuthOutcome> {
        None
    }
}

fn token_set(tokens: &Tokens) -> TokenSet {
    TokenSet {
        access: tokens.access_token().secret().clone(),
        refresh: tokens.refresh_token().map(|r| r.secret().clone()),
        id_token: tokens.id_token().map(ToString::to_string),
        expires_at: tokens
            .expires_in()
            .map(|d| db::now_micros() + i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)),
    }
}

/// An error with its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}
