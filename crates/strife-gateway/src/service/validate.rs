//! Request checks that need no storage: fields, names, text, money, ids; one function per
//! kind of field, each refusing with the field's path (`Failure::invalid_field`). Every
//! transport's request reaches these through the service, so a rule exists once.

use std::collections::{BTreeMap, HashMap};

use strife_common::layout::validate_name;
use strife_common::limits::{
    validate_id, MAX_PAYMENT_METADATA_BYTES, MAX_PAYMENT_METADATA_ENTRIES,
    MAX_PAYMENT_METADATA_KEY_BYTES, MAX_PAYMENT_METADATA_VALUE_BYTES, MAX_TEXT_BYTES,
};
use strife_common::money::{self, Amount};
use strife_common::Failure;
use strife_ledger::records::{LinkedAccount, Metadata};
use strife_proto::v1 as pb;

/// Bidirectional formatting characters: not control characters to `char::is_control`, but
/// they reorder how the text around them is displayed, so a memo could make a statement or a
/// terminal show something other than what was stored ("Trojan Source").
fn is_bidi_control(character: char) -> bool {
    matches!(
        character,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), Failure> {
    if value.len() > max {
        return Err(Failure::invalid_field(
            field,
            format!("{field} must be at most {max} bytes"),
        ));
    }
    if value
        .chars()
        .any(|character| character.is_control() || is_bidi_control(character))
    {
        return Err(Failure::invalid_field(
            field,
            format!("{field} must not contain control or bidirectional formatting characters"),
        ));
    }
    Ok(())
}

/// A user or bank name in request field `field`; `kind` ("user", "bank") says which.
pub(crate) fn check_name(field: &str, kind: &str, value: &str) -> Result<(), Failure> {
    validate_name(kind, value).map_err(|problem| Failure::invalid_field(field, problem))
}

/// A currency code in request field `field`.
pub(crate) fn check_currency(field: &str, code: &str) -> Result<money::Currency, Failure> {
    if code.is_empty() {
        return Err(Failure::invalid_field(field, format!("{field} is empty")));
    }
    money::currency(code).map_err(|error| Failure::invalid_field(field, error.to_string()))
}

/// Validates the money in request field `field` (`amount`, `opening_deposit`); `allow_zero`
/// for opening deposits.
pub(crate) fn check_money(
    field: &str,
    money: Option<&pb::Money>,
    allow_zero: bool,
) -> Result<Amount, Failure> {
    let money =
        money.ok_or_else(|| Failure::invalid_field(field, format!("{field} is required")))?;
    let currency = check_currency(&format!("{field}.currency"), &money.currency)?;
    let smallest = if allow_zero { 0 } else { 1 };
    if money.amount_minor < smallest {
        let amount_field = format!("{field}.amount_minor");
        let rule = if allow_zero {
            "must not be negative"
        } else {
            "must be greater than zero"
        };
        return Err(Failure::invalid_field(
            &amount_field,
            format!("{amount_field} {rule}"),
        ));
    }
    Ok(Amount {
        amount_minor: money.amount_minor,
        currency,
    })
}

/// A payment's metadata from request field `field` (`metadata`): bounded in entries, key and
/// value length and total size (`strife_common::limits`), keys of letters, digits and
/// `_ - . :` only (they become parts of queries and of CSV headers later), values text as a
/// memo's. Checked in key order, so the first bad entry named is always the same one.
pub(crate) fn check_metadata(
    field: &str,
    metadata: &HashMap<String, String>,
) -> Result<(), Failure> {
    let checked: BTreeMap<&str, &str> = metadata
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    if checked.len() > MAX_PAYMENT_METADATA_ENTRIES {
        return Err(Failure::invalid_field(
            field,
            format!("{field} may have at most {MAX_PAYMENT_METADATA_ENTRIES} entries"),
        ));
    }
    let mut total_bytes = 0usize;
    for (key, value) in &checked {
        let key_allowed = |character: char| {
            character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '.' | ':')
        };
        if key.is_empty()
            || key.len() > MAX_PAYMENT_METADATA_KEY_BYTES
            || !key.chars().all(key_allowed)
        {
            return Err(Failure::invalid_field(
                field,
                format!(
                    "{field} key {key:?} must be 1 to {MAX_PAYMENT_METADATA_KEY_BYTES} letters, \
                     digits, '_', '-', '.' or ':'"
                ),
            ));
        }
        check_text(
            &format!("{field}.{key}"),
            value,
            MAX_PAYMENT_METADATA_VALUE_BYTES,
        )?;
        total_bytes += key.len() + value.len();
    }
    if total_bytes > MAX_PAYMENT_METADATA_BYTES {
        return Err(Failure::invalid_field(
            field,
            format!("{field} must be at most {MAX_PAYMENT_METADATA_BYTES} bytes of keys and values in all"),
        ));
    }
    Ok(())
}

/// Metadata as stored (ordered by key), once [`check_metadata`] passed it.
pub(crate) fn metadata_of(metadata: HashMap<String, String>) -> Metadata {
    metadata.into_iter().collect()
}

/// A window id from a request: 0 (unset) is `None`; one past i64 cannot exist.
pub(crate) fn window_id(field: &str, value: u64) -> Result<Option<i64>, Failure> {
    if value == 0 {
        return Ok(None);
    }
    i64::try_from(value)
        .map(Some)
        .map_err(|_| Failure::NotFound(format!("settlement window {value} not found ({field})")))
}

pub(crate) fn required_window_id(value: u64) -> Result<i64, Failure> {
    window_id("window_id", value)?
        .ok_or_else(|| Failure::invalid_field("window_id", "window_id is required (1 or more)"))
}

/// Checks a `Pay` request on its own (no storage): amount, key, names, memo, not to self.
/// Public so the fuzz targets exercise exactly what the handler runs.
pub fn validate_pay(caller: &str, body: &pb::PayRequest) -> Result<Amount, Failure> {
    let amount = check_money("amount", body.amount.as_ref(), false)?;
    validate_id("idempotency_key", &body.idempotency_key)?;
    check_name("to_username", "user", &body.to_username)?;
    check_text("memo", &body.memo, MAX_TEXT_BYTES)?;
    check_metadata("metadata", &body.metadata)?;
    for (field, bank) in [
        ("from_bank_id", &body.from_bank_id),
        ("to_bank_id", &body.to_bank_id),
    ] {
        if !bank.is_empty() {
            check_name(field, "bank", bank)?;
        }
    }
    if body.to_username == caller {
        return Err(Failure::invalid_field(
            "to_username",
            "to_username is yourself; you cannot pay yourself",
        ));
    }
    Ok(amount)
}

/// An authorization's `expires_in_seconds`, within the limits.
pub fn check_expires_in(expires_in_seconds: u32) -> Result<std::time::Duration, Failure> {
    use strife_common::limits::{MAX_AUTHORIZATION_SECONDS, MIN_AUTHORIZATION_SECONDS};
    if !(MIN_AUTHORIZATION_SECONDS..=MAX_AUTHORIZATION_SECONDS).contains(&expires_in_seconds) {
        return Err(Failure::invalid_field(
            "expires_in_seconds",
            format!(
                "expires_in_seconds must be {MIN_AUTHORIZATION_SECONDS} to \
                 {MAX_AUTHORIZATION_SECONDS} (7 days)"
            ),
        ));
    }
    Ok(std::time::Duration::from_secs(u64::from(
        expires_in_seconds,
    )))
}

/// Picks the account a payment uses: the one at `bank_id` (if named) in `currency`.
pub(crate) fn pick_account(
    accounts: &[LinkedAccount],
    username: &str,
    bank_id: &str,
    currency: &str,
) -> Result<LinkedAccount, Failure> {
    let at_bank: Vec<&LinkedAccount> = accounts
        .iter()
        .filter(|account| bank_id.is_empty() || account.bank_id == bank_id)
        .collect();
    if at_bank.is_empty() {
        let place = if bank_id.is_empty() {
            String::new()
        } else {
            format!(" at {bank_id}")
        };
        return Err(Failure::NotFound(format!(
            "{username} has no account{place}"
        )));
    }
    at_bank
        .iter()
        .find(|account| account.currency == currency)
        .map(|account| (*account).clone())
        .ok_or_else(|| {
            Failure::precondition(
                strife_common::reason::CURRENCY_MISMATCH,
                format!("{username} has no {currency} account"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memos_refuse_bidi_and_control_characters() {
        for bad in [
            "pay \u{202E}gnp.exe",
            "a\u{2066}b",
            "a\u{2069}b",
            "a\u{200E}b",
            "a\u{200F}b",
            "a\u{061C}b",
            "a\u{202A}b",
            "line\nbreak",
            "nul\0",
            "esc\u{1b}[31m",
            "c1\u{85}",
        ] {
            assert!(
                matches!(
                    check_text("memo", bad, MAX_TEXT_BYTES),
                    Err(Failure::InvalidField { ref field, .. }) if field == "memo"
                ),
                "{bad:?}"
            );
        }
        for good in ["rent for März", "عربى", "日本語 ok", ""] {
            assert_eq!(check_text("memo", good, MAX_TEXT_BYTES), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn every_pay_refusal_names_its_field() {
        let usd = |amount_minor: i64, currency: &str| {
            Some(pb::Money {
                amount_minor,
                currency: currency.into(),
            })
        };
        let good = pb::PayRequest {
            idempotency_key: "key-1".into(),
            to_username: "bob".into(),
            amount: usd(100, "USD"),
            ..pb::PayRequest::default()
        };
        assert!(validate_pay("alice", &good).is_ok());
        let tag = |request: &mut pb::PayRequest, key: &str, value: &str| {
            request.metadata.insert(key.into(), value.into());
        };
        let mut tagged = good.clone();
        tag(&mut tagged, "order_id", "A-1");
        tag(&mut tagged, "ns:customer.ref-2", "Zoë, 7 €");
        tag(&mut tagged, &"k".repeat(40), &"v".repeat(500));
        (0..47).for_each(|n| tag(&mut tagged, &format!("k{n}"), "x"));
        assert!(
            validate_pay("alice", &tagged).is_ok(),
            "50 entries at the bounds"
        );
        let with = |change: &dyn Fn(&mut pb::PayRequest)| {
            let mut request = good.clone();
            change(&mut request);
            request
        };
        let cases = [
            ("amount", with(&|r| r.amount = None)),
            ("amount.amount_minor", with(&|r| r.amount = usd(0, "USD"))),
            ("amount.amount_minor", with(&|r| r.amount = usd(-5, "USD"))),
            ("amount.currency", with(&|r| r.amount = usd(100, "XYZ"))),
            ("amount.currency", with(&|r| r.amount = usd(100, ""))),
            ("idempotency_key", with(&|r| r.idempotency_key.clear())),
            (
                "idempotency_key",
                with(&|r| r.idempotency_key = "a b".into()),
            ),
            ("to_username", with(&|r| r.to_username.clear())),
            ("to_username", with(&|r| r.to_username = "alice".into())),
            ("memo", with(&|r| r.memo = "\u{202E}gnp".into())),
            ("from_bank_id", with(&|r| r.from_bank_id = "../x".into())),
            ("to_bank_id", with(&|r| r.to_bank_id = "a b".into())),
            ("metadata", with(&|r| tag(r, "", "x"))),
            ("metadata", with(&|r| tag(r, "order id", "x"))),
            ("metadata", with(&|r| tag(r, &"k".repeat(41), "x"))),
            ("metadata.order", with(&|r| tag(r, "order", "a\nb"))),
            (
                "metadata.order",
                with(&|r| tag(r, "order", &"v".repeat(501))),
            ),
            (
                "metadata",
                with(&|r| (0..51).for_each(|n| tag(r, &format!("k{n}"), ""))),
            ),
            (
                "metadata",
                with(&|r| (0..20).for_each(|n| tag(r, &format!("k{n}"), &"v".repeat(450)))),
            ),
        ];
        for (expected, request) in cases {
            match validate_pay("alice", &request) {
                Err(Failure::InvalidField { field, message }) => {
                    assert_eq!(field, expected, "{message}");
                    assert!(message.contains(expected), "{message}");
                    assert!(!message.contains("  "), "{message}");
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
