//! Scopes and roles, as JupyterHub defines them (compat spec section 3.3).
//!
//! A scope is `name[!filter=value]`. Metascopes (`self`, `inherit`, bare `!user` / `!server`)
//! are resolved against the token's owner; the hierarchy expands a scope into the scopes it
//! implies. A request is allowed when both the token's scopes and its owner's current scopes
//! allow it, so a token's rights shrink when its owner loses rights.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Every scope name the hub knows, with the scopes it directly implies.
const HIERARCHY: &[(&str, &[&str])] = &[
    (
        "admin:users",
        &[
            "admin:auth_state",
            "users",
            "read:roles:users",
            "delete:users",
        ],
    ),
    ("admin:auth_state", &[]),
    ("users", &["read:users", "list:users", "users:activity"]),
    (
        "read:users",
        &[
            "read:users:name",
            "read:users:groups",
            "read:users:activity",
        ],
    ),
    ("read:users:name", &[]),
    ("read:users:groups", &[]),
    ("read:users:activity", &[]),
    ("list:users", &["read:users:name"]),
    ("users:activity", &[]),
    ("delete:users", &[]),
    ("admin:servers", &["admin:server_state", "servers"]),
    ("admin:server_state", &[]),
    (
        "servers",
        &["read:servers", "start:servers", "delete:servers"],
    ),
    ("read:servers", &["read:users:name"]),
    ("start:servers", &[]),
    ("delete:servers", &[]),
    ("tokens", &["read:tokens"]),
    ("read:tokens", &[]),
    (
        "admin:groups",
        &["groups", "read:roles:groups", "delete:groups"],
    ),
    ("groups", &["read:groups", "list:groups"]),
    ("read:groups", &["read:groups:name"]),
    ("read:groups:name", &[]),
    ("list:groups", &["read:groups:name"]),
    ("delete:groups", &[]),
    (
        "admin:services",
        &["list:services", "read:services", "read:roles:services"],
    ),
    ("list:services", &["read:services:name"]),
    ("read:services", &["read:services:name"]),
    ("read:services:name", &[]),
    (
        "read:roles",
        &[
            "read:roles:users",
            "read:roles:services",
            "read:roles:groups",
        ],
    ),
    ("read:roles:users", &[]),
    ("read:roles:services", &[]),
    ("read:roles:groups", &[]),
    ("read:hub", &[]),
    ("access:servers", &[]),
    ("access:services", &[]),
    ("proxy", &[]),
    ("shutdown", &[]),
    ("read:metrics", &[]),
    ("admin-ui", &[]),
    (
        "shares",
        &[
            "access:servers",
            "read:shares",
            "users:shares",
            "groups:shares",
        ],
    ),
    ("read:shares", &[]),
    ("users:shares", &["read:users:shares"]),
    ("read:users:shares", &[]),
    ("groups:shares", &["read:groups:shares"]),
    ("read:groups:shares", &[]),
];

/// The scopes of the built-in `admin` role.
pub(crate) const ADMIN_ROLE_SCOPES: &[&str] = &[
    "admin-ui",
    "admin:users",
    "admin:servers",
    "admin:services",
    "tokens",
    "admin:groups",
    "list:services",
    "read:services",
    "read:hub",
    "proxy",
    "shutdown",
    "access:services",
    "access:servers",
    "read:roles",
    "read:metrics",
    "shares",
];

/// What `self` means for a user (each with `!user=<name>`).
const SELF_SCOPES: &[&str] = &[
    "read:users",
    "users:shares",
    "read:shares",
    "users:activity",
    "servers",
    "tokens",
    "access:servers",
];

/// The scopes of a built-in role, if `name` is one.
pub(crate) fn builtin_role(name: &str) -> Option<Vec<String>> {
    let scopes: &[&str] = match name {
        "user" => &["self"],
        "admin" => ADMIN_ROLE_SCOPES,
        "server" => &["users:activity!user", "access:servers!server"],
        "token" => &["inherit"],
        _ => return None,
    };
    Some(scopes.iter().map(|s| (*s).to_owned()).collect())
}

/// A scope string is malformed or names no known scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown or malformed scope `{0}`")]
pub(crate) struct BadScope(pub String);

/// Check that `scope` is a known scope, metascope, or a known scope with a valid filter.
///
/// # Errors
/// [`BadScope`] naming it.
pub(crate) fn validate_scope(scope: &str) -> Result<(), BadScope> {
    let bad = || BadScope(scope.to_owned());
    let (name, filter) = match scope.split_once('!') {
        Some((n, f)) => (n, Some(f)),
        None => (scope, None),
    };
    let known = matches!(name, "self" | "inherit" | "identify")
        || HIERARCHY.iter().any(|(n, _)| *n == name)
        || is_custom(name);
    if !known {
        return Err(bad());
    }
    if let Some(filter) = filter {
        match filter.split_once('=') {
            None if matches!(filter, "user" | "server") => {}
            Some(("user" | "group" | "service", v)) if !v.is_empty() => {}
            Some(("server", v)) if v.contains('/') => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

/// A scope of a server's OAuth client (`spawner.oauth_client_allowed_scopes`) with its
/// placeholders filled: `!user` is the server's owner, `!server` the server.
pub(crate) fn fill_server_placeholders(scope: &str, user: &str, server: &str) -> String {
    if let Some(name) = scope.strip_suffix("!user") {
        format!("{name}!user={user}")
    } else if let Some(name) = scope.strip_suffix("!server") {
        format!("{name}!server={user}/{server}")
    } else {
        scope.to_owned()
    }
}

/// Whether `name` is a well-formed custom scope name (JupyterHub's rule: `custom:` then
/// lower-case letters, digits, `_`, `-`, `*` and `:`, starting with a letter or digit, not
/// ending with `-` or `:`).
pub(crate) fn is_custom(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("custom:") else {
        return false;
    };
    let ok = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '*' | ':')
    };
    rest.len() >= 2
        && rest.chars().all(ok)
        && rest.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !rest.ends_with(['-', ':'])
}

/// What a filter restricts a scope to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    /// `!user=name`: one user and their servers.
    User(String),
    /// `!server=user/name`: one server.
    Server(String, String),
    /// `!group=name`: a group and its members.
    Group(String),
    /// `!service=name`: one service.
    Service(String),
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "user={u}"),
            Self::Server(u, s) => write!(f, "server={u}/{s}"),
            Self::Group(g) => write!(f, "group={g}"),
            Self::Service(s) => write!(f, "service={s}"),
        }
    }
}

/// The resource a request acts on, for filter checks.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// The hub itself (unfiltered scopes only).
    Hub,
    /// A user (and the groups they belong to).
    User {
        /// Name.
        name: &'a str,
        /// Their groups.
        groups: &'a [String],
    },
    /// One server of a user.
    Server {
        /// Owner name.
        user: &'a str,
        /// Server name (`""` = default).
        server: &'a str,
        /// The owner's groups.
        groups: &'a [String],
    },
    /// A group.
    Group {
        /// Name.
        name: &'a str,
    },
    /// A service.
    Service {
        /// Name.
        name: &'a str,
    },
}

impl Filter {
    fn matches(&self, res: Resource<'_>) -> bool {
        match (self, res) {
            (Self::User(u), Resource::User { name, .. }) => u == name,
            (Self::User(u), Resource::Server { user, .. }) => u == user,
            (Self::Server(u, s), Resource::Server { user, server, .. }) => u == user && s == server,
            (Self::Group(g), Resource::User { groups, .. })
            | (Self::Group(g), Resource::Server { groups, .. }) => groups.contains(g),
            (Self::Group(g), Resource::Group { name }) => g == name,
            (Self::Service(s), Resource::Service { name }) => s == name,
            _ => false,
        }
    }

    /// Whether everything `other` allows, `self` allows too (without resolving groups).
    fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (Self::User(u), Self::Server(su, _)) => u == su,
            _ => false,
        }
    }
}

/// Access to one scope name: everything, or only what some filters allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Access {
    all: bool,
    filters: BTreeSet<Filter>,
}

/// Who a set of scopes is resolved for (to turn metascopes into plain scopes).
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// A user.
    User(&'a str),
    /// A service (bare `!user` grants it nothing).
    Service(#[allow(dead_code)] &'a str),
}

/// A set of expanded scopes.
///
/// `inherit` ("everything the owner holds") cannot be expanded from the scope strings alone:
/// until [`ScopeSet::resolve_inherit`] replaces it with the owner's scopes, the set remembers it
/// as unresolved, grants nothing for it and is never covered by any set (so a check that forgot
/// to resolve it refuses instead of accepting an empty set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    map: BTreeMap<String, Access>,
    inherit: bool,
}

impl ScopeSet {
    /// Expand `scopes` (scope strings; role names are not accepted here) for `owner`.
    ///
    /// `inherit` means "the owner's scopes": it stays unresolved (granting nothing, covered by
    /// nothing) until [`Self::resolve_inherit`]. Unknown scopes are ignored (they were
    /// validated when stored).
    pub fn expand<S: AsRef<str>>(scopes: &[S], owner: Owner<'_>) -> Self {
        let mut set = Self::default();
        for scope in scopes {
            set.add_str(scope.as_ref(), owner);
        }
        set
    }

    /// A set holding everything.
    #[cfg(test)]
    fn everything() -> Self {
        let mut set = Self::default();
        for (name, _) in HIERARCHY {
            set.add(name, None);
        }
        set
    }

    fn add_str(&mut self, scope: &str, owner: Owner<'_>) {
        let (name, filter) = match scope.split_once('!') {
            Some((n, f)) => (n, Some(f)),
            None => (scope, None),
        };
        let filter = match filter {
            None => None,
            Some("user") => match owner {
                Owner::User(u) => Some(Filter::User(u.to_owned())),
                Owner::Service(_) => return,
            },
            // A bare `!server` is resolved when the token is made; left bare, it grants nothing.
            Some("server") => return,
            Some(f) => match f.split_once('=') {
                Some(("user", v)) => Some(Filter::User(v.to_owned())),
                Some(("group", v)) => Some(Filter::Group(v.to_owned())),
                Some(("service", v)) => Some(Filter::Service(v.to_owned())),
                Some(("server", v)) => match v.split_once('/') {
                    Some((u, s)) => Some(Filter::Server(u.to_owned(), s.to_owned())),
                    None => return,
                },
                _ => return,
            },
        };
        match name {
            "self" => {
                if let Owner::User(u) = owner {
                    for s in SELF_SCOPES {
                        self.add(s, Some(Filter::User(u.to_owned())));
                    }
                }
            }
            // `inherit` asks for everything the owner holds, whatever the filter says.
            "inherit" => self.inherit = true,
            "identify" => {}
            _ => self.add(name, filter),
        }
    }

    fn add(&mut self, name: &str, filter: Option<Filter>) {
        let Some((_, children)) = HIERARCHY.iter().find(|(n, _)| *n == name) else {
            // A custom scope is a leaf here: its subscopes are added where roles are resolved.
            if is_custom(name) {
                let access = self.map.entry(name.to_owned()).or_default();
                match filter {
                    None => access.all = true,
                    Some(f) => {
                        access.filters.insert(f);
                    }
                }
            }
            return;
        };
        let access = self.map.entry(name.to_owned()).or_default();
        match &filter {
            None => access.all = true,
            Some(f) => {
                access.filters.insert(f.clone());
            }
        }
        for child in *children {
            self.add(child, filter.clone());
        }
    }

    /// Whether the set still asks for `inherit` (the owner's scopes, not yet known here).
    pub fn wants_inherit(&self) -> bool {
        self.inherit
    }

    /// Replace an unresolved `inherit` with `owner`, the scopes of the set's owner (the user
    /// or service the scopes are resolved for). A set without `inherit` is returned unchanged.
    #[must_use]
    pub fn resolve_inherit(mut self, owner: &Self) -> Self {
        if !self.inherit {
            return self;
        }
        self.inherit = false;
        for (name, access) in &owner.map {
            let mine = self.map.entry(name.clone()).or_default();
            mine.all |= access.all;
            mine.filters.extend(access.filters.iter().cloned());
        }
        self
    }

    /// Whether the set holds `name` for at least some resource.
    pub fn holds(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The filters limiting `name`: `None` if it is held unfiltered, an empty list if it is not
    /// held at all.
    pub fn filters_for(&self, name: &str) -> Option<Vec<Filter>> {
        match self.map.get(name) {
            Some(a) if a.all => None,
            Some(a) => Some(a.filters.iter().cloned().collect()),
            None => Some(Vec::new()),
        }
    }

    /// Whether the set allows `name` on `res`.
    pub fn allows(&self, name: &str, res: Resource<'_>) -> bool {
        self.map
            .get(name)
            .is_some_and(|a| a.all || a.filters.iter().any(|f| f.matches(res)))
    }

    /// Whether every scope in `other` is within this set (group filters are not resolved).
    /// An unresolved `inherit` in `other` is never covered.
    pub fn covers(&self, other: &Self) -> bool {
        if other.inherit {
            return false;
        }
        other.map.iter().all(|(name, want)| {
            let Some(have) = self.map.get(name) else {
                return false;
            };
            have.all
                || (!want.all
                    && want
                        .filters
                        .iter()
                        .all(|w| have.filters.iter().any(|h| h.covers(w))))
        })
    }

    /// The scopes both sets grant (an unresolved `inherit` grants nothing, so it is dropped).
    pub fn intersect(&self, other: &Self) -> Self {
        let mut out = Self::default();
        for (name, a) in &self.map {
            let Some(b) = other.map.get(name) else {
                continue;
            };
            let access = match (a.all, b.all) {
                (true, true) => Access {
                    all: true,
                    filters: BTreeSet::new(),
                },
                (true, false) => b.clone(),
                (false, true) => a.clone(),
                (false, false) => {
                    let mut filters = BTreeSet::new();
                    for fa in &a.filters {
                        for fb in &b.filters {
                            if fb.covers(fa) {
                                filters.insert(fa.clone());
                            } else if fa.covers(fb) {
                                filters.insert(fb.clone());
                            }
                        }
                    }
                    Access {
                        all: false,
                        filters,
                    }
                }
            };
            if access.all || !access.filters.is_empty() {
                out.map.insert(name.clone(), access);
            }
        }
        out
    }

    /// The set as sorted scope strings.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, access) in &self.map {
            if access.all {
                out.push(name.clone());
            } else {
                out.extend(access.filters.iter().map(|f| format!("{name}!{f}")));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests;
