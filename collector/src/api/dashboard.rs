//! The operator dashboard: one HTML page, a stylesheet and a script, compiled into the
//! binary and served by the collector itself (no build step, nothing from a CDN), so the
//! screen works wherever the API does. The script reads the same JSON API as everyone else.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// `GET /`: to the dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    summary = "To the dashboard",
    responses(
        (status = 303, description = "To /dashboard"),
    ),
)]
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// `GET /dashboard`.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    summary = "The operator dashboard",
    responses(
        (status = 200, description = "The operator dashboard", content_type = "text/html"),
    ),
)]
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /dashboard/style.css`.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    tag = "dashboard",
    summary = "Dashboard stylesheet",
    responses(
        (status = 200, description = "Its stylesheet", content_type = "text/css"),
    ),
)]
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// `GET /dashboard/app.js`.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "dashboard",
    summary = "Dashboard script",
    responses(
        (status = 200, description = "Its script", content_type = "text/javascript"),
    ),
)]
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}
