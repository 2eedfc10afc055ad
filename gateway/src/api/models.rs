//! `GET /v1/models` and `GET /v1/models/{id}`: what available nodes serve,
//! and the aliases the caller may send for them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::Caller;
use crate::openai::ApiError;
use crate::state::Snapshot;

fn model_object(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "tollgate"})
}

/// Model ids `account` may send: served models, then aliases of served models, each once.
fn visible_models(snap: &Snapshot, account: &str) -> Vec<String> {
    let mut ids = snap.served_models(Instant::now());
    let aliases: Vec<String> = snap
        .loaded
        .policies
        .aliases_for(account)
        .into_iter()
        .filter(|a| ids.contains(&a.model))
        .map(|a| a.name.clone())
        .collect();
    for name in aliases {
        if !ids.contains(&name) {
            ids.push(name);
        }
    }
    ids
}

/// Lists the models served by at least one available node, and the caller's aliases for them.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Extension(snap): Extension<Arc<Snapshot>>,
) -> Json<Value> {
    let data: Vec<Value> = visible_models(&snap, &caller.account)
        .iter()
        .map(|m| model_object(m, app.started_at_s))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model (or alias), or 404 `model_not_found`.
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Extension(snap): Extension<Arc<Snapshot>>,
    Path(id): Path<String>,
) -> Response {
    if visible_models(&snap, &caller.account).contains(&id) {
        Json(model_object(&id, app.started_at_s)).into_response()
    } else {
        ApiError::model_not_found(&id).into_response()
    }
}
