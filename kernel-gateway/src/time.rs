//! Timestamps in the one format jupyter_server's GatewayClient parses: `%Y-%m-%dT%H:%M:%S.%fZ`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats `t` with exactly six fractional digits and a literal `Z`.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The current time in [`iso`] format.
pub(crate) fn iso_now() -> String {
    iso(Utc::now())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn always_six_fraction_digits_and_z() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(super::iso(t), "2026-01-02T03:04:05.000000Z");
    }
}
