//! Text PostgreSQL can hold: its `text` and `jsonb` refuse the NUL character (U+0000), in keys
//! as in values. Every way in is checked with [`first_nul`] before anything reaches the
//! database, so a NUL is refused naming where it is, never a 500 and never a loop: an API body
//! (422, `http::json_body`) and a message's payload on `product.commands` (a rejected command,
//! `worker::commands`), even where the NUL is in a key no field reads.

use serde_json::Value;

/// The path (`root.payload.price`, `root.a[0]`) of the first key or string value holding a NUL
/// character, at any depth; a key's NUL is shown as `\u0000`.
pub fn first_nul(v: &Value, root: &str) -> Option<String> {
    walk(v, &mut root.to_owned())
}

fn walk(v: &Value, path: &mut String) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(path.clone()),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = walk(v, path);
            path.truncate(len);
            found
        }),
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            let len = path.len();
            path.push('.');
            path.push_str(&k.replace('\0', "\\u0000"));
            let found = if k.contains('\0') {
                Some(path.clone())
            } else {
                walk(v, path)
            };
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_is_found_in_keys_and_values_at_any_depth() {
        let at = |v: Value| first_nul(&v, "body");
        assert_eq!(at(json!({"title": "lamp", "n": [1, "x"]})), None);
        assert_eq!(at(json!({"title": "a\u{0}b"})).as_deref(), Some("body.title"));
        assert_eq!(
            at(json!({"payload": {"price": {"\u{0}x": 1, "currency": "EUR"}}})).as_deref(),
            Some("body.payload.price.\\u0000x")
        );
        assert_eq!(
            at(json!({"a": [{"b": ["ok", "no\u{0}"]}]})).as_deref(),
            Some("body.a[0].b[1]")
        );
    }
}
