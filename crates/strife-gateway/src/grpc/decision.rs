//! The `strife.v1.Coordinator` service: banks ask what was decided for a payment whose leg
//! they hold PREPARED past its deadline. Only bank certificates reach it (see
//! [`crate::roles`]); a bank may only ask in its own name.

use std::sync::Arc;

use strife_common::limits::validate_id;
use strife_common::Failure;
use strife_proto::v1::{self as pb, coordinator_server::Coordinator as CoordinatorService};
use tonic::{Request, Response, Status};

use crate::coordinator::Coordinator;
use crate::request::Caller;

/// Answers decision queries from the coordinator's log.
pub struct DecisionApi {
    coordinator: Arc<Coordinator>,
}

impl DecisionApi {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        DecisionApi { coordinator }
    }
}

#[tonic::async_trait]
impl CoordinatorService for DecisionApi {
    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::GetDecisionResponse>, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Failure::internal("auth", "decision query without a caller"))?;
        let body = request.into_inner();
        if body.bank_id != caller.username {
            return Err(
                Failure::PermissionDenied("a bank may only ask in its own name".into()).into(),
            );
        }
        validate_id("payment_id", &body.payment_id)?;
        let (decision, settle_minor) = self.coordinator.decision_for(&body.payment_id).await?;
        tracing::info!(payment_id = %body.payment_id, bank_id = %body.bank_id, ?decision, "decision query answered");
        Ok(Response::new(pb::GetDecisionResponse {
            payment_id: body.payment_id,
            decision: decision as i32,
            settle_minor,
        }))
    }
}
