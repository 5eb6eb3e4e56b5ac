//! Users, linked accounts and balances: registering users and opening accounts (admin),
//! linking an account at a bank, reading balances from the banks.

use strife_common::limits::{validate_id, MAX_TEXT_BYTES};
use strife_common::password::check_password;
use strife_common::Failure;
use strife_ledger::records::LinkedAccount;
use strife_proto::v1 as pb;

use super::convert::{linked_proto, money_proto};
use super::validate::{check_currency, check_money, check_name, check_text};
use super::Service;
use crate::auth::hash_password;
use crate::registry::bank_failure;
use crate::request::Call;
use crate::roles::Role;

impl Service {
    pub async fn register_user(
        &self,
        call: &Call,
        body: pb::RegisterUserRequest,
    ) -> Result<pb::User, Failure> {
        self.authorize(call, "RegisterUser")?;
        check_name("username", "user", &body.username)?;
        check_password(&body.username, &body.password)
            .map_err(|problem| Failure::invalid_field("password", problem))?;
        let username = body.username.clone();
        // argon2id is deliberately slow: hash on the blocking pool, then write.
        let password = body.password;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|error| Failure::internal("password hashing", error))??;
        self.store
            .insert_user(&username, Role::Client.as_str(), &hash)
            .await?;
        tracing::info!(%username, "user registered");
        Ok(pb::User {
            username,
            role: Role::Client.as_str().into(),
        })
    }

    pub async fn open_account(
        &self,
        call: &Call,
        body: pb::GatewayOpenAccountRequest,
    ) -> Result<pb::LinkedAccount, Failure> {
        self.authorize(call, "OpenAccount")?;
        let caller = &call.caller;
        check_name("username", "user", &body.username)?;
        check_name("bank_id", "bank", &body.bank_id)?;
        check_text("holder_name", &body.holder_name, MAX_TEXT_BYTES)?;
        let currency = check_currency("currency", &body.currency)?;
        let deposit_minor = match body.opening_deposit.as_ref() {
            None => 0,
            Some(deposit) => {
                let amount = check_money("opening_deposit", Some(deposit), true)?;
                if amount.currency != currency {
                    return Err(Failure::invalid_field(
                        "opening_deposit.currency",
                        format!(
                            "opening_deposit.currency must be the account's currency ({})",
                            currency.code
                        ),
                    ));
                }
                amount.amount_minor
            }
        };
        if !body.idempotency_key.is_empty() {
            validate_id("idempotency_key", &body.idempotency_key)?;
        }
        // The bank opens at most one account per request id, so a keyed retry (after a lost
        // reply, or a crash between the bank's answer and the link below) gets the same
        // account and deposit back, and finishes the link. Admin names contain no '/'.
        let request_id = if body.idempotency_key.is_empty() {
            strife_common::keys::new_key()
        } else {
            format!("{}/{}", caller.username, body.idempotency_key)
        };
        let name = body.username.clone();
        if self.store.user(&name).await?.is_none() {
            return Err(Failure::NotFound(format!(
                "user {} does not exist",
                body.username
            )));
        }
        let mut bank = self.bank_named(&body.bank_id).await?;
        let account = match bank
            .open_account(pb::OpenAccountRequest {
                request_id,
                owner: body.username.clone(),
                holder_name: body.holder_name.clone(),
                currency: currency.code.into(),
                opening_deposit_minor: deposit_minor,
            })
            .await
        {
            Ok(account) => account.into_inner(),
            // The request id is `<admin>/<key>`: the bank refusing it for another account is
            // the admin's key reused with other parameters.
            Err(status)
                if status.code() == tonic::Code::InvalidArgument
                    && !body.idempotency_key.is_empty() =>
            {
                return Err(Failure::invalid_field(
                    "idempotency_key",
                    format!(
                        "idempotency_key {:?} was already used to open a different account",
                        body.idempotency_key
                    ),
                ));
            }
            Err(status) => return Err(bank_failure(&body.bank_id, &status)),
        };
        let linked = LinkedAccount {
            username: body.username,
            bank_id: body.bank_id,
            account_number: account.account_number,
            currency: account.currency,
            holder_name: account.holder_name,
        };
        let stored = linked.clone();
        self.store.link_account(&stored).await?;
        tracing::info!(username = %linked.username, bank_id = %linked.bank_id, account = %linked.account_number, "account opened");
        Ok(linked_proto(&linked))
    }

    pub async fn link_account(
        &self,
        call: &Call,
        body: pb::LinkAccountRequest,
    ) -> Result<pb::LinkedAccount, Failure> {
        self.authorize(call, "LinkAccount")?;
        let caller = &call.caller;
        check_name("bank_id", "bank", &body.bank_id)?;
        validate_id("account_number", &body.account_number)?;
        check_text("holder_name", &body.holder_name, MAX_TEXT_BYTES)?;
        // Someone else's account answers exactly like one that does not exist, so account
        // numbers cannot be probed for existence.
        let not_found = || {
            Failure::NotFound(format!(
                "account {} not found at {}",
                body.account_number, body.bank_id
            ))
        };
        let mut bank = self.bank_named(&body.bank_id).await?;
        let account = match bank
            .get_balance(pb::GetBalanceRequest {
                account_number: body.account_number.clone(),
            })
            .await
        {
            Ok(account) => account.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Err(not_found()),
            Err(status) => return Err(bank_failure(&body.bank_id, &status)),
        };
        if account.owner != caller.username {
            return Err(not_found());
        }
        let holder_name = if body.holder_name.is_empty() {
            account.holder_name
        } else {
            bank.update_account_details(pb::UpdateAccountDetailsRequest {
                account_number: body.account_number.clone(),
                holder_name: body.holder_name.clone(),
            })
            .await
            .map_err(|status| bank_failure(&body.bank_id, &status))?
            .into_inner()
            .holder_name
        };
        let linked = LinkedAccount {
            username: caller.username.clone(),
            bank_id: body.bank_id,
            account_number: body.account_number,
            currency: account.currency,
            holder_name,
        };
        let stored = linked.clone();
        self.store.link_account(&stored).await?;
        Ok(linked_proto(&linked))
    }

    pub async fn get_balances(
        &self,
        call: &Call,
        body: pb::GetBalancesRequest,
    ) -> Result<pb::GetBalancesResponse, Failure> {
        self.authorize(call, "GetBalances")?;
        let caller = &call.caller;
        let target = if body.username.is_empty() {
            caller.username.clone()
        } else {
            check_name("username", "user", &body.username)?;
            body.username
        };
        if target != caller.username && caller.role != Role::Admin {
            return Err(Failure::PermissionDenied(
                "you may only see your own balances".into(),
            ));
        }
        let name = target.clone();
        let user = self.store.user(&name).await?;
        let accounts = self.store.accounts_of(&name).await?;
        if user.is_none() {
            return Err(Failure::NotFound(format!("user {target} does not exist")));
        }
        let lookups = accounts.iter().map(|linked| {
            let registry = &self.registry;
            async move {
                // A linked account's bank is one the network has: not registered now means
                // down (UNAVAILABLE), never unknown.
                let mut bank = registry.client(&linked.bank_id)?;
                let account = bank
                    .get_balance(pb::GetBalanceRequest {
                        account_number: linked.account_number.clone(),
                    })
                    .await
                    .map_err(|status| bank_failure(&linked.bank_id, &status))?
                    .into_inner();
                Ok::<_, Failure>(pb::AccountBalance {
                    bank_id: linked.bank_id.clone(),
                    account_number: linked.account_number.clone(),
                    balance: money_proto(account.balance_minor, &account.currency),
                    held: money_proto(account.held_minor, &account.currency),
                    available: money_proto(account.available_minor, &account.currency),
                })
            }
        });
        let balances = futures::future::try_join_all(lookups).await?;
        Ok(pb::GetBalancesResponse { accounts: balances })
    }
}
