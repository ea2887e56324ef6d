//! `JsonBody<T>`: the JSON body extractor of every write. It reads the body like
//! `web::Json` (size limit, content type, read bound; 400/408/413/415 through
//! `error::json_error`), then takes numbers the way JSON Schema does: a number with a zero
//! fractional part (`5.0`, `1e3`) is an integer, so an `integer` field accepts it as the
//! OpenAPI document promises (up to 2^53, where floats stop being exact; beyond, integers must
//! be written as integers). A body of the wrong shape is a 422 naming the problem.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ApiError, FieldError};

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Rewrites every integral float that fits an `i64` as an integer.
fn integral_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                // Only where every integer is exact in f64: a literal beyond i64 (say
                // -9223372036854775809) is parsed as a float and rounded, and must not come
                // back as an in-range integer.
                const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
                if f.fract() == 0.0 && (-EXACT..=EXACT).contains(&f) {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_numbers),
        Value::Object(m) => m.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let raw = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            let mut v = raw.await?.into_inner();
            if let Some(field) = crate::schema::text::first_nul(&v, "body") {
                return Err(ApiError::Validation {
                    detail: format!("invalid {field}: must not contain the NUL character (U+0000)"),
                    errors: vec![FieldError {
                        field,
                        reason: "must not contain the NUL character (U+0000)".into(),
                    }],
                }
                .into());
            }
            integral_numbers(&mut v);
            serde_json::from_value(v).map(JsonBody).map_err(|e| {
                ApiError::Validation {
                    detail: format!("invalid body: {e}"),
                    errors: vec![FieldError {
                        field: "body".into(),
                        reason: e.to_string(),
                    }],
                }
                .into()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_floats_become_integers_and_others_stay() {
        let mut v = json!({"a": 5.0, "b": [1e3, 2.5], "c": {"d": -0.0}, "e": 1e30, "f": 7});
        integral_numbers(&mut v);
        assert_eq!(v, json!({"a": 5, "b": [1000, 2.5], "c": {"d": 0}, "e": 1e30, "f": 7}));
        let mut out_of_range: Value = serde_json::from_str("-9223372036854775809").unwrap_or_default();
        integral_numbers(&mut out_of_range);
        assert!(out_of_range.is_f64(), "{out_of_range}");
    }
}
