//! API keys (every user's own; the admin's for anyone) and the admin's resources: users,
//! accounts and settlement. Each handler calls the one service method gRPC calls.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use strife_proto::v1 as pb;
use utoipa::IntoParams;

use crate::error::{json_response, ApiError};
use crate::extract::{Api, Authenticated, JsonBody, OptionalIdempotencyKey};
use crate::model::{
    ApiKey, ApiKeyList, BankPosition, CreateApiKeyBody, CreatedApiKey, LinkedAccount,
    OpenAccountBody, Positions, RegisterUserBody, SetCapBody, SettlementReport, User, WindowList,
};
use crate::payments::{page_size, PageQuery};

/// Create an API key (for yourself; the admin for anyone). The whole key is in this answer
/// only.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    request_body = CreateApiKeyBody,
    responses(
        (status = 200, description = "The key; `secret` is shown this once.", body = CreatedApiKey),
        (status = 404, description = "No such owner.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn create_api_key(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    JsonBody(body): JsonBody<CreateApiKeyBody>,
) -> Result<Response, ApiError> {
    let request = pb::CreateApiKeyRequest {
        owner: body.owner,
        scopes: body.scopes,
        description: body.description,
        expires_in_seconds: body.expires_in_seconds,
    };
    let created = api.service.create_api_key(&call, request).await?;
    Ok(json_response(StatusCode::OK, &CreatedApiKey::from(created)))
}

/// Whose keys.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// Absent: yours (the admin: everyone's).
    pub owner: Option<String>,
}

/// List API keys, oldest first, without their secrets.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    params(KeysQuery),
    responses((status = 200, description = "The keys.", body = ApiKeyList)),
    security(("api_key" = ["admin"]))
)]
pub async fn list_api_keys(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Query(query): Query<KeysQuery>,
) -> Result<Response, ApiError> {
    let request = pb::ListApiKeysRequest {
        owner: query.owner.unwrap_or_default(),
    };
    let keys = api.service.list_api_keys(&call, request).await?;
    let list = ApiKeyList {
        data: keys.keys.into_iter().map(ApiKey::from).collect(),
    };
    Ok(json_response(StatusCode::OK, &list))
}

/// Revoke an API key: refused on every replica from the moment this answers.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{key_id}",
    tag = "api-keys",
    params(("key_id" = String, Path, description = "The key's id (the part after `sk_`, before the second `_`).")),
    responses(
        (status = 200, description = "The revoked key.", body = ApiKey),
        (status = 404, description = "No such key, or not yours.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn revoke_api_key(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let revoked = api
        .service
        .revoke_api_key(&call, pb::RevokeApiKeyRequest { key_id })
        .await?;
    Ok(json_response(StatusCode::OK, &ApiKey::from(revoked)))
}

/// Register a user (admin).
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "admin",
    request_body = RegisterUserBody,
    responses(
        (status = 200, description = "The user.", body = User),
        (status = 409, description = "The name is taken.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn register_user(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    JsonBody(body): JsonBody<RegisterUserBody>,
) -> Result<Response, ApiError> {
    let request = pb::RegisterUserRequest {
        username: body.username,
        password: body.password,
    };
    let user = api.service.register_user(&call, request).await?;
    Ok(json_response(StatusCode::OK, &User::from(user)))
}

/// Open an account at a bank for a user, with an opening deposit (admin).
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "admin",
    request_body = OpenAccountBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional (1–128 printable ASCII characters, no spaces): the same key opens the account once and answers it again on a retry.", pattern = "^[!-~]{1,128}$")),
    responses(
        (status = 200, description = "The account, linked to its owner.", body = LinkedAccount),
        (status = 404, description = "No such user or bank.", body = crate::model::ErrorBody),
        (status = 422, description = "The key was used with other parameters.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn open_account(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    OptionalIdempotencyKey(key): OptionalIdempotencyKey,
    JsonBody(body): JsonBody<OpenAccountBody>,
) -> Result<Response, ApiError> {
    let request = pb::GatewayOpenAccountRequest {
        username: body.username,
        bank_id: body.bank_id,
        currency: body.currency,
        opening_deposit: body.opening_deposit.map(Into::into),
        holder_name: body.holder_name,
        idempotency_key: key,
    };
    let account = api
        .service
        .open_account(&call, request)
        .await
        .map_err(|failure| ApiError::keyed(failure.into()))?;
    Ok(json_response(StatusCode::OK, &LinkedAccount::from(account)))
}

/// Every bank's position, reservation, cap and headroom per currency (admin).
#[utoipa::path(
    get,
    path = "/v1/settlement/positions",
    tag = "settlement",
    responses((status = 200, description = "The positions.", body = Positions)),
    security(("api_key" = ["settlement:read"]))
)]
pub async fn positions(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
) -> Result<Response, ApiError> {
    let positions = api
        .service
        .get_positions(&call, pb::GetPositionsRequest {})
        .await?;
    Ok(json_response(StatusCode::OK, &Positions::from(positions)))
}

/// Set or remove a bank's net debit cap in a currency (admin).
#[utoipa::path(
    put,
    path = "/v1/settlement/caps/{bank_id}/{currency}",
    tag = "settlement",
    request_body = SetCapBody,
    params(
        ("bank_id" = String, Path, description = "The bank."),
        ("currency" = String, Path, description = "ISO 4217 code."),
    ),
    responses(
        (status = 200, description = "The bank's position with its new cap.", body = BankPosition),
        (status = 404, description = "No such bank.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["settlement:write"]))
)]
pub async fn set_cap(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path((bank_id, currency)): Path<(String, String)>,
    JsonBody(body): JsonBody<SetCapBody>,
) -> Result<Response, ApiError> {
    let request = pb::SetNetDebitCapRequest {
        bank_id,
        currency,
        cap_minor: body.cap_minor,
    };
    let position = api.service.set_net_debit_cap(&call, request).await?;
    let positions = Positions::from(pb::GetPositionsResponse {
        positions: vec![position],
    });
    let position = positions.positions.into_iter().next();
    Ok(json_response(StatusCode::OK, &position))
}

/// Settlement windows, newest first (admin).
#[utoipa::path(
    get,
    path = "/v1/settlement/windows",
    tag = "settlement",
    params(PageQuery),
    responses((status = 200, description = "A page of windows.", body = WindowList)),
    security(("api_key" = ["settlement:read"]))
)]
pub async fn list_windows(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let request = pb::ListSettlementWindowsRequest {
        page_size: page_size(page.limit)?,
        page_token: page.starting_after.unwrap_or_default(),
    };
    let windows = api.service.list_settlement_windows(&call, request).await?;
    Ok(json_response(StatusCode::OK, &WindowList::from(windows)))
}

/// Close the open window and open the next, atomically (admin).
#[utoipa::path(
    post,
    path = "/v1/settlement/windows/{window_id}/close",
    tag = "settlement",
    params(("window_id" = u64, Path, description = "The window to close, which must be the open one.")),
    responses(
        (status = 200, description = "The closed window's report.", body = SettlementReport),
        (status = 404, description = "No such window.", body = crate::model::ErrorBody),
        (status = 422, description = "That window is not the open one (`window_not_open`).", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["settlement:write"]))
)]
pub async fn close_window(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(window_id): Path<u64>,
) -> Result<Response, ApiError> {
    let report = api
        .service
        .close_settlement_window(&call, pb::CloseSettlementWindowRequest { window_id })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &SettlementReport::from(report),
    ))
}

/// A window's report; the open window's is provisional (admin).
#[utoipa::path(
    get,
    path = "/v1/settlement/windows/{window_id}",
    tag = "settlement",
    params(("window_id" = u64, Path, description = "The window.")),
    responses(
        (status = 200, description = "The report.", body = SettlementReport),
        (status = 404, description = "No such window.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["settlement:read"]))
)]
pub async fn window_report(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(window_id): Path<u64>,
) -> Result<Response, ApiError> {
    let report = api
        .service
        .get_settlement_report(&call, pb::GetSettlementReportRequest { window_id })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &SettlementReport::from(report),
    ))
}

/// Record that a closed window's net amounts moved outside Strife (admin).
#[utoipa::path(
    post,
    path = "/v1/settlement/windows/{window_id}/settle",
    tag = "settlement",
    params(("window_id" = u64, Path, description = "A closed window.")),
    responses(
        (status = 200, description = "The settled window's report.", body = SettlementReport),
        (status = 404, description = "No such window.", body = crate::model::ErrorBody),
        (status = 422, description = "The window is open or settled already.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["settlement:write"]))
)]
pub async fn settle_window(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(window_id): Path<u64>,
) -> Result<Response, ApiError> {
    let report = api
        .service
        .mark_settled(&call, pb::MarkSettledRequest { window_id })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &SettlementReport::from(report),
    ))
}
