//! `ListPayments`: a caller's payments (the admin's: anyone's) that match a filter, newest
//! first, paged like the history (the same sealed page tokens: positions in the log).

use std::collections::HashMap;

use strife_common::limits::MAX_PAYMENT_METADATA_VALUE_BYTES;
use strife_common::Failure;
use strife_ledger::records::{Direction, PaymentFilter, PaymentStatus};
use strife_proto::v1 as pb;

use super::convert::payment_proto;
use super::cursor::CursorKind;
use super::validate::{check_currency, check_metadata, check_name, check_text};
use super::Service;
use crate::request::Call;
use crate::roles::Role;

impl Service {
    pub async fn list_payments(
        &self,
        call: &Call,
        body: pb::ListPaymentsRequest,
    ) -> Result<pb::ListPaymentsResponse, Failure> {
        self.authorize(call, "ListPayments")?;
        let caller = &call.caller;
        let filter = filter_of(&body, &caller.username, caller.role == Role::Admin)?;
        let asked = self.page(
            call,
            CursorKind::HistoryPage,
            body.page_size,
            &body.page_token,
        )?;
        // No filter but the user: the history's indexed read (a search scans the log).
        let page = match filter.only_user() {
            Some(username) => {
                self.store
                    .history(username, asked.before_seq, asked.size)
                    .await?
            }
            None => {
                self.store
                    .list_payments(&filter, asked.before_seq, asked.size)
                    .await?
            }
        };
        let next_page_token = self.next_page_token(call, &asked, &page);
        Ok(pb::ListPaymentsResponse {
            payments: page.iter().map(payment_proto).collect(),
            next_page_token,
        })
    }
}

/// The store's filter for a request by `caller`: a client's search is always of its own
/// payments; the admin's of everyone's unless it names a user.
fn filter_of(
    body: &pb::ListPaymentsRequest,
    caller: &str,
    is_admin: bool,
) -> Result<PaymentFilter, Failure> {
    let text = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    let username = match text(&body.username) {
        Some(named) if !is_admin && named != caller => {
            return Err(Failure::PermissionDenied(
                "only the admin may search another user's payments".into(),
            ))
        }
        Some(named) => {
            check_name("username", "user", &named)?;
            Some(named)
        }
        None if is_admin => None,
        None => Some(caller.to_owned()),
    };
    if let Some(counterparty) = text(&body.counterparty) {
        check_name("counterparty", "user", &counterparty)?;
    }
    if !body.currency.is_empty() {
        check_currency("currency", &body.currency)?;
    }
    let status = match pb::PaymentStatus::try_from(body.status) {
        Ok(pb::PaymentStatus::Unspecified) => None,
        Ok(pb::PaymentStatus::Pending) => Some(PaymentStatus::Pending),
        Ok(pb::PaymentStatus::Committed) => Some(PaymentStatus::Committed),
        Ok(pb::PaymentStatus::Aborted) => Some(PaymentStatus::Aborted),
        Ok(pb::PaymentStatus::Authorized) => Some(PaymentStatus::Authorized),
        Err(_) => {
            return Err(Failure::invalid_field(
                "status",
                "status is not a payment status",
            ))
        }
    };
    let direction = match pb::PaymentDirection::try_from(body.direction) {
        Ok(pb::PaymentDirection::Unspecified) => Direction::Any,
        Ok(pb::PaymentDirection::Received) => Direction::Received,
        Ok(pb::PaymentDirection::Sent) => Direction::Sent,
        Err(_) => {
            return Err(Failure::invalid_field(
                "direction",
                "direction is not a payment direction",
            ))
        }
    };
    let bound = |field: &str, value: i64| match value {
        0 => Ok(None),
        value if value > 0 => Ok(Some(value)),
        _ => Err(Failure::invalid_field(
            field,
            format!("{field} must not be negative"),
        )),
    };
    let created_from_unix_ms = bound("created_from_unix_ms", body.created_from_unix_ms)?;
    let created_before_unix_ms = bound("created_before_unix_ms", body.created_before_unix_ms)?;
    let min_amount_minor = bound("min_amount_minor", body.min_amount_minor)?;
    let max_amount_minor = bound("max_amount_minor", body.max_amount_minor)?;
    if let (Some(min), Some(max)) = (min_amount_minor, max_amount_minor) {
        if min > max {
            return Err(Failure::invalid_field(
                "min_amount_minor",
                "min_amount_minor is more than max_amount_minor",
            ));
        }
    }
    let metadata = match (text(&body.metadata_key), text(&body.metadata_value)) {
        (None, None) => None,
        (Some(key), value) => {
            let value = value.unwrap_or_default();
            check_metadata(
                "metadata_key",
                &HashMap::from([(key.clone(), value.clone())]),
            )?;
            check_text("metadata_value", &value, MAX_PAYMENT_METADATA_VALUE_BYTES)?;
            Some((key, value))
        }
        (None, Some(_)) => {
            return Err(Failure::invalid_field(
                "metadata_key",
                "metadata_key is required with metadata_value",
            ))
        }
    };
    Ok(PaymentFilter {
        username,
        direction,
        status,
        counterparty: text(&body.counterparty),
        created_from_unix_ms,
        created_before_unix_ms,
        min_amount_minor,
        max_amount_minor,
        currency: text(&body.currency),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::ListPaymentsRequest {
        pb::ListPaymentsRequest::default()
    }

    #[test]
    fn a_client_searches_its_own_payments_and_the_admin_anyones() {
        let own = filter_of(&request(), "alice", false).unwrap();
        assert_eq!(own.username.as_deref(), Some("alice"));
        let all = filter_of(&request(), "admin", true).unwrap();
        assert_eq!(all.username, None);
        let other = pb::ListPaymentsRequest {
            username: "bob".into(),
            ..request()
        };
        assert!(matches!(
            filter_of(&other, "alice", false),
            Err(Failure::PermissionDenied(_))
        ));
        assert_eq!(
            filter_of(&other, "admin", true)
                .unwrap()
                .username
                .as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn only_a_users_plain_listing_is_the_history() {
        let plain = filter_of(&request(), "alice", false).unwrap();
        assert_eq!(plain.only_user(), Some("alice"));
        let filtered = pb::ListPaymentsRequest {
            counterparty: "bob".into(),
            ..request()
        };
        assert_eq!(
            filter_of(&filtered, "alice", false).unwrap().only_user(),
            None
        );
        assert_eq!(
            filter_of(&request(), "admin", true).unwrap().only_user(),
            None
        );
    }

    #[test]
    fn bad_filters_are_refused_naming_the_field() {
        let field = |body: pb::ListPaymentsRequest| match filter_of(&body, "alice", false) {
            Err(Failure::InvalidField { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            field(pb::ListPaymentsRequest {
                status: 9,
                ..request()
            }),
            "status"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                direction: 7,
                ..request()
            }),
            "direction"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                currency: "XXQ".into(),
                ..request()
            }),
            "currency"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                min_amount_minor: 5,
                max_amount_minor: 4,
                ..request()
            }),
            "min_amount_minor"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                created_from_unix_ms: -1,
                ..request()
            }),
            "created_from_unix_ms"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                metadata_value: "x".into(),
                ..request()
            }),
            "metadata_key"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                metadata_key: "a b".into(),
                ..request()
            }),
            "metadata_key"
        );
        assert_eq!(
            field(pb::ListPaymentsRequest {
                counterparty: "a b".into(),
                ..request()
            }),
            "counterparty"
        );
    }
}
