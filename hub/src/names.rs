//! Validated names: [`UserName`], [`ServerName`], [`GroupName`], [`DisplayName`]. Handlers never
//! see raw strings.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Characters escaped in a URL path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Escape one path segment.
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {kind} name: {name:?} ({rule})")]
pub struct BadName {
    /// What kind of name.
    pub kind: &'static str,
    /// The rejected name (names are not secret).
    pub name: String,
    /// The rule it breaks.
    pub rule: &'static str,
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
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $rule:literal, $check:expr) => {
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
                        rule: $rule,
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
    "user",
    "1-255 characters, no `/`, no control characters or surrounding whitespace",
    plain_name_ok
);

name_type!(
    /// A group name (same rules as a user name, without normalization).
    GroupName,
    "group",
    "1-255 characters, no `/`, no control characters or surrounding whitespace",
    plain_name_ok
);

name_type!(
    /// A named server's name (JupyterHub 6.0 rules): 1–30 of `[a-z0-9-]`, starting with a
    /// letter, ending with a letter or digit, no `--`. The default server has no `ServerName`.
    ServerName,
    "server",
    "1-30 of a-z, 0-9 and `-`, starting with a letter, not ending in `-`, no `--`",
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

/// What [`new_user_name_ok`] asks, for error messages.
const NEW_USER_RULE: &str = "a new user name starts with a letter or digit and holds only \
     letters, digits and `.` `_` `-` `@` `+`, at most 255 characters";

/// Whether `s` may name a *new* user: it starts with a letter or digit and holds only letters,
/// digits and `.` `_` `-` `@` `+`. User names become IAM policy resources (`*` and `?` are
/// wildcards, `${…}` a variable), S3 keys (`users/NAME/`), Kubernetes label values, scope
/// filters (`!user=NAME`, `server=NAME/SERVER`) and URL path segments, so wildcards,
/// separators, quotes, whitespace and every other punctuation are refused.
fn new_user_name_ok(s: &str) -> bool {
    plain_name_ok(s)
        && s.chars().next().is_some_and(char::is_alphanumeric)
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
}

impl UserName {
    /// Normalize (lower-case, as JupyterHub's default authenticator) then validate a name for
    /// a user being created, renamed or logging in: the rules of [`UserName`] plus
    /// [`new_user_name_ok`]'s character set. Existing users keep being addressable by the
    /// lenient [`FromStr`] (so an admin can still delete one named before these rules).
    ///
    /// # Errors
    /// [`BadName`] if the normalized name is invalid.
    pub fn normalized(s: &str) -> Result<Self, BadName> {
        let lower = s.to_lowercase();
        if new_user_name_ok(&lower) {
            Ok(Self(lower))
        } else {
            Err(BadName {
                kind: "user",
                name: lower,
                rule: NEW_USER_RULE,
            })
        }
    }
}

/// What [`DisplayName`] asks, for error messages.
const DISPLAY_NAME_RULE: &str = "1-255 printable characters (letters, marks, numbers, \
     punctuation, symbols) and single spaces, not starting or ending with a space";

/// A server's display name (JupyterHub 6.0): NFC-normalized, then 1–255 characters, each a
/// letter, mark, number, punctuation or symbol, or a single space not at either end
/// (`jupyterhub.slugs.is_valid_display_name`). Kept apart from the [`ServerName`] in URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn display_name_ok(s: &str) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    let n = s.chars().count();
    (1..=255).contains(&n)
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ")
        && s.chars().all(|c| {
            c == ' '
                || matches!(
                    c.general_category_group(),
                    GeneralCategoryGroup::Letter
                        | GeneralCategoryGroup::Mark
                        | GeneralCategoryGroup::Number
                        | GeneralCategoryGroup::Punctuation
                        | GeneralCategoryGroup::Symbol
                )
        })
}

impl FromStr for DisplayName {
    type Err = BadName;

    fn from_str(s: &str) -> Result<Self, BadName> {
        use unicode_normalization::UnicodeNormalization;
        let normalized: String = s.nfc().collect();
        if display_name_ok(&normalized) {
            Ok(Self(normalized))
        } else {
            Err(BadName {
                kind: "display",
                name: s.to_owned(),
                rule: DISPLAY_NAME_RULE,
            })
        }
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        for good in [
            "My Lab",
            "Analyse (GPU) #2",
            "日本語のサーバー",
            "a",
            "😀 fun",
            "x-y_z.1",
        ] {
            assert_eq!(good.parse::<DisplayName>().unwrap().as_str(), good);
        }
        // NFC: `e` + combining acute becomes `é`.
        assert_eq!(
            "cafe\u{301}".parse::<DisplayName>().unwrap().as_str(),
            "caf\u{e9}"
        );
        let long = "x".repeat(256);
        for bad in [
            "",
            " lab",
            "lab ",
            "my  lab",
            "tab\there",
            "new\nline",
            "nul\0",
            "\u{200b}zero",
            "\u{a0}nbsp",
            long.as_str(),
        ] {
            let e = bad.parse::<DisplayName>().unwrap_err();
            assert!(e.to_string().contains("display"), "{bad:?}: {e}");
        }
        assert!("x".repeat(255).parse::<DisplayName>().is_ok());
    }

    #[test]
    fn rules() {
        assert!("alice".parse::<UserName>().is_ok());
        assert!("a b@example.org".parse::<UserName>().is_ok());
        for bad in ["", " alice", "a/b", "..", "a\nb"] {
            assert!(bad.parse::<UserName>().is_err(), "{bad:?}");
        }
        assert_eq!(UserName::normalized("Alice").unwrap().as_str(), "alice");
        for good in ["a.b-c_d@example.org", "x+y", "jürgen", "0day"] {
            assert!(UserName::normalized(good).is_ok(), "{good:?}");
        }
        for bad in [
            "*",
            "a*",
            "a?",
            "a b",
            "a:b",
            "a!b",
            "a=b",
            "a,b",
            "${aws:username}",
            "a\\b",
            "-a",
            ".a",
            "_a",
            "a[1]",
            "a{b}",
            "a\"b",
            "a'b",
            "a#b",
            "a%2f",
            "a|b",
            "a~b",
            "a;b",
            "a<b",
        ] {
            assert!(UserName::normalized(bad).is_err(), "{bad:?}");
        }
        assert!("gpu-1".parse::<ServerName>().is_ok());
        for bad in ["", "1gpu", "gpu-", "g--pu", "GPU", "a_b", &"a".repeat(31)] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad:?}");
        }
    }
}
