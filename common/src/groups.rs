//! Whether a group a user holds is the group a rule names.
//!
//! A group reaches us in three spellings: the hub's name (`projects:eo-lab`, `:` because hub
//! group names appear in URL paths), the identity provider's path (`/projects/eo-lab`, as
//! Keycloak sends it) and a bare name (`eo-lab`). The rule, used by the quota table, profile
//! access and the login checks alike:
//!
//! - a hub name and a provider path are the same group (`projects:eo-lab` = `/projects/eo-lab` =
//!   `projects/eo-lab`): same segments, split at `/` or `:`, a leading `/` ignored;
//! - a bare name in a rule matches the last segment of a held path or hub name (`eo-lab` is
//!   held by whoever holds `/projects/eo-lab`);
//! - a rule naming a path is not held through a bare or different path (`/other/eo-lab` is not
//!   held by `/projects/eo-lab`);
//! - a rule that is empty (or only `/`) is held by no one.
//!
//! Surrounding whitespace is ignored on both sides.

/// The segments of a group in any spelling: `/a/b`, `a/b` and `a:b` give `a`, `b`.
fn segments(group: &str) -> impl Iterator<Item = &str> {
    group.trim().trim_start_matches('/').split(['/', ':'])
}

/// Whether holding `held` (a hub name, a provider path or a bare name) satisfies a rule naming
/// `wanted` (see the module docs).
pub fn group_matches(held: &str, wanted: &str) -> bool {
    let want = wanted.trim().trim_start_matches('/');
    if want.is_empty() {
        return false;
    }
    segments(held).eq(segments(wanted))
        || (!want.contains(['/', ':']) && held.trim().rsplit(['/', ':']).next() == Some(want))
}

/// Whether any of `held` satisfies a rule naming `wanted`.
pub fn holds_group<S: AsRef<str>>(held: &[S], wanted: &str) -> bool {
    held.iter().any(|g| group_matches(g.as_ref(), wanted))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_paths_and_last_segments() {
        // Hub name, provider path and the path without its slash are one group.
        for held in ["/projects/eo-lab", "projects/eo-lab", "projects:eo-lab"] {
            for wanted in ["/projects/eo-lab", "projects/eo-lab", "projects:eo-lab"] {
                assert!(group_matches(held, wanted), "{held} holds {wanted}");
            }
            // A bare name is a last segment.
            assert!(group_matches(held, "eo-lab"), "{held} holds eo-lab");
            assert!(group_matches(held, "/eo-lab"), "{held} holds /eo-lab");
            assert!(!group_matches(held, "projects"), "{held} is not projects");
            assert!(!group_matches(held, "/other/eo-lab"), "{held}");
            assert!(!group_matches(held, "eo"), "{held} is not eo");
        }
        assert!(group_matches(
            "/services/jupyter/stack-jupyter-high",
            "stack-jupyter-high"
        ));
        assert!(group_matches("team:x", "x"));
        assert!(group_matches(" admins ", "admins"));
        assert!(group_matches("admins", "/admins"));
        // A held bare name does not hold a rule's path.
        assert!(!group_matches("eo-lab", "/projects/eo-lab"));
        // Nothing holds an empty rule.
        assert!(!group_matches("", ""));
        assert!(!group_matches("/", "/"));
        assert!(!group_matches("a/", ""));
        assert!(holds_group(&["x", "/a/b"], "b"));
        assert!(!holds_group::<&str>(&[], "b"));
    }

    proptest! {
        #[test]
        fn every_spelling_of_a_path_is_the_same_group(
            segs in prop::collection::vec("[a-z0-9-]{1,8}", 1..4),
        ) {
            let path = format!("/{}", segs.join("/"));
            let hub = segs.join(":");
            let last = segs.last().unwrap();
            prop_assert!(group_matches(&path, &hub));
            prop_assert!(group_matches(&hub, &path));
            prop_assert!(group_matches(&path, last));
            prop_assert!(group_matches(&hub, last));
        }

        #[test]
        fn a_group_is_never_held_through_another(
            a in "[a-z]{1,6}", b in "[a-z]{1,6}", c in "[a-z]{1,6}",
        ) {
            prop_assume!(a != b);
            let (held_path, wanted_path) = (format!("/{a}/{c}"), format!("/{b}/{c}"));
            let (held_name, wanted_name) = (format!("{a}:{c}"), format!("{b}:{c}"));
            prop_assert!(!group_matches(&held_path, &wanted_path));
            prop_assert!(!group_matches(&held_name, &wanted_name));
            prop_assert!(!group_matches(&held_name, &wanted_path));
        }
    }
}
