//! [`CachedDocument`]: a cached product as Redis stores it and the API serves it, the JSON the
//! writer serialized, with the few fields a reader decides on read from its head.

use uuid::Uuid;

use super::CacheError;
use crate::domain::product::{Product, ProductStatus};

/// A cached product document: the JSON as written, and the fields a reader decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDocument {
    /// Aggregate version of the document.
    pub version: i64,
    /// Lifecycle status (who may see it).
    pub status: ProductStatus,
    /// The owning seller (who may see it unpublished).
    pub owner: String,
    /// The product's JSON, exactly as the writer serialized it.
    pub json: String,
}

impl CachedDocument {
    /// `product` as the document the cache stores and the API serves (its JSON).
    pub fn of(product: &Product) -> Result<Self, serde_json::Error> {
        Ok(Self {
            version: product.version,
            status: product.status,
            owner: product.owner.clone(),
            json: serde_json::to_string(product)?,
        })
    }

    /// Reads the id, version and status of `json` (other fields are skipped, not parsed);
    /// a document that lacks them or names another product is corrupt.
    pub(super) fn read(id: Uuid, json: String) -> Result<Self, CacheError> {
        #[derive(serde::Deserialize)]
        struct Head {
            id: Uuid,
            version: i64,
            status: ProductStatus,
            #[serde(default = "default_owner")]
            owner: String,
        }
        fn default_owner() -> String {
            crate::domain::product::DEFAULT_OWNER.to_owned()
        }
        let head: Head = serde_json::from_str(&json).map_err(|e| CacheError::Corrupt(e.to_string()))?;
        if head.id != id {
            return Err(CacheError::Corrupt(format!("entry of {id} holds product {}", head.id)));
        }
        Ok(Self {
            version: head.version,
            status: head.status,
            owner: head.owner,
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_document_is_served_as_stored_and_only_its_head_is_read() {
        let id = Uuid::new_v4();
        let json = serde_json::json!({"id": id, "sku": "S", "version": 3, "status": "published",
                                      "attributes": {"a": "b"}, "price": null})
        .to_string();
        let d = CachedDocument::read(id, json.clone()).expect("read");
        assert_eq!(
            (d.version, d.status, d.json.as_str()),
            (3, ProductStatus::Published, json.as_str())
        );
        let corrupt = |r: Result<CachedDocument, CacheError>| matches!(r, Err(CacheError::Corrupt(_)));
        assert!(
            corrupt(CachedDocument::read(Uuid::new_v4(), json)),
            "another product's entry"
        );
        assert!(
            corrupt(CachedDocument::read(
                id,
                format!("{{\"id\":\"{id}\",\"status\":\"draft\"}}")
            )),
            "no version"
        );
        assert!(corrupt(CachedDocument::read(id, "{".into())), "not JSON");
    }
}
