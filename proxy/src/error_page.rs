//! The proxy's own answers: 404 without a route, 400 for a malformed request, 503 when the
//! upstream fails (the log names the upstream by scheme, host and port, and why), optionally
//! fetched from `--error-target` as configurable-http-proxy does.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::{ActivityBody, ProxyBody};
use crate::error::ForwardError;
use crate::forward::{Proxy, client_error_reason};
use crate::routes::Target;

impl Proxy {
    pub(crate) async fn error_response(&self, err: &ForwardError, pq: &str) -> Response<ProxyBody> {
        let status = err.status();
        match err {
            ForwardError::Upstream { .. } => {
                tracing::warn!(%status, path = %path_only(pq), "{err}")
            }
            _ => tracing::debug!(%status, path = %path_only(pq), "{err}"),
        }
        if let (Some(target), ForwardError::NoRoute | ForwardError::Upstream { .. }) =
            (self.error_target(), err)
            && let Some(resp) = self.fetch_error_page(target, status, pq).await
        {
            return resp;
        }
        default_error(status, err)
    }

    /// GET `<error_target>/<code>?url=<url>`, keeping its body and content type, with our status.
    async fn fetch_error_page(
        &self,
        target: &Target,
        status: StatusCode,
        pq: &str,
    ) -> Option<Response<ProxyBody>> {
        let query = utf8_percent_encode(pq, NON_ALPHANUMERIC);
        let uri = target
            .uri_for(&format!("/{}?url={query}", status.as_u16()), true)
            .ok()?;
        let req = Request::get(uri)
            .header(header::HOST, target.authority().as_str())
            .body(ProxyBody::empty())
            .ok()?;
        let fetched =
            tokio::time::timeout(self.options().connect_timeout, self.client().request(req));
        let resp = match fetched.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                tracing::warn!(error = %client_error_reason(&e), "cannot fetch error page from --error-target");
                return None;
            }
            Err(_) => {
                tracing::warn!("error page from --error-target timed out");
                return None;
            }
        };
        let (parts, body) = resp.into_parts();
        let mut out = Response::new(ProxyBody::Stream(ActivityBody::new(body, None)));
        *out.status_mut() = status;
        for key in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
            if let Some(value) = parts.headers.get(&key) {
                out.headers_mut().insert(key, value.clone());
            }
        }
        Some(out)
    }
}

/// The request path as the log shows it: no query, and no token where JupyterHub's deprecated
/// `GET /hub/api/authorizations/token/{token}` carries one in the path.
fn path_only(pq: &str) -> std::borrow::Cow<'_, str> {
    const TOKEN_IN_PATH: &str = "/api/authorizations/token/";
    let path = pq.split('?').next().unwrap_or(pq);
    match path.find(TOKEN_IN_PATH) {
        Some(i) if path.len() > i + TOKEN_IN_PATH.len() => {
            format!("{}[redacted]", &path[..i + TOKEN_IN_PATH.len()]).into()
        }
        _ => path.into(),
    }
}

fn default_error(status: StatusCode, err: &ForwardError) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    // The upstream's address stays in the log: it is internal, and the body goes to anyone.
    let detail = match err {
        ForwardError::NoRoute => "No route for this path.",
        ForwardError::BadRequest(what) => what,
        ForwardError::Upstream { .. } => "The server for this path is not responding.",
    };
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code}: {reason}</h1><p>{detail}</p></body></html>\n",
        code = status.as_u16()
    );
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod log_tests {
    use super::path_only;

    #[test]
    fn logged_paths_carry_no_query_and_no_token() {
        assert_eq!(path_only("/user/alice/lab?token=abc"), "/user/alice/lab");
        assert_eq!(
            path_only("/hub/api/authorizations/token/s3cr3t-token?x=1"),
            "/hub/api/authorizations/token/[redacted]"
        );
        assert_eq!(
            path_only("/base/hub/api/authorizations/token/s3cr3t"),
            "/base/hub/api/authorizations/token/[redacted]"
        );
        assert_eq!(
            path_only("/hub/api/authorizations/token/"),
            "/hub/api/authorizations/token/"
        );
    }
}
