//! The aggregate's variant rules: ids, SKU and option uniqueness, the last variant.

use super::tests::{create_cmd, created, given, t0};
use super::*;
use uuid::Uuid;

fn sized(sku: &str, size: &str) -> NewVariant {
    NewVariant {
        sku: sku.into(),
        options: [("size".to_string(), size.to_string())].into(),
        prices: vec![Money {
            amount_minor: 500,
            currency: "EUR".into(),
        }],
        stock: 1,
    }
}

fn with_sizes() -> Product {
    let mut c = create_cmd();
    c.sku = None;
    c.price = None;
    c.stock = 0;
    c.variants = vec![sized("T-S", "S"), sized("T-M", "M")];
    given(&[ProductCommand::CreateProduct(c)]).expect("created")
}

#[test]
fn variants_get_ids_in_order_and_the_next_id_is_never_reused() {
    let p = with_sizes();
    assert_eq!(p.variants.iter().map(|v| v.id).collect::<Vec<_>>(), vec![1, 2]);
    let (p, _) = execute(
        Some(&p),
        Uuid::nil(),
        &ProductCommand::RemoveVariant { variant_id: 2 },
        t0(),
    )
    .expect("removed");
    let (p, change) = execute(
        Some(&p),
        Uuid::nil(),
        &ProductCommand::AddVariant(sized("T-L", "L")),
        t0(),
    )
    .expect("added");
    assert_eq!(change.event_type(), "VariantAdded");
    assert_eq!(p.variants.last().map(|v| v.id), Some(3), "id 2 is not given again");
}

#[test]
fn two_variants_of_a_product_never_share_a_sku_or_option_values() {
    let p = with_sizes();
    assert_eq!(
        decide(Some(&p), &ProductCommand::AddVariant(sized("T-S", "XL"))),
        Err(DomainError::DuplicateSku("T-S".into()))
    );
    assert!(matches!(
        decide(Some(&p), &ProductCommand::AddVariant(sized("T-X", "M"))),
        Err(DomainError::VariantConflict(_))
    ));
    let mut other_names = sized("T-Y", "L");
    other_names.options = [("colour".to_string(), "red".to_string())].into();
    assert!(matches!(
        decide(Some(&p), &ProductCommand::AddVariant(other_names)),
        Err(DomainError::VariantConflict(_))
    ));
    let clash = ProductCommand::UpdateVariant {
        variant_id: 2,
        change: UpdateVariant {
            sku: None,
            options: Some([("size".to_string(), "S".to_string())].into()),
        },
    };
    assert!(matches!(decide(Some(&p), &clash), Err(DomainError::VariantConflict(_))));
}

#[test]
fn a_product_keeps_its_last_variant_and_commands_name_existing_ones() {
    let p = given(&created()).expect("created");
    assert!(matches!(
        decide(Some(&p), &ProductCommand::RemoveVariant { variant_id: 1 }),
        Err(DomainError::VariantConflict(_))
    ));
    assert_eq!(
        decide(
            Some(&p),
            &ProductCommand::SetStock {
                stock: 1,
                variant_id: Some(9)
            }
        ),
        Err(DomainError::VariantNotFound { variant_id: 9 })
    );
}

#[test]
fn prices_are_one_per_currency_and_publishing_needs_one_on_every_variant() {
    let p = with_sizes();
    let twice = vec![
        Money {
            amount_minor: 1,
            currency: "EUR".into(),
        },
        Money {
            amount_minor: 2,
            currency: "EUR".into(),
        },
    ];
    assert_eq!(
        decide(
            Some(&p),
            &ProductCommand::SetVariantPrices {
                variant_id: 1,
                prices: twice
            }
        )
        .unwrap_err()
        .field(),
        Some("prices")
    );
    let (p, _) = execute(
        Some(&p),
        Uuid::nil(),
        &ProductCommand::SetVariantPrices {
            variant_id: 2,
            prices: vec![],
        },
        t0(),
    )
    .expect("a draft's variant may lose its prices");
    let err = decide(Some(&p), &ProductCommand::PublishProduct).unwrap_err();
    assert_eq!(err.field(), Some("price"));
    assert!(err.to_string().contains("T-M"), "{err}");
}

#[test]
fn a_creation_takes_variants_or_the_single_sku_shorthand_not_both() {
    let mut c = create_cmd();
    c.variants = vec![sized("T-S", "S")];
    assert_eq!(
        decide(None, &ProductCommand::CreateProduct(c)).unwrap_err().field(),
        Some("variants")
    );
    let mut c = create_cmd();
    c.sku = None;
    c.price = None;
    c.stock = 0;
    assert_eq!(
        decide(None, &ProductCommand::CreateProduct(c)).unwrap_err().field(),
        Some("sku")
    );
}
