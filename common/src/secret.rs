//! [`Secret`]: a string that is never printed.

use std::fmt;

/// A secret value (a token, a password, a database URL with its password, a secret access key).
///
/// `Debug` prints `Secret(***)` and there is no `Display`, so a secret cannot end up in a log
/// line, an error message or a `{:?}` of the config that holds it. Equality takes the same time
/// whatever the contents (only the lengths show).
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_but_readable() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(***))");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s, Secret::from("hunter2"));
        assert_ne!(s, Secret::from("hunter3"));
        assert_ne!(s, Secret::from("hunter22"));
        assert_eq!(Secret::default().expose(), "");
    }

    #[test]
    fn read_from_config_as_a_plain_string() {
        #[derive(Debug, serde::Deserialize)]
        struct C {
            token: Secret,
        }
        let c: C = toml::from_str("token = \"t0k3n\"").unwrap();
        assert_eq!(c.token.expose(), "t0k3n");
        assert!(!format!("{c:?}").contains("t0k3n"));
    }
}
