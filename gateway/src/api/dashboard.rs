//! `/dashboard`: the operators' web page. Its files are compiled into the
//! binary; the page holds no data of its own and reads the admin API, which
//! stays the source of truth.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

use crate::openai::ApiError;

const INDEX: &str = include_str!("../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../dashboard/dashboard.js");
const STYLE: &str = include_str!("../../dashboard/dashboard.css");

/// `GET /dashboard`: the page.
pub async fn page() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{asset}`: its script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "dashboard.js" => serve("text/javascript; charset=utf-8", SCRIPT),
        "dashboard.css" => serve("text/css; charset=utf-8", STYLE),
        _ => ApiError::not_found(&format!("/dashboard/{name}")).into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}
