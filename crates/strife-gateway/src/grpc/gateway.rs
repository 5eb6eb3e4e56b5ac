//! `strife.v1.Gateway` over gRPC: each method takes the [`Call`] the auth and logging
//! layers attached to the request ([`crate::auth::AuthLayer`], [`super::request_log`]),
//! calls the one [`Service`] method of the same name, and turns its refusal into a status
//! (`strife_common::failure`). Nothing else happens here.

use std::sync::Arc;

use strife_common::Failure;
use strife_proto::v1::{self as pb, gateway_server::Gateway};
use tonic::{Request, Response, Status};

use crate::request::{Call, Caller, RequestLogSlot};
use crate::service::events::EventStream;
use crate::service::Service;

/// The gRPC face of [`Service`].
pub struct GatewayGrpc {
    service: Arc<Service>,
}

impl GatewayGrpc {
    pub fn new(service: Arc<Service>) -> Self {
        GatewayGrpc { service }
    }
}

/// The call a request makes: its caller (the auth layer put it there; a request without one
/// never reaches a handler) and its log slot.
fn call_of<T>(request: &Request<T>) -> Result<Call, Failure> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Failure::internal("auth", "request reached a handler without a caller"))?;
    let log = request
        .extensions()
        .get::<RequestLogSlot>()
        .cloned()
        .unwrap_or_default();
    Ok(Call { caller, log })
}

/// Payment events as gRPC streams them: a failure ends the stream with its status.
type GrpcEventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PaymentEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for GatewayGrpc {
    type WatchPaymentsStream = GrpcEventStream;

    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .register_user(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn open_account(
        &self,
        request: Request<pb::GatewayOpenAccountRequest>,
    ) -> Result<Response<pb::LinkedAccount>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .open_account(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn link_account(
        &self,
        request: Request<pb::LinkAccountRequest>,
    ) -> Result<Response<pb::LinkedAccount>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .link_account(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .get_balances(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn pay(&self, request: Request<pb::PayRequest>) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self.service.pay(&call, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self.service.refund(&call, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .authorize_payment(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn capture(
        &self,
        request: Request<pb::CaptureRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self.service.capture(&call, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn void(
        &self,
        request: Request<pb::VoidRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self.service.void(&call, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .create_api_key(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .list_api_keys(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .revoke_api_key(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .list_payments(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .list_refunds(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .list_history(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .get_payment(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_payment_by_key(
        &self,
        request: Request<pb::GetPaymentByKeyRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .get_payment_by_key(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn watch_payments(
        &self,
        request: Request<pb::WatchPaymentsRequest>,
    ) -> Result<Response<GrpcEventStream>, Status> {
        use futures::StreamExt;
        let call = call_of(&request)?;
        let events: EventStream = self
            .service
            .watch_payments(&call, request.into_inner())
            .await?;
        Ok(Response::new(Box::pin(
            events.map(|event| event.map_err(Status::from)),
        )))
    }

    async fn set_net_debit_cap(
        &self,
        request: Request<pb::SetNetDebitCapRequest>,
    ) -> Result<Response<pb::BankPosition>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .set_net_debit_cap(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_positions(
        &self,
        request: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .get_positions(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_settlement_windows(
        &self,
        request: Request<pb::ListSettlementWindowsRequest>,
    ) -> Result<Response<pb::ListSettlementWindowsResponse>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .list_settlement_windows(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn close_settlement_window(
        &self,
        request: Request<pb::CloseSettlementWindowRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .close_settlement_window(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_settlement_report(
        &self,
        request: Request<pb::GetSettlementReportRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .get_settlement_report(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn mark_settled(
        &self,
        request: Request<pb::MarkSettledRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let call = call_of(&request)?;
        let answer = self
            .service
            .mark_settled(&call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }
}
