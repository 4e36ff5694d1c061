//! From verified claims to a hub identity: user name, roles, groups, admin flag, and the
//! allowed-roles check. Pure functions over the claims JSON (id_token merged with userinfo).

use serde_json::Value;

use super::config::OidcConfig;

/// Who the claims say the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Normalized user name (a safe server name).
    pub name: String,
    /// Roles from the roles claim.
    pub roles: Vec<String>,
    /// Groups as the provider names them (`/services/dask/x`).
    pub groups: Vec<String>,
    /// Admin by an admin role or group.
    pub admin: bool,
}

/// Why claims do not make a hub user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimsError {
    /// No usable user name.
    #[error("the identity provider sent no usable `{claim}` claim")]
    NoName {
        /// The configured username claim.
        claim: String,
    },
    /// The user holds none of the roles or groups needed to log in.
    #[error("missing role {missing:?}")]
    NotAllowed {
        /// What would have let them in.
        missing: Vec<String>,
        /// Roles they hold.
        roles: Vec<String>,
        /// Groups they hold.
        groups: Vec<String>,
    },
}

/// The value at a dotted `path` (`realm_access.roles`).
pub(crate) fn at_path<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, key| v.get(key))
}

/// A claim as a list of strings (a single string counts as a list of one).
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A user name made safe for URLs and server names: lower case, `[a-z0-9._-]`, anything else
/// becomes `-`, no leading or trailing `-` or `.`.
pub(crate) fn normalize_username(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out = out.trim_matches(|c| c == '-' || c == '.').to_owned();
    (!out.is_empty() && out.len() <= 255).then_some(out)
}

/// The hub group name of a provider group: Keycloak paths lose the leading `/`, inner `/`
/// become `:` (`/services/dask/x` → `services:dask:x`), since hub group names appear in URL
/// paths.
pub(crate) fn hub_group_name(group: &str) -> Option<String> {
    let name = group.trim().trim_start_matches('/').replace('/', ":");
    (!name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)).then_some(name)
}

/// Whether `groups` (provider names) include `wanted` (a path, hub name or last segment; the
/// shared rule, [`stackhub_common::groups`]).
pub(crate) fn in_group(groups: &[String], wanted: &str) -> bool {
    stackhub_common::groups::holds_group(groups, wanted)
}

/// Map verified claims to an identity, enforcing `allowed_roles` / `allowed_groups`.
///
/// # Errors
/// [`ClaimsError`] naming the missing claim, or the roles lacking and those held.
pub(crate) fn identity(config: &OidcConfig, claims: &Value) -> Result<Identity, ClaimsError> {
    let name = at_path(claims, &config.username_claim)
        .and_then(Value::as_str)
        .and_then(normalize_username)
        .ok_or_else(|| ClaimsError::NoName {
            claim: config.username_claim.clone(),
        })?;
    let roles = strings(at_path(claims, &config.roles_claim));
    let groups = strings(at_path(claims, &config.groups_claim));
    let restricted = !config.allowed_roles.is_empty() || !config.allowed_groups.is_empty();
    let allowed = !restricted
        || config.allowed_roles.iter().any(|r| roles.contains(r))
        || config.allowed_groups.iter().any(|g| in_group(&groups, g));
    if !allowed {
        let missing = config
            .allowed_roles
            .iter()
            .chain(&config.allowed_groups)
            .cloned()
            .collect();
        return Err(ClaimsError::NotAllowed {
            missing,
            roles,
            groups,
        });
    }
    let admin = config.admin_roles.iter().any(|r| roles.contains(r))
        || config.admin_groups.iter().any(|g| in_group(&groups, g));
    Ok(Identity {
        name,
        roles,
        groups,
        admin,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            allowed_roles: vec!["stack-jupyter".into()],
            admin_groups: vec!["/admins".into()],
            ..OidcConfig::default()
        }
    }

    #[test]
    fn keycloak_shaped_claims_map_to_an_identity() {
        let claims = json!({
            "preferred_username": "Alice.Smith@Example.org",
            "realm_access": {"roles": ["stack-jupyter", "stack-jupyter-medium"]},
            "groups": ["/services/dask/stack-dask-medium", "/admins"],
        });
        let id = identity(&config(), &claims).unwrap();
        assert_eq!(id.name, "alice.smith-example.org");
        assert_eq!(id.roles, ["stack-jupyter", "stack-jupyter-medium"]);
        assert!(id.admin);
        assert_eq!(
            hub_group_name(&id.groups[0]).unwrap(),
            "services:dask:stack-dask-medium"
        );
    }

    #[test]
    fn lacking_the_role_names_it_and_the_held_ones() {
        let claims =
            json!({"preferred_username": "bob", "realm_access": {"roles": ["stack-dask"]}});
        match identity(&config(), &claims) {
            Err(ClaimsError::NotAllowed { missing, roles, .. }) => {
                assert_eq!(missing, ["stack-jupyter"]);
                assert_eq!(roles, ["stack-dask"]);
            }
            other => panic!("{other:?}"),
        }
        let claims = json!({"sub": "x"});
        assert!(matches!(
            identity(&config(), &claims),
            Err(ClaimsError::NoName { .. })
        ));
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(
            normalize_username("  Dr. Who?! ").as_deref(),
            Some("dr.-who")
        );
        assert_eq!(normalize_username("---"), None);
        assert!(in_group(
            &["/services/dask/low".into()],
            "services:dask:low"
        ));
        assert!(in_group(&["/services/dask/low".into()], "low"));
        assert!(!in_group(&["/services/dask/low".into()], "/services"));
    }
}
