//! Whether the rest of a URL path, forwarded as it is, stays where it is sent.
//!
//! A proxy that forwards `<prefix>/<rest>` after checking who may see `<prefix>` must not let
//! `<rest>` mean another place to anyone who reads the path after it (the upstream, a proxy
//! in front that normalizes): a segment that is `.` or `..` once percent-decoded (once or a few
//! times over), or that decodes to something holding `/`, `\` or NUL, is refused.

use percent_encoding::percent_decode;

/// How many rounds of percent-decoding a segment is checked through (`%252e` is `.` to a
/// reader that decodes twice).
pub const DECODINGS: usize = 3;

/// A segment that could lead elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeSegment {
    /// `.` or `..`, as written or decoded.
    #[error("the path segment {0:?} is a dot segment")]
    Dots(String),
    /// Decodes to something holding `/`, `\` or NUL.
    #[error("the path segment {0:?} encodes a slash, backslash or NUL")]
    Separator(String),
}

/// Checks each `/`-separated segment of `rest` (raw, still percent-encoded).
///
/// # Errors
/// The first segment that could lead elsewhere.
pub fn check_segments(rest: &str) -> Result<(), UnsafeSegment> {
    for segment in rest.split('/') {
        // As written, and as readers that decode once, twice or three times see it.
        let mut seen = segment.as_bytes().to_vec();
        for _ in 0..=DECODINGS {
            if seen == b"." || seen == b".." {
                return Err(UnsafeSegment::Dots(segment.to_owned()));
            }
            if seen.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
                return Err(UnsafeSegment::Separator(segment.to_owned()));
            }
            let next: Vec<u8> = percent_decode(&seen).collect();
            if next == seen {
                break;
            }
            seen = next;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_segments_pass_and_tricks_do_not() {
        for ok in ["status", "static/js/bokeh.min.js", "a..b/.hidden/x%20y", ""] {
            assert_eq!(check_segments(ok), Ok(()), "{ok}");
        }
        for bad in [
            "..",
            "x/../y",
            "%2e%2e",
            "%2E.",
            ".%2e",
            "%252e%252e",
            "%25252e%25252e",
            ".",
            "..%2fx",
            "x%2Fy",
            "..%5cx",
            "..\\x",
            "x%00",
            "..%252fx",
        ] {
            assert!(check_segments(bad).is_err(), "{bad} was accepted");
        }
    }
}
