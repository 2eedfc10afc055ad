//! The request stack's access layers: API key -> account, rate and budget
//! limits, and the admin token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue};

use crate::app::{now_ms, App};
use crate::keys::hash_key;
use crate::limits::{Exceeded, RateStatus, Standing};
use crate::openai::ApiError;

/// Who is calling, as established by the API key.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The account billed.
    pub account: String,
    /// The key used, if any (anonymous access has none).
    pub key_id: Option<String>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

fn masked(key: &str) -> String {
    if key.len() <= 10 {
        return "***".into();
    }
    format!("{}***{}", &key[..6], &key[key.len() - 4..])
}

/// Resolves the API key to an account and pins the snapshot the request will use.
pub async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let snap = app.state.load_full();
    let caller = match bearer(req.headers()) {
        Some(key) => match snap.keys.get(&hash_key(key)) {
            Some(record) => Caller { account: record.account.clone(), key_id: Some(record.id.clone()) },
            None => {
                return ApiError::unauthorized(format!(
                    "Incorrect API key provided: {}. Ask your Tollgate operator for a key (`tollgate keys add`).",
                    masked(key)
                ))
                .into_response()
            }
        },
        None => match &snap.loaded.config.auth.anonymous_account {
            Some(account) => Caller { account: account.clone(), key_id: None },
            None => {
                return ApiError::unauthorized(
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
                .into_response()
            }
        },
    };
    if !snap.accounts.contains_key(&caller.account) {
        return ApiError::unauthorized(format!(
            "The account '{}' of this API key no longer exists.",
            caller.account
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(snap);
    next.run(req).await
}

/// Refuses requests over the account's budget or rate limits, and reports the
/// limits' standing in OpenAI's `x-ratelimit-*` headers.
pub async fn enforce_limits(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let snap = app.state.load_full();
    let Some(caller) = req.extensions().get::<Caller>() else {
        return ApiError::internal("limits layer reached without a caller").into_response();
    };
    let Some(account) = snap.accounts.get(&caller.account) else {
        return ApiError::unauthorized("unknown account").into_response();
    };
    if let Some(budget) = account.budget {
        let spent = app.spent(&account.id);
        if spent >= budget.0 {
            return ApiError::insufficient_quota(format!(
                "You exceeded your current quota: account '{}' has spent {} of its budget of {}.",
                account.id,
                tollgate_policies::Price(spent),
                budget
            ))
            .into_response();
        }
    }
    let standing = account
        .payer
        .as_deref()
        .and_then(|p| app.escrow.standing(p));
    if let Some((escrow, unsettled)) = standing {
        if unsettled >= escrow {
            return ApiError::insufficient_quota(format!(
                "You exceeded your current quota: the escrow of account '{}' ({}) does not cover its unsettled spend ({}). Deposit more fee tokens into the Settlement contract.",
                account.id,
                tollgate_policies::Price(escrow),
                tollgate_policies::Price(unsettled),
            ))
            .into_response();
        }
    }
    let verdict = match app.limiter.admit(account, now_ms()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(account = %account.id, "{e}");
            return ApiError::unavailable(format!(
                "The gateway cannot check the rate limits of account '{}' right now ({e}); please retry.",
                account.id
            ))
            .into_response();
        }
    };
    match verdict {
        Ok(status) => {
            let mut resp = next.run(req).await;
            add_rate_headers(resp.headers_mut(), &status);
            resp
        }
        Err((exceeded, status)) => {
            let err = match exceeded {
                Exceeded::Requests { limit, retry_after_s } => ApiError::rate_limited(
                    format!("Rate limit reached for account '{}' on requests per min: Limit {limit}. Please try again in {retry_after_s}s.", account.id),
                    retry_after_s,
                ),
                Exceeded::Tokens { limit, retry_after_s } => ApiError::rate_limited(
                    format!("Rate limit reached for account '{}' on tokens per min: Limit {limit}. Please try again in {retry_after_s}s.", account.id),
                    retry_after_s,
                ),
            };
            let mut resp = err.into_response();
            add_rate_headers(resp.headers_mut(), &status);
            resp
        }
    }
}

fn add_rate_headers(headers: &mut HeaderMap, status: &RateStatus) {
    use http::HeaderName as N;
    let rows = [
        (
            status.requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            status.tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ];
    for (standing, [limit, remaining, reset]) in rows {
        let Some(s): Option<Standing> = standing else {
            continue;
        };
        headers.insert(N::from_static(limit), HeaderValue::from(s.limit));
        headers.insert(N::from_static(remaining), HeaderValue::from(s.remaining));
        if let Ok(v) = HeaderValue::try_from(format!("{}s", s.reset_s)) {
            headers.insert(N::from_static(reset), v);
        }
    }
}

/// Guards `/admin/*` with the admin token when one is configured.
pub async fn admin_only(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let snap = app.state.load();
    if let Some(token) = &snap.loaded.config.admin.token {
        if bearer(req.headers()) != Some(token.as_str()) {
            return ApiError::forbidden(
                "The admin API needs the admin token (Authorization: Bearer ...).",
            )
            .into_response();
        }
    }
    drop(snap);
    next.run(req).await
}
