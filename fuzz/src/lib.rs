//! The bodies of Strife's fuzz targets, as plain functions: `cargo fuzz` drives them with
//! libFuzzer (see `fuzz_targets/`), and each asserts the invariants that must hold for any
//! input — no panic, and the documented relationships between parse, format and validation.

use prost::Message;
use strife_bank::participant::{self, AccountFunds, AccountView, Leg, PrepareIntent, Role};
use strife_common::{limits, money};
use strife_proto::v1 as pb;

/// Any text: parsing never panics; a parsed amount is positive and survives format → parse.
pub fn amount_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for currency in money::CURRENCIES {
        if let Ok(amount_minor) = money::parse_amount(text, *currency) {
            assert!(amount_minor > 0);
            let formatted = money::format_amount(amount_minor, *currency);
            assert_eq!(money::parse_amount(&formatted, *currency), Ok(amount_minor));
        }
        if let Ok(amount_minor) = money::parse_amount_allow_zero(text, *currency) {
            assert!(amount_minor >= 0);
        }
    }
}

/// Any bytes as any request: decoding and validating never panic, and what the validators
/// accept is within the documented bounds.
pub fn request_validators(data: &[u8]) {
    if let Ok(request) = pb::PrepareRequest::decode(data) {
        if let Ok((_, intent)) = strife_bank::service::validate_prepare(&request) {
            assert!(intent.amount_minor > 0);
            assert!(money::currency(&intent.currency).is_ok());
            assert!(!request.payment_id.is_empty() && request.payment_id.len() <= 128);
        }
    }
    if let Ok(request) = pb::PayRequest::decode(data) {
        if let Ok(amount) = strife_gateway::service::validate::validate_pay("fuzzer", &request) {
            assert!(amount.amount_minor > 0);
            assert_ne!(request.to_username, "fuzzer");
            assert!(!request.idempotency_key.is_empty() && request.idempotency_key.len() <= 128);
            assert!(request.metadata.len() <= limits::MAX_PAYMENT_METADATA_ENTRIES);
            let metadata_bytes: usize = request
                .metadata
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum();
            assert!(metadata_bytes <= limits::MAX_PAYMENT_METADATA_BYTES);
        }
    }
    let _ = pb::LegRequest::decode(data);
    let _ = pb::OpenAccountRequest::decode(data);
    let _ = pb::RegisterUserRequest::decode(data);
    let _ = pb::GatewayOpenAccountRequest::decode(data);
    let _ = pb::ListHistoryRequest::decode(data);
}

/// The HTTP API's JSON bodies: any bytes are read or refused (an `ApiError`), never a panic,
/// however deep or strange; a pay body that reads becomes the `PayRequest` gRPC would get and
/// goes through the same validation.
pub fn http_json(data: &[u8]) {
    use strife_http::extract::parse_json;
    use strife_http::model::{
        AuthorizeBody, CaptureBody, CreateApiKeyBody, LinkAccountBody, OpenAccountBody, PayBody,
        RefundBody, RegisterUserBody, SetCapBody,
    };
    if let Ok(body) = parse_json::<PayBody>(data) {
        let request = pb::PayRequest {
            idempotency_key: "fuzz-key".into(),
            to_username: body.to_username,
            amount: Some(body.amount.into()),
            from_bank_id: body.from_bank_id,
            to_bank_id: body.to_bank_id,
            memo: body.memo,
            metadata: body.metadata.into_iter().collect(),
        };
        if let Ok(amount) = strife_gateway::service::validate::validate_pay("fuzzer", &request) {
            assert!(amount.amount_minor > 0);
        }
    }
    let _ = parse_json::<RefundBody>(data);
    let _ = parse_json::<AuthorizeBody>(data);
    let _ = parse_json::<CaptureBody>(data);
    let _ = parse_json::<LinkAccountBody>(data);
    let _ = parse_json::<CreateApiKeyBody>(data);
    let _ = parse_json::<RegisterUserBody>(data);
    let _ = parse_json::<OpenAccountBody>(data);
    let _ = parse_json::<SetCapBody>(data);
}

/// Any sequence of prepare / commit (whole or in part) / abort on a few legs of one account:
/// the participant never lets available go negative, never fails to apply an effect it chose,
/// and the balance only moves by committed amounts.
pub fn participant_sequence(data: &[u8]) {
    let mut funds = AccountFunds {
        balance_minor: 10_000,
        held_minor: 0,
        incoming_minor: 0,
    };
    let mut legs: Vec<Option<Leg>> = vec![None; 8];
    let mut committed_delta: i64 = 0;
    for chunk in data.chunks(3) {
        let [operation, slot, amount] = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&1),
        ];
        let index = usize::from(slot) % legs.len();
        let role = if index % 2 == 0 {
            Role::Debit
        } else {
            Role::Credit
        };
        let intent = PrepareIntent {
            account_number: "a".into(),
            amount_minor: i64::from(amount) * 97,
            currency: "USD".into(),
            decision_deadline_unix_ms: 0,
            owner: String::new(),
        };
        let view = AccountView {
            owner: "a".into(),
            currency: "USD".into(),
            funds,
        };
        let step = match operation % 3 {
            0 if intent.amount_minor > 0 => {
                participant::prepare(legs[index].as_ref(), role, &intent, Some(&view))
            }
            0 => continue,
            // The whole prepared amount, or (an authorization captured in part) a part of
            // it chosen by the input, possibly out of range: refused, never applied wrongly.
            1 if operation & 0x10 == 0 => participant::commit(legs[index].as_ref(), 0),
            1 => participant::commit(legs[index].as_ref(), i64::from(amount) * 50 - 100),
            _ => participant::abort(legs[index].as_ref(), role),
        };
        let Ok(transition) = step else { continue };
        funds = transition
            .effect
            .apply(funds)
            .expect("an effect the participant chose must apply");
        committed_delta += transition.effect.balance_delta_minor();
        assert!(funds
            .available_minor()
            .is_some_and(|available| available >= 0));
        if transition.changed {
            legs[index] = Some(transition.leg);
        }
    }
    assert_eq!(funds.balance_minor, 10_000 + committed_delta);
}
