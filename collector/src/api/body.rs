//! JSON request bodies: [`JsonBody`] is the extractor every handler that reads a body uses,
//! so every way a body can be wrong (content type, size, syntax, a bad field) is answered as
//! `{error, field, detail}` with the field's JSON path, never as axum's plain-text rejection.
//!
//! It also refuses what a typed parse lets through and we do not: bytes after the JSON value
//! (`{"id":"r1"}garbage`), and strings no id, SKU or comment needs (a 1 MB "id" is stored,
//! logged and shown on every page that lists it): [`check`] runs before the typed parse.

use axum::extract::{FromRequest, OptionalFromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;
pub use stocksync_runtime::server::error::JsonBytes;

use super::AppError;

/// A JSON body of type `T` (`content-type: application/json`); `Option<JsonBody<T>>` for a
/// body that may be left out.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let JsonBytes(body) = <JsonBytes as FromRequest<S>>::from_request(req, state).await?;
        parse(&body).map(JsonBody)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, AppError> {
        match <JsonBytes as OptionalFromRequest<S>>::from_request(req, state).await? {
            Some(JsonBytes(body)) => parse(&body).map(|t| Some(JsonBody(t))),
            None => Ok(None),
        }
    }
}

/// [`check`], then the typed parse naming the JSON path of a bad value.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    check(body)?;
    Ok(stocksync_runtime::server::error::parse(body)?)
}

/// Longest string a collector request may carry: ids, SKUs, warehouses, comments.
pub const MAX_STRING_BYTES: usize = 4096;

/// Refuses trailing bytes and over-long strings, naming the JSON path. A body that is not
/// JSON at all passes here: the typed parse refuses it with the better message.
pub fn check(body: &[u8]) -> Result<(), AppError> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let Some(Ok(value)) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(AppError::unprocessable(
            "$".into(),
            "bytes after the JSON value: a request body is exactly one JSON value".into(),
        ));
    }
    match too_long(&value) {
        Some(path) => Err(AppError::unprocessable(
            path,
            format!("longer than {MAX_STRING_BYTES} bytes"),
        )),
        None => Ok(()),
    }
}

/// The JSON path of the first string (or key) over the limit.
fn too_long(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.len() > MAX_STRING_BYTES => Some("$".into()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| too_long(v).map(|p| format!("$[{i}]{}", &p[1..]))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.len() > MAX_STRING_BYTES {
                return Some("$".into());
            }
            too_long(v).map(|p| format!("$.{k}{}", &p[1..]))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(body: &str) -> Option<String> {
        check(body.as_bytes())
            .err()
            .and_then(|e| e.field().map(String::from))
    }

    #[test]
    fn one_value_with_short_strings_passes() {
        assert_eq!(field(r#" {"id":"r1","lines":[{"sku":"A"}]} "#), None);
        assert_eq!(field("not json"), None);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert_eq!(field(r#"{"id":"r1"}garbage"#).as_deref(), Some("$"));
        assert_eq!(field(r#"{"id":"r1"}{"id":"r2"}"#).as_deref(), Some("$"));
    }

    #[test]
    fn a_long_string_is_named_by_its_path() {
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let body = format!(r#"{{"lines":[{{"sku":"A"}},{{"sku":"{long}"}}]}}"#);
        assert_eq!(field(&body).as_deref(), Some("$.lines[1].sku"));
        assert_eq!(
            field(&format!(r#"{{"id":"{long}"}}"#)).as_deref(),
            Some("$.id")
        );
    }
}
