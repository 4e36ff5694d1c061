//! The profiles a user may use, as JSON: the body of `GET /hub/api/users/{name}/spawn-options`
//! and the model of the picker page, with the current selection marked.

use serde_json::{Value, json};

use spawner::profile::UNLISTED;

use super::options::UserOptions;
use super::resolve::{allowed, default_profile, option_field};
use super::{Identity, Profile};

/// The allowed profiles of `list` for `id`; `current` (the submitted or saved options)
/// decides what is marked `selected` (falling back to the defaults).
pub(crate) fn view(list: &[Profile], id: &Identity, current: &UserOptions) -> Value {
    let allowed = allowed(list, id);
    let default = default_profile(&allowed).map(|p| p.slug.clone());
    let wanted = current
        .profile()
        .filter(|s| allowed.iter().any(|p| p.slug == *s))
        .map(str::to_owned)
        .or_else(|| default.clone());
    let profiles: Vec<Value> = allowed
        .iter()
        .map(|p| {
            let here = wanted.as_deref() == Some(p.slug.as_str());
            let options: Vec<Value> = p
                .profile_options
                .iter()
                .map(|(key, opt)| {
                    let usable: Vec<(&String, &super::Choice)> = opt
                        .choices
                        .iter()
                        .filter(|(_, c)| id.allowed(&c.allowed_roles, &c.allowed_groups))
                        .collect();
                    let fallback = usable
                        .iter()
                        .find(|(_, c)| c.default)
                        .or_else(|| usable.first())
                        .map(|(k, _)| k.as_str());
                    let picked = if here {
                        current.choice(key).ok().flatten()
                    } else {
                        None
                    };
                    let picked = picked
                        .filter(|v| *v == UNLISTED || usable.iter().any(|(k, _)| k.as_str() == *v))
                        .or(fallback);
                    let text = if here {
                        current.text(key).unwrap_or_default()
                    } else {
                        ""
                    };
                    let field = option_field(&p.slug, key);
                    let unlisted = opt.unlisted_choice.as_ref().filter(|u| u.enabled).map(|u| {
                        json!({
                            "display_name": u.display_name,
                            "display_name_in_choices": u.display_name_in_choices.clone()
                                .unwrap_or_else(|| "Other...".to_owned()),
                            "validation_regex": u.validation_regex,
                            "validation_message": u.validation_message,
                            "field": format!("{field}--unlisted-choice"),
                            "value": UNLISTED,
                            "selected": picked == Some(UNLISTED),
                            "text": text,
                        })
                    });
                    json!({
                        "key": key,
                        "display_name": if opt.display_name.is_empty() { key } else { &opt.display_name },
                        "field": field,
                        "choices": usable.iter().map(|(k, c)| json!({
                            "key": k,
                            "display_name": if c.display_name.is_empty() { k.as_str() } else { c.display_name.as_str() },
                            "default": Some(k.as_str()) == fallback,
                            "selected": Some(k.as_str()) == picked,
                        })).collect::<Vec<_>>(),
                        "unlisted_choice": unlisted,
                    })
                })
                .collect();
            json!({
                "slug": p.slug,
                "display_name": p.display_name,
                "description": p.description,
                "default": default.as_deref() == Some(p.slug.as_str()),
                "selected": here,
                "kind": p.kind.as_str(),
                "site": p.site,
                "warning": p.warning,
                "options": options,
            })
        })
        .collect();
    json!({ "profiles": profiles, "default_profile": default })
}
