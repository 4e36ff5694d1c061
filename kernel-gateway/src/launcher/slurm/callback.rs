//! The call-back endpoint the kernel-side launcher (`images/slurm/stackhub-kernel-launcher`)
//! reports a kernel's ports to. Protocol version 1 (also in `images/slurm/README.md`):
//!
//! ```text
//! POST {callback_url}/kernels/{kernel_id}/connection
//! X-Stackhub-Signature: v1=<hex HMAC-SHA256(per-kernel secret, raw body)>
//! {"version":1,"kernel_id":..,"seq":1,"ts":<unix s>,"job_id":"12","host":"node1","ip":"10.0.0.5",
//!  "transport":"tcp","shell_port":..,"iopub_port":..,"stdin_port":..,"control_port":..,
//!  "hb_port":..,"signature_scheme":"hmac-sha256","pid":..}
//! ```
//! The body carries no secret (the kernel's message key is given to the job and never sent
//! back), so the channel needs integrity and authenticity, not secrecy; in production it runs
//! over HTTPS anyway. Checks, in order: a registered kernel (404), the MAC over the exact bytes
//! in constant time (401), the body (400), `kernel_id` matching the path and `version` 1 (400),
//! `ts` within [`MAX_SKEW_SECS`] of our clock and `seq` above the last accepted one (409, so a
//! replayed call-back cannot re-point a kernel). Accepted: 204.
//!
//! Secrets hand-over (before the first call-back): the job script holds no secret. The gateway
//! writes a one-time token (32 random bytes, hex) to a file only the job's user can read (mode
//! 0600, `STACKHUB_SECRETS_FILE`), and the launcher trades it once for the kernel's secrets:
//!
//! ```text
//! POST {callback_url}/kernels/{kernel_id}/secrets
//! Authorization: Bearer <token>
//! -> 200 {"version":1,"kernel_key":"<hex>","callback_secret":"<hex>","env":{"AWS_SECRET_ACCESS_KEY":..}}
//! ```
//! A wrong token gets 401, a kernel with nothing (left) to hand over 404: the token is spent by
//! its first successful use, so a token read later (from a leftover file) is worth nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

/// Header carrying the MAC.
pub const SIGNATURE_HEADER: &str = "x-stackhub-signature";
/// Largest clock difference accepted between the node and the gateway, seconds.
pub const MAX_SKEW_SECS: i64 = 300;
/// Largest call-back body.
const MAX_BODY: usize = 16 * 1024;

/// What a kernel-side launcher reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallBack {
    /// Protocol version (1).
    pub version: u32,
    /// The kernel.
    pub kernel_id: String,
    /// 1 for the first kernel process of the job, +1 per in-place restart.
    pub seq: u64,
    /// Unix time of sending, seconds.
    pub ts: i64,
    /// `SLURM_JOB_ID` as the job sees it.
    #[serde(default)]
    pub job_id: String,
    /// The node's host name.
    #[serde(default)]
    pub host: String,
    /// Address the gateway connects to.
    pub ip: String,
    /// `tcp`.
    pub transport: String,
    /// Kernel ports.
    pub shell_port: u16,
    /// Kernel ports.
    pub iopub_port: u16,
    /// Kernel ports.
    pub stdin_port: u16,
    /// Kernel ports.
    pub control_port: u16,
    /// Kernel ports.
    pub hb_port: u16,
    /// `hmac-sha256`.
    pub signature_scheme: String,
    /// The kernel's pid on the node.
    #[serde(default)]
    pub pid: u64,
}

/// `v1=<hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable_key());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn unreachable_key() -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this is never reached.
    #[allow(clippy::unwrap_used)]
    Hmac::<Sha256>::new_from_slice(b"k").unwrap()
}

fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(tag) = header.strip_prefix("v1=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

struct Registration {
    secret: Vec<u8>,
    latest: watch::Sender<Option<CallBack>>,
    last_seq: std::sync::atomic::AtomicU64,
    /// The secrets waiting for the launcher: SHA-256 of the one-time token, and the body.
    delivery: Mutex<Option<([u8; 32], Vec<u8>)>>,
}

/// SHA-256 of a bearer token.
fn token_digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    Sha256::digest(token).into()
}

/// Constant-time equality of two digests.
fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Kernels waiting for (or having made) call-backs.
#[derive(Default)]
pub(super) struct Registry {
    map: Mutex<HashMap<String, Arc<Registration>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Why a call-back was refused.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let reason = self.0.canonical_reason().unwrap_or("Error");
        (
            self.0,
            axum::Json(serde_json::json!({"reason": reason, "message": self.1})),
        )
            .into_response()
    }
}

impl Registry {
    /// Registers `kernel_id` with its secret; call-backs must have `seq > last_seq`.
    pub(super) async fn register(
        &self,
        kernel_id: &str,
        secret: Vec<u8>,
        last_seq: u64,
    ) -> watch::Receiver<Option<CallBack>> {
        let reg = Arc::new(Registration {
            secret,
            latest: watch::channel(None).0,
            last_seq: last_seq.into(),
            delivery: Mutex::new(None),
        });
        let rx = reg.latest.subscribe();
        self.map.lock().await.insert(kernel_id.to_owned(), reg);
        rx
    }

    /// Follows the call-backs of `kernel_id`.
    pub(super) async fn subscribe(
        &self,
        kernel_id: &str,
    ) -> Option<watch::Receiver<Option<CallBack>>> {
        Some(self.map.lock().await.get(kernel_id)?.latest.subscribe())
    }

    /// Holds `body` (the kernel's secrets) for the one launcher presenting `token`.
    pub(super) async fn offer(&self, kernel_id: &str, token: &str, body: Vec<u8>) {
        let reg = self.map.lock().await.get(kernel_id).cloned();
        if let Some(reg) = reg {
            *reg.delivery.lock().await = Some((token_digest(token.as_bytes()), body));
        }
    }

    /// The secrets of `kernel_id` for the bearer of its one-time token; spends the token.
    async fn hand_over(&self, kernel_id: &str, headers: &HeaderMap) -> Result<Vec<u8>, Refusal> {
        let none = || {
            Refusal(
                StatusCode::NOT_FOUND,
                format!(
                    "kernel {kernel_id} has no secrets waiting (unknown kernel, or already fetched)"
                ),
            )
        };
        let reg = self
            .map
            .lock()
            .await
            .get(kernel_id)
            .cloned()
            .ok_or_else(none)?;
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| token_digest(t.trim().as_bytes()));
        let mut slot = reg.delivery.lock().await;
        let Some((expected, _)) = slot.as_ref() else {
            return Err(none());
        };
        if !presented.is_some_and(|p| digest_eq(&p, expected)) {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                format!("secrets of kernel {kernel_id}: missing or wrong bearer token"),
            ));
        }
        let (_, body) = slot.take().ok_or_else(none)?;
        tracing::info!(kernel_id, "kernel job fetched its secrets");
        Ok(body)
    }

    pub(super) async fn remove(&self, kernel_id: &str) {
        self.map.lock().await.remove(kernel_id);
    }

    async fn accept(
        &self,
        kernel_id: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let reg = self
            .map
            .lock()
            .await
            .get(kernel_id)
            .cloned()
            .ok_or_else(|| {
                Refusal(
                    StatusCode::NOT_FOUND,
                    format!("no kernel {kernel_id} is waiting for a call-back"),
                )
            })?;
        let header = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !verify(&reg.secret, body, header) {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                format!("call-back for kernel {kernel_id}: missing or wrong {SIGNATURE_HEADER}"),
            ));
        }
        let cb: CallBack = serde_json::from_slice(body).map_err(|e| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("invalid call-back body: {e}"),
            )
        })?;
        if cb.kernel_id != kernel_id || cb.version != 1 {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!(
                    "call-back body names kernel {:?} version {}; expected {kernel_id} version 1",
                    cb.kernel_id, cb.version
                ),
            ));
        }
        let skew = (chrono::Utc::now().timestamp() - cb.ts).abs();
        if skew > MAX_SKEW_SECS {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("call-back timestamp is {skew}s away from the gateway's clock"),
            ));
        }
        use std::sync::atomic::Ordering;
        let last = reg.last_seq.load(Ordering::SeqCst);
        if cb.seq <= last
            || reg
                .last_seq
                .compare_exchange(last, cb.seq, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("call-back seq {} is not above {last} (replayed?)", cb.seq),
            ));
        }
        tracing::info!(kernel_id, seq = cb.seq, job_id = %cb.job_id, host = %cb.host, "kernel called back");
        reg.latest.send_replace(Some(cb));
        Ok(())
    }
}

async fn connection(
    State(registry): State<Arc<Registry>>,
    Path(kernel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match registry.accept(&kernel_id, &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refusal) => {
            tracing::warn!(kernel_id = %kernel_id, status = refusal.0.as_u16(), reason = %refusal.1, "call-back refused");
            refusal.into_response()
        }
    }
}

async fn secrets(
    State(registry): State<Arc<Registry>>,
    Path(kernel_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match registry.hand_over(&kernel_id, &headers).await {
        Ok(body) => (
            StatusCode::OK,
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(refusal) => {
            tracing::warn!(kernel_id = %kernel_id, status = refusal.0.as_u16(), reason = %refusal.1, "secrets hand-over refused");
            refusal.into_response()
        }
    }
}

/// Serves call-backs on `listener` until `cancel`.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/kernels/{id}/connection", post(connection))
        .route("/kernels/{id}/secrets", post(secrets))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(registry);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "Slurm call-back listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("Bearer {token}")) {
            h.insert(axum::http::header::AUTHORIZATION, v);
        }
        h
    }

    proptest::proptest! {
        #[test]
        fn only_the_one_time_token_opens_the_secrets_and_only_once(
            wrong in "\\PC{0,80}",
            kernel in "[a-z0-9-]{1,12}",
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let reg = Registry::default();
                let _rx = reg.register(&kernel, vec![1; 32], 0).await;
                let token = "ab".repeat(32);
                reg.offer(&kernel, &token, b"{\"version\":1}".to_vec()).await;
                if wrong.trim() != token {
                    let e = reg.hand_over(&kernel, &bearer(&wrong)).await.unwrap_err();
                    assert_eq!(e.0, StatusCode::UNAUTHORIZED);
                    assert!(!e.1.contains(&token));
                    let e = reg.hand_over(&kernel, &HeaderMap::new()).await.unwrap_err();
                    assert_eq!(e.0, StatusCode::UNAUTHORIZED);
                }
                // Another kernel's name with the right token: nothing.
                let other = format!("{kernel}x");
                let e = reg.hand_over(&other, &bearer(&token)).await.unwrap_err();
                assert_eq!(e.0, StatusCode::NOT_FOUND);
                let body = reg.hand_over(&kernel, &bearer(&token)).await.unwrap();
                assert_eq!(body, b"{\"version\":1}");
                let e = reg.hand_over(&kernel, &bearer(&token)).await.unwrap_err();
                assert_eq!(e.0, StatusCode::NOT_FOUND, "the token is spent");
            });
        }
    }

    #[test]
    fn signatures_cover_the_exact_bytes() {
        let tag = sign(b"secret", b"{\"a\":1}");
        assert!(verify(b"secret", b"{\"a\":1}", &tag));
        assert!(!verify(b"secret", b"{\"a\": 1}", &tag));
        assert!(!verify(b"other", b"{\"a\":1}", &tag));
        assert!(!verify(b"secret", b"{\"a\":1}", "v1=zz"));
        assert!(!verify(b"secret", b"{\"a\":1}", ""));
    }
}
