//! Given events / When command / Then change or error.

use super::event;
use super::*;
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

pub(super) fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid date")
}

pub(super) fn create_cmd() -> CreateProduct {
    let mut c = CreateProduct::simple(
        "SKU-1",
        "Wireless mouse",
        Some(Money {
            amount_minor: 1999,
            currency: "USD".into(),
        }),
        5,
    );
    c.description = "Quiet clicks".into();
    c.category = "electronics".into();
    c.brand = "Logi".into();
    c.attributes = [("colour".to_string(), AttributeValue::from("black"))].into();
    c
}

/// The stock of the first variant.
pub(super) fn stock(p: &Product) -> i64 {
    p.variants[0].stock
}

/// Given the commands applied in order, the resulting state.
pub(super) fn given(cmds: &[ProductCommand]) -> Option<Product> {
    let id = Uuid::nil();
    let mut state = None;
    for c in cmds {
        let (next, _) = execute(state.as_ref(), id, c, t0()).expect("given command applies");
        state = Some(next);
    }
    state
}

pub(super) fn created() -> Vec<ProductCommand> {
    vec![ProductCommand::CreateProduct(create_cmd())]
}

#[test]
fn create_yields_a_draft_at_version_one() {
    let (p, change) = execute(None, Uuid::nil(), &created()[0], t0()).expect("created");
    assert_eq!(change.event_type(), "ProductCreated");
    assert_eq!(p.version, 1);
    assert_eq!(p.status, ProductStatus::Draft);
    assert_eq!(stock(&p), 5);
}

#[test]
fn create_trims_text_and_rejects_empty_title() {
    let mut c = create_cmd();
    c.title = "   ".into();
    let err = decide(None, &ProductCommand::CreateProduct(c)).unwrap_err();
    assert_eq!(err.field(), Some("title"));
}

#[test]
fn text_with_a_nul_byte_is_refused_naming_the_field() {
    let given = given(&created());
    let cmd = ProductCommand::UpdateProductDetails(UpdateProductDetails {
        title: Some("a\u{0}b".into()),
        ..Default::default()
    });
    let err = decide(given.as_ref(), &cmd).unwrap_err();
    assert_eq!(err.field(), Some("title"));
    assert!(err.to_string().contains("U+0000"), "{err}");
    let mut c = create_cmd();
    c.attributes = [("size".to_string(), AttributeValue::from("x\u{1}"))].into();
    assert_eq!(
        decide(None, &ProductCommand::CreateProduct(c)).unwrap_err().field(),
        Some("attributes.value")
    );
}

#[test]
fn validate_refuses_what_no_state_could_accept_and_nothing_else() {
    let bad_title = ProductCommand::UpdateProductDetails(UpdateProductDetails {
        title: Some("a\u{0}".into()),
        ..Default::default()
    });
    assert_eq!(validate(&bad_title).unwrap_err().field(), Some("title"));
    assert!(validate(&ProductCommand::SetStock {
        stock: -1,
        variant_id: None
    })
    .is_err());
    assert!(validate(&ProductCommand::AdjustStock {
        delta: 0,
        variant_id: None
    })
    .is_err());
    assert!(
        validate(&ProductCommand::AdjustStock {
            delta: -100,
            variant_id: None
        })
        .is_ok(),
        "depends on the state"
    );
    assert!(validate(&ProductCommand::PublishProduct).is_ok());
}

#[test]
fn text_keeps_tabs_and_newlines() {
    let mut c = create_cmd();
    c.description = "line one\n\tline two\r\n".into();
    assert!(decide(None, &ProductCommand::CreateProduct(c)).is_ok());
}

proptest! {
    #[test]
    fn text_without_control_characters_is_never_refused_for_its_characters(t in "[^\\p{Cc}]{1,50}") {
        let r = super::value::bounded_text("title", &t, 200);
        prop_assert!(r.is_ok(), "{:?} refused: {:?}", t, r);
    }
}

#[test]
fn create_rejects_a_title_over_200_chars() {
    let mut c = create_cmd();
    c.title = "x".repeat(201);
    assert!(matches!(
        decide(None, &ProductCommand::CreateProduct(c)),
        Err(DomainError::Invalid { field: "title", .. })
    ));
}

#[test]
fn create_rejects_negative_stock_zero_price_and_unknown_currency() {
    let mut c = create_cmd();
    c.stock = -1;
    assert_eq!(
        decide(None, &ProductCommand::CreateProduct(c)).unwrap_err().field(),
        Some("stock")
    );
    let mut c = create_cmd();
    c.price = Some(Money {
        amount_minor: 0,
        currency: "USD".into(),
    });
    assert_eq!(
        decide(None, &ProductCommand::CreateProduct(c)).unwrap_err().field(),
        Some("price.amount_minor")
    );
    let mut c = create_cmd();
    c.price = Some(Money {
        amount_minor: 10,
        currency: "USX".into(),
    });
    assert_eq!(
        decide(None, &ProductCommand::CreateProduct(c)).unwrap_err().field(),
        Some("price.currency")
    );
}

#[test]
fn create_twice_is_rejected() {
    let s = given(&created());
    assert_eq!(decide(s.as_ref(), &created()[0]), Err(DomainError::AlreadyCreated));
}

#[test]
fn commands_on_a_missing_product_are_rejected() {
    assert_eq!(
        decide(None, &ProductCommand::PublishProduct),
        Err(DomainError::NotCreated)
    );
}

#[test]
fn update_details_changes_only_given_fields() {
    let s = given(&created());
    let cmd = ProductCommand::UpdateProductDetails(UpdateProductDetails {
        title: Some("New".into()),
        ..Default::default()
    });
    let (p, change) = execute(s.as_ref(), Uuid::nil(), &cmd, t0()).expect("updated");
    assert_eq!(change.event_type(), "ProductDetailsUpdated");
    assert_eq!(p.title, "New");
    assert_eq!(p.brand, "Logi");
    assert_eq!(p.version, 2);
}

#[test]
fn empty_update_is_rejected() {
    let s = given(&created());
    let cmd = ProductCommand::UpdateProductDetails(UpdateProductDetails::default());
    assert_eq!(decide(s.as_ref(), &cmd).unwrap_err().field(), Some("details"));
}

#[test]
fn change_price_records_old_and_new() {
    let s = given(&created());
    let cmd = ProductCommand::ChangePrice {
        price: Money {
            amount_minor: 2500,
            currency: "EUR".into(),
        },
        variant_id: None,
    };
    let (p, change) = execute(s.as_ref(), Uuid::nil(), &cmd, t0()).expect("priced");
    assert_eq!(
        change,
        ProductChange::ProductPriceChanged(event::ProductPriceChanged {
            variant_id: 1,
            old_price: None,
            new_price: Money {
                amount_minor: 2500,
                currency: "EUR".into()
            }
        })
    );
    // A price per currency: the USD price stays beside the new EUR one.
    let prices: Vec<(&str, i64)> = p.variants[0]
        .prices
        .iter()
        .map(|m| (m.currency.as_str(), m.amount_minor))
        .collect();
    assert_eq!(prices, vec![("EUR", 2500), ("USD", 1999)]);
}

#[test]
fn negative_price_is_rejected() {
    let s = given(&created());
    let cmd = ProductCommand::ChangePrice {
        price: Money {
            amount_minor: -1,
            currency: "EUR".into(),
        },
        variant_id: None,
    };
    assert_eq!(
        decide(s.as_ref(), &cmd).unwrap_err().field(),
        Some("price.amount_minor")
    );
}

#[test]
fn adjust_stock_never_goes_below_zero() {
    let s = given(&created());
    assert_eq!(
        decide(
            s.as_ref(),
            &ProductCommand::AdjustStock {
                delta: -6,
                variant_id: None
            }
        ),
        Err(DomainError::InsufficientStock {
            available: 5,
            delta: -6
        })
    );
    let (p, _) = execute(
        s.as_ref(),
        Uuid::nil(),
        &ProductCommand::AdjustStock {
            delta: -5,
            variant_id: None,
        },
        t0(),
    )
    .expect("ok");
    assert_eq!(stock(&p), 0);
    assert_eq!(
        decide(
            s.as_ref(),
            &ProductCommand::AdjustStock {
                delta: 0,
                variant_id: None
            }
        )
        .unwrap_err()
        .field(),
        Some("delta")
    );
}

#[test]
fn set_stock_emits_the_delta() {
    let s = given(&created());
    let (p, change) = execute(
        s.as_ref(),
        Uuid::nil(),
        &ProductCommand::SetStock {
            stock: 2,
            variant_id: None,
        },
        t0(),
    )
    .expect("ok");
    assert_eq!(
        change,
        ProductChange::ProductStockAdjusted(event::ProductStockAdjusted {
            variant_id: 1,
            delta: -3,
            stock: 2
        })
    );
    assert_eq!(stock(&p), 2);
    assert_eq!(
        decide(
            s.as_ref(),
            &ProductCommand::SetStock {
                stock: -1,
                variant_id: None
            }
        )
        .unwrap_err()
        .field(),
        Some("stock")
    );
}

#[test]
fn publish_needs_a_price() {
    let mut c = create_cmd();
    c.price = None;
    let s = given(&[ProductCommand::CreateProduct(c)]);
    assert_eq!(
        decide(s.as_ref(), &ProductCommand::PublishProduct).unwrap_err().field(),
        Some("price")
    );
}

#[test]
fn publish_then_unpublish_round_trips_status() {
    let mut cmds = created();
    cmds.push(ProductCommand::PublishProduct);
    let s = given(&cmds).expect("published");
    assert_eq!(s.status, ProductStatus::Published);
    assert!(matches!(
        decide(Some(&s), &ProductCommand::PublishProduct),
        Err(DomainError::InvalidTransition { .. })
    ));
    let (p, change) = execute(Some(&s), Uuid::nil(), &ProductCommand::UnpublishProduct, t0()).expect("ok");
    assert_eq!(change.event_type(), "ProductUnpublished");
    assert_eq!(p.status, ProductStatus::Draft);
}

#[test]
fn archived_product_accepts_no_further_change() {
    let mut cmds = created();
    cmds.push(ProductCommand::ArchiveProduct);
    let s = given(&cmds);
    for c in [
        ProductCommand::PublishProduct,
        ProductCommand::ArchiveProduct,
        ProductCommand::AdjustStock {
            delta: 1,
            variant_id: None,
        },
        ProductCommand::ChangePrice {
            price: Money {
                amount_minor: 1,
                currency: "USD".into(),
            },
            variant_id: None,
        },
    ] {
        assert_eq!(decide(s.as_ref(), &c), Err(DomainError::Archived));
    }
}

#[test]
fn envelope_carries_change_and_full_state() {
    let (p, change) = execute(None, Uuid::nil(), &created()[0], t0()).expect("created");
    let meta = EventMeta {
        event_id: Uuid::from_u128(7),
        causation_id: None,
        correlation_id: None,
        occurred_at: t0(),
        actor: Some("token:abc".into()),
    };
    let env = EventEnvelope::new(&change, &p, meta);
    assert_eq!(env.aggregate_version, 1);
    assert_eq!(env.event_type, "ProductCreated");
    let json = serde_json::to_string(&env).expect("serializes");
    let back: EventEnvelope = serde_json::from_str(&json).expect("round trips");
    assert_eq!(back, env);
}

fn any_command() -> impl Strategy<Value = ProductCommand> {
    prop_oneof![
        Just(ProductCommand::CreateProduct(create_cmd())),
        "[a-z ]{0,210}".prop_map(|t| ProductCommand::UpdateProductDetails(UpdateProductDetails {
            title: Some(t),
            ..Default::default()
        })),
        (-10i64..10_000, prop::sample::select(vec!["USD", "EUR", "XXX"])).prop_map(|(a, c)| {
            ProductCommand::ChangePrice {
                price: Money {
                    amount_minor: a,
                    currency: c.into(),
                },
                variant_id: None,
            }
        }),
        (-20i64..20, prop::option::of(1u32..4))
            .prop_map(|(delta, variant_id)| ProductCommand::AdjustStock { delta, variant_id }),
        (-5i64..50).prop_map(|stock| ProductCommand::SetStock {
            stock,
            variant_id: None
        }),
        ("[A-C]", prop::sample::select(vec!["S", "M", "L"]), 0i64..3).prop_map(|(sku, size, stock)| {
            ProductCommand::AddVariant(NewVariant {
                sku: format!("V-{sku}"),
                options: [("size".to_string(), size.to_string())].into(),
                prices: vec![Money {
                    amount_minor: 100,
                    currency: "EUR".into(),
                }],
                stock,
            })
        }),
        (1u32..4).prop_map(|variant_id| ProductCommand::RemoveVariant { variant_id }),
        (1u32..4).prop_map(|variant_id| ProductCommand::SetVariantPrices {
            variant_id,
            prices: vec![]
        }),
        Just(ProductCommand::PublishProduct),
        Just(ProductCommand::UnpublishProduct),
        Just(ProductCommand::ArchiveProduct),
    ]
}

proptest! {
    #[test]
    fn any_command_sequence_keeps_invariants(cmds in prop::collection::vec(any_command(), 0..40)) {
        let mut state: Option<Product> = None;
        for c in &cmds {
            let before = state.as_ref().map(|p| p.version).unwrap_or(0);
            if let Ok((next, _)) = execute(state.as_ref(), Uuid::nil(), c, t0()) {
                prop_assert_eq!(next.version, before + 1, "versions grow by one per event");
                prop_assert!(!next.variants.is_empty(), "a product keeps a variant");
                let skus: std::collections::BTreeSet<_> = next.variants.iter().map(|v| &v.sku).collect();
                prop_assert_eq!(skus.len(), next.variants.len(), "skus unique in the product");
                let options: std::collections::BTreeSet<_> = next.variants.iter().map(|v| &v.options).collect();
                prop_assert_eq!(options.len(), next.variants.len(), "option values unique in the product");
                prop_assert!(next.variants.iter().all(|v| v.id < next.next_variant_id));
                for v in &next.variants {
                    prop_assert!(v.stock >= 0);
                    prop_assert!(v.prices.iter().all(|p| p.amount_minor > 0));
                    if next.status == ProductStatus::Published { prop_assert!(!v.prices.is_empty()); }
                }
                prop_assert!(!next.title.is_empty() && next.title.chars().count() <= 200);
                if state.as_ref().map(|s| s.status) == Some(ProductStatus::Archived) {
                    prop_assert!(false, "archived product changed");
                }
                state = Some(next);
            }
        }
    }
}
