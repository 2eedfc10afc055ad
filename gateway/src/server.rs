//! The request path, top to bottom: the router and its tower stack.
//!
//! ```text
//! drop client request-id -> new request-id -> propagate id -> trace -> route:
//!   /v1/*      -> authenticate (API key -> account, pin snapshot)
//!   /v1/chat/completions -> count traffic -> enforce_limits (budget, rpm, tpm) -> chat handler
//!   /admin/*   -> admin_only -> admin handlers (status, reload, invoices, traffic)
//!   /dashboard -> the operators' web page (static; it reads /admin/*)
//!   /metrics, /health
//! ```
//! The body limit is enforced where the body is read, so a 413 carries
//! OpenAI's error shape.

use std::sync::Arc;

use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use http::Uri;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::{admin, chat, dashboard, invoices, models};
use crate::app::App;
use crate::auth::{admin_only, authenticate, enforce_limits};
use crate::openai::ApiError;
use crate::traffic;

/// Builds the gateway's whole HTTP service.
pub fn router(app: Arc<App>) -> Router {
    let chat = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route_layer(from_fn_with_state(app.clone(), enforce_limits))
        .route_layer(from_fn_with_state(app.clone(), traffic::count));
    let openai = Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .merge(chat)
        .route_layer(from_fn_with_state(app.clone(), authenticate));
    let admin = Router::new()
        .route("/admin/status", get(admin::status))
        .route("/admin/route/explain", post(admin::explain))
        .route("/admin/reload", post(admin::reload_now))
        .route("/admin/audits", get(admin::audits))
        .route("/admin/sla", get(admin::sla))
        .route("/admin/traffic", get(admin::traffic))
        .route("/admin/policies", get(admin::policies))
        .route("/admin/invoices", get(invoices::list))
        .route("/admin/invoices/reconcile", get(invoices::reconcile))
        .route("/admin/invoices/proof/{request_id}", get(invoices::proof))
        .route("/admin/invoices/{batch}", get(invoices::show))
        .route("/admin/invoices/{batch}/receipts", get(invoices::receipts))
        .route_layer(from_fn_with_state(app.clone(), admin_only));

    Router::new()
        .merge(openai)
        .merge(admin)
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/{asset}", get(dashboard::asset))
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok" }))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .layer(
            ServiceBuilder::new()
                // The request id names the receipt, so the gateway alone makes it
                // (as OpenAI does): a client cannot collide with a billed request.
                .map_request(|mut req: axum::extract::Request| {
                    req.headers_mut().remove("x-request-id");
                    req
                })
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http()),
        )
        .with_state(app)
}

async fn render_metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let now = std::time::Instant::now();
    for node in app.state.load().nodes.iter() {
        metrics::gauge!(crate::metrics::NODE_AVAILABLE, "node" => node.id().to_string())
            .set(if node.available(now) { 1.0 } else { 0.0 });
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
