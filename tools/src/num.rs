//! Numbers as util-vserver reads them: `strtol(s, &end, 0)` with the whole
//! string consumed, so decimal, `0x` hex and leading-`0` octal, with an
//! optional sign. Unlike `strtol`, leading white space is refused too.

use crate::cli::UsageError;

/// Parses `s` like `strtol(s, &end, 0)` with `*end == '\0'`; `None` when it
/// is not a number or does not fit in an `i128`.
pub fn strtol0(s: &str) -> Option<i128> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    // from_str_radix would accept a second sign; strtol does not.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// A context id: a number in `0..=u32::MAX` as [`strtol0`] reads it.
/// Names (`:name`) and `self` are the caller's business.
pub fn parse_xid(option: &str, s: &str) -> Result<u32, UsageError> {
    if s.starts_with(':') || s.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(UsageError::new(format!(
            "{option}: '{s}' is not a context number (vxfs has no vserver names)"
        )));
    }
    strtol0(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| UsageError::new(format!("{option}: bad context number '{s}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_base_0() {
        let table: &[(&str, Option<i128>)] = &[
            ("0", Some(0)),
            ("42", Some(42)),
            ("+42", Some(42)),
            ("-1", Some(-1)),
            ("0x10", Some(16)),
            ("0XfF", Some(255)),
            ("-0x10", Some(-16)),
            ("010", Some(8)),
            ("00", Some(0)),
            ("4294967295", Some(4_294_967_295)),
            ("", None),
            ("-", None),
            ("+", None),
            ("0x", None),
            ("08", None),
            ("abc", None),
            ("12k", None),
            (" 5", None),
            ("5 ", None),
            ("--1", None),
            ("+-1", None),
            ("0x+1", None),
            ("1e3", None),
        ];
        for &(s, want) in table {
            assert_eq!(strtol0(s), want, "{s:?}");
        }
    }

    #[test]
    fn xids() {
        assert_eq!(parse_xid("-c", "5"), Ok(5));
        assert_eq!(parse_xid("-c", "0x10"), Ok(16));
        assert_eq!(parse_xid("-c", "4294967295"), Ok(u32::MAX));
        for bad in ["-1", "4294967296", "x", "", "self", ":web"] {
            assert!(parse_xid("-c", bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_xid("-c", ":web")
                .unwrap_err()
                .to_string()
                .contains("no vserver names")
        );
    }
}
