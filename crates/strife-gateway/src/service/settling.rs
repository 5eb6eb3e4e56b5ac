//! Settlement for the admin: net debit caps, positions, and settlement windows (list, close,
//! report, mark settled). The arithmetic is the ledger's (`strife_ledger::settlement`).

use strife_common::money;
use strife_common::Failure;
use strife_ledger::settlement;
use strife_proto::v1 as pb;

use super::convert::{position_proto, report_proto, window_proto};
use super::validate::{check_name, required_window_id, window_id};
use super::{Service, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::request::Call;

impl Service {
    pub async fn set_net_debit_cap(
        &self,
        call: &Call,
        body: pb::SetNetDebitCapRequest,
    ) -> Result<pb::BankPosition, Failure> {
        self.authorize(call, "SetNetDebitCap")?;
        let caller = &call.caller;
        check_name("bank_id", "bank", &body.bank_id)?;
        let currency = money::currency(&body.currency)
            .map_err(|error| Failure::invalid_field("currency", error.to_string()))?;
        settlement::check_cap(body.cap_minor)?;
        self.known_bank(&body.bank_id).await?;
        let position = self
            .store
            .set_net_debit_cap(&body.bank_id, currency.code, body.cap_minor)
            .await?;
        tracing::info!(admin = %caller.username, bank_id = %position.bank_id, currency = %position.currency, cap_minor = ?position.cap_minor, "net debit cap set");
        Ok(position_proto(&position))
    }

    pub async fn get_positions(
        &self,
        call: &Call,
        _body: pb::GetPositionsRequest,
    ) -> Result<pb::GetPositionsResponse, Failure> {
        self.authorize(call, "GetPositions")?;
        let positions = self.store.positions().await?;
        Ok(pb::GetPositionsResponse {
            positions: positions.iter().map(position_proto).collect(),
        })
    }

    pub async fn list_settlement_windows(
        &self,
        call: &Call,
        body: pb::ListSettlementWindowsRequest,
    ) -> Result<pb::ListSettlementWindowsResponse, Failure> {
        self.authorize(call, "ListSettlementWindows")?;
        let page_size = match body.page_size {
            0 => DEFAULT_PAGE_SIZE,
            asked => asked.min(MAX_PAGE_SIZE),
        };
        let before = if body.page_token.is_empty() {
            i64::MAX
        } else {
            body.page_token
                .parse::<i64>()
                .ok()
                .filter(|before| *before > 0)
                .ok_or_else(|| {
                    Failure::invalid_field(
                        "page_token",
                        "page_token is not one this server gave out",
                    )
                })?
        };
        let windows = self.store.windows(before, page_size).await?;
        let next_page_token = match windows.last() {
            Some(last) if windows.len() == page_size as usize => last.window_id.to_string(),
            _ => String::new(),
        };
        Ok(pb::ListSettlementWindowsResponse {
            windows: windows.iter().map(window_proto).collect(),
            next_page_token,
        })
    }

    pub async fn close_settlement_window(
        &self,
        call: &Call,
        body: pb::CloseSettlementWindowRequest,
    ) -> Result<pb::SettlementReport, Failure> {
        self.authorize(call, "CloseSettlementWindow")?;
        let caller = &call.caller;
        let expected = window_id("window_id", body.window_id)?;
        let report = self.store.close_window(expected).await?;
        tracing::info!(admin = %caller.username, window_id = report.window.window_id, "settlement window closed");
        report_proto(&report)
    }

    pub async fn get_settlement_report(
        &self,
        call: &Call,
        body: pb::GetSettlementReportRequest,
    ) -> Result<pb::SettlementReport, Failure> {
        self.authorize(call, "GetSettlementReport")?;
        let window_id = required_window_id(body.window_id)?;
        let report =
            self.store.window_report(window_id).await?.ok_or_else(|| {
                Failure::NotFound(format!("settlement window {window_id} not found"))
            })?;
        report_proto(&report)
    }

    pub async fn mark_settled(
        &self,
        call: &Call,
        body: pb::MarkSettledRequest,
    ) -> Result<pb::SettlementReport, Failure> {
        self.authorize(call, "MarkSettled")?;
        let caller = &call.caller;
        let window_id = required_window_id(body.window_id)?;
        let report = self.store.settle_window(window_id).await?;
        tracing::info!(admin = %caller.username, window_id, "settlement window marked settled");
        report_proto(&report)
    }
}
