//! Request bodies of the sharing API, parsed once: [`ShareScopes`] (every scope known and
//! limited to the one shared server), [`GrantRequest`] (exactly one of `user` / `group`) and
//! [`CodeRequest`] (`expires_in` between a minute and a year, a day by default).

use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::ApiError;
use crate::scopes::{is_custom, validate_scope};

/// A code lives at least this long (seconds).
const MIN_EXPIRES_IN: i64 = 60;
/// A code lives at most this long (seconds, a year).
const MAX_EXPIRES_IN: i64 = 525_600 * 60;
/// A code lives this long unless the request says otherwise (seconds, a day).
pub(crate) const DEFAULT_EXPIRES_IN: i64 = 86_400;

/// Scopes a share grants, each `NAME!server=OWNER/SERVER` with `NAME` a real (non-meta) scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareScopes(Vec<String>);

impl ShareScopes {
    /// The default: access to the server.
    pub(crate) fn access(owner: &str, server: &str) -> Self {
        Self(vec![format!("access:servers!server={owner}/{server}")])
    }

    /// Parse requested scopes for `owner`'s `server` (JupyterHub's `Share._apply_filter`): an
    /// unfiltered scope gets the server filter, a scope filtered on this server stays, any
    /// other filter, an unknown scope or a metascope (`self`, `inherit`, ...) is a 400.
    ///
    /// # Errors
    /// 400 naming the scope.
    pub(crate) fn parse(
        config: &Config,
        raw: &[String],
        owner: &str,
        server: &str,
    ) -> Result<Self, ApiError> {
        let server_filter = format!("server={owner}/{server}");
        let mut out = Vec::with_capacity(raw.len());
        for scope in raw {
            let (name, filter) = match scope.split_once('!') {
                Some((n, f)) => (n, Some(f)),
                None => (scope.as_str(), None),
            };
            let known = validate_scope(name).is_ok()
                && !matches!(name, "self" | "inherit" | "identify")
                && (!is_custom(name) || config.custom_scopes.contains_key(name));
            if !known {
                return Err(ApiError::BadRequest(format!(
                    "Scope '{scope}' for share does not exist"
                )));
            }
            if let Some(f) = filter
                && f != server_filter
            {
                return Err(ApiError::BadRequest(format!(
                    "!{f} not allowed on sharing {scope}, only !{server_filter}"
                )));
            }
            out.push(format!("{name}!{server_filter}"));
        }
        out.sort();
        out.dedup();
        Ok(Self(out))
    }

    /// The scopes.
    pub(crate) fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Who a grant or revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A user, by name.
    User(String),
    /// A group, by name.
    Group(String),
}

/// `POST` / `PATCH /hub/api/shares/{owner}/{server}` bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantRequest {
    /// Whom.
    pub(crate) target: Target,
    /// Requested scopes, raw (`None` or empty = the default / all).
    pub(crate) scopes: Option<Vec<String>>,
}

fn object(body: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match body {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Request body must be a JSON object, not {other}"
        ))),
    }
}

fn scopes_field(m: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    match m.get("scopes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let scopes = items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::BadRequest(format!("scopes must be strings, not {v}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((!scopes.is_empty()).then_some(scopes))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "scopes must be a list of strings, not {other}"
        ))),
    }
}

fn only_fields(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!(
            "Unexpected field {k:?} (allowed: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn name_field(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{key} must be a non-empty string, not {other}"
        ))),
    }
}

impl GrantRequest {
    /// Parse a JSON body (absent = `{}`).
    ///
    /// # Errors
    /// 400 for unknown fields, wrong types, or not exactly one of `user` / `group`.
    pub(crate) fn parse(body: Option<Value>) -> Result<Self, ApiError> {
        let m = object(body)?;
        only_fields(&m, &["user", "group", "scopes"])?;
        let scopes = scopes_field(&m)?;
        let target = match (name_field(&m, "user")?, name_field(&m, "group")?) {
            (Some(u), None) => Target::User(u),
            (None, Some(g)) => Target::Group(g),
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "Expected exactly one of `user` or `group`, not both.".to_owned(),
                ));
            }
            (None, None) => {
                return Err(ApiError::BadRequest(
                    "Specify exactly one of `user` or `group`".to_owned(),
                ));
            }
        };
        Ok(Self { target, scopes })
    }
}

/// `POST /hub/api/share-codes/{owner}/{server}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeRequest {
    /// Requested scopes, raw (`None` = access to the server).
    pub(crate) scopes: Option<Vec<String>>,
    /// Lifetime in seconds.
    pub(crate) expires_in: i64,
}

impl CodeRequest {
    /// Parse a JSON body (absent = `{}`).
    ///
    /// # Errors
    /// 400 for unknown fields, wrong types or an `expires_in` out of range.
    pub(crate) fn parse(body: Option<Value>) -> Result<Self, ApiError> {
        let m = object(body)?;
        only_fields(&m, &["scopes", "expires_in"])?;
        let scopes = scopes_field(&m)?;
        let expires_in = match m.get("expires_in") {
            None | Some(Value::Null) => DEFAULT_EXPIRES_IN,
            Some(v) => {
                let secs = v
                    .as_i64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                            .map(|f| f as i64)
                    })
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "expires_in must be a whole number of seconds, not {v}"
                        ))
                    })?;
                if !(MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&secs) {
                    return Err(ApiError::BadRequest(format!(
                        "expires_in must be between {MIN_EXPIRES_IN} and {MAX_EXPIRES_IN} \
                         seconds, not {secs}"
                    )));
                }
                secs
            }
        };
        Ok(Self { scopes, expires_in })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn cfg() -> Config {
        Config::default()
    }

    #[test]
    fn scopes_get_the_server_filter_and_nothing_else() {
        let s = ShareScopes::parse(
            &cfg(),
            &["access:servers".into(), "read:servers!server=alice/".into()],
            "alice",
            "",
        )
        .unwrap();
        assert_eq!(
            s.as_slice(),
            ["access:servers!server=alice/", "read:servers!server=alice/"]
        );
        for bad in [
            "access:servers!user=alice",
            "access:servers!server=alice/other",
            "access:servers!group=g",
            "access:servers!server",
            "self",
            "inherit",
            "nope",
            "custom:undefined",
        ] {
            let e = ShareScopes::parse(&cfg(), &[bad.into()], "alice", "").unwrap_err();
            assert!(
                matches!(e, ApiError::BadRequest(ref m) if m.contains(bad)),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn grant_bodies() {
        assert_eq!(
            GrantRequest::parse(Some(json!({"user": "bob"}))).unwrap(),
            GrantRequest {
                target: Target::User("bob".into()),
                scopes: None
            }
        );
        for bad in [
            json!({}),
            json!({"user": "bob", "group": "g"}),
            json!({"user": 3}),
            json!({"user": "bob", "extra": 1}),
            json!({"user": "bob", "scopes": "access:servers"}),
            json!([1]),
        ] {
            assert!(GrantRequest::parse(Some(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn code_bodies() {
        assert_eq!(
            CodeRequest::parse(None).unwrap().expires_in,
            DEFAULT_EXPIRES_IN
        );
        assert_eq!(
            CodeRequest::parse(Some(json!({"expires_in": 60})))
                .unwrap()
                .expires_in,
            60
        );
        for bad in [
            json!({"expires_in": 59}),
            json!({"expires_in": MAX_EXPIRES_IN + 1}),
            json!({"expires_in": "3600"}),
            json!({"expires_in": 1.5}),
            json!({"code": "x"}),
        ] {
            assert!(CodeRequest::parse(Some(bad.clone())).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever is asked, every accepted scope is limited to exactly the shared server.
        #[test]
        fn accepted_scopes_are_limited_to_the_server(
            raw in proptest::collection::vec("[a-z:!=/_-]{0,40}", 0..6),
        ) {
            if let Ok(s) = ShareScopes::parse(&cfg(), &raw, "alice", "srv") {
                for scope in s.as_slice() {
                    let (_, filter) = scope.split_once('!').unwrap();
                    prop_assert_eq!(filter, "server=alice/srv");
                }
            }
        }

        #[test]
        fn bodies_never_panic(body in any::<String>()) {
            let v: Option<Value> = serde_json::from_str(&body).ok();
            let _ = GrantRequest::parse(v.clone());
            let _ = CodeRequest::parse(v);
        }
    }
}
