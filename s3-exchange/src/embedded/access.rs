//! The access check of the embedded store: the root key may do anything; a temporary key only
//! touches objects under its prefix in its bucket, and lists only that prefix.

use s3s::access::{S3Access, S3AccessContext};
use s3s::dto::{
    DeleteObjectsInput, ListMultipartUploadsInput, ListObjectVersionsInput, ListObjectsInput,
    ListObjectsV2Input,
};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

use super::keys::{Confinement, KeyRing, TokenError};

/// Operations on a bucket (not an object) a temporary key may call; listing and batch delete
/// are checked again once their input is parsed.
const BUCKET_OPS: &[&str] = &[
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListMultipartUploads",
    "DeleteObjects",
    "GetBucketLocation",
    "HeadBucket",
];

#[derive(Debug, Clone)]
pub(crate) struct PrefixAccess {
    keys: KeyRing,
}

impl PrefixAccess {
    pub(crate) fn new(keys: KeyRing) -> Self {
        Self { keys }
    }
}

fn session_token<'a>(headers: &'a http::HeaderMap, uri: &'a http::Uri) -> Option<String> {
    if let Some(v) = headers.get("x-amz-security-token") {
        return v.to_str().ok().map(str::to_owned);
    }
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "X-Amz-Security-Token")
        .map(|(_, v)| v.into_owned())
}

fn denied(c: &Confinement) -> s3s::S3Error {
    s3_error!(
        AccessDenied,
        "these credentials may only access {}/{}",
        c.bucket,
        c.prefix
    )
}

/// `key` lies under `c.prefix` once the file system resolves it: no `.` or `..` segments
/// (`users/alice/../bob/x` starts with `users/alice/` but names bob's object).
fn within(c: &Confinement, key: &str) -> bool {
    key.starts_with(&c.prefix) && !key.split('/').any(|seg| seg == "." || seg == "..")
}

fn check_prefix(c: Option<&Confinement>, prefix: Option<&str>) -> S3Result<()> {
    match c {
        None => Ok(()),
        Some(c) if prefix.is_some_and(|p| within(c, p)) => Ok(()),
        Some(c) => Err(denied(c)),
    }
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=…]`, percent-encoded.
fn copy_source(headers: &http::HeaderMap) -> Option<(String, String)> {
    let raw = headers.get("x-amz-copy-source")?.to_str().ok()?;
    let raw = raw.split('?').next().unwrap_or(raw);
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let decoded = decoded.trim_start_matches('/');
    let (bucket, key) = decoded.split_once('/')?;
    Some((bucket.to_owned(), key.to_owned()))
}

#[async_trait::async_trait]
impl S3Access for PrefixAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if self.keys.is_root(&creds.access_key) {
            return Ok(());
        }
        let token = session_token(cx.headers(), cx.uri());
        let c = match self.keys.verify(&creds.access_key, token.as_deref()) {
            Ok(c) => c,
            Err(TokenError::Missing) => {
                return Err(s3_error!(
                    InvalidToken,
                    "temporary credentials need their session token"
                ));
            }
            Err(TokenError::Invalid) => {
                return Err(s3_error!(InvalidToken, "the session token is invalid"));
            }
            Err(TokenError::Expired) => {
                return Err(s3_error!(ExpiredToken, "the credentials have expired"));
            }
        };
        match cx.s3_path() {
            S3Path::Root => return Err(denied(&c)),
            S3Path::Bucket { bucket } => {
                if **bucket != *c.bucket || !BUCKET_OPS.contains(&cx.s3_op().name()) {
                    return Err(denied(&c));
                }
            }
            S3Path::Object { bucket, key } => {
                if **bucket != *c.bucket || !within(&c, key) {
                    return Err(denied(&c));
                }
            }
        }
        if matches!(cx.s3_op().name(), "CopyObject" | "UploadPartCopy") {
            match copy_source(cx.headers()) {
                Some((bucket, key)) if bucket == c.bucket && within(&c, &key) => {}
                _ => return Err(denied(&c)),
            }
        }
        cx.extensions_mut().insert(c);
        Ok(())
    }

    async fn list_objects(&self, req: &mut S3Request<ListObjectsInput>) -> S3Result<()> {
        check_prefix(req.extensions.get(), req.input.prefix.as_deref())
    }

    async fn list_objects_v2(&self, req: &mut S3Request<ListObjectsV2Input>) -> S3Result<()> {
        check_prefix(req.extensions.get(), req.input.prefix.as_deref())
    }

    async fn list_object_versions(
        &self,
        req: &mut S3Request<ListObjectVersionsInput>,
    ) -> S3Result<()> {
        check_prefix(req.extensions.get(), req.input.prefix.as_deref())
    }

    async fn list_multipart_uploads(
        &self,
        req: &mut S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<()> {
        check_prefix(req.extensions.get(), req.input.prefix.as_deref())
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let c: Option<&Confinement> = req.extensions.get();
        for object in &req.input.delete.objects {
            check_prefix(c, Some(&object.key))?;
        }
        Ok(())
    }
}
