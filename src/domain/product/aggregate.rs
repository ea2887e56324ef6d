//! The Product aggregate: `decide` checks a command against the current state and returns
//! the change; `evolve` applies a change. Pure and synchronous: no clock, no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::command::{CreateProduct, ProductCommand, UpdateProductDetails};
use super::error::DomainError;
use super::event::ProductChange;
use super::value::{
    bounded_text, required_text, Money, ProductStatus, ATTRIBUTES_MAX, DESCRIPTION_MAX_CHARS, MAX_QUANTITY,
    SHORT_TEXT_MAX_CHARS, TITLE_MAX_CHARS,
};

/// Current state of a product. `version` starts at 1 and grows by one per event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Product id.
    pub id: Uuid,
    /// Unique stock keeping unit.
    pub sku: String,
    /// Title, 1..=200 characters.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category facet.
    pub category: String,
    /// Brand facet.
    pub brand: String,
    /// String attributes.
    pub attributes: BTreeMap<String, String>,
    /// Price, once set.
    pub price: Option<Money>,
    /// Units in stock, never negative.
    pub stock: i64,
    /// Lifecycle status.
    pub status: ProductStatus,
    /// Aggregate version.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

/// The rules of `command` that hold whatever the product's state: field formats, lengths,
/// ranges. What passes here can still be refused by [`decide`] against the state; what fails
/// here is refused whatever the state (so an API can answer 422 before queuing a command).
pub fn validate(command: &ProductCommand) -> Result<(), DomainError> {
    match command {
        ProductCommand::CreateProduct(c) => decide_create(c).map(|_| ()),
        ProductCommand::UpdateProductDetails(u) => decide_details(u).map(|_| ()),
        ProductCommand::ChangePrice { price } => Money::price(price.amount_minor, &price.currency).map(|_| ()),
        ProductCommand::AdjustStock { delta } => check_delta(*delta),
        ProductCommand::SetStock { stock } => check_stock("stock", *stock),
        _ => Ok(()),
    }
}

/// Checks `command` against `state` (None: the product does not exist yet) and returns the
/// change it causes, or the rule it breaks.
pub fn decide(state: Option<&Product>, command: &ProductCommand) -> Result<ProductChange, DomainError> {
    let product = match (state, command) {
        (None, ProductCommand::CreateProduct(c)) => return decide_create(c),
        (Some(_), ProductCommand::CreateProduct(_)) => return Err(DomainError::AlreadyCreated),
        (None, _) => return Err(DomainError::NotCreated),
        (Some(p), _) => p,
    };
    if product.status == ProductStatus::Archived {
        return Err(DomainError::Archived);
    }
    match command {
        ProductCommand::CreateProduct(_) => Err(DomainError::AlreadyCreated),
        ProductCommand::UpdateProductDetails(u) => decide_details(u),
        ProductCommand::ChangePrice { price } => Ok(ProductChange::ProductPriceChanged {
            old_price: product.price.clone(),
            new_price: Money::price(price.amount_minor, &price.currency)?,
        }),
        ProductCommand::AdjustStock { delta } => {
            check_delta(*delta)?;
            let stock = product
                .stock
                .checked_add(*delta)
                .ok_or_else(|| DomainError::invalid("delta", "stock would overflow"))?;
            if stock < 0 {
                return Err(DomainError::InsufficientStock {
                    available: product.stock,
                    delta: *delta,
                });
            }
            Ok(ProductChange::ProductStockAdjusted { delta: *delta, stock })
        }
        ProductCommand::SetStock { stock } => {
            check_stock("stock", *stock)?;
            Ok(ProductChange::ProductStockAdjusted {
                delta: stock - product.stock,
                stock: *stock,
            })
        }
        ProductCommand::PublishProduct => {
            if product.status != ProductStatus::Draft {
                return Err(DomainError::InvalidTransition {
                    from: product.status,
                    to: ProductStatus::Published,
                });
            }
            if product.price.is_none() {
                return Err(DomainError::Incomplete {
                    field: "price",
                    reason: "a product needs a price to be published".into(),
                });
            }
            if product.title.trim().is_empty() {
                return Err(DomainError::Incomplete {
                    field: "title",
                    reason: "a product needs a title to be published".into(),
                });
            }
            Ok(ProductChange::ProductStatusChanged {
                from: product.status,
                to: ProductStatus::Published,
            })
        }
        ProductCommand::UnpublishProduct => {
            if product.status != ProductStatus::Published {
                return Err(DomainError::InvalidTransition {
                    from: product.status,
                    to: ProductStatus::Draft,
                });
            }
            Ok(ProductChange::ProductStatusChanged {
                from: product.status,
                to: ProductStatus::Draft,
            })
        }
        ProductCommand::ArchiveProduct => Ok(ProductChange::ProductArchived {
            previous_status: product.status,
        }),
    }
}

/// A stock level: 0..=MAX_QUANTITY.
fn check_stock(field: &'static str, stock: i64) -> Result<(), DomainError> {
    if !(0..=MAX_QUANTITY).contains(&stock) {
        return Err(DomainError::invalid(
            field,
            format!("must be between 0 and {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

/// A stock change: non-zero, at most MAX_QUANTITY either way.
fn check_delta(delta: i64) -> Result<(), DomainError> {
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

fn decide_create(c: &CreateProduct) -> Result<ProductChange, DomainError> {
    check_stock("stock", c.stock)?;
    let price = match &c.price {
        Some(p) => Some(Money::price(p.amount_minor, &p.currency)?),
        None => None,
    };
    Ok(ProductChange::ProductCreated {
        sku: required_text("sku", &c.sku, SHORT_TEXT_MAX_CHARS)?,
        title: required_text("title", &c.title, TITLE_MAX_CHARS)?,
        description: bounded_text("description", &c.description, DESCRIPTION_MAX_CHARS)?,
        category: bounded_text("category", &c.category, SHORT_TEXT_MAX_CHARS)?,
        brand: bounded_text("brand", &c.brand, SHORT_TEXT_MAX_CHARS)?,
        attributes: check_attributes(&c.attributes)?,
        price,
        stock: c.stock,
    })
}

fn decide_details(u: &UpdateProductDetails) -> Result<ProductChange, DomainError> {
    if u.title.is_none()
        && u.description.is_none()
        && u.category.is_none()
        && u.brand.is_none()
        && u.attributes.is_none()
    {
        return Err(DomainError::invalid("details", "at least one field must be given"));
    }
    Ok(ProductChange::ProductDetailsUpdated {
        title: u
            .title
            .as_deref()
            .map(|t| required_text("title", t, TITLE_MAX_CHARS))
            .transpose()?,
        description: u
            .description
            .as_deref()
            .map(|d| bounded_text("description", d, DESCRIPTION_MAX_CHARS))
            .transpose()?,
        category: u
            .category
            .as_deref()
            .map(|c| bounded_text("category", c, SHORT_TEXT_MAX_CHARS))
            .transpose()?,
        brand: u
            .brand
            .as_deref()
            .map(|b| bounded_text("brand", b, SHORT_TEXT_MAX_CHARS))
            .transpose()?,
        attributes: u.attributes.as_ref().map(check_attributes).transpose()?,
    })
}

fn check_attributes(a: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DomainError> {
    if a.len() > ATTRIBUTES_MAX {
        return Err(DomainError::invalid(
            "attributes",
            format!("at most {ATTRIBUTES_MAX} attributes"),
        ));
    }
    a.iter()
        .map(|(k, v)| {
            let k = required_text("attributes.key", k, SHORT_TEXT_MAX_CHARS)?;
            let v = bounded_text("attributes.value", v, SHORT_TEXT_MAX_CHARS)?;
            Ok((k, v))
        })
        .collect()
}

/// Applies a change to the state. `id` and `at` are used for a creation and as the update
/// time. Total: every change from [`decide`] applies.
pub fn evolve(state: Option<Product>, id: Uuid, change: &ProductChange, at: DateTime<Utc>) -> Product {
    let mut p = match (state, change) {
        (
            None,
            ProductChange::ProductCreated {
                sku,
                title,
                description,
                category,
                brand,
                attributes,
                price,
                stock,
            },
        ) => {
            return Product {
                id,
                sku: sku.clone(),
                title: title.clone(),
                description: description.clone(),
                category: category.clone(),
                brand: brand.clone(),
                attributes: attributes.clone(),
                price: price.clone(),
                stock: *stock,
                status: ProductStatus::Draft,
                version: 1,
                created_at: at,
                updated_at: at,
            }
        }
        (Some(p), _) => p,
        // decide() never yields a non-creation change for a missing product; an empty
        // draft keeps evolve total without panicking.
        (None, _) => Product {
            id,
            sku: String::new(),
            title: String::new(),
            description: String::new(),
            category: String::new(),
            brand: String::new(),
            attributes: BTreeMap::new(),
            price: None,
            stock: 0,
            status: ProductStatus::Draft,
            version: 0,
            created_at: at,
            updated_at: at,
        },
    };
    match change {
        ProductChange::ProductCreated { .. } => {}
        ProductChange::ProductDetailsUpdated {
            title,
            description,
            category,
            brand,
            attributes,
        } => {
            if let Some(v) = title {
                p.title = v.clone();
            }
            if let Some(v) = description {
                p.description = v.clone();
            }
            if let Some(v) = category {
                p.category = v.clone();
            }
            if let Some(v) = brand {
                p.brand = v.clone();
            }
            if let Some(v) = attributes {
                p.attributes = v.clone();
            }
        }
        ProductChange::ProductPriceChanged { new_price, .. } => p.price = Some(new_price.clone()),
        ProductChange::ProductStockAdjusted { stock, .. } => p.stock = *stock,
        ProductChange::ProductStatusChanged { to, .. } => p.status = *to,
        ProductChange::ProductArchived { .. } => p.status = ProductStatus::Archived,
    }
    p.version += 1;
    p.updated_at = at;
    p
}

/// `decide` then `evolve`: the new state and the change, or the broken rule.
pub fn execute(
    state: Option<&Product>,
    id: Uuid,
    command: &ProductCommand,
    at: DateTime<Utc>,
) -> Result<(Product, ProductChange), DomainError> {
    let change = decide(state, command)?;
    let next = evolve(state.cloned(), id, &change, at);
    Ok((next, change))
}
