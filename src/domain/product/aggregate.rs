//! The Product aggregate: `decide` checks a command against the current state and returns
//! the change; `evolve` applies a change. Pure and synchronous: no clock, no I/O.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::command::{CreateProduct, NewVariant, ProductCommand, UpdateProductDetails};
use super::error::DomainError;
use super::event::{
    ProductArchived, ProductCategorized, ProductChange, ProductCreated, ProductDetailsUpdated, ProductStatusChanged,
    ProductTransferred,
};
use super::value::{
    bounded_text, required_text, AttributeValue, CategoryNode, Money, ProductStatus, Variant, ATTRIBUTES_MAX,
    DESCRIPTION_MAX_CHARS, SHORT_TEXT_MAX_CHARS, TITLE_MAX_CHARS,
};

use super::variants;

/// Current state of a product. `version` starts at 1 and grows by one per event.
/// Readers ignore fields they do not know (see [`super::event::EventEnvelope`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Product {
    /// Product id.
    pub id: Uuid,
    /// The owning seller ([`super::DEFAULT_OWNER`] for products from before sellers).
    pub owner: String,
    /// The product type whose attribute rules it follows, if any.
    #[serde(default)]
    pub product_type: Option<String>,
    /// Title, 1..=200 characters.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category slug (empty: none).
    pub category: String,
    /// The category's place in the category tree, root first (empty: not placed in the tree).
    #[serde(default)]
    pub category_path: Vec<CategoryNode>,
    /// Brand facet.
    pub brand: String,
    /// Attributes (text, number or flag values).
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Sellable variants, at least one, in id order; the first is the one commands that name
    /// no variant act on.
    pub variants: Vec<Variant>,
    /// Id the next added variant gets (ids are never reused).
    pub next_variant_id: u32,
    /// Lifecycle status.
    pub status: ProductStatus,
    /// Aggregate version.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

impl Product {
    /// The first variant (the one commands that name no variant act on).
    pub fn first_variant(&self) -> Option<&Variant> {
        self.variants.first()
    }

    /// The variant with id `id`.
    pub fn variant(&self, id: u32) -> Option<&Variant> {
        self.variants.iter().find(|v| v.id == id)
    }

    /// Units in stock over all variants.
    pub fn total_stock(&self) -> i64 {
        self.variants.iter().map(|v| v.stock).sum()
    }

    fn variant_mut(&mut self, id: u32) -> Option<&mut Variant> {
        self.variants.iter_mut().find(|v| v.id == id)
    }
}

/// The rules of `command` that hold whatever the product's state: field formats, lengths,
/// ranges. What passes here can still be refused by [`decide`] against the state; what fails
/// here is refused whatever the state (so an API can answer 422 before queuing a command).
pub fn validate(command: &ProductCommand) -> Result<(), DomainError> {
    match command {
        ProductCommand::CreateProduct(c) => decide_create(c).map(|_| ()),
        ProductCommand::UpdateProductDetails(u) => decide_details(u).map(|_| ()),
        ProductCommand::ChangePrice { price, .. } => Money::price(price.amount_minor, &price.currency).map(|_| ()),
        ProductCommand::AdjustStock { delta, .. } => variants::check_delta(*delta),
        ProductCommand::SetStock { stock, .. } => variants::check_stock("stock", *stock),
        ProductCommand::AddVariant(v) => variants::check_new(v, 0).map(|_| ()),
        ProductCommand::UpdateVariant { change, .. } => variants::check_update(change).map(|_| ()),
        ProductCommand::SetVariantPrices { prices, .. } => variants::check_prices(prices).map(|_| ()),
        ProductCommand::TransferOwnership { owner } => required_text("owner", owner, SHORT_TEXT_MAX_CHARS).map(|_| ()),
        _ => Ok(()),
    }
}

/// Checks `command` against `state` (None: the product does not exist yet) and returns the
/// change it causes, or the rule it breaks.
pub fn decide(state: Option<&Product>, command: &ProductCommand) -> Result<ProductChange, DomainError> {
    let product = match (state, command) {
        (None, ProductCommand::CreateProduct(c)) => return decide_create(c).map(ProductChange::ProductCreated),
        (Some(_), ProductCommand::CreateProduct(_)) => return Err(DomainError::AlreadyCreated),
        (None, _) => return Err(DomainError::NotCreated),
        (Some(p), _) => p,
    };
    if product.status == ProductStatus::Archived {
        return Err(DomainError::Archived);
    }
    match command {
        ProductCommand::CreateProduct(_) => Err(DomainError::AlreadyCreated),
        ProductCommand::UpdateProductDetails(u) => decide_details(u).map(ProductChange::ProductDetailsUpdated),
        ProductCommand::ChangePrice { price, variant_id } => variants::change_price(product, *variant_id, price),
        ProductCommand::AdjustStock { delta, variant_id } => variants::adjust_stock(product, *variant_id, *delta),
        ProductCommand::SetStock { stock, variant_id } => variants::set_stock(product, *variant_id, *stock),
        ProductCommand::AddVariant(v) => variants::add(product, v),
        ProductCommand::UpdateVariant { variant_id, change } => variants::update(product, *variant_id, change),
        ProductCommand::RemoveVariant { variant_id } => variants::remove(product, *variant_id),
        ProductCommand::SetVariantPrices { variant_id, prices } => variants::set_prices(product, *variant_id, prices),
        ProductCommand::PlaceInCategory { category, path } => {
            Ok(ProductChange::ProductCategorized(ProductCategorized {
                category: bounded_text("category", category, SHORT_TEXT_MAX_CHARS)?,
                category_path: path.clone(),
            }))
        }
        ProductCommand::TransferOwnership { owner } => {
            let to = required_text("owner", owner, SHORT_TEXT_MAX_CHARS)?;
            if to == product.owner {
                return Err(DomainError::invalid(
                    "owner",
                    format!("the product already belongs to {to:?}"),
                ));
            }
            Ok(ProductChange::ProductTransferred(ProductTransferred {
                from: product.owner.clone(),
                to,
            }))
        }
        ProductCommand::PublishProduct => decide_publish(product),
        ProductCommand::UnpublishProduct => {
            if product.status != ProductStatus::Published {
                return Err(DomainError::InvalidTransition {
                    from: product.status,
                    to: ProductStatus::Draft,
                });
            }
            Ok(ProductChange::ProductStatusChanged(ProductStatusChanged {
                from: product.status,
                to: ProductStatus::Draft,
            }))
        }
        ProductCommand::ArchiveProduct => Ok(ProductChange::ProductArchived(ProductArchived {
            previous_status: product.status,
        })),
    }
}

/// Publishing needs a draft with a title and a price on every variant.
fn decide_publish(product: &Product) -> Result<ProductChange, DomainError> {
    if product.status != ProductStatus::Draft {
        return Err(DomainError::InvalidTransition {
            from: product.status,
            to: ProductStatus::Published,
        });
    }
    if let Some(v) = product.variants.iter().find(|v| v.prices.is_empty()) {
        let reason = if product.variants.len() == 1 {
            "a product needs a price to be published".to_owned()
        } else {
            format!(
                "every variant needs a price to be published; variant {} ({}) has none",
                v.id, v.sku
            )
        };
        return Err(DomainError::Incomplete { field: "price", reason });
    }
    if product.title.trim().is_empty() {
        return Err(DomainError::Incomplete {
            field: "title",
            reason: "a product needs a title to be published".into(),
        });
    }
    Ok(ProductChange::ProductStatusChanged(ProductStatusChanged {
        from: product.status,
        to: ProductStatus::Published,
    }))
}

/// The variants a creation names: its `variants`, or the single variant of the shorthand.
fn initial_variants(c: &CreateProduct) -> Result<Vec<Variant>, DomainError> {
    let shorthand = c.sku.is_some() || c.price.is_some() || c.stock != 0;
    let given = if c.variants.is_empty() {
        let sku = c
            .sku
            .clone()
            .ok_or_else(|| DomainError::invalid("sku", "give a sku, or variants"))?;
        vec![NewVariant {
            sku,
            options: BTreeMap::new(),
            prices: c.price.iter().cloned().collect(),
            stock: c.stock,
        }]
    } else if shorthand {
        return Err(DomainError::invalid(
            "variants",
            "give either variants or sku, price and stock, not both",
        ));
    } else {
        c.variants.clone()
    };
    let mut out: Vec<Variant> = Vec::with_capacity(given.len());
    for (i, v) in given.iter().enumerate() {
        let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let variant = variants::check_new(v, id)?;
        variants::check_fits(&out, &variant)?;
        out.push(variant);
    }
    variants::check_count(out.len())?;
    Ok(out)
}

fn decide_create(c: &CreateProduct) -> Result<ProductCreated, DomainError> {
    Ok(ProductCreated {
        owner: required_text("owner", &c.owner, SHORT_TEXT_MAX_CHARS)?,
        product_type: c
            .product_type
            .as_deref()
            .map(|t| required_text("product_type", t, SHORT_TEXT_MAX_CHARS))
            .transpose()?,
        title: required_text("title", &c.title, TITLE_MAX_CHARS)?,
        description: bounded_text("description", &c.description, DESCRIPTION_MAX_CHARS)?,
        category: bounded_text("category", &c.category, SHORT_TEXT_MAX_CHARS)?,
        brand: bounded_text("brand", &c.brand, SHORT_TEXT_MAX_CHARS)?,
        attributes: check_attributes(&c.attributes)?,
        variants: initial_variants(c)?,
    })
}

fn decide_details(u: &UpdateProductDetails) -> Result<ProductDetailsUpdated, DomainError> {
    if u.title.is_none()
        && u.description.is_none()
        && u.category.is_none()
        && u.brand.is_none()
        && u.attributes.is_none()
    {
        return Err(DomainError::invalid("details", "at least one field must be given"));
    }
    let text = |field, value: &Option<String>, max| value.as_deref().map(|v| bounded_text(field, v, max)).transpose();
    Ok(ProductDetailsUpdated {
        title: u
            .title
            .as_deref()
            .map(|t| required_text("title", t, TITLE_MAX_CHARS))
            .transpose()?,
        description: text("description", &u.description, DESCRIPTION_MAX_CHARS)?,
        category: text("category", &u.category, SHORT_TEXT_MAX_CHARS)?,
        brand: text("brand", &u.brand, SHORT_TEXT_MAX_CHARS)?,
        attributes: u.attributes.as_ref().map(check_attributes).transpose()?,
    })
}

fn check_attributes(a: &BTreeMap<String, AttributeValue>) -> Result<BTreeMap<String, AttributeValue>, DomainError> {
    if a.len() > ATTRIBUTES_MAX {
        return Err(DomainError::invalid(
            "attributes",
            format!("at most {ATTRIBUTES_MAX} attributes"),
        ));
    }
    a.iter()
        .map(|(k, v)| {
            let k = required_text("attributes.key", k, SHORT_TEXT_MAX_CHARS)?;
            let v = match v {
                AttributeValue::Text(t) => {
                    AttributeValue::Text(bounded_text("attributes.value", t, SHORT_TEXT_MAX_CHARS)?)
                }
                other => other.clone(),
            };
            Ok((k, v))
        })
        .collect()
}

/// Applies a change to the state. `id` and `at` are used for a creation and as the update
/// time. Total: every change from [`decide`] applies.
pub fn evolve(state: Option<Product>, id: Uuid, change: &ProductChange, at: DateTime<Utc>) -> Product {
    let mut p = match (state, change) {
        (None, ProductChange::ProductCreated(c)) => return created(id, c, at),
        (Some(p), _) => p,
        // decide() never yields a non-creation change for a missing product; an empty
        // draft keeps evolve total without panicking.
        (None, _) => Product {
            version: 0,
            ..created(id, &ProductCreated::default(), at)
        },
    };
    match change {
        ProductChange::ProductCreated(_) => {}
        ProductChange::ProductDetailsUpdated(d) => apply_details(&mut p, d),
        ProductChange::ProductPriceChanged(c) => {
            if let Some(v) = p.variant_mut(c.variant_id) {
                v.prices.retain(|m| m.currency != c.new_price.currency);
                v.prices.push(c.new_price.clone());
                v.prices.sort_by(|a, b| a.currency.cmp(&b.currency));
            }
        }
        ProductChange::ProductStockAdjusted(c) => {
            if let Some(v) = p.variant_mut(c.variant_id) {
                v.stock = c.stock;
            }
        }
        ProductChange::ProductStatusChanged(c) => p.status = c.to,
        ProductChange::ProductArchived(_) => p.status = ProductStatus::Archived,
        ProductChange::VariantAdded(c) => {
            p.next_variant_id = p.next_variant_id.max(c.variant.id.saturating_add(1));
            p.variants.push(c.variant.clone());
        }
        ProductChange::VariantUpdated(c) => {
            if let Some(v) = p.variant_mut(c.variant_id) {
                if let Some(sku) = &c.sku {
                    v.sku = sku.clone();
                }
                if let Some(options) = &c.options {
                    v.options = options.clone();
                }
            }
        }
        ProductChange::VariantRemoved(c) => p.variants.retain(|v| v.id != c.variant_id),
        ProductChange::ProductTransferred(c) => p.owner = c.to.clone(),
        ProductChange::ProductCategorized(c) => {
            p.category = c.category.clone();
            p.category_path = c.category_path.clone();
        }
        ProductChange::VariantPricesSet(c) => {
            if let Some(v) = p.variant_mut(c.variant_id) {
                v.prices = c.prices.clone();
            }
        }
    }
    p.version += 1;
    p.updated_at = at;
    p
}

fn created(id: Uuid, c: &ProductCreated, at: DateTime<Utc>) -> Product {
    Product {
        id,
        owner: c.owner.clone(),
        product_type: c.product_type.clone(),
        title: c.title.clone(),
        description: c.description.clone(),
        category: c.category.clone(),
        category_path: Vec::new(),
        brand: c.brand.clone(),
        attributes: c.attributes.clone(),
        variants: c.variants.clone(),
        next_variant_id: c.variants.iter().map(|v| v.id).max().unwrap_or(0) + 1,
        status: ProductStatus::Draft,
        version: 1,
        created_at: at,
        updated_at: at,
    }
}

fn apply_details(p: &mut Product, d: &ProductDetailsUpdated) {
    if let Some(v) = &d.title {
        p.title = v.clone();
    }
    if let Some(v) = &d.description {
        p.description = v.clone();
    }
    if let Some(v) = &d.category {
        p.category = v.clone();
    }
    if let Some(v) = &d.brand {
        p.brand = v.clone();
    }
    if let Some(v) = &d.attributes {
        p.attributes = v.clone();
    }
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
