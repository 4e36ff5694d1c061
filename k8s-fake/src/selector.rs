//! Equality-based label and field selectors (`a=b,c!=d,e,!f`), as the API server parses them.

use serde_json::Value;

/// A parse failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl std::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

impl Selector {
    /// Parse `s`.
    ///
    /// # Errors
    /// Set-based terms (`in`, `notin`) and malformed terms.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t.contains(" in ") || t.contains(" notin ") || t.contains('(') {
                return Err(SelectorError(format!(
                    "set-based term {t:?} is not supported by the fake"
                )));
            }
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::Ne(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = t.split_once("==") {
                Term::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = t.strip_prefix('!') {
                Term::Absent(k.trim().to_owned())
            } else {
                Term::Exists(t.to_owned())
            };
            let key = match &term {
                Term::Eq(k, _) | Term::Ne(k, _) | Term::Exists(k) | Term::Absent(k) => k,
            };
            if key.is_empty() {
                return Err(SelectorError(format!("empty key in {t:?}")));
            }
            terms.push(term);
        }
        Ok(Self(terms))
    }

    /// Match against `metadata.labels`.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.matches(|k| labels.get(k).and_then(Value::as_str).map(str::to_owned))
    }

    /// Match against dotted field paths (`metadata.name`, `involvedObject.uid`, `status.phase`).
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.matches(|path| {
            let mut v = obj;
            for part in path.split('.') {
                v = v.get(part)?;
            }
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        })
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
            Term::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::Absent(k) => get(k).is_none(),
        })
    }
}
