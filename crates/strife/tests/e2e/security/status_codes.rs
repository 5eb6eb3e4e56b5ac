//! The status-code table (README "Errors, as a gRPC client sees them"; docs/SPEC.md §7), as a
//! foreign client sees it: for every RPC of the gateway (client, admin and the banks' decision
//! query) and of a bank, each class of bad request — unknown method or service, oversized
//! message (also gzip-compressed: a small request that decompresses past the limit) or
//! metadata, unknown bank / user / account, a bad field, a wrong password, a locked
//! login — gets the documented code, a `google.rpc.ErrorInfo` (domain `strife`) with the
//! documented reason, and for a bad field a `google.rpc.BadRequest` naming it. Never `UNKNOWN`
//! or `INTERNAL` for a client's mistake.
//!
//! Table-driven over raw gRPC calls (path + encoded request), so a new RPC is a few new rows.
//! One network serves every row.

use std::time::Duration;

use strife_common::metadata::{PASSWORD_KEY, USER_KEY};
use strife_common::net::tls::ExpectedPeer;
use strife_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_prost::prost::bytes::{Buf, BufMut};
use tonic_prost::prost::Message;
use tonic_types::StatusExt;

use crate::support::network::{password_of, ManualNetwork, NetworkOptions};

/// Sends and receives messages as bytes, so one table can hold every RPC's request.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        destination: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        destination.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(
        &mut self,
        source: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, Status> {
        let length = source.remaining();
        Ok(Some(source.copy_to_bytes(length).to_vec()))
    }
}

/// Who makes a call, over which connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// The admin at the gateway (admin RPCs).
    Admin,
    /// A client at the gateway.
    Alice,
    /// A client whose name is locked after wrong passwords (right password from now on).
    Locked,
    /// A client with a wrong password (once: more would lock the name).
    WrongPassword,
    /// bank0 at the gateway (the decision query).
    Bank0,
    /// The gateway at bank0.
    AtBank,
}

/// What a row expects back.
#[derive(Debug, Clone, Copy)]
struct Expect {
    code: Code,
    reason: &'static str,
    /// For a bad field: the field the `BadRequest` names.
    field: Option<&'static str>,
}

const fn refused(code: Code, reason: &'static str) -> Expect {
    Expect {
        code,
        reason,
        field: None,
    }
}

const fn bad_field(field: &'static str) -> Expect {
    Expect {
        code: Code::InvalidArgument,
        reason: "invalid_argument",
        field: Some(field),
    }
}

const TOO_LARGE: Expect = refused(Code::ResourceExhausted, "too_large");
const UNIMPLEMENTED: Expect = refused(Code::Unimplemented, "unimplemented");
const NOT_FOUND: Expect = refused(Code::NotFound, "not_found");
const UNKNOWN_BANK: Expect = refused(Code::NotFound, "unknown_bank");
const LOCKED: Expect = refused(Code::ResourceExhausted, "resource_exhausted");
const WRONG_PASSWORD: Expect = refused(Code::Unauthenticated, "unauthenticated");
const UNAVAILABLE: Expect = refused(Code::Unavailable, "unavailable");
const ALREADY_EXISTS: Expect = refused(Code::AlreadyExists, "already_exists");
const PERMISSION_DENIED: Expect = refused(Code::PermissionDenied, "permission_denied");

/// One call and what it must answer.
struct Row {
    what: String,
    caller: Caller,
    path: String,
    body: Vec<u8>,
    /// Bytes of extra metadata to send.
    padding: usize,
    /// Send the message gzip-compressed.
    gzip: bool,
    expect: Expect,
}

fn row(
    what: impl Into<String>,
    caller: Caller,
    path: &str,
    body: impl Message,
    expect: Expect,
) -> Row {
    Row {
        what: what.into(),
        caller,
        path: path.to_owned(),
        body: body.encode_to_vec(),
        padding: 0,
        gzip: false,
        expect,
    }
}

/// A row for gateway method `method` (of `strife.v1.Gateway`).
fn gw(what: &str, caller: Caller, method: &str, body: impl Message, expect: Expect) -> Row {
    row(what, caller, &format!("{GATEWAY}{method}"), body, expect)
}

/// A row for bank method `method`, called by the gateway.
fn bk(what: &str, method: &str, body: impl Message, expect: Expect) -> Row {
    row(
        what,
        Caller::AtBank,
        &format!("{BANK}{method}"),
        body,
        expect,
    )
}

/// A valid protobuf message of about 1 MiB (one unknown length-delimited field): far over
/// every server's 64 KiB decoding limit.
fn one_mebibyte() -> Vec<u8> {
    let payload = 1 << 20;
    let mut body = Vec::with_capacity(payload + 8);
    // Field 1000, wire type 2 (length-delimited), as varints.
    encode_varint((1000 << 3) | 2, &mut body);
    encode_varint(payload as u64, &mut body);
    body.resize(body.len() + payload, b'x');
    body
}

fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn usd(amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: "USD".into(),
    })
}

fn pay(key: &str, to: &str, amount_minor: i64) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: to.into(),
        amount: usd(amount_minor),
        ..pb::PayRequest::default()
    }
}

fn open_account(username: &str, bank_id: &str) -> pb::GatewayOpenAccountRequest {
    pb::GatewayOpenAccountRequest {
        username: username.into(),
        bank_id: bank_id.into(),
        currency: "USD".into(),
        ..pb::GatewayOpenAccountRequest::default()
    }
}

fn link(bank_id: &str, account_number: &str) -> pb::LinkAccountRequest {
    pb::LinkAccountRequest {
        bank_id: bank_id.into(),
        account_number: account_number.into(),
        holder_name: String::new(),
    }
}

fn create_key(owner: &str, scopes: &[&str]) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        owner: owner.into(),
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        ..pb::CreateApiKeyRequest::default()
    }
}

fn authorizing(key: &str, change: &dyn Fn(&mut pb::AuthorizeRequest)) -> pb::AuthorizeRequest {
    let mut request = pb::AuthorizeRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor: 100,
            currency: "USD".into(),
        }),
        expires_in_seconds: 60,
        ..pb::AuthorizeRequest::default()
    };
    change(&mut request);
    request
}

fn list_refunds(payment_id: &str, page_token: &str) -> pb::ListRefundsRequest {
    pb::ListRefundsRequest {
        payment_id: payment_id.into(),
        page_size: 0,
        page_token: page_token.into(),
    }
}

fn capture(payment_id: &str) -> pb::CaptureRequest {
    pb::CaptureRequest {
        amount: None,
        payment_id: payment_id.into(),
    }
}

fn void(payment_id: &str) -> pb::VoidRequest {
    pb::VoidRequest {
        payment_id: payment_id.into(),
    }
}

fn refund(payment_id: &str, key: &str) -> pb::RefundRequest {
    pb::RefundRequest {
        payment_id: payment_id.into(),
        idempotency_key: key.into(),
        ..pb::RefundRequest::default()
    }
}

fn cap(bank_id: &str, currency: &str, cap_minor: Option<i64>) -> pb::SetNetDebitCapRequest {
    pb::SetNetDebitCapRequest {
        bank_id: bank_id.into(),
        currency: currency.into(),
        cap_minor,
    }
}

fn leg(payment_id: &str, role: pb::LegRole) -> pb::LegRequest {
    pb::LegRequest {
        settle_minor: 0,
        payment_id: payment_id.into(),
        role: role as i32,
    }
}

fn prepare(
    payment_id: &str,
    account_number: &str,
    amount: Option<pb::Money>,
) -> pb::PrepareRequest {
    pb::PrepareRequest {
        payment_id: payment_id.into(),
        role: pb::LegRole::Debit as i32,
        account_number: account_number.into(),
        amount,
        ..pb::PrepareRequest::default()
    }
}

const GATEWAY: &str = "/strife.v1.Gateway/";
const COORDINATOR: &str = "/strife.v1.Coordinator/";
const BANK: &str = "/strife.v1.Bank/";

/// Every gateway RPC a user calls with a password, a valid request for it, and who may call
/// it. (What each does with a valid request is other tests' business; here the valid request
/// only carries the oversized-metadata and locked-login rows.)
fn gateway_rpcs() -> Vec<(&'static str, Caller, Vec<u8>)> {
    vec![
        (
            "RegisterUser",
            Caller::Admin,
            pb::RegisterUserRequest {
                username: "zed".into(),
                password: password_of("zed"),
            }
            .encode_to_vec(),
        ),
        (
            "OpenAccount",
            Caller::Admin,
            open_account("alice", "bank0").encode_to_vec(),
        ),
        (
            "LinkAccount",
            Caller::Alice,
            link("bank0", "bank0-00000001").encode_to_vec(),
        ),
        (
            "GetBalances",
            Caller::Alice,
            pb::GetBalancesRequest::default().encode_to_vec(),
        ),
        ("Pay", Caller::Alice, pay("k1", "bob", 1).encode_to_vec()),
        (
            "ListHistory",
            Caller::Alice,
            pb::ListHistoryRequest::default().encode_to_vec(),
        ),
        (
            "GetPayment",
            Caller::Alice,
            pb::GetPaymentRequest {
                payment_id: "p".into(),
            }
            .encode_to_vec(),
        ),
        (
            "GetPaymentByKey",
            Caller::Alice,
            pb::GetPaymentByKeyRequest {
                idempotency_key: "k".into(),
            }
            .encode_to_vec(),
        ),
        (
            "WatchPayments",
            Caller::Alice,
            pb::WatchPaymentsRequest::default().encode_to_vec(),
        ),
        ("Refund", Caller::Alice, refund("p", "k").encode_to_vec()),
        (
            "ListRefunds",
            Caller::Alice,
            list_refunds("p", "").encode_to_vec(),
        ),
        (
            "ListPayments",
            Caller::Alice,
            pb::ListPaymentsRequest::default().encode_to_vec(),
        ),
        (
            "Authorize",
            Caller::Alice,
            authorizing("k", &|_| ()).encode_to_vec(),
        ),
        ("Capture", Caller::Alice, capture("p").encode_to_vec()),
        ("Void", Caller::Alice, void("p").encode_to_vec()),
        (
            "CreateApiKey",
            Caller::Alice,
            create_key("", &["payments:read"]).encode_to_vec(),
        ),
        (
            "ListApiKeys",
            Caller::Alice,
            pb::ListApiKeysRequest::default().encode_to_vec(),
        ),
        (
            "RevokeApiKey",
            Caller::Alice,
            pb::RevokeApiKeyRequest { key_id: "k".into() }.encode_to_vec(),
        ),
        (
            "SetNetDebitCap",
            Caller::Admin,
            cap("bank0", "USD", None).encode_to_vec(),
        ),
        (
            "GetPositions",
            Caller::Admin,
            pb::GetPositionsRequest::default().encode_to_vec(),
        ),
        (
            "ListSettlementWindows",
            Caller::Admin,
            pb::ListSettlementWindowsRequest::default().encode_to_vec(),
        ),
        // Windows that do not exist: should a row ever get through, it changes nothing.
        (
            "CloseSettlementWindow",
            Caller::Admin,
            pb::CloseSettlementWindowRequest { window_id: 999 }.encode_to_vec(),
        ),
        (
            "GetSettlementReport",
            Caller::Admin,
            pb::GetSettlementReportRequest { window_id: 1 }.encode_to_vec(),
        ),
        (
            "MarkSettled",
            Caller::Admin,
            pb::MarkSettledRequest { window_id: 999 }.encode_to_vec(),
        ),
    ]
}

/// Every bank RPC with a request for it.
fn bank_rpcs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "OpenAccount",
            pb::OpenAccountRequest {
                request_id: "r".into(),
                owner: "alice".into(),
                currency: "USD".into(),
                ..pb::OpenAccountRequest::default()
            }
            .encode_to_vec(),
        ),
        (
            "UpdateAccountDetails",
            pb::UpdateAccountDetailsRequest {
                account_number: "bank0-99999999".into(),
                holder_name: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "GetBalance",
            pb::GetBalanceRequest {
                account_number: "bank0-00000001".into(),
            }
            .encode_to_vec(),
        ),
        (
            "Prepare",
            prepare("p", "bank0-00000001", usd(1)).encode_to_vec(),
        ),
        ("Commit", leg("p", pb::LegRole::Debit).encode_to_vec()),
        ("Abort", leg("p", pb::LegRole::Debit).encode_to_vec()),
        ("GetLeg", leg("p", pb::LegRole::Debit).encode_to_vec()),
        (
            "ListJournal",
            pb::ListJournalRequest {
                account_number: "bank0-00000001".into(),
                ..pb::ListJournalRequest::default()
            }
            .encode_to_vec(),
        ),
        (
            "ListAccounts",
            pb::ListAccountsRequest::default().encode_to_vec(),
        ),
        (
            "PrepareBatch",
            pb::PrepareBatchRequest::default().encode_to_vec(),
        ),
        (
            "FinishBatch",
            pb::FinishBatchRequest::default().encode_to_vec(),
        ),
        ("LegBatch", pb::LegBatchRequest::default().encode_to_vec()),
    ]
}

/// The classes every RPC shares: an oversized message, oversized metadata; at the gateway
/// also a locked login.
fn every_rpc_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |service: &str, name: &str, caller: Caller, body: &[u8], passwords: bool| {
        let path = format!("{service}{name}");
        rows.push(Row {
            what: format!("{path}: 1 MiB message"),
            caller,
            path: path.clone(),
            body: one_mebibyte(),
            padding: 0,
            gzip: false,
            expect: TOO_LARGE,
        });
        rows.push(Row {
            what: format!("{path}: 1 MiB message, gzip-compressed (≈ 1 KiB on the wire)"),
            caller,
            path: path.clone(),
            body: one_mebibyte(),
            padding: 0,
            gzip: true,
            expect: TOO_LARGE,
        });
        rows.push(Row {
            what: format!("{path}: 20 KiB of metadata"),
            caller,
            path: path.clone(),
            body: body.to_vec(),
            padding: 20 * 1024,
            gzip: false,
            expect: TOO_LARGE,
        });
        if passwords {
            rows.push(Row {
                what: format!("{path}: locked login"),
                caller: Caller::Locked,
                path,
                body: body.to_vec(),
                padding: 0,
                gzip: false,
                expect: LOCKED,
            });
        }
    };
    for (name, caller, body) in gateway_rpcs() {
        add(GATEWAY, name, caller, &body, true);
    }
    let decision = pb::GetDecisionRequest {
        payment_id: "p".into(),
        bank_id: "bank0".into(),
    };
    add(
        COORDINATOR,
        "GetDecision",
        Caller::Bank0,
        &decision.encode_to_vec(),
        false,
    );
    for (name, body) in bank_rpcs() {
        add(BANK, name, Caller::AtBank, &body, false);
    }
    rows
}

/// The classes particular to each RPC: unknown method or service, unknown bank, user,
/// account, payment, window or leg, a bad field, a caller of the wrong role. `paid`: a
/// committed payment from alice to bob.
#[rustfmt::skip] // A table: one row per line reads best.
fn particular_rows(paid: &str) -> Vec<Row> {
    use Caller::{Admin, Alice, AtBank, Bank0, WrongPassword};
    let empty = pb::GetBalancesRequest::default;
    let coordinator = |name: &str| format!("{COORDINATOR}{name}");
    let register = |username: &str, password: &str| pb::RegisterUserRequest {
        username: username.into(),
        password: password.into(),
    };
    let open = |change: &dyn Fn(&mut pb::GatewayOpenAccountRequest)| {
        let mut request = open_account("alice", "bank0");
        change(&mut request);
        request
    };
    let balances = |username: &str| pb::GetBalancesRequest { username: username.into() };
    let paying = |key: &str, change: &dyn Fn(&mut pb::PayRequest)| {
        let mut request = pay(key, "bob", 1);
        change(&mut request);
        request
    };
    let payment = |id: &str| pb::GetPaymentRequest { payment_id: id.into() };
    let by_key = |key: &str| pb::GetPaymentByKeyRequest { idempotency_key: key.into() };
    let decision = |id: &str, bank: &str| pb::GetDecisionRequest {
        payment_id: id.into(),
        bank_id: bank.into(),
    };
    let bank_open = |change: &dyn Fn(&mut pb::OpenAccountRequest)| {
        let mut request = pb::OpenAccountRequest {
            request_id: "admin/status-table".into(),
            owner: "alice".into(),
            currency: "USD".into(),
            ..pb::OpenAccountRequest::default()
        };
        change(&mut request);
        request
    };
    let update = |number: &str, holder: &str| pb::UpdateAccountDetailsRequest {
        account_number: number.into(),
        holder_name: holder.into(),
    };
    let balance = |number: &str| pb::GetBalanceRequest { account_number: number.into() };
    let journal = |number: &str| pb::ListJournalRequest {
        account_number: number.into(),
        ..pb::ListJournalRequest::default()
    };
    let no_role = pb::PrepareRequest { role: 0, ..prepare("p", "bank0-00000001", usd(1)) };
    let eur = Some(pb::Money { amount_minor: 1, currency: "EUR".into() });
    let xyz = Some(pb::Money { amount_minor: 1, currency: "XYZ".into() });
    let foreign_token = pb::ListHistoryRequest { page_size: 0, page_token: "not-a-token".into() };
    let too_many_prepares = pb::PrepareBatchRequest {
        prepares: vec![prepare("p", "bank0-00000001", usd(1)); 257],
    };
    let finish = pb::LegDecision { leg: Some(leg("p", pb::LegRole::Debit)), commit: false };
    let too_many_decisions = pb::FinishBatchRequest { decisions: vec![finish.clone(); 257] };
    let too_many_prepares_alone = pb::LegBatchRequest {
        prepares: vec![prepare("p", "bank0-00000001", usd(1)); 257],
        decisions: Vec::new(),
    };
    let too_many_together = pb::LegBatchRequest {
        prepares: vec![prepare("p", "bank0-00000001", usd(1)); 128],
        decisions: vec![finish; 129],
    };
    let (debit, credit, unspecified) = (pb::LegRole::Debit, pb::LegRole::Credit, pb::LegRole::Unspecified);
    let since = |cursor: &str| pb::WatchPaymentsRequest { since: cursor.into() };
    let refunding = |payment_id: &str, key: &str, change: &dyn Fn(&mut pb::RefundRequest)| {
        let mut request = refund(payment_id, key);
        change(&mut request);
        request
    };
    let windows = |token: &str| pb::ListSettlementWindowsRequest { page_size: 0, page_token: token.into() };
    let close = |window_id: u64| pb::CloseSettlementWindowRequest { window_id };
    let report = |window_id: u64| pb::GetSettlementReportRequest { window_id };
    let settle = |window_id: u64| pb::MarkSettledRequest { window_id };
    vec![
        // Unknown methods and services, at the gateway (before any credential is read) and at
        // a bank (tonic's own answer, with Strife's details).
        gw("no such method", Alice, "NoSuchMethod", empty(), UNIMPLEMENTED),
        row("no such method", Bank0, &coordinator("Nope"), empty(), UNIMPLEMENTED),
        row("bank service at the gateway", Alice, &format!("{BANK}ListAccounts"), empty(), UNIMPLEMENTED),
        row("no such service", Alice, "/no.such.Service/Call", empty(), UNIMPLEMENTED),
        bk("no such method", "NoSuchMethod", empty(), UNIMPLEMENTED),
        row("coordinator service at a bank", AtBank, &coordinator("GetDecision"), empty(), UNIMPLEMENTED),
        row("no such service", AtBank, "/no.such.Service/Call", empty(), UNIMPLEMENTED),
        // A wrong password (any method: the auth layer answers before the handler).
        gw("wrong password", WrongPassword, "GetBalances", empty(), WRONG_PASSWORD),
        // Gateway: RegisterUser.
        gw("bad user name", Admin, "RegisterUser", register("a b", &password_of("zed")), bad_field("username")),
        gw("short password", Admin, "RegisterUser", register("zed", "short"), bad_field("password")),
        gw("existing user", Admin, "RegisterUser", register("alice", &password_of("alice")), ALREADY_EXISTS),
        // Gateway: OpenAccount.
        gw("unknown bank", Admin, "OpenAccount", open_account("alice", "bank9"), UNKNOWN_BANK),
        gw("unknown user", Admin, "OpenAccount", open_account("nobody", "bank0"), NOT_FOUND),
        gw("empty bank id", Admin, "OpenAccount", open_account("alice", ""), bad_field("bank_id")),
        gw("empty user name", Admin, "OpenAccount", open_account("", "bank0"), bad_field("username")),
        gw("unknown currency", Admin, "OpenAccount", open(&|r| r.currency = "XYZ".into()), bad_field("currency")),
        gw("negative deposit", Admin, "OpenAccount", open(&|r| r.opening_deposit = usd(-1)),
           bad_field("opening_deposit.amount_minor")),
        gw("deposit in another currency", Admin, "OpenAccount", open(&|r| r.opening_deposit = eur.clone()),
           bad_field("opening_deposit.currency")),
        gw("bad key", Admin, "OpenAccount", open(&|r| r.idempotency_key = "a b".into()), bad_field("idempotency_key")),
        gw("control character in holder name", Admin, "OpenAccount", open(&|r| r.holder_name = "A\u{1b}[31m".into()),
           bad_field("holder_name")),
        // Gateway: LinkAccount.
        gw("unknown bank", Alice, "LinkAccount", link("bank9", "bank9-00000001"), UNKNOWN_BANK),
        gw("unknown account", Alice, "LinkAccount", link("bank0", "bank0-99999999"), NOT_FOUND),
        gw("someone else's account", Alice, "LinkAccount", link("bank1", "bank1-00000001"), NOT_FOUND),
        gw("empty account number", Alice, "LinkAccount", link("bank0", ""), bad_field("account_number")),
        gw("bad bank id", Alice, "LinkAccount", link("../bank0", "x"), bad_field("bank_id")),
        // Gateway: GetBalances.
        gw("unknown user", Admin, "GetBalances", balances("nobody"), NOT_FOUND),
        gw("bad user name", Admin, "GetBalances", balances("../x"), bad_field("username")),
        gw("someone else's balances", Alice, "GetBalances", balances("bob"), PERMISSION_DENIED),
        // Gateway: Pay.
        gw("unknown recipient", Alice, "Pay", pay("k-nobody", "nobody", 1), NOT_FOUND),
        gw("unknown recipient bank", Alice, "Pay", paying("k-to9", &|r| r.to_bank_id = "bank9".into()), UNKNOWN_BANK),
        gw("unknown payer bank", Alice, "Pay", paying("k-from9", &|r| r.from_bank_id = "bank9".into()), UNKNOWN_BANK),
        gw("zero amount", Alice, "Pay", pay("k-zero", "bob", 0), bad_field("amount.amount_minor")),
        gw("no amount", Alice, "Pay", paying("k-none", &|r| r.amount = None), bad_field("amount")),
        gw("unknown currency", Alice, "Pay", paying("k-xyz", &|r| r.amount = xyz.clone()), bad_field("amount.currency")),
        gw("empty key", Alice, "Pay", pay("", "bob", 1), bad_field("idempotency_key")),
        gw("empty recipient", Alice, "Pay", pay("k-empty", "", 1), bad_field("to_username")),
        gw("paying yourself", Alice, "Pay", pay("k-self", "alice", 1), bad_field("to_username")),
        gw("bidi controls in memo", Alice, "Pay", paying("k-memo", &|r| r.memo = "\u{202E}gnp.exe".into()),
           bad_field("memo")),
        gw("metadata key with a space", Alice, "Pay",
           paying("k-meta", &|r| { r.metadata.insert("order id".into(), "1".into()); }), bad_field("metadata")),
        gw("metadata value with a newline", Alice, "Pay",
           paying("k-meta-v", &|r| { r.metadata.insert("order".into(), "1\n2".into()); }), bad_field("metadata.order")),
        gw("insufficient funds", Alice, "Pay", pay("k-poor", "bob", 1_000_000_000),
           refused(Code::FailedPrecondition, "insufficient_funds")),
        // Gateway: ListHistory, GetPayment, GetPaymentByKey.
        gw("foreign page token", Alice, "ListHistory", foreign_token, bad_field("page_token")),
        gw("unknown payment", Alice, "GetPayment", payment("no-such-payment"), NOT_FOUND),
        gw("empty payment id", Alice, "GetPayment", payment(""), bad_field("payment_id")),
        gw("unused key", Alice, "GetPaymentByKey", by_key("never-used"), NOT_FOUND),
        gw("empty key", Alice, "GetPaymentByKey", by_key(""), bad_field("idempotency_key")),
        // Gateway: WatchPayments (a stream; refusals come before its first event).
        gw("foreign cursor", Alice, "WatchPayments", since("not-a-cursor"), bad_field("since")),
        gw("negative cursor", Alice, "WatchPayments", since("-1"), bad_field("since")),
        // Gateway: Refund.
        gw("empty payment id", Alice, "Refund", refund("", "k-r"), bad_field("payment_id")),
        gw("empty key", Alice, "Refund", refund(paid, ""), bad_field("idempotency_key")),
        gw("zero amount", Alice, "Refund", refunding(paid, "k-r0", &|r| r.amount = usd(0)), bad_field("amount.amount_minor")),
        gw("control character in reason", Alice, "Refund", refunding(paid, "k-rr", &|r| r.reason = "a\u{7}b".into()),
           bad_field("reason")),
        gw("51 metadata entries", Alice, "Refund",
           refunding(paid, "k-rm", &|r| (0..51).for_each(|n| { r.metadata.insert(format!("k{n}"), String::new()); })),
           bad_field("metadata")),
        gw("unknown payment", Alice, "Refund", refund("no-such-payment", "k-r"), NOT_FOUND),
        gw("the payer, not the payee", Alice, "Refund", refund(paid, "k-payer"), PERMISSION_DENIED),
        gw("amount in another currency", Admin, "Refund", refunding(paid, "k-eur", &|r| r.amount = eur.clone()), bad_field("amount.currency")),
        // Gateway: ListPayments.
        gw("unknown status", Alice, "ListPayments", pb::ListPaymentsRequest { status: 9, ..Default::default() }, bad_field("status")),
        gw("bad currency", Alice, "ListPayments", pb::ListPaymentsRequest { currency: "usd!".into(), ..Default::default() }, bad_field("currency")),
        gw("another user's payments", Alice, "ListPayments", pb::ListPaymentsRequest { username: "bob".into(), ..Default::default() }, PERMISSION_DENIED),
        gw("foreign page token", Alice, "ListPayments", pb::ListPaymentsRequest { page_token: "nope".into(), ..Default::default() }, bad_field("page_token")),
        // Gateway: ListRefunds.
        gw("empty payment id", Alice, "ListRefunds", list_refunds("", ""), bad_field("payment_id")),
        gw("unknown payment", Alice, "ListRefunds", list_refunds("no-such-payment", ""), NOT_FOUND),
        gw("foreign page token", Alice, "ListRefunds", list_refunds(paid, "not-a-token"), bad_field("page_token")),
        // Gateway: Authorize, Capture, Void.
        gw("no expiry", Alice, "Authorize", authorizing("k-a0", &|r| r.expires_in_seconds = 0), bad_field("expires_in_seconds")),
        gw("expiry past 7 days", Alice, "Authorize", authorizing("k-a8", &|r| r.expires_in_seconds = 604_801), bad_field("expires_in_seconds")),
        gw("empty key", Alice, "Authorize", authorizing("", &|_| ()), bad_field("idempotency_key")),
        gw("zero amount", Alice, "Authorize", authorizing("k-az", &|r| r.amount = usd(0)), bad_field("amount.amount_minor")),
        gw("unknown payee", Alice, "Authorize", authorizing("k-au", &|r| r.to_username = "nobody".into()), NOT_FOUND),
        gw("empty payment id", Alice, "Capture", capture(""), bad_field("payment_id")),
        gw("unknown payment", Alice, "Capture", capture("no-such-payment"), NOT_FOUND),
        gw("a plain payment", Admin, "Capture", capture(paid), refused(Code::FailedPrecondition, "payment_not_authorized")),
        gw("empty payment id", Alice, "Void", void(""), bad_field("payment_id")),
        gw("unknown payment", Alice, "Void", void("no-such-payment"), NOT_FOUND),
        gw("a plain payment", Admin, "Void", void(paid), refused(Code::FailedPrecondition, "payment_not_authorized")),
        // Gateway: API keys.
        gw("no scopes", Alice, "CreateApiKey", create_key("", &[]), bad_field("scopes")),
        gw("unknown scope", Alice, "CreateApiKey", create_key("", &["payments:all"]), bad_field("scopes")),
        gw("a client's key with admin scope", Alice, "CreateApiKey", create_key("", &["admin"]), bad_field("scopes")),
        gw("a client's key with settlement scope", Alice, "CreateApiKey", create_key("", &["settlement:read"]), bad_field("scopes")),
        gw("for another user", Alice, "CreateApiKey", create_key("bob", &["payments:read"]), PERMISSION_DENIED),
        gw("for an unknown user", Admin, "CreateApiKey", create_key("nobody", &["payments:read"]), NOT_FOUND),
        gw("bad owner", Admin, "CreateApiKey", create_key("a b", &["payments:read"]), bad_field("owner")),
        gw("longer than three years", Alice, "CreateApiKey",
           pb::CreateApiKeyRequest { expires_in_seconds: 10 * 366 * 86_400, ..create_key("", &["payments:read"]) },
           bad_field("expires_in_seconds")),
        gw("another user's keys", Alice, "ListApiKeys", pb::ListApiKeysRequest { owner: "bob".into() }, PERMISSION_DENIED),
        gw("unknown key", Alice, "RevokeApiKey", pb::RevokeApiKeyRequest { key_id: "0123456789abcdef".into() }, NOT_FOUND),
        gw("empty key id", Alice, "RevokeApiKey", pb::RevokeApiKeyRequest::default(), bad_field("key_id")),
        // Gateway: the admin's settlement methods; a client calling one is refused by role.
        gw("a client", Alice, "SetNetDebitCap", cap("bank0", "USD", Some(1)), PERMISSION_DENIED),
        gw("bad bank id", Admin, "SetNetDebitCap", cap("a b", "USD", Some(1)), bad_field("bank_id")),
        gw("unknown bank", Admin, "SetNetDebitCap", cap("bank9", "USD", Some(1)), UNKNOWN_BANK),
        gw("unknown currency", Admin, "SetNetDebitCap", cap("bank0", "XYZ", Some(1)), bad_field("currency")),
        gw("negative cap", Admin, "SetNetDebitCap", cap("bank0", "USD", Some(-1)), bad_field("cap_minor")),
        gw("a client", Alice, "GetPositions", pb::GetPositionsRequest::default(), PERMISSION_DENIED),
        gw("a client", Alice, "ListSettlementWindows", windows(""), PERMISSION_DENIED),
        gw("foreign page token", Admin, "ListSettlementWindows", windows("not-a-token"), bad_field("page_token")),
        gw("a client", Alice, "CloseSettlementWindow", close(1), PERMISSION_DENIED),
        gw("unknown window", Admin, "CloseSettlementWindow", close(999), NOT_FOUND),
        gw("window id past i64", Admin, "CloseSettlementWindow", close(u64::MAX), NOT_FOUND),
        gw("a client", Alice, "GetSettlementReport", report(1), PERMISSION_DENIED),
        gw("no window id", Admin, "GetSettlementReport", report(0), bad_field("window_id")),
        gw("unknown window", Admin, "GetSettlementReport", report(999), NOT_FOUND),
        gw("a client", Alice, "MarkSettled", settle(1), PERMISSION_DENIED),
        gw("no window id", Admin, "MarkSettled", settle(0), bad_field("window_id")),
        gw("unknown window", Admin, "MarkSettled", settle(999), NOT_FOUND),
        gw("the open window", Admin, "MarkSettled", settle(1), refused(Code::FailedPrecondition, "window_open")),
        // Gateway: the banks' decision query.
        row("empty payment id", Bank0, &coordinator("GetDecision"), decision("", "bank0"), bad_field("payment_id")),
        row("another bank's name", Bank0, &coordinator("GetDecision"), decision("p", "bank1"), PERMISSION_DENIED),
        // Bank.
        bk("empty request id", "OpenAccount", bank_open(&|r| r.request_id.clear()), bad_field("request_id")),
        bk("empty owner", "OpenAccount", bank_open(&|r| r.owner.clear()), bad_field("owner")),
        bk("empty currency", "OpenAccount", bank_open(&|r| r.currency.clear()), bad_field("currency")),
        bk("negative deposit", "OpenAccount", bank_open(&|r| r.opening_deposit_minor = -1),
           bad_field("opening_deposit_minor")),
        bk("unknown account", "UpdateAccountDetails", update("bank0-99999999", ""), NOT_FOUND),
        bk("newline in holder name", "UpdateAccountDetails", update("bank0-00000001", "A\nB"), bad_field("holder_name")),
        bk("unknown account", "GetBalance", balance("bank0-99999999"), NOT_FOUND),
        bk("empty account number", "GetBalance", balance(""), bad_field("account_number")),
        bk("empty payment id", "Prepare", prepare("", "bank0-00000001", usd(1)), bad_field("payment_id")),
        bk("no amount", "Prepare", prepare("p", "bank0-00000001", None), bad_field("amount")),
        bk("zero amount", "Prepare", prepare("p", "bank0-00000001", usd(0)), bad_field("amount.amount_minor")),
        bk("empty account number", "Prepare", prepare("p", "", usd(1)), bad_field("account_number")),
        bk("no role", "Prepare", no_role, bad_field("role")),
        bk("unknown leg", "Commit", leg("no-such-payment", debit), NOT_FOUND),
        bk("empty payment id", "Commit", leg("", debit), bad_field("payment_id")),
        bk("no role", "Abort", leg("p", unspecified), bad_field("role")),
        bk("empty payment id", "Abort", leg("", credit), bad_field("payment_id")),
        bk("unknown leg", "GetLeg", leg("no-such-payment", credit), NOT_FOUND),
        bk("empty payment id", "GetLeg", leg("", credit), bad_field("payment_id")),
        bk("unknown account", "ListJournal", journal("bank0-99999999"), NOT_FOUND),
        bk("empty account number", "ListJournal", journal(""), bad_field("account_number")),
        bk("too many items", "PrepareBatch", too_many_prepares, bad_field("prepares")),
        bk("too many items", "FinishBatch", too_many_decisions, bad_field("decisions")),
        bk("too many prepares", "LegBatch", too_many_prepares_alone, bad_field("prepares")),
        bk("too many items together", "LegBatch", too_many_together, bad_field("decisions")),
    ]
}

/// The channels the rows use, one per caller.
struct Callers {
    admin: Channel,
    alice: Channel,
    bob: Channel,
    locked: Channel,
    bank0: Channel,
    at_bank: Channel,
}

impl Callers {
    fn new(network: &ManualNetwork) -> Self {
        let layout = network.network.layout();
        let to_gateway = |identity| {
            network
                .network
                .tls(&identity)
                .endpoint(
                    &network.gateway_address,
                    &ExpectedPeer::Gateway,
                    Duration::from_secs(20),
                )
                .unwrap()
                .connect_lazy()
        };
        let at_bank = network
            .network
            .tls(&layout.gateway_identity())
            .endpoint(
                &network.banks[0].address.to_string(),
                &ExpectedPeer::Bank("bank0".into()),
                Duration::from_secs(20),
            )
            .unwrap()
            .connect_lazy();
        Callers {
            admin: to_gateway(layout.user_identity("admin")),
            alice: to_gateway(layout.user_identity("alice")),
            bob: to_gateway(layout.user_identity("bob")),
            locked: to_gateway(layout.user_identity("carol")),
            bank0: to_gateway(layout.bank_identity("bank0")),
            at_bank,
        }
    }

    /// The channel and the credentials (user, password) of `caller`.
    fn of(&self, caller: Caller, admin_password: &str) -> (Channel, Option<(String, String)>) {
        let user = |name: &str, password: String| Some((name.to_owned(), password));
        match caller {
            Caller::Admin => (self.admin.clone(), user("admin", admin_password.to_owned())),
            Caller::Alice => (self.alice.clone(), user("alice", password_of("alice"))),
            Caller::Locked => (self.locked.clone(), user("carol", password_of("carol"))),
            Caller::WrongPassword => (
                self.bob.clone(),
                user("bob", "Not-the-password-at-all".into()),
            ),
            Caller::Bank0 => (self.bank0.clone(), None),
            Caller::AtBank => (self.at_bank.clone(), None),
        }
    }
}

/// One raw unary call.
async fn call(
    channel: Channel,
    path: &str,
    body: Vec<u8>,
    credentials: Option<(String, String)>,
    padding: usize,
) -> Result<Vec<u8>, Status> {
    call_maybe_compressed(channel, path, body, credentials, padding, false).await
}

/// [`call`], gzip-compressing the message when `gzip`.
async fn call_maybe_compressed(
    channel: Channel,
    path: &str,
    body: Vec<u8>,
    credentials: Option<(String, String)>,
    padding: usize,
    gzip: bool,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    grpc.ready()
        .await
        .map_err(|error| Status::unknown(format!("channel not ready: {error}")))?;
    let mut request = Request::new(body);
    if let Some((user, password)) = credentials {
        request
            .metadata_mut()
            .insert(USER_KEY, user.parse().unwrap());
        request
            .metadata_mut()
            .insert(PASSWORD_KEY, password.parse().unwrap());
    }
    if padding > 0 {
        let value = MetadataValue::try_from("p".repeat(padding)).unwrap();
        request.metadata_mut().insert("x-padding", value);
    }
    let streaming = path.ends_with("/WatchPayments");
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).unwrap();
    let answer = async {
        if streaming {
            // A refusal is the call's status; an answer is its first event.
            let mut events = grpc
                .server_streaming(request, path, RawCodec)
                .await?
                .into_inner();
            events
                .message()
                .await?
                .ok_or_else(|| Status::unknown("the stream ended without an event"))
        } else {
            grpc.unary(request, path, RawCodec)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    tokio::time::timeout(Duration::from_secs(20), answer)
        .await
        .map_err(|_| Status::deadline_exceeded("no answer in 20 s"))?
}

/// What is wrong with `status` as the answer `expect` describes, if anything.
fn check(status: &Status, expect: Expect) -> Result<(), String> {
    let code = status.code();
    if matches!(code, Code::Unknown | Code::Internal) {
        return Err(format!("a client mistake answered {code:?}"));
    }
    if code != expect.code {
        return Err(format!("code {code:?}, expected {:?}", expect.code));
    }
    let details = status
        .check_error_details()
        .map_err(|error| format!("grpc-status-details-bin does not decode: {error}"))?;
    let info = details.error_info().ok_or("no ErrorInfo")?;
    if info.domain != "strife" || info.reason != expect.reason {
        return Err(format!(
            "ErrorInfo {}/{}, expected strife/{}",
            info.domain, info.reason, expect.reason
        ));
    }
    let message = status.message();
    if message.is_empty() || message.contains("  ") {
        return Err(format!("message {message:?} is empty or has a gap"));
    }
    match (expect.field, details.bad_request()) {
        (None, None) => Ok(()),
        (None, Some(bad)) => Err(format!("unexpected BadRequest {bad:?}")),
        (Some(_), None) => Err("no BadRequest".into()),
        (Some(field), Some(bad)) => {
            let [violation] = bad.field_violations.as_slice() else {
                return Err(format!("expected one violation: {bad:?}"));
            };
            if violation.field != field || !violation.description.contains(field) {
                return Err(format!("violation {violation:?}, expected field {field}"));
            }
            if info.metadata.get("field").map(String::as_str) != Some(field) {
                return Err(format!(
                    "ErrorInfo metadata {:?} lacks field",
                    info.metadata
                ));
            }
            if !message.starts_with(field) {
                return Err(format!("message {message:?} does not start with {field}"));
            }
            Ok(())
        }
    }
}

/// Runs `rows`; returns every row that answered otherwise, with what it answered.
async fn run(rows: Vec<Row>, callers: &Callers, admin_password: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for row in rows {
        let (channel, credentials) = callers.of(row.caller, admin_password);
        let outcome = call_maybe_compressed(
            channel,
            &row.path,
            row.body,
            credentials,
            row.padding,
            row.gzip,
        )
        .await;
        let verdict = match &outcome {
            Ok(_) => Err("succeeded".to_owned()),
            Err(status) => check(status, row.expect),
        };
        if let Err(problem) = verdict {
            wrong.push(format!(
                "{} {} ({:?}): {problem}; answered {:?}",
                row.path,
                row.what,
                row.caller,
                outcome.err()
            ));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_class_of_bad_request_with_its_documented_status() {
    let options = NetworkOptions {
        gateway_args: vec![
            "--lockout-threshold".into(),
            "3".into(),
            "--lockout-secs".into(),
            "900".into(),
        ],
        ..NetworkOptions::default()
    };
    let mut network =
        ManualNetwork::start_with(&["bank0", "bank1"], &["alice", "bob", "carol"], options).await;
    network.fund("alice", "bank0", "10.00").await;
    network.fund("bob", "bank1", "0").await;
    let (code, registered) = network.client("admin", &["register", "carol"]);
    assert_eq!(code, 0, "{registered}");
    let admin_password = strife_pki::read_admin_password(&network.network.layout()).unwrap();
    let callers = Callers::new(&network);

    // Within bounds, the same calls work: metadata under the limit, the right password.
    let fine = call(
        callers.alice.clone(),
        &format!("{GATEWAY}GetBalances"),
        pb::GetBalancesRequest::default().encode_to_vec(),
        Some(("alice".into(), password_of("alice"))),
        1024,
    )
    .await;
    assert!(fine.is_ok(), "{fine:?}");

    // Lock carol's name: wrong passwords up to the threshold.
    let (carol, _) = callers.of(Caller::Locked, &admin_password);
    for _ in 0..3 {
        let status = call(
            carol.clone(),
            &format!("{GATEWAY}GetBalances"),
            pb::GetBalancesRequest::default().encode_to_vec(),
            Some(("carol".into(), "Wrong-password-for-carol".into())),
            0,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    // A committed payment from alice to bob, for the refund rows.
    let paid = call(
        callers.alice.clone(),
        &format!("{GATEWAY}Pay"),
        pay("k-paid", "bob", 1).encode_to_vec(),
        Some(("alice".into(), password_of("alice"))),
        0,
    )
    .await
    .expect("alice pays bob");
    let paid = pb::Payment::decode(paid.as_slice()).unwrap().payment_id;

    let mut rows = every_rpc_rows();
    rows.extend(particular_rows(&paid));
    let count = rows.len();
    let wrong = run(rows, &callers, &admin_password).await;
    assert!(
        wrong.is_empty(),
        "{} of {count} rows answered otherwise:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // A refused payment names the payment it was recorded under, in ErrorInfo and trailer.
    let status = call(
        callers.alice.clone(),
        &format!("{GATEWAY}Pay"),
        pay("k-poor", "bob", 1_000_000_000).encode_to_vec(),
        Some(("alice".into(), password_of("alice"))),
        0,
    )
    .await
    .unwrap_err();
    let info = status.get_details_error_info().unwrap();
    let payment_id = info
        .metadata
        .get("payment_id")
        .expect("payment_id in ErrorInfo");
    assert_eq!(
        status
            .metadata()
            .get(strife_common::metadata::PAYMENT_ID_KEY)
            .and_then(|value| value.to_str().ok()),
        Some(payment_id.as_str())
    );
    assert_eq!(
        strife_common::failure::reason_of(&status).as_deref(),
        Some("insufficient_funds")
    );

    // A bank of the network that is down is UNAVAILABLE (retry), never unknown.
    network.banks[1].process.kill();
    let down = vec![
        row(
            "bank down",
            Caller::Admin,
            &format!("{GATEWAY}OpenAccount"),
            open_account("bob", "bank1"),
            UNAVAILABLE,
        ),
        row(
            "bank down",
            Caller::Alice,
            &format!("{GATEWAY}LinkAccount"),
            link("bank1", "bank1-00000001"),
            UNAVAILABLE,
        ),
        row(
            "bank down",
            Caller::Admin,
            &format!("{GATEWAY}GetBalances"),
            pb::GetBalancesRequest {
                username: "bob".into(),
            },
            UNAVAILABLE,
        ),
    ];
    let wrong = run(down, &callers, &admin_password).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
