//! The rules of a product's variants: SKUs unique within the product (the catalog-wide rule
//! is the store's), the same option names on every variant and no two variants with the same
//! option values, at most one price per currency, stock never below zero.

use std::collections::{BTreeMap, BTreeSet};

use super::aggregate::Product;
use super::command::{NewVariant, UpdateVariant};
use super::error::DomainError;
use super::event::{
    ProductChange, ProductPriceChanged, ProductStockAdjusted, VariantAdded, VariantPricesSet, VariantRemoved,
    VariantUpdated,
};
use super::value::{required_text, Money, Variant, MAX_QUANTITY, OPTIONS_MAX, SHORT_TEXT_MAX_CHARS, VARIANTS_MAX};

/// A stock level: 0..=MAX_QUANTITY.
pub(super) fn check_stock(field: &'static str, stock: i64) -> Result<(), DomainError> {
    if !(0..=MAX_QUANTITY).contains(&stock) {
        return Err(DomainError::invalid(
            field,
            format!("must be between 0 and {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

/// A stock change: non-zero, at most MAX_QUANTITY either way.
pub(super) fn check_delta(delta: i64) -> Result<(), DomainError> {
    if delta == 0 {
        return Err(DomainError::invalid("delta", "must not be 0"));
    }
    if !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&delta) {
        return Err(DomainError::invalid(
            "delta",
            format!("must be between -{MAX_QUANTITY} and {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

/// A price list: valid prices, one per currency; returned ordered by currency.
pub(super) fn check_prices(prices: &[Money]) -> Result<Vec<Money>, DomainError> {
    let mut out = Vec::with_capacity(prices.len());
    for p in prices {
        let m = Money::price(p.amount_minor, &p.currency)?;
        if out.iter().any(|o: &Money| o.currency == m.currency) {
            return Err(DomainError::invalid(
                "prices",
                format!("at most one price per currency; {} is given twice", m.currency),
            ));
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.currency.cmp(&b.currency));
    Ok(out)
}

fn check_options(options: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DomainError> {
    if options.len() > OPTIONS_MAX {
        return Err(DomainError::invalid(
            "options",
            format!("at most {OPTIONS_MAX} options"),
        ));
    }
    options
        .iter()
        .map(|(k, v)| {
            Ok((
                required_text("options.key", k, SHORT_TEXT_MAX_CHARS)?,
                required_text("options.value", v, SHORT_TEXT_MAX_CHARS)?,
            ))
        })
        .collect()
}

/// A variant as a command gives it, checked on its own, with the id it is to get.
pub(super) fn check_new(v: &NewVariant, id: u32) -> Result<Variant, DomainError> {
    check_stock("stock", v.stock)?;
    Ok(Variant {
        id,
        sku: required_text("sku", &v.sku, SHORT_TEXT_MAX_CHARS)?,
        options: check_options(&v.options)?,
        prices: check_prices(&v.prices)?,
        stock: v.stock,
    })
}

/// A variant change checked on its own.
pub(super) fn check_update(u: &UpdateVariant) -> Result<UpdateVariant, DomainError> {
    if u.sku.is_none() && u.options.is_none() {
        return Err(DomainError::invalid(
            "variant",
            "at least one of sku and options must be given",
        ));
    }
    Ok(UpdateVariant {
        sku: u
            .sku
            .as_deref()
            .map(|s| required_text("sku", s, SHORT_TEXT_MAX_CHARS))
            .transpose()?,
        options: u.options.as_ref().map(check_options).transpose()?,
    })
}

/// At least one variant, at most [`VARIANTS_MAX`].
pub(super) fn check_count(n: usize) -> Result<(), DomainError> {
    if n == 0 || n > VARIANTS_MAX {
        return Err(DomainError::invalid(
            "variants",
            format!("a product has 1 to {VARIANTS_MAX} variants"),
        ));
    }
    Ok(())
}

/// Whether `candidate` may sit beside `others` (the product's other variants): its SKU not
/// theirs, the same option names, not the same option values.
pub(super) fn check_fits(others: &[Variant], candidate: &Variant) -> Result<(), DomainError> {
    if others.iter().any(|o| o.sku == candidate.sku) {
        return Err(DomainError::DuplicateSku(candidate.sku.clone()));
    }
    if let Some(o) = others.first() {
        let names = |v: &Variant| v.options.keys().cloned().collect::<BTreeSet<_>>();
        if names(o) != names(candidate) {
            return Err(DomainError::VariantConflict(format!(
                "every variant has the same option names ({}); got ({})",
                names(o).into_iter().collect::<Vec<_>>().join(", "),
                names(candidate).into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if let Some(o) = others.iter().find(|o| o.options == candidate.options) {
        return Err(DomainError::VariantConflict(format!(
            "variant {} ({}) already has these option values",
            o.id, o.sku
        )));
    }
    Ok(())
}

/// The variant a command acts on: the one it names, or the first.
fn target(product: &Product, variant_id: Option<u32>) -> Result<&Variant, DomainError> {
    match variant_id {
        Some(id) => product
            .variant(id)
            .ok_or(DomainError::VariantNotFound { variant_id: id }),
        None => product
            .first_variant()
            .ok_or(DomainError::VariantNotFound { variant_id: 0 }),
    }
}

/// `ChangePrice`: sets the variant's price in the price's currency.
pub(super) fn change_price(
    product: &Product,
    variant_id: Option<u32>,
    price: &Money,
) -> Result<ProductChange, DomainError> {
    let v = target(product, variant_id)?;
    let new_price = Money::price(price.amount_minor, &price.currency)?;
    Ok(ProductChange::ProductPriceChanged(ProductPriceChanged {
        variant_id: v.id,
        old_price: v.price_in(&new_price.currency).cloned(),
        new_price,
    }))
}

/// `AdjustStock`: changes a variant's stock by `delta`, never below zero.
pub(super) fn adjust_stock(
    product: &Product,
    variant_id: Option<u32>,
    delta: i64,
) -> Result<ProductChange, DomainError> {
    check_delta(delta)?;
    let v = target(product, variant_id)?;
    let stock = v
        .stock
        .checked_add(delta)
        .ok_or_else(|| DomainError::invalid("delta", "stock would overflow"))?;
    if stock < 0 {
        return Err(DomainError::InsufficientStock {
            available: v.stock,
            delta,
        });
    }
    Ok(ProductChange::ProductStockAdjusted(ProductStockAdjusted {
        variant_id: v.id,
        delta,
        stock,
    }))
}

/// `SetStock`: sets a variant's stock.
pub(super) fn set_stock(product: &Product, variant_id: Option<u32>, stock: i64) -> Result<ProductChange, DomainError> {
    check_stock("stock", stock)?;
    let v = target(product, variant_id)?;
    Ok(ProductChange::ProductStockAdjusted(ProductStockAdjusted {
        variant_id: v.id,
        delta: stock - v.stock,
        stock,
    }))
}

/// `AddVariant`: a new variant with the next id. A published product's new variant needs a
/// price (everything published is sellable).
pub(super) fn add(product: &Product, v: &NewVariant) -> Result<ProductChange, DomainError> {
    let variant = check_new(v, product.next_variant_id)?;
    check_fits(&product.variants, &variant)?;
    check_count(product.variants.len() + 1)?;
    if product.status == super::ProductStatus::Published && variant.prices.is_empty() {
        return Err(DomainError::Incomplete {
            field: "prices",
            reason: "a published product's variants need a price".into(),
        });
    }
    Ok(ProductChange::VariantAdded(VariantAdded { variant }))
}

/// `UpdateVariant`: a new SKU or new option values, still fitting beside the others.
pub(super) fn update(product: &Product, variant_id: u32, u: &UpdateVariant) -> Result<ProductChange, DomainError> {
    let u = check_update(u)?;
    let current = target(product, Some(variant_id))?;
    let mut next = current.clone();
    if let Some(sku) = &u.sku {
        next.sku = sku.clone();
    }
    if let Some(options) = &u.options {
        next.options = options.clone();
    }
    let others: Vec<Variant> = product
        .variants
        .iter()
        .filter(|o| o.id != variant_id)
        .cloned()
        .collect();
    check_fits(&others, &next)?;
    Ok(ProductChange::VariantUpdated(VariantUpdated {
        variant_id,
        sku: u.sku.filter(|s| *s != current.sku),
        options: u.options.filter(|o| *o != current.options),
    }))
}

/// `RemoveVariant`: never the last one.
pub(super) fn remove(product: &Product, variant_id: u32) -> Result<ProductChange, DomainError> {
    let v = target(product, Some(variant_id))?;
    if product.variants.len() == 1 {
        return Err(DomainError::VariantConflict(
            "a product keeps at least one variant; archive the product instead".into(),
        ));
    }
    Ok(ProductChange::VariantRemoved(VariantRemoved {
        variant_id,
        sku: v.sku.clone(),
    }))
}

/// `SetVariantPrices`: replaces the price list; a published product's variant keeps one.
pub(super) fn set_prices(product: &Product, variant_id: u32, prices: &[Money]) -> Result<ProductChange, DomainError> {
    let prices = check_prices(prices)?;
    let v = target(product, Some(variant_id))?;
    if product.status == super::ProductStatus::Published && prices.is_empty() {
        return Err(DomainError::Incomplete {
            field: "prices",
            reason: "a published product's variants need a price".into(),
        });
    }
    Ok(ProductChange::VariantPricesSet(VariantPricesSet {
        variant_id,
        old_prices: v.prices.clone(),
        prices,
    }))
}
