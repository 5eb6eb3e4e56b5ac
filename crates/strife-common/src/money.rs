//! Money is an integer count of a currency's minor unit plus an ISO-4217 code. This module is
//! the one place that turns text like `12.50` into minor units and back; it never uses floats.

use std::fmt;

/// A currency Strife knows, with the number of decimals its minor unit has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    /// ISO-4217 alphabetic code, e.g. `USD`.
    pub code: &'static str,
    /// Decimals of the minor unit: 2 for USD (cents), 0 for JPY, 3 for KWD.
    pub exponent: u32,
}

/// The currencies Strife accepts. Kept small on purpose: an unknown code is an error, not a
/// guess about its exponent.
pub const CURRENCIES: &[Currency] = &[
    Currency {
        code: "USD",
        exponent: 2,
    },
    Currency {
        code: "EUR",
        exponent: 2,
    },
    Currency {
        code: "GBP",
        exponent: 2,
    },
    Currency {
        code: "CHF",
        exponent: 2,
    },
    Currency {
        code: "CAD",
        exponent: 2,
    },
    Currency {
        code: "AUD",
        exponent: 2,
    },
    Currency {
        code: "INR",
        exponent: 2,
    },
    Currency {
        code: "JPY",
        exponent: 0,
    },
    Currency {
        code: "KWD",
        exponent: 3,
    },
];

/// Why a currency code or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?} (known: USD, EUR, GBP, CHF, CAD, AUD, INR, JPY, KWD)")]
    UnknownCurrency(String),
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a number like 12.50")]
    NotANumber(String),
    #[error("amount {0:?} is negative; amounts must be positive")]
    Negative(String),
    #[error("amount must be greater than zero")]
    Zero,
    #[error(
        "amount {amount:?} has more than {exponent} decimal places, the most {currency} allows"
    )]
    TooPrecise {
        amount: String,
        currency: &'static str,
        exponent: u32,
    },
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

/// Looks up a currency by its (case-sensitive, upper-case) ISO code.
pub fn currency(code: &str) -> Result<Currency, MoneyError> {
    CURRENCIES
        .iter()
        .copied()
        .find(|currency| currency.code == code)
        .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
}

/// Parses a positive decimal amount (`12.50`, `12.5`, `12`) into minor units of `currency`.
/// Zero, negatives, junk, too many decimals and overflow past `i64` are all errors.
pub fn parse_amount(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let amount_minor = parse_amount_allow_zero(text, currency)?;
    if amount_minor == 0 {
        return Err(MoneyError::Zero);
    }
    Ok(amount_minor)
}

/// Like [`parse_amount`] but accepts zero (an opening deposit may be empty).
pub fn parse_amount_allow_zero(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(MoneyError::Empty);
    }
    if trimmed.starts_with('-') {
        return Err(MoneyError::Negative(trimmed.to_owned()));
    }
    let (whole, fraction) = match trimmed.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (trimmed, ""),
    };
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(MoneyError::NotANumber(trimmed.to_owned()));
    }
    if trimmed.ends_with('.') {
        return Err(MoneyError::NotANumber(trimmed.to_owned()));
    }
    let exponent = currency.exponent;
    if fraction.len() > exponent as usize {
        return Err(MoneyError::TooPrecise {
            amount: trimmed.to_owned(),
            currency: currency.code,
            exponent,
        });
    }
    let overflow = || MoneyError::Overflow(trimmed.to_owned());
    let mut amount_minor: i64 = 0;
    let padded_fraction = format!("{fraction:0<width$}", width = exponent as usize);
    for byte in whole.bytes().chain(padded_fraction.bytes()) {
        let digit = i64::from(byte - b'0');
        amount_minor = amount_minor
            .checked_mul(10)
            .and_then(|shifted| shifted.checked_add(digit))
            .ok_or_else(overflow)?;
    }
    Ok(amount_minor)
}

/// Formats minor units as a decimal with the currency's exponent: `1250` USD → `12.50`.
pub fn format_amount(amount_minor: i64, currency: Currency) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    if currency.exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u64.pow(currency.exponent);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = currency.exponent as usize
    )
}

/// An amount with its currency, displayed as `12.50 USD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl fmt::Display for Amount {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {}",
            format_amount(self.amount_minor, self.currency),
            self.currency.code
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        currency("USD").unwrap()
    }

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_amount("12.50", usd()), Ok(1250));
        assert_eq!(parse_amount("12.5", usd()), Ok(1250));
        assert_eq!(parse_amount("12", usd()), Ok(1200));
        assert_eq!(parse_amount("0.01", usd()), Ok(1));
        assert_eq!(parse_amount(" 7.00 ", usd()), Ok(700));
        assert_eq!(parse_amount("1234", currency("JPY").unwrap()), Ok(1234));
        assert_eq!(parse_amount("1.234", currency("KWD").unwrap()), Ok(1234));
    }

    #[test]
    fn rejects_bad_amounts_with_specific_errors() {
        assert!(matches!(
            parse_amount("-5", usd()),
            Err(MoneyError::Negative(_))
        ));
        assert_eq!(parse_amount("0", usd()), Err(MoneyError::Zero));
        assert_eq!(parse_amount("0.00", usd()), Err(MoneyError::Zero));
        assert!(matches!(
            parse_amount("1.234", usd()),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            parse_amount("1.5", currency("JPY").unwrap()),
            Err(MoneyError::TooPrecise { .. })
        ));
        for junk in [
            "abc", "1.2.3", "1e5", "NaN", "inf", ".5", "5.", "+5", "1,000", "١٢",
        ] {
            assert!(
                matches!(parse_amount(junk, usd()), Err(MoneyError::NotANumber(_))),
                "{junk}"
            );
        }
        assert_eq!(parse_amount("", usd()), Err(MoneyError::Empty));
        assert!(matches!(
            parse_amount("99999999999999999999", usd()),
            Err(MoneyError::Overflow(_))
        ));
        // i64::MAX minor units is 92233720368547758.07 USD; one cent more overflows.
        assert_eq!(parse_amount("92233720368547758.07", usd()), Ok(i64::MAX));
        assert!(matches!(
            parse_amount("92233720368547758.08", usd()),
            Err(MoneyError::Overflow(_))
        ));
    }

    #[test]
    fn zero_allowed_only_where_asked() {
        assert_eq!(parse_amount_allow_zero("0", usd()), Ok(0));
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_amount(1250, usd()), "12.50");
        assert_eq!(format_amount(5, usd()), "0.05");
        assert_eq!(format_amount(-5, usd()), "-0.05");
        assert_eq!(format_amount(i64::MIN, usd()), "-92233720368547758.08");
        assert_eq!(format_amount(1234, currency("JPY").unwrap()), "1234");
        let amount = Amount {
            amount_minor: 1250,
            currency: usd(),
        };
        assert_eq!(amount.to_string(), "12.50 USD");
        for minor in [1, 99, 100, 123_456, i64::MAX] {
            assert_eq!(parse_amount(&format_amount(minor, usd()), usd()), Ok(minor));
        }
    }

    #[test]
    fn unknown_currency_is_an_error() {
        assert!(matches!(
            currency("XXX"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(matches!(
            currency("usd"),
            Err(MoneyError::UnknownCurrency(_))
        ));
    }
}
