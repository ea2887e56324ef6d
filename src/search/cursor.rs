//! The `after` cursor of deep paging (`search_after`): the sort values of the last hit of a
//! page, as JSON, in base64url without padding. Opaque to clients; the server checks a cursor
//! has the shape of the request's sort (its primary value, then the `id` tiebreaker) before it
//! reaches OpenSearch, so a malformed or foreign cursor is the caller's error (422), never an
//! OpenSearch 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// Longest cursor accepted, in characters (a real one is well under 100).
pub const MAX_CURSOR_CHARS: usize = 512;
/// JSON Schema pattern of a cursor: base64url without padding.
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]+$";
/// Longest tiebreaker (a product id) a cursor may carry.
const MAX_ID_CHARS: usize = 64;

/// What the first sort value of a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// The relevance score (a float).
    Score,
    /// A `long` or `date` field (an integer: minor units, epoch milliseconds).
    Long,
}

/// The sort values of a hit, `[primary, id]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor(Vec<Value>);

impl Cursor {
    /// The cursor after a hit with these sort values (`None` when they are not an array).
    pub fn from_sort(sort: Value) -> Option<Self> {
        match sort {
            Value::Array(values) if !values.is_empty() => Some(Self(values)),
            _ => None,
        }
    }

    /// The sort values, for `search_after`.
    pub fn values(&self) -> &[Value] {
        &self.0
    }

    /// The cursor as clients see it.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(Value::Array(self.0.clone()).to_string())
    }

    /// Reads a cursor made by [`encode`](Self::encode) for a request sorted by `primary`;
    /// the error says what is wrong with it.
    pub fn decode(text: &str, primary: Primary) -> Result<Self, String> {
        let n = text.chars().count();
        if n == 0 || n > MAX_CURSOR_CHARS {
            return Err(format!("must be 1 to {MAX_CURSOR_CHARS} characters"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("must be base64url without padding (the next_after of a page)".into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "is not base64url (the next_after of a page)".to_owned())?;
        let values: Vec<Value> =
            serde_json::from_slice(&bytes).map_err(|_| "is not a cursor this API made".to_owned())?;
        match values.as_slice() {
            [first, Value::String(id)] if fits(first, primary) && id.chars().count() <= MAX_ID_CHARS => {
                Ok(Self(values))
            }
            _ => Err("does not fit this sort order (a cursor is only valid for the query that made it)".into()),
        }
    }
}

/// The primary value's type: any number for a score, an integer for a field.
fn fits(v: &Value, primary: Primary) -> bool {
    match primary {
        Primary::Score => v.as_f64().is_some_and(f64::is_finite),
        Primary::Long => v.is_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cursor_reads_back_as_the_sort_values_it_was_made_from() {
        for (sort, primary) in [
            (json!([1_733_000_000_000_i64, "0192-a"]), Primary::Long),
            (json!([i64::MAX, "b"]), Primary::Long),
            (json!([0.287_682_1, "c"]), Primary::Score),
            // Parsed back one bit off before serde_json's float_roundtrip (the fuzz target
            // search_cursor found it): the page after would have started elsewhere.
            (
                serde_json::from_str("[100100100E300, \"001\"]").expect("json"),
                Primary::Score,
            ),
        ] {
            let c = Cursor::from_sort(sort.clone()).expect("array");
            let text = c.encode();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(
                Cursor::decode(&text, primary).expect("decodes").values(),
                sort.as_array().expect("a").as_slice()
            );
        }
    }

    #[test]
    fn malformed_or_foreign_cursors_are_refused() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        for (text, primary) in [
            (String::new(), Primary::Long),
            ("a".repeat(MAX_CURSOR_CHARS + 1), Primary::Long),
            ("abc=".into(), Primary::Long),
            ("a+b/".into(), Primary::Long),
            ("A".into(), Primary::Long),
            (enc(json!({"a": 1})), Primary::Long),
            (enc(json!([1.5, "x"])), Primary::Long),
            (enc(json!(["1", "x"])), Primary::Score),
            (enc(json!([1, 2])), Primary::Long),
            (enc(json!([1, "x", 3])), Primary::Long),
            (enc(json!([1, "x".repeat(65)])), Primary::Long),
        ] {
            assert!(Cursor::decode(&text, primary).is_err(), "{text}");
        }
    }
}
