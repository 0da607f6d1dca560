//! Sizes and counts as users write them, with errors in their terms.
//!
//! Sizes are a number and a unit, `"64 MiB"`, `"1.5 MiB"`, `"512 KB"` (the
//! units of the `bytesize` crate: `B`, `K`/`KB` = 1000, `Ki`/`KiB` = 1024,
//! and so on up to `EiB`, in any case), or a bare integer of bytes. A size
//! too large to count in 64 bits is refused rather than clamped. Counts are
//! whole numbers of at least 1. The functions here are the
//! `deserialize_with` of the configuration's `ByteSize`, `NonZero*` and
//! port fields; [`fmt_size`] prints a size back the way it was probably written.

use bytesize::ByteSize;
use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};

/// What a size looks like, for error messages.
pub(crate) const SIZE_EXAMPLE: &str = "a size such as \"64 MiB\"";

/// What a count looks like, for error messages.
pub(crate) const COUNT_EXAMPLE: &str = "a whole number of at least 1";

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number followed by a known unit.
    #[error(
        "{text:?} is not a size: expected {SIZE_EXAMPLE} (a number, then one of the units \
         B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
    )]
    Malformed {
        /// What was written.
        text: String,
    },
    /// More bytes than 64 bits count.
    #[error("{text:?} is too large: sizes go up to 16 EiB")]
    TooLarge {
        /// What was written.
        text: String,
    },
}

/// Bytes per unit, in the `bytesize` crate's spelling (case-insensitive).
fn unit_factor(unit: &str) -> Option<u128> {
    const UNITS: &[(&[&str], u128)] = &[
        (&["", "b"], 1),
        (&["k", "kb"], 1_000),
        (&["ki", "kib"], 1 << 10),
        (&["m", "mb"], 1_000_000),
        (&["mi", "mib"], 1 << 20),
        (&["g", "gb"], 1_000_000_000),
        (&["gi", "gib"], 1 << 30),
        (&["t", "tb"], 1_000_000_000_000),
        (&["ti", "tib"], 1 << 40),
        (&["p", "pb"], 1_000_000_000_000_000),
        (&["pi", "pib"], 1 << 50),
        (&["e", "eb"], 1_000_000_000_000_000_000),
        (&["ei", "eib"], 1 << 60),
    ];
    UNITS
        .iter()
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(unit)))
        .map(|(_, f)| *f)
}

/// Reads a size such as `"1.5 MiB"` exactly (a fraction of a byte is
/// dropped).
pub fn parse_size(text: &str) -> Result<ByteSize, SizeError> {
    let malformed = || SizeError::Malformed {
        text: text.to_owned(),
    };
    let t = text.trim();
    let number_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_len);
    let factor = unit_factor(unit.trim_start()).ok_or_else(malformed)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(malformed());
    }
    let too_large = || SizeError::TooLarge {
        text: text.to_owned(),
    };
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    // Enough digits for any fraction of a byte of 1 EiB.
    let fraction = &fraction[..fraction.len().min(19)];
    let frac_bytes = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().map_err(|_| malformed())?;
        digits * factor / 10u128.pow(fraction.len() as u32)
    };
    let bytes = whole
        .checked_mul(factor)
        .and_then(|b| b.checked_add(frac_bytes))
        .ok_or_else(too_large)?;
    u64::try_from(bytes).map(ByteSize).map_err(|_| too_large())
}

/// Prints `size` in the largest binary unit it is a whole (or one-decimal)
/// number of, such as `1 MiB`, `1.5 MiB` or `1000 B`.
pub fn fmt_size(size: ByteSize) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("EiB", 1 << 60),
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    let b = u128::from(size.as_u64());
    for (name, unit) in UNITS {
        let unit = u128::from(*unit);
        if b < unit {
            continue;
        }
        if b % unit == 0 {
            return format!("{} {name}", b / unit);
        }
        if (b * 10) % unit == 0 {
            let tenths = b * 10 / unit;
            return format!("{}.{} {name}", tenths / 10, tenths % 10);
        }
    }
    format!("{b} B")
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXAMPLE)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| {
            E::custom(format_args!(
                "{v} is negative: expected {SIZE_EXAMPLE} or a number of bytes"
            ))
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
        Err(E::custom(format_args!(
            "{v} has no unit: expected {SIZE_EXAMPLE}, written as a string (\"{v} MiB\")"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        parse_size(v).map_err(E::custom)
    }
}

/// `deserialize_with` of a size.
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    d.deserialize_any(SizeVisitor)
}

/// `deserialize_with` of an optional size (with `#[serde(default)]`).
pub(crate) fn option_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    size(d).map(Some)
}

/// `deserialize_with` of a TCP port: 1 to 65535.
pub(crate) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port number from 1 to 65535")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            u16::try_from(v).ok().filter(|p| *p != 0).ok_or_else(|| {
                E::custom(format_args!(
                    "{v} is not a port: expected a port number from 1 to 65535"
                ))
            })
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_any(V)
}

/// A count type: `NonZeroUsize`, `NonZeroU32`.
pub(crate) trait Count: Sized {
    /// The largest count the type holds.
    const MAX: u64;
    /// `n` as the type; `None` for 0 or more than [`Count::MAX`].
    fn from_u64(n: u64) -> Option<Self>;
}

impl Count for NonZeroUsize {
    const MAX: u64 = usize::MAX as u64;
    fn from_u64(n: u64) -> Option<Self> {
        usize::try_from(n).ok().and_then(NonZeroUsize::new)
    }
}

impl Count for NonZeroU32 {
    const MAX: u64 = u32::MAX as u64;
    fn from_u64(n: u64) -> Option<Self> {
        u32::try_from(n).ok().and_then(NonZeroU32::new)
    }
}

struct CountVisitor<T>(std::marker::PhantomData<T>);

impl<T: Count> Visitor<'_> for CountVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(COUNT_EXAMPLE)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_u64(v).ok_or_else(|| {
            if v == 0 {
                E::custom(format_args!("0 is too small: expected {COUNT_EXAMPLE}"))
            } else {
                E::custom(format_args!(
                    "{v} is too large: expected {COUNT_EXAMPLE} and at most {}",
                    T::MAX
                ))
            }
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format_args!(
                "{v} is too small: expected {COUNT_EXAMPLE}"
            ))),
        }
    }
}

/// `deserialize_with` of a count.
pub(crate) fn count<'de, D: Deserializer<'de>, T: Count>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(CountVisitor(std::marker::PhantomData))
}

/// `deserialize_with` of an optional count (with `#[serde(default)]`).
pub(crate) fn option_count<'de, D: Deserializer<'de>, T: Count>(
    d: D,
) -> Result<Option<T>, D::Error> {
    count(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_exactly_in_decimal_and_binary_units() {
        for (text, bytes) in [
            ("64 MiB", 64 << 20),
            ("1.5 MiB", 3 << 19),
            ("1.5MiB", 3 << 19),
            ("512 KB", 512_000),
            ("64K", 64_000),
            ("64 kib", 64 << 10),
            ("4096", 4096),
            ("100 B", 100),
            (".5 KiB", 512),
            ("64.0 MiB", 64 << 20),
            ("16 EiB", u64::MAX as u128 + 1),
        ] {
            let got = parse_size(text).map(|b| b.as_u64() as u128);
            if bytes > u64::MAX as u128 {
                assert!(matches!(got, Err(SizeError::TooLarge { .. })), "{text}");
            } else {
                assert_eq!(got, Ok(bytes), "{text}");
            }
        }
    }

    #[test]
    fn a_size_too_large_for_64_bits_is_refused_not_clamped() {
        let err = parse_size("99999999 TiB").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"99999999 TiB\" is too large: sizes go up to 16 EiB"
        );
        assert!(parse_size("99999999999999999999999 B").is_err());
    }

    #[test]
    fn a_malformed_size_says_what_a_size_looks_like() {
        for text in ["sixty", "64 parsecs", "", "MiB", "1.2.3 MiB", "-1 MiB"] {
            let err = parse_size(text).unwrap_err().to_string();
            assert!(
                err.contains("expected a size such as \"64 MiB\""),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn sizes_print_in_the_largest_unit_that_is_exact() {
        assert_eq!(fmt_size(ByteSize::mib(1)), "1 MiB");
        assert_eq!(fmt_size(ByteSize(3 << 19)), "1.5 MiB");
        assert_eq!(fmt_size(ByteSize::kib(64)), "64 KiB");
        assert_eq!(fmt_size(ByteSize(1000)), "1000 B");
        assert_eq!(fmt_size(ByteSize(1025)), "1025 B");
    }
}
