//! `strife client payments`: the command line's filters as a `ListPayments` request.

use std::time::{SystemTime, UNIX_EPOCH};

use strife_common::money;
use strife_proto::v1 as pb;

use crate::args::{DirectionFilter, StatusFilter};

/// What `payments` was asked for, as typed.
pub struct Search {
    pub status: Option<StatusFilter>,
    pub direction: Option<DirectionFilter>,
    pub counterparty: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub currency: Option<String>,
    pub meta: Option<String>,
    pub of: Option<String>,
    pub limit: u32,
}

impl Search {
    /// The request, or what is wrong with a flag (named).
    pub fn request(&self) -> anyhow::Result<pb::ListPaymentsRequest> {
        let status = match self.status {
            None => pb::PaymentStatus::Unspecified,
            Some(StatusFilter::Pending) => pb::PaymentStatus::Pending,
            Some(StatusFilter::Authorized) => pb::PaymentStatus::Authorized,
            Some(StatusFilter::Committed) => pb::PaymentStatus::Committed,
            Some(StatusFilter::Aborted) => pb::PaymentStatus::Aborted,
        };
        let direction = match self.direction {
            None => pb::PaymentDirection::Unspecified,
            Some(DirectionFilter::Sent) => pb::PaymentDirection::Sent,
            Some(DirectionFilter::Received) => pb::PaymentDirection::Received,
        };
        let amount_currency = money::currency(self.currency.as_deref().unwrap_or("USD"))?;
        let amount = |flag: &str, text: &Option<String>| -> anyhow::Result<i64> {
            match text {
                None => Ok(0),
                Some(text) => money::parse_amount(text, amount_currency)
                    .map_err(|error| anyhow::anyhow!("{flag}: {error}")),
            }
        };
        let (metadata_key, metadata_value) = match &self.meta {
            None => (String::new(), String::new()),
            Some(entry) => match entry.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => anyhow::bail!("--meta takes KEY=VALUE, got {entry:?}"),
            },
        };
        Ok(pb::ListPaymentsRequest {
            page_size: self.limit,
            page_token: String::new(),
            status: status as i32,
            direction: direction as i32,
            counterparty: self.counterparty.clone().unwrap_or_default(),
            created_from_unix_ms: unix_ms("--since", &self.since)?,
            created_before_unix_ms: unix_ms("--until", &self.until)?,
            min_amount_minor: amount("--min", &self.min)?,
            max_amount_minor: amount("--max", &self.max)?,
            currency: self.currency.clone().unwrap_or_default(),
            metadata_key,
            metadata_value,
            username: self.of.clone().unwrap_or_default(),
        })
    }
}

/// A UTC time like `2026-12-08T00:00:00Z` (or `2026-12-08 00:00:00`) as Unix ms; 0 when absent.
fn unix_ms(flag: &str, text: &Option<String>) -> anyhow::Result<i64> {
    let Some(text) = text else { return Ok(0) };
    let at: SystemTime = humantime::parse_rfc3339_weak(text)
        .map_err(|error| anyhow::anyhow!("{flag}: {error} (e.g. 2026-12-08T00:00:00Z)"))?;
    let since_epoch = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("{flag}: before 1970"))?;
    Ok(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search() -> Search {
        Search {
            status: None,
            direction: None,
            counterparty: None,
            since: None,
            until: None,
            min: None,
            max: None,
            currency: None,
            meta: None,
            of: None,
            limit: 20,
        }
    }

    #[test]
    fn flags_become_the_request_and_bad_ones_are_named() {
        let request = Search {
            status: Some(StatusFilter::Committed),
            since: Some("2026-12-08T00:00:00Z".into()),
            min: Some("1.50".into()),
            meta: Some("order=A=1".into()),
            ..search()
        }
        .request()
        .unwrap();
        assert_eq!(request.status, pb::PaymentStatus::Committed as i32);
        assert_eq!(request.created_from_unix_ms, 1_796_688_000_000);
        assert_eq!(request.min_amount_minor, 150);
        assert_eq!(
            (
                request.metadata_key.as_str(),
                request.metadata_value.as_str()
            ),
            ("order", "A=1")
        );
        let bad = |search: Search| search.request().unwrap_err().to_string();
        assert!(bad(Search {
            since: Some("yesterday".into()),
            ..search()
        })
        .contains("--since"));
        assert!(bad(Search {
            max: Some("1.234".into()),
            ..search()
        })
        .contains("--max"));
        assert!(bad(Search {
            meta: Some("order".into()),
            ..search()
        })
        .contains("KEY=VALUE"));
    }
}
