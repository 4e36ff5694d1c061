//! A small STS endpoint: `AssumeRole` with the root key returns temporary credentials confined to
//! `users/<RoleSessionName>/` in the store's bucket. Clients point their STS endpoint at the
//! store (`boto3.client("sts", endpoint_url=...)`); requests are SigV4-signed for service `sts`.

use http::{HeaderValue, Method};
use s3s::route::S3Route;
use s3s::{Body, S3Request, S3Response, S3Result, s3_error};

use super::keys::KeyRing;
use crate::exchange::user_prefix;

#[derive(Debug, Clone)]
pub(crate) struct StsRoute {
    pub(crate) keys: KeyRing,
    pub(crate) bucket: String,
    pub(crate) max_lifetime_secs: i64,
}

const FORM: &str = "application/x-www-form-urlencoded";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[async_trait::async_trait]
impl S3Route for StsRoute {
    fn is_match(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        _: &mut http::Extensions,
    ) -> bool {
        method == Method::POST
            && uri.path() == "/"
            && headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(FORM))
    }

    /// Checked in [`Self::call`], which answers in STS's error format (clients cannot parse
    /// S3's).
    async fn check_access(&self, _req: &mut S3Request<Body>) -> S3Result<()> {
        Ok(())
    }

    async fn call(&self, mut req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        match &req.credentials {
            Some(c) if self.keys.is_root(&c.access_key) => {}
            Some(_) => {
                return Ok(sts_error(
                    http::StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "only the store's root key may call AssumeRole",
                ));
            }
            None => {
                return Ok(sts_error(
                    http::StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "AssumeRole needs a signed request",
                ));
            }
        }
        let body = req
            .input
            .store_all_limited(64 * 1024)
            .await
            .map_err(|_| s3_error!(InvalidRequest, "cannot read the request body"))?;
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match get("Action") {
            Some("AssumeRole") => {}
            Some(other) => {
                return Err(s3_error!(
                    NotImplemented,
                    "STS action {other} is not supported (only AssumeRole)"
                ));
            }
            None => return Err(s3_error!(InvalidRequest, "missing Action")),
        }
        let user = get("RoleSessionName")
            .ok_or_else(|| s3_error!(InvalidArgument, "missing RoleSessionName"))?;
        let prefix =
            user_prefix(user).map_err(|e| s3_error!(InvalidArgument, "RoleSessionName: {e}"))?;
        let secs = match get("DurationSeconds") {
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|s| (900..=self.max_lifetime_secs).contains(s))
                .ok_or_else(|| {
                    s3_error!(
                        InvalidArgument,
                        "DurationSeconds must be between 900 and {}",
                        self.max_lifetime_secs
                    )
                })?,
            None => 3600.min(self.max_lifetime_secs),
        };
        let issued = self
            .keys
            .issue(&self.bucket, &prefix, chrono::Duration::seconds(secs));
        tracing::info!(user, access_key_id = %issued.access_key_id, secs, "AssumeRole issued credentials");
        let xml = format!(
            concat!(
                r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">"#,
                "<AssumeRoleResult><Credentials>",
                "<AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>",
                "<SessionToken>{}</SessionToken><Expiration>{}</Expiration>",
                "</Credentials><AssumedRoleUser>",
                "<AssumedRoleId>{}:{}</AssumedRoleId>",
                "<Arn>arn:aws:sts::000000000000:assumed-role/stackhub-user/{}</Arn>",
                "</AssumedRoleUser></AssumeRoleResult>",
                "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>",
                "</AssumeRoleResponse>"
            ),
            issued.access_key_id,
            xml_escape(issued.secret_access_key.expose()),
            xml_escape(issued.session_token.expose()),
            issued.expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
            issued.access_key_id,
            xml_escape(user),
            xml_escape(user),
            uuid_like(),
        );
        let mut resp = S3Response::new(Body::from(xml));
        resp.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml"),
        );
        Ok(resp)
    }
}

/// An error in STS's (query protocol) format.
fn sts_error(status: http::StatusCode, code: &str, message: &str) -> S3Response<Body> {
    let xml = format!(
        concat!(
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">"#,
            "<Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error>",
            "<RequestId>{}</RequestId></ErrorResponse>"
        ),
        code,
        xml_escape(message),
        uuid_like()
    );
    let mut resp = S3Response::new(Body::from(xml));
    resp.status = Some(status);
    resp.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml"),
    );
    resp
}

fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
