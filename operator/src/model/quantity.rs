//! Kubernetes resource quantities (`64Mi`, `1G`, `1.5Gi`, `1e3`, `500m`) to
//! whole bytes, rounding up like apimachinery's `Quantity.Value()`.
//!
//! Written here rather than pulling a crate: it is one small, total function.

/// Why a quantity did not parse. Displayed inside problem messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty")]
    Empty,
    #[error("no digits")]
    NoDigits,
    #[error("malformed number")]
    Malformed,
    #[error("negative quantities are not allowed here")]
    Negative,
    #[error(
        "unknown suffix {0:?}; use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m or an exponent such as e3"
    )]
    UnknownSuffix(String),
    #[error("too large")]
    TooLarge,
}

/// Parses a non-negative quantity to bytes (rounded up to a whole byte).
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let s = match s.as_bytes()[0] {
        b'+' => &s[1..],
        b'-' => return Err(QuantityError::Negative),
        _ => s,
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoDigits);
    }
    // A second '.' lands in frac_part.
    if frac_part.contains('.') {
        return Err(QuantityError::Malformed);
    }

    // mantissa = digits / 10^scale
    let mut mantissa: u128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or(QuantityError::TooLarge)?;
    }
    let scale = u32::try_from(frac_part.len()).map_err(|_| QuantityError::TooLarge)?;

    // value = mantissa * binary * 10^exp10 / 10^scale
    let (binary, exp10): (u128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        other => match other.strip_prefix(['e', 'E']).map(str::parse::<i32>) {
            Some(Ok(e)) if (-30..=30).contains(&e) => (1, e),
            Some(Ok(_)) => return Err(QuantityError::TooLarge),
            _ => return Err(QuantityError::UnknownSuffix(other.to_owned())),
        },
    };
    let exp = exp10 - i32::try_from(scale).map_err(|_| QuantityError::TooLarge)?;
    let pow = |e: u32| 10u128.checked_pow(e).ok_or(QuantityError::TooLarge);
    let numerator = mantissa
        .checked_mul(binary)
        .ok_or(QuantityError::TooLarge)?;
    let value = if exp >= 0 {
        numerator
            .checked_mul(pow(exp.unsigned_abs())?)
            .ok_or(QuantityError::TooLarge)?
    } else {
        numerator.div_ceil(pow(exp.unsigned_abs())?)
    };
    u64::try_from(value).map_err(|_| QuantityError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_memory_quantities() {
        let cases = [
            ("64Mi", 64 * 1024 * 1024),
            ("1G", 1_000_000_000),
            ("512M", 512_000_000),
            ("1.5Gi", 1_610_612_736),
            ("1048576", 1_048_576),
            ("+1Ki", 1024),
            ("1k", 1000),
            ("2e3", 2000),
            ("1E6", 1_000_000),
            ("0.5", 1),   // rounds up
            ("1500m", 2), // rounds up
            ("0", 0),
            ("8Ei", 8 << 60),
            (".5Ki", 512),
            (" 10Mi ", 10 << 20),
        ];
        for (input, want) in cases {
            assert_eq!(parse_bytes(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_invalid_quantities() {
        assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
        assert_eq!(parse_bytes("Mi"), Err(QuantityError::NoDigits));
        assert_eq!(parse_bytes("."), Err(QuantityError::NoDigits));
        assert_eq!(parse_bytes("-1Mi"), Err(QuantityError::Negative));
        assert_eq!(
            parse_bytes("64MB"),
            Err(QuantityError::UnknownSuffix("MB".into()))
        );
        assert_eq!(parse_bytes("1.2.3"), Err(QuantityError::Malformed));
        assert_eq!(parse_bytes("16Ei"), Err(QuantityError::TooLarge));
        assert_eq!(parse_bytes("1e99"), Err(QuantityError::TooLarge));
        assert_eq!(
            parse_bytes("99999999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            parse_bytes("1ex"),
            Err(QuantityError::UnknownSuffix("ex".into()))
        );
    }
}
