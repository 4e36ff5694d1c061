//! The access check of the embedded store: the root key may do anything; a temporary key only
//! touches objects under its prefix in its bucket, and lists only that prefix.

use s3s::access::{S3Access, S3AccessContext};
use s3s::dto::{
    CopyObjectInput, CopySource, DeleteObjectsInput, ListMultipartUploadsInput,
    ListObjectVersionsInput, ListObjectsInput, ListObjectsV2Input, UploadPartCopyInput,
};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

use super::confine::{self, Refusal};
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

    /// The confinement [`S3Access::check`] left on the request; none only for the root key
    /// (anything else, should `check` ever not have run, is refused).
    fn confinement<'a, T>(&self, req: &'a S3Request<T>) -> S3Result<Option<&'a Confinement>> {
        if let Some(c) = req.extensions.get::<Confinement>() {
            return Ok(Some(c));
        }
        match &req.credentials {
            Some(cred) if self.keys.is_root(&cred.access_key) => Ok(None),
            _ => Err(s3_error!(
                AccessDenied,
                "the request's access was not checked"
            )),
        }
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

fn refused(c: &Confinement, why: &Refusal) -> s3s::S3Error {
    s3_error!(
        AccessDenied,
        "these credentials may only access {}/{}: {why}",
        c.bucket,
        c.prefix
    )
}

/// An object key (or listing prefix) as s3s decoded it.
fn check_key(c: &Confinement, key: &str) -> S3Result<()> {
    confine::check_key(&c.prefix, key).map_err(|why| refused(c, &why))
}

fn check_prefix(c: Option<&Confinement>, prefix: Option<&str>) -> S3Result<()> {
    match (c, prefix) {
        (None, _) => Ok(()),
        (Some(c), Some(p)) => check_key(c, p),
        (Some(c), None) => Err(denied(c)),
    }
}

/// The copy source as s3s parsed it from `x-amz-copy-source`: the very value s3s-fs reads.
fn check_copy_source(c: Option<&Confinement>, source: &CopySource) -> S3Result<()> {
    match c {
        None => Ok(()),
        Some(c) => {
            confine::check_copy_source(&c.bucket, &c.prefix, source).map_err(|why| refused(c, &why))
        }
    }
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
                if **bucket != *c.bucket {
                    return Err(denied(&c));
                }
                check_key(&c, key)?;
            }
        }
        // `CopyObject`/`UploadPartCopy`: the source is checked once s3s has parsed it
        // (`copy_object`, `upload_part_copy` below), never by a parse of our own.
        cx.extensions_mut().insert(c);
        Ok(())
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        check_copy_source(self.confinement(req)?, &req.input.copy_source)
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        check_copy_source(self.confinement(req)?, &req.input.copy_source)
    }

    async fn list_objects(&self, req: &mut S3Request<ListObjectsInput>) -> S3Result<()> {
        check_prefix(self.confinement(req)?, req.input.prefix.as_deref())
    }

    async fn list_objects_v2(&self, req: &mut S3Request<ListObjectsV2Input>) -> S3Result<()> {
        check_prefix(self.confinement(req)?, req.input.prefix.as_deref())
    }

    async fn list_object_versions(
        &self,
        req: &mut S3Request<ListObjectVersionsInput>,
    ) -> S3Result<()> {
        check_prefix(self.confinement(req)?, req.input.prefix.as_deref())
    }

    async fn list_multipart_uploads(
        &self,
        req: &mut S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<()> {
        check_prefix(self.confinement(req)?, req.input.prefix.as_deref())
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let c = self.confinement(req)?;
        for object in &req.input.delete.objects {
            check_prefix(c, Some(&object.key))?;
        }
        Ok(())
    }
}
