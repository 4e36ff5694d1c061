//! The one check of parsed `user_options` against the profiles.
//!
//! [`resolve`] checks them for one user: a missing profile is
//! the default (the first allowed one when the default is not allowed), a missing option its
//! default choice; an unknown profile or choice is a 400, one the user may not use a 403, free
//! text failing its regex a 400 with the configured message. Errors name the form field they
//! belong to, so the picker shows them next to it.

use super::access::requirement;
use super::options::UserOptions;
use super::{Identity, Profile, SpawnerOverride};
use crate::error::ApiError;

/// Longest free text accepted.
const MAX_TEXT: usize = 512;

/// `user_options` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
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
    pub fn field(&self) -> &str {
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

impl OptionsError {
    /// Unknown, malformed or failing validation, on `field`.
    pub(crate) fn invalid(field: &str, message: String) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message,
        }
    }
}

fn invalid(field: &str, message: String) -> OptionsError {
    OptionsError::invalid(field, message)
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
    options: &UserOptions,
) -> Result<Resolved, OptionsError> {
    if list.is_empty() {
        return Ok(Resolved::default());
    }
    let allowed = allowed(list, id);
    let profile = match options.profile() {
        None => default_profile(&allowed).ok_or_else(|| {
            forbidden(
                "profile",
                "No server profile is available to you; ask an administrator for access".to_owned(),
            )
        })?,
        Some(slug) => {
            let Some(p) = list.iter().find(|p| p.slug == slug) else {
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
        let chosen = options
            .choice(key)
            .map_err(|_| invalid(&field, format!("{label} must be a string")))?;
        let text = options.text(key);
        if options.chose_text(key) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Choice, ProfileOption, UnlistedChoice, default_profiles};
    use super::*;

    fn opts(v: serde_json::Value) -> UserOptions {
        UserOptions::parse(&v).unwrap()
    }

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
        let r = resolve(&list(), &alice(), &opts(json!({"size": "small"}))).unwrap();
        assert_eq!(r.profile.unwrap().slug, "jupyterlab");
        assert_eq!(r.choices, [("image".to_owned(), "python".to_owned())]);
        assert_eq!(r.overrides.image.as_deref(), Some("py:1"));
        assert_eq!(r.overrides.environment["A"], "1");
        let r = resolve(
            &list(),
            &alice(),
            &opts(json!({"profile": "jupyterlab", "image": "unlisted-choice",
                    "image--unlisted-choice": "my/img:2"})),
        )
        .unwrap();
        assert_eq!(r.overrides.image.as_deref(), Some("my/img:2"));
    }

    #[test]
    fn refusals_name_field_and_status() {
        let l = list();
        let e = resolve(&l, &alice(), &opts(json!({"profile": "remote-lumi"}))).unwrap_err();
        assert!(matches!(e, OptionsError::Forbidden { .. }), "{e:?}");
        assert!(e.to_string().contains("/projects/lumi"), "{e}");
        let e = resolve(
            &l,
            &alice(),
            &opts(json!({"profile": "jupyterlab", "image": "gpu"})),
        )
        .unwrap_err();
        assert!(matches!(e, OptionsError::Forbidden { .. }));
        assert_eq!(e.field(), "profile-option-jupyterlab--image");
        let e = resolve(&l, &alice(), &opts(json!({"profile": "nope"}))).unwrap_err();
        assert!(matches!(e, OptionsError::Invalid { .. }));
        assert_eq!(e.field(), "profile");
        let e = resolve(
            &l,
            &alice(),
            &opts(json!({"image": "unlisted-choice", "image--unlisted-choice": "Bad Image"})),
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
        assert!(resolve(&l, &gpu, &opts(json!({"image": "gpu"}))).is_ok());
        assert!(
            resolve(&[], &alice(), &opts(json!({"anything": 1})))
                .unwrap()
                .profile
                .is_none()
        );
    }
}
