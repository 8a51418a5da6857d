//! The operator dashboard: one HTML page, a stylesheet and a script, compiled into the
//! binary and served by the collector itself (no build step, nothing from a CDN), so the
//! screen works wherever the API does. The script reads the same JSON API as everyone else.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// `GET /`: to the dashboard.
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// `GET /dashboard`.
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /dashboard/style.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}
