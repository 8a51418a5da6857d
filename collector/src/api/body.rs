//! What a typed parse of a request body lets through and we do not: bytes after the JSON
//! value (`serde_path_to_error` over a `Deserializer` stops at the value's end, so
//! `{"id":"r1"}garbage` was taken), and strings no id, SKU or comment needs (a 1 MB "id" is
//! stored, logged and shown on every page that lists it). Every handler that reads a JSON
//! body calls [`check`] before its typed parse, which still names the field of a bad value.

use serde_json::Value;

use super::ApiError;

/// Longest string a collector request may carry: ids, SKUs, warehouses, comments.
pub const MAX_STRING_BYTES: usize = 4096;

/// Refuses trailing bytes and over-long strings, naming the JSON path. A body that is not
/// JSON at all passes here: the typed parse refuses it with the better message.
pub fn check(body: &[u8]) -> Result<(), ApiError> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let Some(Ok(value)) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(ApiError::unprocessable(
            "$".into(),
            "bytes after the JSON value: a request body is exactly one JSON value".into(),
        ));
    }
    match too_long(&value) {
        Some(path) => Err(ApiError::unprocessable(
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
        check(body.as_bytes()).err().and_then(|e| e.field)
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
