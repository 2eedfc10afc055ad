//! `GET /v1/models` and `GET /v1/models/{id}`: what available nodes serve.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::app::App;
use crate::openai::ApiError;
use crate::state::Snapshot;

fn model_object(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "tollgate"})
}

/// Lists the models served by at least one available node.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(snap): Extension<Arc<Snapshot>>,
) -> Json<Value> {
    let data: Vec<Value> = snap
        .served_models(Instant::now())
        .iter()
        .map(|m| model_object(m, app.started_at_s))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model, or 404 `model_not_found`.
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(snap): Extension<Arc<Snapshot>>,
    Path(id): Path<String>,
) -> Response {
    if snap.served_models(Instant::now()).contains(&id) {
        Json(model_object(&id, app.started_at_s)).into_response()
    } else {
        ApiError::model_not_found(&id).into_response()
    }
}
