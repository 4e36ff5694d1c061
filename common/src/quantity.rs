//! Kubernetes quantities, parsed exactly.
//!
//! The grammar is Kubernetes' own (`k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! quantity   ::= number suffix
//! number     ::= [ "+" ] ( digits | digits "." [ digits ] | "." digits )
//! suffix     ::= "" | binarySI | decimalSI | ( "e" | "E" ) [ "+" | "-" ] digits
//! binarySI   ::= Ki | Mi | Gi | Ti | Pi | Ei                 (powers of 1024)
//! decimalSI  ::= n | u | m | k | M | G | T | P | E           (10^-9 ... 10^18)
//! ```
//!
//! As in Kubernetes, a value is kept to a thousandth of its unit, rounded up (`0.1m` is `1m`),
//! and none may exceed 2^63-1 units. Unlike Kubernetes, negative quantities are refused (a
//! request, a limit or a quota is never negative). Surrounding whitespace is ignored (config
//! files and environment variables carry it); whitespace inside is an error, as are an empty
//! string, a number without digits (`Gi`, `.`, `inf`, `NaN`), an unknown suffix (`1K`, `1GB`,
//! `2 Gi`), an exponent out of range and a value above the limit.
//!
//! No float is involved: `18446744073709551615` or `1.000000000000000000001Gi` come out exact
//! (rounded up to a whole byte / a thousandth of a core).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The largest quantity Kubernetes represents, 2^63-1 units, in thousandths.
const MAX_MILLIS: u128 = (i64::MAX as u128) * 1000;

/// Significant digits that always fit the arithmetic below: every value up to [`MAX_MILLIS`]
/// has at most 22 digits, and `10^22 < 2^74` fits a `u128` with room to spare.
const MAX_DIGITS: i64 = 22;

/// A non-negative Kubernetes quantity, exactly, in thousandths of its unit (bytes, cores).
///
/// `Display` writes the shortest form that parses back to the same value: whole units as a
/// plain integer (`2147483648`), anything else in thousandths (`500m`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    millis: u128,
}

impl Quantity {
    /// The largest quantity, 2^63-1 units.
    pub const MAX: Quantity = Quantity { millis: MAX_MILLIS };

    /// The quantity of `millis` thousandths, if it is not above [`Quantity::MAX`].
    pub fn from_millis(millis: u128) -> Option<Self> {
        (millis <= MAX_MILLIS).then_some(Self { millis })
    }

    /// The quantity of `units` whole units (bytes, cores), if it is not above [`Quantity::MAX`].
    pub fn from_units(units: u64) -> Option<Self> {
        Self::from_millis(u128::from(units) * 1000)
    }

    /// The value in thousandths of a unit (`500m` is 500, `2` is 2000).
    pub fn millis(self) -> u128 {
        self.millis
    }

    /// The value in whole units, rounded up as Kubernetes' `Value()` does (`1500m` is 2).
    pub fn ceil_units(self) -> u64 {
        // At most 2^63-1 by construction.
        u64::try_from(self.millis.div_ceil(1000)).unwrap_or(u64::MAX)
    }

    /// The value as a float (exact up to 2^53 thousandths).
    pub fn as_f64(self) -> f64 {
        let whole = (self.millis / 1000) as f64;
        let frac = (self.millis % 1000) as f64 / 1000.0;
        whole + frac
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|kind| QuantityError::new(s, kind))
    }
}

/// A string that is not a quantity, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{input}` is not a Kubernetes quantity such as 2Gi, 512Mi, 1e9 or 500m: {kind}")]
pub struct QuantityError {
    /// The input (cut after 64 characters).
    pub input: String,
    /// What is wrong with it.
    pub kind: QuantityErrorKind,
}

impl QuantityError {
    fn new(input: &str, kind: QuantityErrorKind) -> Self {
        let mut cut: String = input.chars().take(64).collect();
        if cut.len() < input.len() {
            cut.push('…');
        }
        Self { input: cut, kind }
    }
}

/// What is wrong with a [`QuantityError`]'s input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QuantityErrorKind {
    /// Nothing but whitespace.
    #[error("it is empty")]
    Empty,
    /// Whitespace between the number and the suffix or inside either.
    #[error("it has whitespace inside")]
    Whitespace,
    /// A leading `-`.
    #[error("it is negative")]
    Negative,
    /// No digit before the suffix (`Gi`, `.`, `inf`, `NaN`).
    #[error("it has no digits")]
    NoDigits,
    /// What follows the number is not a suffix.
    #[error(
        "unknown suffix `{0}` (binary Ki Mi Gi Ti Pi Ei, decimal n u m k M G T P E, or an exponent e3)"
    )]
    Suffix(String),
    /// The exponent does not fit.
    #[error("the exponent is out of range")]
    Exponent,
    /// Above 2^63-1 units.
    #[error("it is above 2^63-1, the largest quantity")]
    TooLarge,
}

/// Memory in bytes, rounded up to a whole byte (`2Gi`, `512Mi`, `1G`, `1e9`, `1024`, `1.5Gi`).
///
/// # Errors
/// [`QuantityError`] naming the input and what is wrong with it.
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    s.parse::<Quantity>().map(Quantity::ceil_units)
}

/// CPUs in cores, to a thousandth of a core rounded up (`2`, `0.5`, `500m`).
///
/// # Errors
/// [`QuantityError`] naming the input and what is wrong with it.
pub fn parse_cpus(s: &str) -> Result<f64, QuantityError> {
    s.parse::<Quantity>().map(Quantity::as_f64)
}

/// The parser proper: `s` as exact thousandths.
fn parse(s: &str) -> Result<Quantity, QuantityErrorKind> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QuantityErrorKind::Empty);
    }
    if s.contains(char::is_whitespace) {
        return Err(QuantityErrorKind::Whitespace);
    }
    let s = match s.as_bytes()[0] {
        b'-' => return Err(QuantityErrorKind::Negative),
        b'+' => &s[1..],
        _ => s,
    };
    // The number: integer digits, an optional point, fraction digits.
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int, rest) = s.split_at(int_len);
    let (frac, suffix) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            after.split_at(n)
        }
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(QuantityErrorKind::NoDigits);
    }
    let (pow2, pow10) = suffix_scale(suffix)?;
    // value = digits × 10^exp10 × 2^pow2, the digits without leading zeros.
    let frac_len = i64::try_from(frac.len()).map_err(|_| QuantityErrorKind::Exponent)?;
    let mut digits: Vec<u8> = int
        .bytes()
        .chain(frac.bytes())
        .skip_while(|d| *d == b'0')
        .map(|d| d - b'0')
        .collect();
    if digits.is_empty() {
        return Ok(Quantity { millis: 0 });
    }
    if pow2 > 0 {
        digits = times(&digits, 1u64 << pow2);
    }
    // In thousandths: value × 10^3.
    let exp10 = pow10
        .checked_sub(frac_len)
        .and_then(|e| e.checked_add(3))
        .ok_or(QuantityErrorKind::Exponent)?;
    let len = i64::try_from(digits.len()).map_err(|_| QuantityErrorKind::TooLarge)?;
    // The value is at least 10^(len - 1 + exp10): past 22 digits it is above the limit.
    if len.saturating_add(exp10) > MAX_DIGITS {
        return Err(QuantityErrorKind::TooLarge);
    }
    let millis = if exp10 >= 0 {
        // At most 22 digits in all (checked above).
        let mut v = number(&digits);
        for _ in 0..exp10 {
            v *= 10;
        }
        v
    } else {
        // Drop the last `-exp10` digits, rounding up if any of them is not zero.
        let cut = usize::try_from(exp10.unsigned_abs()).unwrap_or(usize::MAX);
        let keep = digits.len().saturating_sub(cut);
        let (whole, dropped) = digits.split_at(keep);
        number(whole) + u128::from(dropped.iter().any(|d| *d != 0))
    };
    Quantity::from_millis(millis).ok_or(QuantityErrorKind::TooLarge)
}

/// The scale a suffix stands for: (power of two, power of ten).
fn suffix_scale(suffix: &str) -> Result<(u32, i64), QuantityErrorKind> {
    Ok(match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(|| QuantityErrorKind::Suffix(suffix.chars().take(16).collect()))?;
            (
                0,
                exponent
                    .parse::<i64>()
                    .map_err(|_| QuantityErrorKind::Exponent)?,
            )
        }
    })
}

/// Decimal digits (most significant first) times `factor`.
fn times(digits: &[u8], factor: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(digits.len() + 20);
    let mut carry: u128 = 0;
    for d in digits.iter().rev() {
        let t = u128::from(*d) * u128::from(factor) + carry;
        out.push((t % 10) as u8);
        carry = t / 10;
    }
    while carry > 0 {
        out.push((carry % 10) as u8);
        carry /= 10;
    }
    out.reverse();
    out
}

/// The value of at most 22 decimal digits (more never reach here).
fn number(digits: &[u8]) -> u128 {
    digits.iter().fold(0u128, |v, d| {
        v.saturating_mul(10).saturating_add(u128::from(*d))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn millis(s: &str) -> Result<u128, QuantityErrorKind> {
        s.parse::<Quantity>()
            .map(Quantity::millis)
            .map_err(|e| e.kind)
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory("2Gi"), Ok(2 << 30));
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1E9"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory(" 18Gi\n"), Ok(18 << 30));
        assert_eq!(parse_memory("+1k"), Ok(1000));
        assert_eq!(parse_memory("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_memory("7Ei"), Ok(7 << 60));
        assert_eq!(parse_memory(".5Ki"), Ok(512));
        assert_eq!(parse_memory("3."), Ok(3));
        assert_eq!(parse_memory("0"), Ok(0));
        assert_eq!(parse_memory("0.0Gi"), Ok(0));
        assert_eq!(parse_memory("15e-1"), Ok(2));
        assert_eq!(parse_memory("1.5e+3"), Ok(1500));
        // Below a byte rounds up to a byte, as Kubernetes' Value() does.
        assert_eq!(parse_memory("500m"), Ok(1));
        assert_eq!(
            parse_memory("1.0000000000000000000001Gi"),
            Ok((1 << 30) + 1)
        );
        assert_eq!(parse_memory("9223372036854775807"), Ok(i64::MAX as u64));
        assert_eq!(parse_memory("0.000000000000000000000000000001"), Ok(1));
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpus("2"), Ok(2.0));
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert_eq!(parse_cpus("500m"), Ok(0.5));
        assert_eq!(parse_cpus("1500m"), Ok(1.5));
        assert_eq!(parse_cpus("250000u"), Ok(0.25));
        // A thousandth of a core is the precision; less rounds up.
        assert_eq!(parse_cpus("0.0001"), Ok(0.001));
        assert_eq!(parse_cpus("1n"), Ok(0.001));
        assert_eq!(millis("12"), Ok(12_000));
    }

    #[test]
    fn refusals_say_why() {
        use QuantityErrorKind::*;
        assert_eq!(millis(""), Err(Empty));
        assert_eq!(millis("  "), Err(Empty));
        assert_eq!(millis("2 Gi"), Err(Whitespace));
        assert_eq!(millis("1\t0"), Err(Whitespace));
        assert_eq!(millis("-1Gi"), Err(Negative));
        assert_eq!(millis("-0"), Err(Negative));
        assert_eq!(millis("Gi"), Err(NoDigits));
        assert_eq!(millis("."), Err(NoDigits));
        assert_eq!(millis("+"), Err(NoDigits));
        assert_eq!(millis("inf"), Err(NoDigits));
        assert_eq!(millis("NaN"), Err(NoDigits));
        assert_eq!(millis("1K"), Err(Suffix("K".into())));
        assert_eq!(millis("1GB"), Err(Suffix("GB".into())));
        assert_eq!(millis("1Gi "), Ok(1000 << 30));
        assert_eq!(millis("1.2.3"), Err(Suffix(".3".into())));
        assert_eq!(millis("1e"), Err(Suffix("e".into())));
        assert_eq!(millis("1e+"), Err(Suffix("e+".into())));
        assert_eq!(millis("1e3.5"), Err(Suffix("e3.5".into())));
        assert_eq!(millis("1Gix"), Err(Suffix("Gix".into())));
        assert_eq!(millis("1.5e-1k"), Err(Suffix("e-1k".into())));
        assert_eq!(millis("1e99999999999999999999"), Err(Exponent));
        assert_eq!(millis("1e30"), Err(TooLarge));
        assert_eq!(millis("9223372036854775808"), Err(TooLarge));
        assert_eq!(millis("8Ei"), Err(TooLarge));
        assert_eq!(millis("1e-99999999999"), Ok(1));
        assert_eq!(millis("0e99999999"), Ok(0));
        let e = "lots".parse::<Quantity>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`lots` is not a Kubernetes quantity"),
            "{e}"
        );
        let long = "9".repeat(100);
        let e = long.parse::<Quantity>().unwrap_err();
        assert_eq!(e.kind, TooLarge);
        assert_eq!(e.input.chars().count(), 65, "the input is cut: {}", e.input);
    }

    #[test]
    fn display_is_the_shortest_exact_form() {
        let q: Quantity = "1.5".parse().unwrap();
        assert_eq!(q.to_string(), "1500m");
        assert_eq!("2Ki".parse::<Quantity>().unwrap().to_string(), "2048");
        assert_eq!(Quantity::MAX.to_string(), i64::MAX.to_string());
        assert_eq!(Quantity::from_units(u64::MAX), None);
        assert_eq!(Quantity::from_millis(MAX_MILLIS + 1), None);
    }

    /// The suffixes and their factors in thousandths.
    fn suffixes() -> impl Strategy<Value = (&'static str, u128, u128)> {
        // (suffix, numerator, denominator) of the factor to thousandths.
        prop::sample::select(vec![
            ("", 1000, 1),
            ("Ki", 1000 << 10, 1),
            ("Mi", 1000 << 20, 1),
            ("Gi", 1000 << 30, 1),
            ("Ti", 1000 << 40, 1),
            ("Pi", 1000 << 50, 1),
            ("Ei", 1000 << 60, 1),
            ("n", 1, 1_000_000),
            ("u", 1, 1000),
            ("m", 1, 1),
            ("k", 1_000_000, 1),
            ("M", 1_000_000_000, 1),
            ("G", 1_000_000_000_000, 1),
            ("T", 1_000_000_000_000_000, 1),
            ("P", 1_000_000_000_000_000_000, 1),
            ("E", 1_000_000_000_000_000_000_000, 1),
        ])
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(s in ".{0,40}") {
            let _ = s.parse::<Quantity>();
        }

        #[test]
        fn never_panics_on_quantity_shaped_strings(s in "[ +\\-.0-9eEkKMGTPEimnu]{0,30}") {
            if let Ok(q) = s.parse::<Quantity>() {
                prop_assert!(q <= Quantity::MAX);
            }
        }

        #[test]
        fn display_round_trips(m in 0..=MAX_MILLIS) {
            let q = Quantity::from_millis(m).unwrap();
            prop_assert_eq!(q.to_string().parse::<Quantity>(), Ok(q));
        }

        #[test]
        fn integer_with_suffix_is_exact(n in 0u64..1 << 40, (suffix, num, den) in suffixes()) {
            let want = (u128::from(n) * num).div_ceil(den);
            let got = millis(&format!("{n}{suffix}"));
            if want <= MAX_MILLIS {
                prop_assert_eq!(got, Ok(want));
            } else {
                prop_assert_eq!(got, Err(QuantityErrorKind::TooLarge));
            }
        }

        #[test]
        fn fraction_with_suffix_rounds_up(
            n in 0u64..1 << 30,
            frac in 0u32..1000,
            (suffix, num, den) in suffixes(),
        ) {
            // n.fff × factor, in thousandths, rounded up.
            let want = ((u128::from(n) * 1000 + u128::from(frac)) * num).div_ceil(den * 1000);
            let got = millis(&format!("{n}.{frac:03}{suffix}"));
            if want <= MAX_MILLIS {
                prop_assert_eq!(got, Ok(want));
            } else {
                prop_assert_eq!(got, Err(QuantityErrorKind::TooLarge));
            }
        }

        #[test]
        fn exponent_form_is_the_same_number(x in 0.0f64..1e15) {
            let plain: Quantity = format!("{x}").parse().unwrap();
            let sci: Quantity = format!("{x:e}").parse().unwrap();
            let upper: Quantity = format!("{x:E}").parse().unwrap();
            prop_assert_eq!(plain, sci);
            prop_assert_eq!(plain, upper);
            prop_assert!((plain.as_f64() - x).abs() <= 0.001 + x * 1e-12);
        }

        #[test]
        fn bytes_round_trip(b in 0u64..=i64::MAX as u64) {
            prop_assert_eq!(parse_memory(&b.to_string()), Ok(b));
        }
    }
}
