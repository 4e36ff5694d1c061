//! Which cluster a dashboard request is for, from its raw (still percent-encoded) path.
//!
//! A path is `/clusters/<name>` optionally followed by `/<rest>`. The name is a cluster name
//! (ASCII letters, digits, `-` and `_`; what `create` makes is 32 hex digits), taken verbatim:
//! an encoded name matches no cluster. The rest is forwarded unchanged to that cluster's
//! scheduler, so it must not be able to mean another place to anyone who reads it after us
//! (the scheduler, a proxy in front that normalizes): a segment that is `.` or `..` once
//! percent-decoded (once or a few times over), or that decodes to something holding `/`, `\`
//! or NUL, refuses the request.

use stackhub_common::path::UnsafeSegment;

/// Where the cluster part of the path starts.
pub(crate) const PREFIX: &str = "/clusters/";
/// The longest cluster name taken.
const MAX_NAME: usize = 64;

/// A dashboard path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DashboardPath<'a> {
    /// `/clusters/<name>` (`slash` false) or `/clusters/<name>/`: the status page is elsewhere.
    Root {
        /// The cluster's name.
        name: &'a str,
        /// Whether the path ends with `/`.
        slash: bool,
    },
    /// `/clusters/<name>/<rest>`: forwarded as it is.
    Page {
        /// The cluster's name.
        name: &'a str,
    },
}

impl<'a> DashboardPath<'a> {
    /// The cluster's name.
    pub(crate) fn name(self) -> &'a str {
        match self {
            DashboardPath::Root { name, .. } | DashboardPath::Page { name } => name,
        }
    }

    /// Parses a request's raw path.
    ///
    /// # Errors
    /// Why the path is refused (for the `{"error"}` body).
    pub(crate) fn parse(path: &'a str) -> Result<Self, String> {
        let tail = path
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("a dashboard path starts with {PREFIX}<cluster>/"))?;
        let (name, rest) = match tail.split_once('/') {
            Some((name, rest)) => (name, Some(rest)),
            None => (tail, None),
        };
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{name:?} is not a cluster name (letters, digits, - and _ only)"
            ));
        }
        let Some(rest) = rest else {
            return Ok(DashboardPath::Root { name, slash: false });
        };
        if rest.is_empty() {
            return Ok(DashboardPath::Root { name, slash: true });
        }
        stackhub_common::path::check_segments(rest).map_err(|e| match e {
            UnsafeSegment::Dots(segment) => {
                format!("the path segment {segment:?} would leave cluster {name}'s dashboard")
            }
            other => other.to_string(),
        })?;
        Ok(DashboardPath::Page { name })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use percent_encoding::percent_decode;
    use proptest::prelude::*;
    use stackhub_common::path::DECODINGS;

    use super::*;

    /// RFC 3986 section 5.2.4 on a path percent-decoded (three times over) first: where the
    /// most lenient reader (decoding `%2e` and `%2f` before resolving dots) ends up.
    fn lenient_resolution(path: &str) -> String {
        let mut bytes = path.as_bytes().to_vec();
        for _ in 0..DECODINGS {
            bytes = percent_decode(&bytes).collect();
        }
        let decoded = String::from_utf8_lossy(&bytes).replace('\\', "/");
        let mut out: Vec<&str> = Vec::new();
        for segment in decoded.split('/').skip(1) {
            match segment {
                "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    #[test]
    fn pages_of_a_cluster() {
        let name = "0123456789abcdef0123456789abcdef";
        for path in [
            format!("/clusters/{name}/status"),
            format!("/clusters/{name}/status/ws"),
            format!("/clusters/{name}/static/js/bokeh.min.js"),
            format!("/clusters/{name}/statics/css/base.css"),
            format!("/clusters/{name}/individual-task-stream"),
            format!("/clusters/{name}/info/main/workers.html"),
            format!("/clusters/{name}/a..b/.hidden/x%20y"),
        ] {
            assert_eq!(
                DashboardPath::parse(&path),
                Ok(DashboardPath::Page { name }),
                "{path}"
            );
        }
        assert_eq!(
            DashboardPath::parse(&format!("/clusters/{name}")),
            Ok(DashboardPath::Root { name, slash: false })
        );
        assert_eq!(
            DashboardPath::parse(&format!("/clusters/{name}/")),
            Ok(DashboardPath::Root { name, slash: true })
        );
    }

    #[test]
    fn paths_that_would_leave_their_cluster_are_refused() {
        let (a, b) = ("aaaa", "bbbb");
        for path in [
            format!("/clusters/{a}/../{b}/status"),
            format!("/clusters/{a}/./../{b}/status"),
            format!("/clusters/{a}/%2e%2e/{b}/status"),
            format!("/clusters/{a}/%2E%2E/{b}/status"),
            format!("/clusters/{a}/.%2e/{b}/status"),
            format!("/clusters/{a}/%2e./{b}/status"),
            format!("/clusters/{a}/status/../../{b}/status"),
            format!("/clusters/{a}/..%2f{b}/status"),
            format!("/clusters/{a}/..%2F{b}/status"),
            format!("/clusters/{a}/..%5c{b}/status"),
            format!("/clusters/{a}/..\\{b}/status"),
            format!("/clusters/{a}/status%00"),
            format!("/clusters/{a}/%252e%252e/{b}/status"),
            format!("/clusters/{a}/..%252f{b}/status"),
            format!("/clusters/{a}/%25252e%25252e/{b}/status"),
            format!("/clusters/{a}%2f..%2f{b}/status"),
            format!("/clusters/{a}%2F{b}/status"),
            format!("/clusters/%2e%2e/{b}/status"),
            format!("/clusters/../{b}/status"),
            format!("/clusters/./{b}/status"),
            format!("/clusters//{b}/status"),
            "/clusters/".to_owned(),
            format!("/clusters/{}/status", "x".repeat(65)),
            format!("/other/{a}/status"),
        ] {
            assert!(DashboardPath::parse(&path).is_err(), "{path} was accepted");
        }
    }

    proptest! {
        /// Whatever the path, an accepted one stays under its cluster's prefix for a reader
        /// that decodes and resolves dots, and its name is the first segment verbatim.
        #[test]
        fn an_accepted_path_stays_under_its_cluster(
            name in "[a-z0-9_-]{1,8}",
            segments in proptest::collection::vec(
                prop_oneof![
                    Just(".".to_owned()), Just("..".to_owned()), Just("%2e".to_owned()),
                    Just("%2E%2e".to_owned()), Just(".%2e".to_owned()), Just("%2f".to_owned()),
                    Just("%5C".to_owned()), Just("\\".to_owned()), Just("%00".to_owned()),
                    Just("%252e%252e".to_owned()), Just(String::new()),
                    "[a-zA-Z0-9._%~-]{0,6}",
                ],
                0..6,
            ),
        ) {
            let path = format!("/clusters/{name}/{}", segments.join("/"));
            if let Ok(parsed) = DashboardPath::parse(&path) {
                prop_assert_eq!(parsed.name(), name.as_str());
                let resolved = lenient_resolution(&path);
                let prefix = format!("/clusters/{name}");
                prop_assert!(
                    resolved == prefix || resolved.starts_with(&format!("{prefix}/")),
                    "{} resolves to {}", path, resolved
                );
            }
        }

        /// Arbitrary input never panics, and a name is never taken from outside its segment.
        #[test]
        fn arbitrary_paths(path in "\\PC{0,40}") {
            let full = format!("/clusters/{path}");
            if let Ok(parsed) = DashboardPath::parse(&full) {
                let name = parsed.name();
                prop_assert!(!name.contains(['/', '%', '.']));
                let prefix = format!("/clusters/{name}");
                prop_assert!(full.starts_with(&prefix));
            }
        }
    }
}
