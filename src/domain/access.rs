//! Who may do what: callers ([`Principal`]), their [`Role`]s, and the object-level rule that
//! a seller sees and changes only their own products ([`Scope`]).
//!
//! | role | may |
//! |---|---|
//! | `seller` | their own products: create (owned by them), change, read drafts, history, commands |
//! | `catalog-admin` | every product (and transfer one to another seller), product types, the category tree |
//! | `operator` | the console and the ops actions (redrive, retry, replay, ...), read everything; change no product |
//! | `reader` | every read |
//!
//! A caller may hold several roles. Another seller's product is "not found" to a seller, on
//! reads and on writes, so its existence does not leak. Edges (HTTP, `product.commands`)
//! establish the principal; these rules decide.

use serde::{Deserialize, Serialize};

use super::product::{DomainError, Product, ProductCommand, ProductStatus};

/// A role a caller may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Their own products.
    Seller,
    /// Every product, product types and the category tree.
    CatalogAdmin,
    /// The console and the ops actions; reads everything, changes no product.
    Operator,
    /// Every read.
    Reader,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Role; 4] = [Role::Seller, Role::CatalogAdmin, Role::Operator, Role::Reader];

    /// The role's name on the wire, in tokens and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seller => "seller",
            Self::CatalogAdmin => "catalog-admin",
            Self::Operator => "operator",
            Self::Reader => "reader",
        }
    }

    /// The role of a name (`seller`, `catalog-admin`, `operator`, `reader`).
    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    /// No role.
    pub const NONE: Roles = Roles(0);

    /// The set of `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Whether `role` is in the set.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether any of `roles` is in the set.
    pub fn any(self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// The roles, in [`Role::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, as recorded with every write and in the audit tables: `key:<name>`,
    /// `jwt:<sub>`, `token:<fingerprint>` (development tokens) or `topic:<name>`. Never a secret.
    pub subject: String,
    /// What they may do.
    pub roles: Roles,
    /// The seller they act for (required with the seller role).
    pub seller: Option<String>,
}

impl Principal {
    /// Whether the caller may read every product, drafts and other sellers' included.
    pub fn reads_everything(&self) -> bool {
        self.roles.any(&[Role::CatalogAdmin, Role::Operator, Role::Reader])
    }

    /// How far this caller's product commands reach.
    pub fn scope(&self) -> Scope {
        if self.roles.has(Role::CatalogAdmin) {
            Scope::Any
        } else if let (true, Some(s)) = (self.roles.has(Role::Seller), &self.seller) {
            Scope::Seller(s.clone())
        } else {
            Scope::ReadOnly
        }
    }

    /// Whether the caller may see a product of `owner` in `status`: published products are
    /// everyone's; drafts and archived ones only their seller's and the readers of everything.
    pub fn may_see(&self, owner: &str, status: ProductStatus) -> bool {
        status == ProductStatus::Published || self.reads_everything() || self.owns(owner)
    }

    /// Whether the caller acts for `owner` (as a seller).
    pub fn owns(&self, owner: &str) -> bool {
        self.roles.has(Role::Seller) && self.seller.as_deref() == Some(owner)
    }
}

/// How far a caller's product commands reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every product (a catalog admin, or a trusted producer on `product.commands`).
    Any,
    /// This seller's products only.
    Seller(String),
    /// No product (operators and readers change no product).
    ReadOnly,
}

impl Scope {
    /// A creation within a seller's scope is owned by that seller (the owner never comes from
    /// a message body).
    pub fn stamp_owner(&self, command: &mut ProductCommand) {
        if let (Scope::Seller(s), ProductCommand::CreateProduct(c)) = (self, command) {
            c.owner = s.clone();
        }
    }
}

/// Whether a command within `scope` may run against `current` (`None`: not created yet).
/// Another seller's product is answered as missing, so its existence does not leak.
pub fn check_command(scope: &Scope, current: Option<&Product>, command: &ProductCommand) -> Result<(), DomainError> {
    match scope {
        Scope::Any => Ok(()),
        Scope::ReadOnly => Err(DomainError::NotAllowed(
            "the caller's roles change no product (seller or catalog-admin needed)".into(),
        )),
        Scope::Seller(seller) => {
            if let Some(p) = current {
                if p.owner != *seller {
                    return Err(DomainError::NotFoundForSeller(seller.clone()));
                }
            }
            match command {
                ProductCommand::CreateProduct(c) if c.owner != *seller => Err(DomainError::NotAllowed(format!(
                    "a seller creates products of their own only (owner {:?}, caller's seller {seller:?})",
                    c.owner
                ))),
                ProductCommand::TransferOwnership { .. } => Err(DomainError::NotAllowed(
                    "only a catalog admin may transfer a product to another seller".into(),
                )),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role], seller: Option<&str>) -> Principal {
        Principal {
            subject: "jwt:test".into(),
            roles: Roles::of(roles),
            seller: seller.map(str::to_owned),
        }
    }

    #[test]
    fn role_names_round_trip_and_unknown_names_are_none() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse("Seller"), None);
    }

    #[test]
    fn scope_follows_the_strongest_role() {
        assert_eq!(
            principal(&[Role::Seller, Role::CatalogAdmin], Some("a")).scope(),
            Scope::Any
        );
        assert_eq!(principal(&[Role::Seller], Some("a")).scope(), Scope::Seller("a".into()));
        assert_eq!(principal(&[Role::Seller], None).scope(), Scope::ReadOnly);
        assert_eq!(
            principal(&[Role::Operator, Role::Reader], None).scope(),
            Scope::ReadOnly
        );
    }

    #[test]
    fn sellers_see_their_drafts_and_everyone_sees_published() {
        let acme = principal(&[Role::Seller], Some("acme"));
        assert!(acme.may_see("acme", ProductStatus::Draft));
        assert!(!acme.may_see("globex", ProductStatus::Draft));
        assert!(acme.may_see("globex", ProductStatus::Published));
        assert!(principal(&[Role::Reader], None).may_see("globex", ProductStatus::Archived));
        assert!(!principal(&[], None).may_see("globex", ProductStatus::Draft));
    }
}
