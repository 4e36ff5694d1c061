use super::*;

#[test]
fn self_expands_with_user_filter() {
    let s = ScopeSet::expand(&["self"], Owner::User("alice"));
    let groups: Vec<String> = vec![];
    let alice = Resource::User {
        name: "alice",
        groups: &groups,
    };
    let bob = Resource::User {
        name: "bob",
        groups: &groups,
    };
    assert!(s.allows("read:users:name", alice));
    assert!(!s.allows("read:users:name", bob));
    assert!(s.holds("read:users"));
    assert!(!s.holds("admin:users"));
    let srv = Resource::Server {
        user: "alice",
        server: "gpu",
        groups: &groups,
    };
    assert!(s.allows("access:servers", srv));
    assert!(s.allows("delete:servers", srv));
    assert!(
        s.to_strings()
            .contains(&"access:servers!user=alice".to_owned())
    );
}

#[test]
fn intersection_and_cover() {
    let owner = ScopeSet::expand(&["self"], Owner::User("alice"));
    let token = ScopeSet::expand(
        &["access:servers!server=alice/gpu", "admin:users"],
        Owner::User("alice"),
    );
    let eff = token.intersect(&owner);
    let eff = eff.to_strings();
    assert!(
        eff.contains(&"access:servers!server=alice/gpu".to_owned()),
        "{eff:?}"
    );
    assert!(eff.contains(&"read:users!user=alice".to_owned()), "{eff:?}");
    assert!(
        !eff.iter()
            .any(|s| s.starts_with("admin:") || s == "read:users"),
        "{eff:?}"
    );
    assert!(owner.covers(&ScopeSet::expand(
        &["read:users!user=alice"],
        Owner::User("alice")
    )));
    assert!(!owner.covers(&ScopeSet::expand(&["read:users"], Owner::User("alice"))));
    assert!(ScopeSet::everything().covers(&owner));
}

#[test]
fn inherit_is_unresolved_until_the_owner_is_known() {
    let alice = Owner::User("alice");
    let owner = ScopeSet::expand(&["self"], alice);
    let everything = ScopeSet::everything();
    for asked in [
        ScopeSet::expand(&["inherit"], alice),
        ScopeSet::expand(&["read:tokens!user=alice", "inherit"], alice),
        ScopeSet::expand(&builtin_role("token").unwrap_or_default(), alice),
    ] {
        assert!(asked.wants_inherit());
        assert!(!everything.covers(&asked), "{asked:?}");
        assert!(!owner.covers(&asked));
        let resolved = asked.resolve_inherit(&owner);
        assert!(!resolved.wants_inherit());
        assert!(owner.covers(&resolved));
        assert!(resolved.covers(&owner));
        let manager = ScopeSet::expand(&["tokens!user=alice"], alice);
        assert!(!manager.covers(&resolved));
    }
}

#[test]
fn validate() {
    assert!(validate_scope("read:users!user=alice").is_ok());
    assert!(validate_scope("access:servers!server=a/b").is_ok());
    assert!(validate_scope("access:servers!server").is_ok());
    assert!(validate_scope("nope").is_err());
    assert!(validate_scope("read:users!server=x").is_err());
    assert!(validate_scope("read:users!bogus=x").is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    /// A scope name: known, a metascope, or anything.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(HIERARCHY.iter().map(|(n, _)| *n).collect::<Vec<_>>())
                .prop_map(str::to_owned),
            proptest::sample::select(vec!["self", "inherit", "identify"]).prop_map(str::to_owned),
            "[a-z:!=/-]{0,12}",
        ]
    }

    /// A filter value: plain names, and ones with the separators in them.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9]{1,6}", "[a-z!=/ -]{0,6}", ".{0,6}"]
    }

    /// A filter suffix (`""` = none).
    fn filter() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("!user".to_owned()),
            Just("!server".to_owned()),
            value().prop_map(|v| format!("!user={v}")),
            value().prop_map(|v| format!("!group={v}")),
            value().prop_map(|v| format!("!service={v}")),
            (value(), value()).prop_map(|(u, s)| format!("!server={u}/{s}")),
            value().prop_map(|v| format!("!server={v}")),
            value().prop_map(|v| format!("!{v}")),
        ]
    }

    /// A scope string built from the grammar's parts, valid or not.
    fn scope() -> impl Strategy<Value = String> {
        (name(), filter()).prop_map(|(n, f)| format!("{n}{f}"))
    }

    /// A known scope name (in the hierarchy).
    fn known() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(HIERARCHY.iter().map(|(n, _)| *n).collect::<Vec<_>>())
    }

    /// A filter that names something (`=value`).
    fn naming_filter() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,6}".prop_map(|v| format!("user={v}")),
            "[a-z0-9]{1,6}".prop_map(|v| format!("group={v}")),
            "[a-z0-9]{1,6}".prop_map(|v| format!("service={v}")),
            ("[a-z0-9]{1,6}", "[a-z0-9]{0,6}").prop_map(|(u, s)| format!("server={u}/{s}")),
        ]
    }

    fn owner(user: bool) -> Owner<'static> {
        if user {
            Owner::User("alice")
        } else {
            Owner::Service("svc")
        }
    }

    proptest! {
        #[test]
        fn parsing_any_string_never_panics(raw in ".{0,40}", user in any::<bool>()) {
            let _ = validate_scope(&raw);
            let set = ScopeSet::expand(&[raw.as_str()], owner(user));
            let _ = set.to_strings();
            let _ = set.covers(&set);
        }

        #[test]
        fn parsing_scope_shaped_strings_never_panics(
            scopes in proptest::collection::vec(scope(), 0..6),
            user in any::<bool>(),
        ) {
            for s in &scopes {
                let _ = validate_scope(s);
            }
            let set = ScopeSet::expand(&scopes, owner(user));
            let _ = set.intersect(&set).to_strings();
        }

        #[test]
        fn covers_is_reflexive(
            scopes in proptest::collection::vec(scope(), 0..6),
            user in any::<bool>(),
        ) {
            let valid: Vec<&String> =
                scopes.iter().filter(|s| validate_scope(s).is_ok()).collect();
            let set = ScopeSet::expand(&valid, owner(user));
            prop_assume!(!set.wants_inherit());
            prop_assert!(set.covers(&set), "{valid:?}");
            // Expanding the set's own strings gives a set it covers and that covers it.
            let again = ScopeSet::expand(&set.to_strings(), owner(user));
            prop_assert!(set.covers(&again) && again.covers(&set), "{valid:?}");
        }

        #[test]
        fn a_filtered_scope_never_covers_its_unfiltered_form(
            name in known(),
            f in naming_filter(),
            user in any::<bool>(),
        ) {
            let filtered = format!("{name}!{f}");
            prop_assert!(validate_scope(&filtered).is_ok(), "{filtered}");
            let narrow = ScopeSet::expand(&[filtered.as_str()], owner(user));
            let wide = ScopeSet::expand(&[name], owner(user));
            prop_assert!(!narrow.covers(&wide), "{filtered} covers {name}");
            prop_assert!(wide.covers(&narrow), "{name} covers {filtered}");
        }

        #[test]
        fn inherit_never_slips_through_covers(
            held in proptest::collection::vec(scope(), 0..8),
            asked in proptest::collection::vec(scope(), 0..4),
            inherit_filter in filter(),
            user in any::<bool>(),
            everything in any::<bool>(),
        ) {
            let who = owner(user);
            let holder = if everything {
                ScopeSet::everything()
            } else {
                ScopeSet::expand(&held, who)
            };
            let mut asked = asked;
            asked.push(format!("inherit{inherit_filter}"));
            let wanted = ScopeSet::expand(&asked, who);
            if wanted.wants_inherit() {
                prop_assert!(!holder.covers(&wanted), "{asked:?}");
                // Resolved, it is covered exactly when the owner's scopes (and the rest) are.
                let plain: Vec<&String> =
                    held.iter().filter(|s| !s.starts_with("inherit")).collect();
                let owner_scopes = ScopeSet::expand(&plain, who);
                prop_assume!(!owner_scopes.wants_inherit());
                let resolved = wanted.clone().resolve_inherit(&owner_scopes);
                prop_assert!(!resolved.wants_inherit());
                prop_assert!(resolved.covers(&owner_scopes));
                if holder.covers(&resolved) {
                    prop_assert!(holder.covers(&owner_scopes));
                }
            } else {
                // Only a filter that names nobody for this owner drops it; then it grants
                // nothing.
                let without = ScopeSet::expand(&asked[..asked.len() - 1], who);
                prop_assert_eq!(wanted, without);
            }
        }
    }
}
