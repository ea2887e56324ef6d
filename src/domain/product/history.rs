//! What changed between two states of a product, field by field, for its change history.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::aggregate::Product;

/// Bookkeeping fields every change moves; the history names the event instead.
const NOT_CHANGES: &[&str] = &["version", "updated_at", "next_variant_id", "variants"];

/// One field that changed: where, the value before (null: there was none) and after (null:
/// there is none any more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field: `title`, `attributes`, or `variants[2].stock` for a variant's field and
    /// `variants[2]` for a whole variant added or removed (2 being the variant's id).
    pub field: String,
    /// Value before.
    pub before: Value,
    /// Value after.
    pub after: Value,
}

fn object(p: Option<&Product>) -> Map<String, Value> {
    match p.map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    }
}

fn variants(m: &Map<String, Value>) -> Vec<(u64, Map<String, Value>)> {
    m.get("variants")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    let o = v.as_object()?;
                    Some((o.get("id")?.as_u64()?, o.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn push_field_diff(out: &mut Vec<FieldChange>, prefix: &str, before: &Map<String, Value>, after: &Map<String, Value>) {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (b, a) = (
            before.get(k).cloned().unwrap_or(Value::Null),
            after.get(k).cloned().unwrap_or(Value::Null),
        );
        if prefix.is_empty() && NOT_CHANGES.contains(&k.as_str()) || b == a {
            continue;
        }
        out.push(FieldChange {
            field: format!("{prefix}{k}"),
            before: b,
            after: a,
        });
    }
}

/// The fields that differ from `before` (None: the product did not exist) to `after`, in
/// field order, variants by id after the product's own fields.
pub fn changes(before: Option<&Product>, after: &Product) -> Vec<FieldChange> {
    let (b, a) = (object(before), object(Some(after)));
    let mut out = Vec::new();
    push_field_diff(&mut out, "", &b, &a);
    let (bv, av) = (variants(&b), variants(&a));
    let mut ids: Vec<u64> = bv.iter().chain(av.iter()).map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let find = |vs: &[(u64, Map<String, Value>)]| vs.iter().find(|(i, _)| *i == id).map(|(_, m)| m.clone());
        match (find(&bv), find(&av)) {
            (Some(x), Some(y)) => push_field_diff(&mut out, &format!("variants[{id}]."), &x, &y),
            (x, y) => out.push(FieldChange {
                field: format!("variants[{id}]"),
                before: x.map_or(Value::Null, Value::Object),
                after: y.map_or(Value::Null, Value::Object),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{execute, CreateProduct, Money, NewVariant, ProductCommand};
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    fn run(state: Option<&Product>, c: ProductCommand) -> Product {
        execute(state, Uuid::nil(), &c, Utc::now()).expect("applies").0
    }

    #[test]
    fn a_creation_lists_every_field_from_nothing() {
        let p = run(
            None,
            ProductCommand::CreateProduct(CreateProduct::simple("A-1", "Lamp", None, 2)),
        );
        let c = changes(None, &p);
        let title = c.iter().find(|f| f.field == "title").expect("title");
        assert_eq!((&title.before, &title.after), (&Value::Null, &json!("Lamp")));
        let v = c.iter().find(|f| f.field == "variants[1]").expect("the variant");
        assert_eq!(v.after["sku"], json!("A-1"));
        assert!(c.iter().all(|f| f.field != "version" && f.field != "updated_at"));
    }

    #[test]
    fn a_variant_change_names_the_variant_and_field() {
        let p = run(
            None,
            ProductCommand::CreateProduct(CreateProduct::simple("A-1", "Lamp", None, 2)),
        );
        let q = run(
            Some(&p),
            ProductCommand::SetStock {
                stock: 7,
                variant_id: None,
            },
        );
        assert_eq!(
            changes(Some(&p), &q),
            vec![FieldChange {
                field: "variants[1].stock".into(),
                before: json!(2),
                after: json!(7)
            }]
        );
        let with_options = run(
            Some(&q),
            ProductCommand::UpdateVariant {
                variant_id: 1,
                change: crate::domain::product::UpdateVariant {
                    sku: None,
                    options: Some([("size".to_string(), "S".to_string())].into()),
                },
            },
        );
        let r = run(
            Some(&with_options),
            ProductCommand::AddVariant(NewVariant {
                sku: "A-2".into(),
                options: [("size".to_string(), "M".to_string())].into(),
                prices: vec![Money {
                    amount_minor: 5,
                    currency: "EUR".into(),
                }],
                stock: 0,
            }),
        );
        let c = changes(Some(&with_options), &r);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].field.as_str(), &c[0].before), ("variants[2]", &Value::Null));
    }
}
