//! Who may use a profile or a choice: the roles and groups a user holds now.

use stackhub_common::groups::group_matches;

use crate::config::RoleConfig;
use crate::db::UserRow;

/// A user's roles and groups as profiles see them: hub roles (built-in, assigned, through
/// groups, from the config) plus the identity provider's roles from the last login, and hub
/// groups plus the provider's group paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Role names.
    pub roles: Vec<String>,
    /// Group names and paths.
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity of `user` given the configured roles.
    pub(crate) fn with_roles(configured: &[RoleConfig], user: &UserRow) -> Self {
        let mut roles = crate::auth::roles_of(configured, user);
        let mut groups = user.groups.clone();
        if let Some(text) = &user.auth_state
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        {
            let strings = |key: &str| -> Vec<String> {
                v.pointer(&format!("/oidc/{key}"))
                    .and_then(|x| x.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            roles.extend(strings("roles"));
            groups.extend(strings("groups"));
        }
        roles.sort();
        roles.dedup();
        groups.sort();
        groups.dedup();
        Self { roles, groups }
    }

    /// Holds `group`. Hub names (`projects:eo-lab`) and provider paths (`/projects/eo-lab`)
    /// are the same group; a bare name (`eo-lab`) matches a path's last segment either way:
    /// the shared rule ([`stackhub_common::groups`]) applied in both directions.
    fn in_group(&self, group: &str) -> bool {
        self.groups
            .iter()
            .any(|g| group_matches(g, group) || group_matches(group, g))
    }

    /// Allowed by these lists (both empty = everyone).
    pub(crate) fn allowed(&self, roles: &[String], groups: &[String]) -> bool {
        (roles.is_empty() && groups.is_empty())
            || roles.iter().any(|r| self.roles.contains(r))
            || groups.iter().any(|g| self.in_group(g))
    }
}

/// What a refusal says: the roles or groups that would have allowed it.
pub(super) fn requirement(roles: &[String], groups: &[String]) -> String {
    let mut parts = Vec::new();
    if !roles.is_empty() {
        parts.push(format!("one of the roles {}", roles.join(", ")));
    }
    if !groups.is_empty() {
        parts.push(format!("one of the groups {}", groups.join(", ")));
    }
    parts.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_match_by_name_path_or_last_segment() {
        let id = Identity {
            roles: vec!["stack-jupyter".into()],
            groups: vec!["/projects/eo-lab".into(), "admins".into(), "team:x".into()],
        };
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(id.allowed(&[], &[]));
        assert!(id.allowed(&s(&["stack-jupyter"]), &[]));
        assert!(!id.allowed(&s(&["stack-jupyter-high"]), &[]));
        assert!(id.allowed(&[], &s(&["/projects/eo-lab"])));
        assert!(id.allowed(&[], &s(&["projects/eo-lab"])));
        assert!(id.allowed(&[], &s(&["eo-lab"])));
        assert!(id.allowed(&[], &s(&["/admins"])));
        assert!(!id.allowed(&[], &s(&["/other/eo-lab"])));
        assert!(id.allowed(&[], &s(&["/team/x"])));
        assert!(id.allowed(&[], &s(&["/dept/admins"])));
    }
}
