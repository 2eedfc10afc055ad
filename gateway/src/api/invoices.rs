//! `/admin/invoices`: finance's questions over HTTP, answered as the
//! `tollgate invoices` CLI answers them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use tollgate_contracts::audit::{self, AuditError};
use tollgate_contracts::Chain;

use crate::app::App;
use crate::openai::ApiError;

fn map(e: AuditError) -> ApiError {
    match e {
        AuditError::UnknownRequest(_) | AuditError::UnknownBatch(_) => {
            ApiError::missing(e.to_string())
        }
        AuditError::NotInvoiced(_) => ApiError::invalid(None, "not_invoiced", e.to_string()),
        AuditError::Chain(_) => ApiError::unavailable(e.to_string()),
        AuditError::ProofRejected { .. } => {
            ApiError::invalid(None, "proof_rejected", e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

fn chain(app: &App) -> Result<&Chain, ApiError> {
    app.escrow.chain.get().ok_or_else(|| {
        ApiError::missing("This gateway settles nothing on chain (no chain section in its config).")
    })
}

/// `GET /admin/invoices`: on-chain invoices and the ledger's batches.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let batches = app
        .ledger
        .batches()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let onchain = audit::list(chain(&app)?).await.map_err(map)?;
    Ok(Json(json!({ "onchain": onchain, "ledger": batches })))
}

/// `GET /admin/invoices/{batch}`: one on-chain invoice.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(batch): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let invoice = audit::show(chain(&app)?, &batch).await.map_err(map)?;
    Ok(Json(json!(invoice)))
}

/// `GET /admin/invoices/{batch}/receipts`: the receipts a batch bills, in leaf order.
pub async fn receipts(
    State(app): State<Arc<App>>,
    Path(batch): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let receipts = app
        .ledger
        .batch_receipts(&batch)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if receipts.is_empty() {
        return Err(ApiError::missing(format!(
            "No batch {batch} in this gateway's ledger."
        )));
    }
    Ok(Json(json!({ "batch_id": batch, "receipts": receipts })))
}

/// `GET /admin/invoices/proof/{request_id}`: a receipt proved on chain.
pub async fn proof(
    State(app): State<Arc<App>>,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let proof = audit::verify(chain(&app)?, app.ledger.as_ref(), &request_id, None)
        .await
        .map_err(map)?;
    Ok(Json(json!(proof)))
}

/// `GET /admin/invoices/reconcile`: ledger against chain, to the wei.
pub async fn reconcile(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let report = audit::reconcile(chain(&app)?, app.ledger.as_ref())
        .await
        .map_err(map)?;
    Ok(Json(json!(report)))
}
