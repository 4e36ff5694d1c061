//! The S3 exchange requirement of a remote site.
//!
//! A remote kernel has no home directory: the user's data moves through S3 at the site. With
//! `remote_site = true` a kernel start must carry the exchange configuration the hub provisions
//! (`AWS_*` credentials confined to the user's space, the endpoint, region, bucket and prefix);
//! those variables (and only those, besides `KERNEL_*`) reach the kernel's environment. Without
//! them the start is refused with 400 naming the missing variables, never echoing values. With
//! `remote_site = false` (the default) nothing changes: only `KERNEL_*` variables pass, as in
//! Enterprise Gateway.

/// Variables a remote-site kernel start must carry, non-empty.
pub const REQUIRED_EXCHANGE_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "STACKHUB_S3_BUCKET",
    "STACKHUB_S3_PREFIX",
];

/// Further exchange variables passed through when present.
pub const OPTIONAL_EXCHANGE_ENV: &[&str] = &["AWS_SESSION_TOKEN", "AWS_REGION"];

/// Whether `name` is an exchange variable.
pub fn is_exchange_var(name: &str) -> bool {
    REQUIRED_EXCHANGE_ENV.contains(&name) || OPTIONAL_EXCHANGE_ENV.contains(&name)
}

/// The required variables missing (or empty) in `env`.
pub fn missing(env: &std::collections::BTreeMap<String, String>) -> Vec<&'static str> {
    REQUIRED_EXCHANGE_ENV
        .iter()
        .copied()
        .filter(|k| env.get(*k).is_none_or(|v| v.trim().is_empty()))
        .collect()
}

/// The 400 message for a start without (complete) exchange configuration.
pub fn refusal(missing: &[&str]) -> String {
    format!(
        "this gateway is a remote site: a kernel start must carry the S3 exchange configuration \
         in its env, and {} {} missing or empty; start remote kernels through the hub, which \
         provisions the user's S3 space and credentials at this site",
        missing.join(", "),
        if missing.len() == 1 { "is" } else { "are" }
    )
}
