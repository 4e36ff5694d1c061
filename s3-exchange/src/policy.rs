//! The IAM policies the exchange writes: the one confining credentials to one prefix of one
//! bucket, and the trust policy of per-user roles.
//!
//! IAM reads `*` and `?` in resources and `StringLike` conditions as wildcards and `${...}` as a
//! policy variable, so a user named `a*` would get `users/a*/*`: every user whose name starts
//! with `a`. AWS spells literal ones `${*}`, `${?}` and `${$}`, but the S3-compatible stores the
//! exchange also serves (moto, MinIO, Ceph RGW) do not all read those, and there an escaped name
//! would still be a wildcard. So a bucket or prefix with any of these characters is refused
//! ([`PolicyError::Wildcard`]) rather than written into a policy.

/// A value cannot be written into an IAM policy as a literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The value has a character IAM reads as a wildcard or a variable.
    #[error(
        "{what} {value:?} contains {character:?}, which an IAM policy reads as a wildcard or a variable, not as itself"
    )]
    Wildcard {
        /// What the value is (`bucket`, `prefix`).
        what: &'static str,
        /// The value.
        value: String,
        /// The offending character.
        character: char,
    },
    /// A trust policy's principal is not one principal's ARN.
    #[error("trusted principal {0:?} must be the ARN of one IAM principal (arn:…, no wildcards)")]
    Principal(String),
}

/// Characters IAM does not read as themselves in resources and `StringLike` conditions.
const SPECIAL: &[char] = &['*', '?', '$'];

fn literal<'a>(what: &'static str, value: &'a str) -> Result<&'a str, PolicyError> {
    match value.chars().find(|c| SPECIAL.contains(c)) {
        Some(character) => Err(PolicyError::Wildcard {
            what,
            value: value.to_owned(),
            character,
        }),
        None => Ok(value),
    }
}

/// A policy allowing object operations under `bucket/prefix*` and listing only that prefix.
///
/// # Errors
/// [`PolicyError::Wildcard`] when `bucket` or `prefix` holds `*`, `?` or `$`.
pub fn confined_policy(bucket: &str, prefix: &str) -> Result<serde_json::Value, PolicyError> {
    let bucket = literal("bucket", bucket)?;
    let prefix = literal("prefix", prefix)?;
    Ok(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ObjectsInOwnSpace",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"
                ],
                "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}*")]
            },
            {
                "Sid": "ListOwnSpace",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [format!("arn:aws:s3:::{bucket}")],
                "Condition": {"StringLike": {"s3:prefix": [format!("{prefix}*")]}}
            },
            {
                "Sid": "Locate",
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation"],
                "Resource": [format!("arn:aws:s3:::{bucket}")]
            }
        ]
    }))
}

/// The trust policy of a per-user role: only `principal` (an IAM user or role ARN, the hub's
/// own) may assume it. Never `"*"`: with it any principal allowed `sts:AssumeRole` (in any
/// account, on AWS) could take the user's role.
///
/// # Errors
/// [`PolicyError::Principal`] for anything but one principal's ARN.
pub fn trust_policy(principal: &str) -> Result<serde_json::Value, PolicyError> {
    let one_arn = principal.starts_with("arn:")
        && principal.split(':').count() >= 6
        && !principal.contains(SPECIAL)
        && !principal
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if !one_arn {
        return Err(PolicyError::Principal(principal.to_owned()));
    }
    Ok(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "sts:AssumeRole"
        }]
    }))
}

/// An `Allow` statement of trust policy `doc` (JSON, or JSON percent-encoded as IAM's `GetRole`
/// returns it) lets a wildcard principal (`"*"`, `{"AWS": "*"}`, `arn:aws:iam::*:root`) or a
/// `NotPrincipal` assume the role. `None` when `doc` is not a policy.
pub(crate) fn trusts_any_principal(doc: &str) -> Option<bool> {
    let parsed: serde_json::Value = serde_json::from_str(doc).ok().or_else(|| {
        let decoded = percent_encoding::percent_decode_str(doc)
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    })?;
    let statements = match &parsed["Statement"] {
        serde_json::Value::Array(v) => v.clone(),
        one @ serde_json::Value::Object(_) => vec![one.clone()],
        _ => return None,
    };
    let wild = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.contains(SPECIAL),
        serde_json::Value::Array(a) => a
            .iter()
            .any(|x| x.as_str().is_some_and(|s| s.contains(SPECIAL))),
        _ => false,
    };
    Some(statements.iter().any(|st| {
        st["Effect"] == "Allow"
            && (st.get("NotPrincipal").is_some()
                || wild(&st["Principal"])
                || wild(&st["Principal"]["AWS"]))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_in_names_are_refused() {
        assert!(confined_policy("b", "users/alice/").is_ok());
        for (prefix, character) in [("users/a*/", '*'), ("users/a?/", '?'), ("users/${x}/", '$')] {
            assert_eq!(
                confined_policy("b", prefix),
                Err(PolicyError::Wildcard {
                    what: "prefix",
                    value: prefix.to_owned(),
                    character
                })
            );
        }
        assert!(confined_policy("b*", "users/alice/").is_err());
    }

    #[test]
    fn trust_names_one_principal() {
        let p = trust_policy("arn:aws:iam::123456789012:user/stackhub-hub").unwrap();
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::123456789012:user/stackhub-hub"
        );
        for bad in [
            "*",
            "arn:aws:iam::*:root",
            "",
            "alice",
            "arn:aws:iam::1:user/a b",
        ] {
            assert!(trust_policy(bad).is_err(), "{bad}");
        }
        assert_eq!(trusts_any_principal(&p.to_string()), Some(false));
    }

    #[test]
    fn wildcard_trust_is_recognised() {
        for doc in [
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"}}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::1:user/a","arn:aws:iam::*:root"]}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::1:user/a"}}]}"#,
            "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22AWS%22%3A%22%2A%22%7D%7D%5D%7D",
        ] {
            assert_eq!(trusts_any_principal(doc), Some(true), "{doc}");
        }
        let named = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1:user/hub"}},{"Effect":"Deny","Principal":"*"}]}"#;
        assert_eq!(trusts_any_principal(named), Some(false));
        assert_eq!(trusts_any_principal("not json"), None);
    }
}
