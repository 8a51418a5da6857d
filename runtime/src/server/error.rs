//! The error shape both HTTP processes answer with, `{error, field, detail}`, and the
//! request extractors whose every rejection is that shape.
//!
//! Each process has one `AppError` (axum's error-handling example) that converts its own
//! store errors; what they share lives here: the rendering, the rule that an internal failure
//! is logged under a reference and never described to the client, the extractors for query
//! strings ([`Params`]), path parameters ([`Path`]) and JSON bodies ([`JsonBytes`],
//! [`parse`]), and the router fallbacks for unknown paths and methods. axum's own rejections
//! answer in plain text (or not at all), so no handler takes `axum::Json`,
//! `axum::extract::Query` or `axum::extract::Path` directly.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One refused request: the status and the JSON body `{error, field, detail}` (plus
/// `reference` for internal failures).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    /// The field at fault: a JSON path for bodies, a parameter or header name otherwise.
    pub field: Option<String>,
    pub detail: String,
    /// The log reference of an internal failure.
    pub reference: Option<String>,
}

impl Refusal {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        field: Option<String>,
        detail: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            error,
            field,
            detail: detail.into(),
            reference: None,
        }
    }

    /// An internal failure: `error` and its text go to the log under a fresh reference; the
    /// client gets `500 internal error` and the reference, never the text (paths, SQL, panics).
    pub fn internal(process: &str, error: &dyn Display) -> Refusal {
        let reference = next_reference();
        tracing::error!(%reference, %error, "request failed: internal error");
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal error",
            field: None,
            detail: format!(
                "internal error; the {process}'s log has the details under reference {reference}"
            ),
            reference: Some(reference),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.error, "field": self.field, "detail": self.detail});
        if let Some(reference) = self.reference {
            body["reference"] = reference.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// The router's fallback: a path no route serves is a `404` in the same shape.
pub async fn no_route(method: Method, uri: Uri) -> Refusal {
    let detail = format!(
        "no route for {method} {} (GET /openapi.json lists them)",
        uri.path()
    );
    Refusal::new(
        StatusCode::NOT_FOUND,
        "not found",
        Some("path".into()),
        detail,
    )
}

/// A path served for other methods only: `405` in the same shape.
pub async fn wrong_method(method: Method, uri: Uri) -> Refusal {
    let detail = format!(
        "{} does not take {method} (GET /openapi.json lists its methods)",
        uri.path()
    );
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        Some("method".into()),
        detail,
    )
}

/// `<process start in ms, hex>-<n>`: unique across restarts, short enough to read out.
fn next_reference() -> String {
    static START: LazyLock<u128> = LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}-{}", *START, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A query string whose parameters are all understood: an unknown one (a filter this
/// endpoint does not support) is a `400` naming it, never silently ignored. Use with
/// `#[serde(deny_unknown_fields)]` on `T`.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Params(t))
            .map_err(|e| {
                let detail = e.body_text();
                // "... unknown field `warehouse`, expected ..." -> `warehouse`
                let field = detail.split('`').nth(1).unwrap_or("query").to_string();
                Refusal::new(StatusCode::BAD_REQUEST, "bad request", Some(field), detail)
            })
    }
}

/// A path parameter: one that does not parse (`/v1/rejects/abc/retry`) is a `400` naming
/// the parameter, not axum's plain-text rejection.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(t)) => Ok(Path(t)),
            Err(e) => {
                // A lone parameter is parsed without its key: name it from the route.
                let keys: Vec<String> =
                    axum::extract::RawPathParams::from_request_parts(parts, state)
                        .await
                        .map(|p| p.iter().map(|(k, _)| k.to_string()).collect())
                        .unwrap_or_default();
                let field = match &e {
                    PathRejection::FailedToDeserializePathParams(f) => match f.kind() {
                        ErrorKind::ParseErrorAtKey { key, .. }
                        | ErrorKind::InvalidUtf8InPathParam { key }
                        | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
                        ErrorKind::ParseErrorAtIndex { index, .. } => keys.get(*index).cloned(),
                        _ if keys.len() == 1 => keys.first().cloned(),
                        _ => None,
                    },
                    _ => None,
                };
                let field = field.unwrap_or_else(|| "path".into());
                let error = if e.status().is_server_error() {
                    "internal error"
                } else {
                    "bad request"
                };
                Err(Refusal::new(e.status(), error, Some(field), e.body_text()))
            }
        }
    }
}

/// The bytes of a JSON request body: `content-type` must be `application/json` or another
/// `application/*+json` type (`415` otherwise), and a body over the size limit or cut off is
/// refused in the same JSON shape. Parsing is the handler's (or [`parse`]'s).
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        json_content_type(req.headers())?;
        read(req, state).await.map(JsonBytes)
    }
}

/// An optional JSON body (`Option<JsonBytes>`): `None` when the request has no body (only
/// whitespace) and no content type; a body is held to the same rules as [`JsonBytes`].
impl<S: Send + Sync> axum::extract::OptionalFromRequest<S> for JsonBytes {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Refusal> {
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        if typed {
            json_content_type(req.headers())?;
        }
        let body = read(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !typed {
            json_content_type(&HeaderMap::new())?;
        }
        Ok(Some(JsonBytes(body)))
    }
}

/// The typed value of a JSON body, or a `422` naming the JSON path of the bad value (`400`
/// when the bytes are not one JSON value).
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = json_path(&e.path().to_string());
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed JSON",
                Some(path),
                format!("malformed JSON: {inner}"),
            )
        } else {
            Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid request",
                Some(path),
                inner.to_string(),
            )
        }
    })?;
    de.end().map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed JSON",
            Some("$".into()),
            format!("bytes after the JSON value: a request body is exactly one JSON value ({e})"),
        )
    })?;
    Ok(value)
}

/// serde_path_to_error's `lines[1].sku` as a JSON path: `$.lines[1].sku`.
pub fn json_path(path: &str) -> String {
    match path {
        "." | "" => "$".into(),
        p if p.starts_with('[') => format!("${p}"),
        p => format!("$.{p}"),
    }
}

fn json_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        return Ok(());
    }
    let detail = if value.is_empty() {
        "no content-type: a JSON body needs `content-type: application/json`".to_string()
    } else {
        format!("`{value}` is not JSON: send `content-type: application/json`")
    };
    Err(Refusal::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported media type",
        Some("content-type".into()),
        detail,
    ))
}

async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Refusal> {
    Bytes::from_request(req, state).await.map_err(|e| {
        let status = e.status();
        let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body too large"
        } else {
            "unreadable body"
        };
        Refusal::new(status, error, None, e.body_text())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Refusal) -> (StatusCode, serde_json::Value) {
        let response = r.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_internal_failure_is_logged_under_a_reference_not_sent() {
        let e = "no such table: rejects at /var/lib/stocksync/ledger.db";
        let (status, body) = body(Refusal::internal("collector", &e)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal error");
        let reference = body["reference"].as_str().unwrap();
        assert!(body["detail"].as_str().unwrap().contains(reference));
        assert!(!body.to_string().contains("no such table"), "{body}");
    }

    #[test]
    fn parse_names_the_json_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Line {
            sku: String,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Order {
            lines: Vec<Line>,
        }
        let parse = |s: &'static str| parse::<Order>(s.as_bytes()).unwrap_err();
        let e = parse(r#"{"lines":[{"sku":"A"},{"sku":7}]}"#);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("$.lines[1].sku"));
        let e = parse(r#"{"lines":["#);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse(r#"{"lines":[]} x"#);
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("$"))
        );
    }

    #[test]
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            json_content_type(&h).map_err(|e| e.status)
        };
        assert!(with("application/json").is_ok());
        assert!(with("Application/JSON; charset=utf-8").is_ok());
        assert!(with("application/ld+json").is_ok());
        assert_eq!(with("text/plain"), Err(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        assert_eq!(
            with("application/x-www-form-urlencoded"),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert!(json_content_type(&HeaderMap::new()).is_err());
    }
}
