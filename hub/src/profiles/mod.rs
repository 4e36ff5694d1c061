//! Server profiles as the hub offers them: who may use which (`access`), the one parse of
//! `user_options` and the form / query transports producing them (`options`), the one check of
//! parsed options against the profiles (`resolve`), and the allowed profiles as JSON for the
//! options endpoint and the picker (`view`).
//!
//! The model itself (profiles, options, choices, what a choice overrides) lives in the spawner
//! crate ([`spawner::profile`]), the layer the hub and every spawner share; a start resolves a
//! user's options once into a [`spawner::LaunchSpec`] (see `crate::spawn::plan`).

mod access;
mod options;
mod resolve;
mod view;

pub use spawner::profile::{
    Choice, Profile, ProfileKind, ProfileOption, SpawnerOverride, UnlistedChoice, default_profiles,
};

pub(crate) use self::access::Identity;
pub(crate) use self::options::{
    UserOptions, from_form, from_query, from_rest_body, has_query_options,
};
pub use self::resolve::OptionsError;
pub(crate) use self::resolve::resolve;
pub(crate) use self::view::view;
