//! What a temporary key may name: objects of one bucket under one literal prefix, judged on the
//! values s3s hands to s3s-fs (never on a second parse of the raw request).
//!
//! s3s percent-decodes the request path into the object key and parses `x-amz-copy-source` into
//! a [`CopySource`] (percent-decoded, cut only at `?versionId=`); s3s-fs then joins the key to the
//! bucket's directory and resolves `.` and `..` virtually. A key is accepted when it starts with
//! the prefix and has no `.` or `..` segment, so the resolved path stays under the prefix's
//! directory: `users/alice/?/../../bob/x` starts with `users/alice/` but names bob's object.

use s3s::dto::CopySource;

/// Why a key is outside a temporary key's reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The bucket is not the key's bucket.
    #[error("bucket {0:?} is not {1:?}")]
    OtherBucket(String, String),
    /// The key does not start with the prefix.
    #[error("key {0:?} is not under {1:?}")]
    OutsidePrefix(String, String),
    /// A `.` or `..` segment (between `/` or `\`): the file system would resolve it elsewhere.
    #[error("key {0:?} has a `.` or `..` segment")]
    DotSegment(String),
    /// Access-point and Outposts copy sources are not served here.
    #[error("copy source {0:?} is not a bucket/key of this store")]
    NotABucketSource(String),
}

/// A `.` or `..` segment, with `/` or `\` as separators (`\` is one on some file systems).
fn has_dot_segment(key: &str) -> bool {
    key.split(['/', '\\']).any(|seg| seg == "." || seg == "..")
}

/// `key` (as s3s decoded it) lies under `prefix` (`users/NAME/`) once the file system resolves
/// it. A prefix not ending in `/` confines nothing (`users/al` would cover `users/alice/`).
pub(crate) fn check_key(prefix: &str, key: &str) -> Result<(), Refusal> {
    if !prefix.ends_with('/') || !key.starts_with(prefix) {
        return Err(Refusal::OutsidePrefix(key.to_owned(), prefix.to_owned()));
    }
    if has_dot_segment(key) {
        return Err(Refusal::DotSegment(key.to_owned()));
    }
    Ok(())
}

/// The source of `CopyObject`/`UploadPartCopy`, as s3s parsed it, lies in `bucket` under
/// `prefix`.
pub(crate) fn check_copy_source(
    bucket: &str,
    prefix: &str,
    source: &CopySource,
) -> Result<(), Refusal> {
    match source {
        CopySource::Bucket {
            bucket: b, key: k, ..
        } => {
            if **b != *bucket {
                return Err(Refusal::OtherBucket(b.to_string(), bucket.to_owned()));
            }
            check_key(prefix, k)
        }
        CopySource::AccessPoint { .. } | CopySource::Outpost { .. } => {
            Err(Refusal::NotABucketSource(source.format_to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use path_absolutize::Absolutize;
    use proptest::prelude::*;

    use super::*;

    const BUCKET: &str = "stackhub";
    const PREFIX: &str = "users/alice/";

    /// Where s3s-fs puts the object `bucket/key` under `root` (`FileSystem::get_object_path`:
    /// `Path::new(bucket).join(key)`, absolutized virtually under the root), `None` when it
    /// refuses the path.
    fn s3s_fs_path(root: &Path, bucket: &str, key: &str) -> Option<PathBuf> {
        Path::new(bucket)
            .join(key)
            .absolutize_virtually(root)
            .ok()
            .map(|p| p.into_owned())
    }

    /// The accepted key resolves inside `root/BUCKET/users/alice`.
    fn resolves_inside(bucket: &str, key: &str) -> bool {
        let root = Path::new("/srv/objects");
        let space = root.join(BUCKET).join(PREFIX);
        s3s_fs_path(root, bucket, key).is_some_and(|p| p.starts_with(&space))
    }

    #[test]
    fn keys_under_the_prefix_are_accepted() {
        for key in [
            "users/alice/",
            "users/alice/x.nc",
            "users/alice/a/b/c",
            "users/alice/..x/x..",
            "users/alice/.hidden",
            "users/alice//x",
            "users/alice/?versionId=1",
        ] {
            assert_eq!(check_key(PREFIX, key), Ok(()), "{key}");
            assert!(resolves_inside(BUCKET, key), "{key}");
        }
    }

    #[test]
    fn path_tricks_are_refused() {
        for key in [
            "users/alice/../bob/x",
            "users/alice/?/../../bob/x",
            "users/alice/./x",
            "users/alice/x/..",
            "users/alice/..\\..\\bob\\x",
            "users/alice/.\\x",
            "users/alicex",
            "/users/alice/x",
            "users/bob/x",
            "",
        ] {
            assert!(check_key(PREFIX, key).is_err(), "{key}");
        }
        assert!(check_key("users/al", "users/alice/x").is_err());
    }

    #[test]
    fn copy_sources_are_judged_as_s3s_parsed_them() {
        let ok = CopySource::parse("stackhub/users/alice/x.nc?versionId=3").unwrap();
        assert_eq!(check_copy_source(BUCKET, PREFIX, &ok), Ok(()));
        // The raw header cut at its first `?` would read `users/alice/`: s3s reads all of it.
        let trick = CopySource::parse("stackhub/users/alice/?/../../bob/x").unwrap();
        assert_eq!(
            check_copy_source(BUCKET, PREFIX, &trick),
            Err(Refusal::DotSegment("users/alice/?/../../bob/x".to_owned()))
        );
        let other = CopySource::parse("another/users/alice/x").unwrap();
        assert!(matches!(
            check_copy_source(BUCKET, PREFIX, &other),
            Err(Refusal::OtherBucket(..))
        ));
        let ap = CopySource::parse(
            "arn:aws:s3:us-east-1:123456789012:accesspoint/my-ap/object/users/alice/x",
        )
        .unwrap();
        assert!(matches!(
            check_copy_source(BUCKET, PREFIX, &ap),
            Err(Refusal::NotABucketSource(_))
        ));
    }

    /// Strings built from the pieces path tricks are made of.
    fn tricky() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("\\".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("?".to_owned()),
            Just("%3F".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("%25".to_owned()),
            Just("?versionId=".to_owned()),
            Just("users".to_owned()),
            Just("alice".to_owned()),
            Just("bob".to_owned()),
            Just("stackhub".to_owned()),
            "[a-z0-9]{1,3}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    /// A tail after the prefix, or anything at all.
    fn key_like() -> impl Strategy<Value = String> {
        prop_oneof![
            tricky().prop_map(|t| format!("{PREFIX}{t}")),
            tricky(),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// A key accepted under `users/alice/` is never resolved by s3s-fs outside it.
        #[test]
        fn accepted_keys_resolve_inside_the_prefix(key in key_like()) {
            if check_key(PREFIX, &key).is_ok() {
                prop_assert!(resolves_inside(BUCKET, &key), "{key:?} escapes");
            }
        }

        /// An object path as a client sends it: s3s percent-decodes it and splits bucket from
        /// key; an accepted key stays inside the prefix.
        #[test]
        fn accepted_request_paths_resolve_inside_the_prefix(tail in key_like()) {
            let uri_path = format!("/{BUCKET}/{tail}");
            let Ok(decoded) = urlencoding::decode(&uri_path) else { return Ok(()) };
            if let Ok(s3s::path::S3Path::Object { bucket, key }) =
                s3s::path::parse_path_style(&decoded)
                && *bucket == *BUCKET
                && check_key(PREFIX, &key).is_ok()
            {
                prop_assert!(resolves_inside(&bucket, &key), "{uri_path:?} escapes");
            }
        }

        /// An `x-amz-copy-source` header: whatever s3s's own parser makes of it, an accepted
        /// source resolves inside the prefix of the right bucket.
        #[test]
        fn accepted_copy_sources_resolve_inside_the_prefix(
            lead in prop_oneof![Just(""), Just("/"), Just("//")],
            bucket in prop_oneof![Just(BUCKET.to_owned()), "[a-z]{3,8}"],
            tail in key_like(),
        ) {
            let header = format!("{lead}{bucket}/{tail}");
            if let Ok(source) = CopySource::parse(&header)
                && check_copy_source(BUCKET, PREFIX, &source).is_ok()
            {
                let CopySource::Bucket { bucket, key, .. } = &source else {
                    return Err(TestCaseError::fail(format!("{source:?} accepted")));
                };
                prop_assert!(resolves_inside(bucket, key), "{header:?} escapes");
            }
        }
    }
}
