//! `user_options`: the one place their JSON is read, and the REST, form and query transports
//! that produce them.
//!
//! They have KubeSpawner's shape (compat spec section 5):
//! `{"profile": SLUG, OPTION: CHOICE_KEY, "OPTION--unlisted-choice": TEXT}`. Any other key is
//! kept verbatim (saved and returned by the REST API as given) and ignored.

use serde_json::{Map, Value};

use super::resolve::OptionsError;
use crate::error::ApiError;
use spawner::profile::UNLISTED;

/// Suffix of the free-text field of an option.
const TEXT_SUFFIX: &str = "--unlisted-choice";

/// A value of `user_options` that should be a string but is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotAString;

/// `user_options` parsed: a JSON object (or nothing), with typed access to what profiles read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UserOptions {
    fields: Map<String, Value>,
}

impl UserOptions {
    /// Parse `user_options`: an object, or `null` for none.
    ///
    /// # Errors
    /// [`OptionsError::Invalid`] on the `profile` field for anything else, or a `profile`
    /// that is not a string.
    pub(crate) fn parse(value: &Value) -> Result<Self, OptionsError> {
        let fields = match value {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            _ => {
                return Err(OptionsError::invalid(
                    "profile",
                    "user_options must be a JSON object".to_owned(),
                ));
            }
        };
        if !matches!(
            fields.get("profile"),
            None | Some(Value::Null | Value::String(_))
        ) {
            return Err(OptionsError::invalid(
                "profile",
                "user_options.profile must be a string".to_owned(),
            ));
        }
        Ok(Self { fields })
    }

    /// The options as JSON, exactly as given (what is saved with the server).
    pub(crate) fn to_value(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    /// The profile slug asked for.
    pub(crate) fn profile(&self) -> Option<&str> {
        self.fields.get("profile").and_then(Value::as_str)
    }

    /// The choice made for option `key`: `Ok(None)` when none.
    ///
    /// # Errors
    /// [`NotAString`] when the value is not a string.
    pub(crate) fn choice(&self, key: &str) -> Result<Option<&str>, NotAString> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(NotAString),
        }
    }

    /// The free text given for option `key`, trimmed; `None` when empty or absent.
    pub(crate) fn text(&self, key: &str) -> Option<&str> {
        self.fields
            .get(&format!("{key}{TEXT_SUFFIX}"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether option `key` chose its free text: explicitly, or by giving text and no choice.
    pub(crate) fn chose_text(&self, key: &str) -> bool {
        let chosen = self.choice(key).ok().flatten();
        chosen == Some(UNLISTED) || (chosen.is_none() && self.text(key).is_some())
    }
}

/// KubeSpawner's `options_from_form`: `profile` and the chosen profile's
/// `profile-option-SLUG--OPTION[--unlisted-choice]` fields; anything else is dropped. The free
/// text is kept only when its option chose the unlisted entry.
pub(crate) fn from_form(pairs: &[(String, String)]) -> UserOptions {
    let mut m = Map::new();
    let Some(slug) = pairs
        .iter()
        .find(|(k, _)| k == "profile")
        .map(|(_, v)| v.clone())
    else {
        return UserOptions { fields: m };
    };
    let prefix = format!("profile-option-{slug}--");
    for (k, v) in pairs {
        if let Some(rest) = k.strip_prefix(&prefix) {
            m.entry(rest.to_owned())
                .or_insert_with(|| Value::String(v.clone()));
        }
    }
    let texts: Vec<String> = m
        .keys()
        .filter(|k| k.ends_with(TEXT_SUFFIX))
        .cloned()
        .collect();
    for t in texts {
        let opt = t.trim_end_matches(TEXT_SUFFIX);
        let keep = m.get(opt).and_then(Value::as_str) == Some(UNLISTED)
            && m.get(&t)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty());
        if !keep {
            m.remove(&t);
        }
    }
    m.insert("profile".to_owned(), Value::String(slug));
    UserOptions { fields: m }
}

/// The REST transport: the options of a start (or create) request and the display name of a
/// new named server; `None` = reuse the saved options. 6.0 body
/// `{display_name?, user_options?}`; otherwise (5.x) the whole body is the options.
pub(crate) fn from_rest_body(
    body: Option<Value>,
) -> Result<(Option<Value>, Option<String>), ApiError> {
    match body {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::Object(map))
            if map.contains_key("user_options") || map.contains_key("display_name") =>
        {
            let display = match map.get("display_name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(ApiError::BadRequest("display_name must be a string".into()));
                }
            };
            let opts = match map.get("user_options") {
                None | Some(Value::Null) => None,
                Some(v @ Value::Object(_)) => Some(v.clone()),
                Some(_) => {
                    return Err(ApiError::BadRequest(
                        "user_options must be an object".into(),
                    ));
                }
            };
            Ok((opts, display))
        }
        Some(v @ Value::Object(_)) => Ok((Some(v), None)),
        Some(_) => Err(ApiError::BadRequest(
            "Request body must be a JSON object".into(),
        )),
    }
}

/// Query parameters that are not options.
const RESERVED: &[&str] = &["next", "display_name", "_xsrf", "new_server"];

/// Whether a query asks for a spawn with options (`profile`, `opt-…`, `profile-option-…`).
pub(crate) fn has_query_options(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, _)| k == "profile" || k.starts_with("opt-") || k.starts_with("profile-option-"))
}

/// `options_from_query`: the form fields, bare or with JupyterHub 6's `opt-` prefix, plus
/// `opt-OPTION=CHOICE` (and `opt-OPTION--unlisted-choice=TEXT`) naming options directly.
pub(crate) fn from_query(pairs: &[(String, String)]) -> UserOptions {
    let mut form = Vec::new();
    let mut direct = Vec::new();
    for (k, v) in pairs {
        if RESERVED.contains(&k.as_str()) {
            continue;
        }
        let (bare, prefixed) = match k.strip_prefix("opt-") {
            Some(b) => (b, true),
            None => (k.as_str(), false),
        };
        if bare == "profile" || bare.starts_with("profile-option-") {
            form.push((bare.to_owned(), v.clone()));
        } else if prefixed && !bare.is_empty() {
            direct.push((bare.to_owned(), v.clone()));
        }
    }
    let mut options = from_form(&form);
    for (k, v) in direct {
        options.fields.entry(k).or_insert(Value::String(v));
    }
    options
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn form_and_query_transports() {
        let form = pairs(&[
            ("profile", "jupyterlab"),
            ("profile-option-jupyterlab--image", "python"),
            ("profile-option-jupyterlab--image--unlisted-choice", "x:1"),
            ("profile-option-remote-lumi--image", "gpu"),
            ("stray", "dropped"),
        ]);
        assert_eq!(
            from_form(&form).to_value(),
            json!({"profile": "jupyterlab", "image": "python"})
        );
        let q = pairs(&[
            ("opt-profile", "jupyterlab"),
            ("opt-image", "unlisted-choice"),
            ("opt-image--unlisted-choice", "a/b:1"),
            ("next", "/x"),
        ]);
        assert!(has_query_options(&q));
        let parsed = from_query(&q);
        assert_eq!(
            parsed.to_value(),
            json!({"profile": "jupyterlab", "image": "unlisted-choice",
                   "image--unlisted-choice": "a/b:1"})
        );
        assert!(parsed.chose_text("image"));
        assert_eq!(parsed.text("image"), Some("a/b:1"));
        assert!(!has_query_options(&pairs(&[("next", "/x")])));
    }

    #[test]
    fn only_objects_with_a_string_profile_parse() {
        for bad in [json!([1]), json!("x"), json!({"profile": 3})] {
            assert!(UserOptions::parse(&bad).is_err(), "{bad}");
        }
        let o = UserOptions::parse(&json!({"profile": "a", "size": 2, "other": "kept"})).unwrap();
        assert_eq!(o.profile(), Some("a"));
        assert_eq!(o.choice("size"), Err(NotAString));
        assert_eq!(o.to_value()["other"], "kept");
        assert_eq!(
            UserOptions::parse(&Value::Null).unwrap(),
            UserOptions::default()
        );
    }
}
