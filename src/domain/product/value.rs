//! Value objects of the product aggregate: money, status and validated text fields.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

use super::error::DomainError;

/// ISO 4217 codes this catalog accepts. A closed list keeps prices comparable and rejects
/// typos such as "USX" at the edge.
pub const KNOWN_CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "IDR",
    "ILS", "INR", "JPY", "KRW", "KZT", "MXN", "MYR", "NOK", "NZD", "PEN", "PHP", "PLN", "RON", "RUB", "SAR", "SEK",
    "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VND", "ZAR",
];

/// Longest title accepted, in characters.
pub const TITLE_MAX_CHARS: usize = 200;
/// Longest description accepted, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
/// Longest sku, category or brand, in characters.
pub const SHORT_TEXT_MAX_CHARS: usize = 100;
/// Largest stock level, stock change or initial stock, in units: far above any real
/// inventory, and small enough that no sum of a stock and a change overflows.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
/// Most attributes a product may carry.
pub const ATTRIBUTES_MAX: usize = 50;

/// JSON Schema (ECMA-262) pattern of text [`bounded_text`] accepts: no control character but
/// tab, line feed and carriage return. The API's OpenAPI document repeats it literally; a test
/// there keeps the copies equal to this one.
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";
/// JSON Schema pattern of text [`required_text`] accepts: [`TEXT_PATTERN`] with at least one
/// character that is not white space.
pub const REQUIRED_TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";

/// A price in integer minor units (cents) of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Money {
    /// Amount in minor units; always > 0 for a price.
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
}

impl Money {
    /// Validates a price: amount above zero and a known currency.
    pub fn price(amount_minor: i64, currency: &str) -> Result<Self, DomainError> {
        if amount_minor <= 0 {
            return Err(DomainError::invalid("price.amount_minor", "must be greater than 0"));
        }
        if !KNOWN_CURRENCIES.contains(&currency) {
            return Err(DomainError::invalid(
                "price.currency",
                format!("unknown ISO 4217 currency {currency:?}"),
            ));
        }
        Ok(Self {
            amount_minor,
            currency: currency.to_owned(),
        })
    }
}

/// Lifecycle of a product. Only `published` products are visible in default search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Being prepared; not visible to shoppers.
    Draft,
    /// Live in the catalog.
    Published,
    /// Retired; accepts no further change.
    Archived,
}

impl ProductStatus {
    /// The stable lower-case name stored in the database and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Archived => "archived",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Self::Draft),
            "published" => Some(Self::Published),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

impl fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a required text field: like [`bounded_text`], and not empty once trimmed.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    let v = bounded_text(field, value, max)?;
    if v.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    Ok(v)
}

/// Checks an optional text field and returns it trimmed: at most `max` characters as sent
/// (the limit applies to the input, so it reads the same as a JSON Schema `maxLength`), and
/// storable as text:
/// no NUL and no other C0 control character except tab, line feed and carriage return.
/// (PostgreSQL text and jsonb cannot hold NUL; refusing it here means such input is rejected
/// with a reason instead of failing deep in the store.)
pub fn bounded_text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(DomainError::invalid(
            field,
            format!("must not contain control character U+{:04X}", u32::from(c)),
        ));
    }
    let n = value.chars().count();
    if n > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters, got {n}"),
        ));
    }
    Ok(value.trim().to_owned())
}

/// Most variants a product may have.
pub const VARIANTS_MAX: usize = 100;
/// Most option values (size, colour, ...) a variant may carry.
pub const OPTIONS_MAX: usize = 10;

/// The value of a product attribute: text, a number or a yes/no flag. A product type says
/// which kind each of its attributes takes; an untyped product may use any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    /// `true` or `false`.
    Flag(bool),
    /// A JSON number.
    Number(serde_json::Number),
    /// Text, up to 100 characters.
    Text(String),
}

impl AttributeValue {
    /// The value as text, for search keywords and messages.
    pub fn to_text(&self) -> String {
        match self {
            Self::Flag(b) => b.to_string(),
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

/// One sellable variant of a product: its own SKU, option values, prices and stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Variant {
    /// Id within the product: 1 for the first variant, never reused after a removal.
    pub id: u32,
    /// Stock keeping unit, unique in the catalog.
    pub sku: String,
    /// Option values that tell this variant from its siblings (e.g. size, colour); every
    /// variant of a product has the same option names and no two the same values.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// At most one price per currency, ordered by currency code.
    #[serde(default)]
    pub prices: Vec<Money>,
    /// Units in stock, never negative.
    #[serde(default)]
    pub stock: i64,
}

impl Variant {
    /// This variant's price in `currency`, if it has one.
    pub fn price_in(&self, currency: &str) -> Option<&Money> {
        self.prices.iter().find(|m| m.currency == currency)
    }
}

/// One category on the way from the root of the category tree to a product's category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CategoryNode {
    /// Category id.
    pub id: Uuid,
    /// URL-safe name, unique among siblings.
    pub slug: String,
    /// Display name.
    pub name: String,
}
