//! The one check of `user_options` against the profiles, and the transports producing them.
//!
//! `user_options` have KubeSpawner's shape (compat spec section 5):
//! `{"profile": SLUG, OPTION: CHOICE_KEY, "OPTION--unlisted-choice": TEXT}`; any other key is
//! kept verbatim and ignored here. [`resolve`] checks them for one user: a missing profile is
//! the default (the first allowed one when the default is not allowed), a missing option its
//! default choice; an unknown profile or choice is a 400, one the user may not use a 403, free
//! text failing its regex a 400 with the configured message. Errors name the form field they
//! belong to, so the picker shows them next to it.

use serde_json::{Map, Value};

use super::access::requirement;
use super::{Identity, Profile, ProfileKind, SpawnerOverride};
use crate::error::ApiError;

/// The choice value meaning "the free text".
pub(crate) const UNLISTED: &str = "unlisted-choice";

/// Longest free text accepted.
const MAX_TEXT: usize = 512;

/// `user_options` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OptionsError {
    /// The user may not use this profile or choice (403).
    #[error("{message}")]
    Forbidden {
        /// The form field it concerns.
        field: String,
        /// Why.
        message: String,
    },
    /// Unknown, malformed or failing validation (400).
    #[error("{message}")]
    Invalid {
        /// The form field it concerns.
        field: String,
        /// Why.
        message: String,
    },
}

impl OptionsError {
    /// The form field the message belongs next to.
    pub(crate) fn field(&self) -> &str {
        match self {
            Self::Forbidden { field, .. } | Self::Invalid { field, .. } => field,
        }
    }
}

impl From<OptionsError> for ApiError {
    fn from(e: OptionsError) -> Self {
        match e {
            OptionsError::Forbidden { message, .. } => Self::Forbidden(message),
            OptionsError::Invalid { message, .. } => Self::BadRequest(message),
        }
    }
}

fn invalid(field: &str, message: String) -> OptionsError {
    OptionsError::Invalid {
        field: field.to_owned(),
        message,
    }
}

fn forbidden(field: &str, message: String) -> OptionsError {
    OptionsError::Forbidden {
        field: field.to_owned(),
        message,
    }
}

/// What checked options amount to.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Resolved {
    /// The profile (`None` when no profiles are configured).
    pub profile: Option<Profile>,
    /// Option key → the choice key, or the free text for an unlisted choice.
    pub choices: Vec<(String, String)>,
    /// Base profile override, then each option's, in option order.
    pub overrides: SpawnerOverride,
}

/// The profiles `id` may use, in order.
pub(super) fn allowed<'a>(list: &'a [Profile], id: &Identity) -> Vec<&'a Profile> {
    list.iter()
        .filter(|p| id.allowed(&p.allowed_roles, &p.allowed_groups))
        .collect()
}

/// The profile used when none is named: the default if allowed, else the first allowed.
pub(super) fn default_profile<'a>(allowed: &[&'a Profile]) -> Option<&'a Profile> {
    allowed
        .iter()
        .find(|p| p.default)
        .or_else(|| allowed.first())
        .copied()
}

/// The form field of an option.
pub(crate) fn option_field(slug: &str, key: &str) -> String {
    format!("profile-option-{slug}--{key}")
}

/// Check `options` for the user `id` against `list`.
///
/// # Errors
/// [`OptionsError`] naming the field and saying why.
pub(crate) fn resolve(
    list: &[Profile],
    id: &Identity,
    options: &Value,
) -> Result<Resolved, OptionsError> {
    if list.is_empty() {
        return Ok(Resolved::default());
    }
    let empty = Map::new();
    let obj = match options {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => {
            return Err(invalid(
                "profile",
                "user_options must be a JSON object".to_owned(),
            ));
        }
    };
    let allowed = allowed(list, id);
    let profile = match obj.get("profile") {
        None | Some(Value::Null) => default_profile(&allowed).ok_or_else(|| {
            forbidden(
                "profile",
                "No server profile is available to you; ask an administrator for access".to_owned(),
            )
        })?,
        Some(Value::String(slug)) => {
            let Some(p) = list.iter().find(|p| &p.slug == slug) else {
                let known: Vec<&str> = allowed.iter().map(|p| p.slug.as_str()).collect();
                return Err(invalid(
                    "profile",
                    format!(
                        "Unknown profile '{slug}'; choose one of: {}",
                        known.join(", ")
                    ),
                ));
            };
            if !id.allowed(&p.allowed_roles, &p.allowed_groups) {
                return Err(forbidden(
                    "profile",
                    format!(
                        "Profile '{}' is not available to you: it requires {}",
                        p.display_name,
                        requirement(&p.allowed_roles, &p.allowed_groups)
                    ),
                ));
            }
            p
        }
        Some(_) => {
            return Err(invalid(
                "profile",
                "user_options.profile must be a string".to_owned(),
            ));
        }
    };
    let mut out = Resolved {
        profile: Some(profile.clone()),
        choices: Vec::new(),
        overrides: profile.spawner_override.clone(),
    };
    for (key, opt) in &profile.profile_options {
        let field = option_field(&profile.slug, key);
        let label = if opt.display_name.is_empty() {
            key.as_str()
        } else {
            opt.display_name.as_str()
        };
        let chosen = match obj.get(key.as_str()) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(invalid(&field, format!("{label} must be a string"))),
        };
        let text = obj
            .get(&format!("{key}--unlisted-choice"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let unlisted = chosen == Some(UNLISTED) || (chosen.is_none() && text.is_some());
        if unlisted {
            let Some(u) = opt.unlisted_choice.as_ref().filter(|u| u.enabled) else {
                return Err(invalid(
                    &field,
                    format!("{label} does not accept free text"),
                ));
            };
            let tfield = format!("{field}--unlisted-choice");
            let Some(text) = text else {
                return Err(invalid(&tfield, format!("Enter a value for {label}")));
            };
            if text.len() > MAX_TEXT {
                return Err(invalid(
                    &tfield,
                    format!("{label} is longer than {MAX_TEXT} characters"),
                ));
            }
            if let Some(re) = &u.validation_regex {
                let ok = regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(text));
                if !ok {
                    let message = u
                        .validation_message
                        .clone()
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| format!("'{text}' is not a valid value for {label}"));
                    return Err(invalid(&tfield, message));
                }
            }
            out.overrides.merge(&u.spawner_override, Some(text));
            out.choices.push((key.clone(), text.to_owned()));
            continue;
        }
        let (ck, choice) = match chosen {
            Some(ck) => {
                let Some(c) = opt.choices.get(ck) else {
                    let known: Vec<&str> = opt.choices.keys().map(String::as_str).collect();
                    return Err(invalid(
                        &field,
                        format!(
                            "Unknown choice '{ck}' for {label}; choose one of: {}",
                            known.join(", ")
                        ),
                    ));
                };
                if !id.allowed(&c.allowed_roles, &c.allowed_groups) {
                    return Err(forbidden(
                        &field,
                        format!(
                            "Choice '{}' of {label} is not available to you: it requires {}",
                            c.display_name,
                            requirement(&c.allowed_roles, &c.allowed_groups)
                        ),
                    ));
                }
                (ck, c)
            }
            None => {
                let usable: Vec<(&String, &super::Choice)> = opt
                    .choices
                    .iter()
                    .filter(|(_, c)| id.allowed(&c.allowed_roles, &c.allowed_groups))
                    .collect();
                let Some((ck, c)) = usable
                    .iter()
                    .find(|(_, c)| c.default)
                    .or_else(|| usable.first())
                    .copied()
                else {
                    return Err(forbidden(
                        &field,
                        format!("None of the choices of {label} is available to you"),
                    ));
                };
                (ck.as_str(), c)
            }
        };
        out.overrides.merge(&choice.spawner_override, None);
        out.choices.push((key.clone(), ck.to_owned()));
    }
    Ok(out)
}

/// Whether checked options can start here now: a remote-kernels profile needs its site
/// available (gateway up, S3 configured and reachable, per the registry's last health check);
/// otherwise it is refused with the site's reasons.
///
/// # Errors
/// [`OptionsError::Invalid`] on the `profile` field.
pub(crate) async fn startable(
    r: &Resolved,
    sites: Option<&crate::sites::SiteRegistry>,
) -> Result<(), OptionsError> {
    let Some(p) = r
        .profile
        .as_ref()
        .filter(|p| p.kind == ProfileKind::RemoteKernels)
    else {
        return Ok(());
    };
    let site = p.site.as_deref().unwrap_or_default();
    let reason = match sites {
        None => "no sites are configured on this hub".to_owned(),
        Some(registry) => match registry.site_available(site).await {
            Ok(_) => return Ok(()),
            Err(e) => e.reason,
        },
    };
    Err(invalid(
        "profile",
        format!(
            "'{}' cannot start now: site '{site}' is unavailable: {reason}. Choose another \
             profile or ask an administrator.",
            p.display_name
        ),
    ))
}

/// KubeSpawner's `options_from_form`: `profile` and the chosen profile's
/// `profile-option-SLUG--OPTION[--unlisted-choice]` fields; anything else is dropped. The free
/// text is kept only when its option chose the unlisted entry.
pub(crate) fn from_form(pairs: &[(String, String)]) -> Value {
    let mut m = Map::new();
    let Some(slug) = pairs
        .iter()
        .find(|(k, _)| k == "profile")
        .map(|(_, v)| v.clone())
    else {
        return Value::Object(m);
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
        .filter(|k| k.ends_with("--unlisted-choice"))
        .cloned()
        .collect();
    for t in texts {
        let opt = t.trim_end_matches("--unlisted-choice");
        let keep = m.get(opt).and_then(Value::as_str) == Some(UNLISTED)
            && m.get(&t)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty());
        if !keep {
            m.remove(&t);
        }
    }
    m.insert("profile".to_owned(), Value::String(slug));
    Value::Object(m)
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
pub(crate) fn from_query(pairs: &[(String, String)]) -> Value {
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
    let mut value = from_form(&form);
    if let Value::Object(m) = &mut value {
        for (k, v) in direct {
            m.entry(k).or_insert(Value::String(v));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Choice, ProfileOption, UnlistedChoice, default_profiles};
    use super::*;

    fn list() -> Vec<Profile> {
        let mut list = default_profiles();
        let mut image = ProfileOption {
            display_name: "Image".into(),
            ..ProfileOption::default()
        };
        image.choices.insert(
            "python".into(),
            Choice {
                display_name: "Python".into(),
                spawner_override: SpawnerOverride {
                    image: Some("py:1".into()),
                    ..SpawnerOverride::default()
                },
                ..Choice::default()
            },
        );
        image.choices.insert(
            "gpu".into(),
            Choice {
                display_name: "GPU".into(),
                allowed_roles: vec!["gpu-users".into()],
                ..Choice::default()
            },
        );
        image.unlisted_choice = Some(UnlistedChoice {
            enabled: true,
            display_name: "Custom image".into(),
            validation_regex: Some(r"[a-z0-9./-]+:[a-z0-9.]+".into()),
            validation_message: Some("Give an image as name:tag".into()),
            spawner_override: SpawnerOverride {
                image: Some("{value}".into()),
                ..SpawnerOverride::default()
            },
            ..UnlistedChoice::default()
        });
        list[0].profile_options.insert("image".into(), image);
        list[0].spawner_override.environment =
            [("A".to_owned(), "1".to_owned())].into_iter().collect();
        list[2].allowed_groups = vec!["/projects/lumi".into()];
        list
    }

    fn alice() -> Identity {
        Identity {
            roles: vec!["user".into()],
            groups: vec!["/projects/eo-lab".into()],
        }
    }

    #[test]
    fn defaults_and_choices_apply_in_order() {
        let r = resolve(&list(), &alice(), &json!({"size": "small"})).unwrap();
        assert_eq!(r.profile.unwrap().slug, "jupyterlab");
        assert_eq!(r.choices, [("image".to_owned(), "python".to_owned())]);
        assert_eq!(r.overrides.image.as_deref(), Some("py:1"));
        assert_eq!(r.overrides.environment["A"], "1");
        let r = resolve(
            &list(),
            &alice(),
            &json!({"profile": "jupyterlab", "image": "unlisted-choice",
                    "image--unlisted-choice": "my/img:2"}),
        )
        .unwrap();
        assert_eq!(r.overrides.image.as_deref(), Some("my/img:2"));
    }

    #[test]
    fn refusals_name_field_and_status() {
        let l = list();
        let e = resolve(&l, &alice(), &json!({"profile": "remote-lumi"})).unwrap_err();
        assert!(matches!(e, OptionsError::Forbidden { .. }), "{e:?}");
        assert!(e.to_string().contains("/projects/lumi"), "{e}");
        let e = resolve(
            &l,
            &alice(),
            &json!({"profile": "jupyterlab", "image": "gpu"}),
        )
        .unwrap_err();
        assert!(matches!(e, OptionsError::Forbidden { .. }));
        assert_eq!(e.field(), "profile-option-jupyterlab--image");
        let e = resolve(&l, &alice(), &json!({"profile": "nope"})).unwrap_err();
        assert!(matches!(e, OptionsError::Invalid { .. }));
        assert_eq!(e.field(), "profile");
        let e = resolve(
            &l,
            &alice(),
            &json!({"image": "unlisted-choice", "image--unlisted-choice": "Bad Image"}),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Give an image as name:tag");
        assert_eq!(
            e.field(),
            "profile-option-jupyterlab--image--unlisted-choice"
        );
        let gpu = Identity {
            roles: vec!["gpu-users".into()],
            groups: vec![],
        };
        assert!(resolve(&l, &gpu, &json!({"image": "gpu"})).is_ok());
        assert!(
            resolve(&[], &alice(), &json!({"anything": 1}))
                .unwrap()
                .profile
                .is_none()
        );
    }

    #[test]
    fn form_and_query_transports() {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        };
        let form = pairs(&[
            ("profile", "jupyterlab"),
            ("profile-option-jupyterlab--image", "python"),
            ("profile-option-jupyterlab--image--unlisted-choice", "x:1"),
            ("profile-option-remote-lumi--image", "gpu"),
            ("stray", "dropped"),
        ]);
        assert_eq!(
            from_form(&form),
            json!({"profile": "jupyterlab", "image": "python"})
        );
        let q = pairs(&[
            ("opt-profile", "jupyterlab"),
            ("opt-image", "unlisted-choice"),
            ("opt-image--unlisted-choice", "a/b:1"),
            ("next", "/x"),
        ]);
        assert!(has_query_options(&q));
        assert_eq!(
            from_query(&q),
            json!({"profile": "jupyterlab", "image": "unlisted-choice",
                   "image--unlisted-choice": "a/b:1"})
        );
        assert!(!has_query_options(&pairs(&[("next", "/x")])));
    }
}
