//! Validated names: [`UserName`], [`ServerName`], [`GroupName`]. Handlers never see raw strings.

use std::fmt;
use std::str::FromStr;

/// A name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {kind} name: {name:?}")]
pub struct BadName {
    /// What kind of name.
    pub kind: &'static str,
    /// The rejected name (names are not secret).
    pub name: String,
}

fn plain_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.trim() == s
        && !s.contains('/')
        && !s.chars().any(char::is_control)
        && s != "."
        && s != ".."
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = BadName;

            fn from_str(s: &str) -> Result<Self, BadName> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(BadName {
                        kind: $kind,
                        name: s.to_owned(),
                    })
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A user name: 1–255 characters, no `/`, no control characters, no surrounding
    /// whitespace (JupyterHub's `validate_username`). Use [`UserName::normalized`] for names
    /// coming from a login or an API create, which lower-cases them as JupyterHub does.
    UserName,
    "username",
    plain_name_ok
);

name_type!(
    /// A group name (same rules as a user name, without normalization).
    GroupName,
    "group",
    plain_name_ok
);

name_type!(
    /// A named server's name (JupyterHub 6.0 rules): 1–30 of `[a-z0-9-]`, starting with a
    /// letter, ending with a letter or digit, no `--`. The default server has no `ServerName`.
    ServerName,
    "server",
    |s| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 30
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0].is_ascii_lowercase()
            && b[b.len() - 1] != b'-'
            && !s.contains("--")
    }
);

impl UserName {
    /// Normalize (lower-case, as JupyterHub's default authenticator) then validate.
    ///
    /// # Errors
    /// [`BadName`] if the normalized name is invalid.
    pub fn normalized(s: &str) -> Result<Self, BadName> {
        s.to_lowercase().parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!("alice".parse::<UserName>().is_ok());
        assert!("a b@example.org".parse::<UserName>().is_ok());
        for bad in ["", " alice", "a/b", "..", "a\nb"] {
            assert!(bad.parse::<UserName>().is_err(), "{bad:?}");
        }
        assert_eq!(UserName::normalized("Alice").unwrap().as_str(), "alice");
        assert!("gpu-1".parse::<ServerName>().is_ok());
        for bad in ["", "1gpu", "gpu-", "g--pu", "GPU", "a_b", &"a".repeat(31)] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad:?}");
        }
    }
}
