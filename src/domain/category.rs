//! The category tree: categories with a parent, a position among their siblings, a name and
//! a slug (unique in the catalog: products name their category by it). Creating, renaming and
//! moving are commands like any other; a move never puts a category under itself or one of
//! its descendants.
//!
//! A product carries its category's path (root first) in its state; when a category is
//! renamed or moved, every product under it gets a `ProductCategorized` event through the
//! outbox (the store's fan-out), never a direct write to the index.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::product::{required_text, CategoryNode, DomainError, SHORT_TEXT_MAX_CHARS};

/// Deepest a category may sit (root = 1).
pub const MAX_DEPTH: usize = 10;

/// A category as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// Id.
    pub id: Uuid,
    /// Parent (none: a root).
    pub parent_id: Option<Uuid>,
    /// URL-safe name, unique in the catalog.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Position among its siblings (ascending).
    pub position: i32,
    /// Version: 1 on creation, +1 per change.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

impl Category {
    /// This category as a node of a product's path.
    pub fn node(&self) -> CategoryNode {
        CategoryNode {
            id: self.id,
            slug: self.slug.clone(),
            name: self.name.clone(),
        }
    }
}

/// What may change about a category; absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryChange {
    /// New name.
    pub name: Option<String>,
    /// New slug.
    pub slug: Option<String>,
    /// New parent: `Some(None)` makes it a root.
    pub parent_id: Option<Option<Uuid>>,
    /// New position.
    pub position: Option<i32>,
}

/// Checks a change on its own (at least one field; the name and slug well formed), whatever
/// the category's state; the change with its text fields as they will be stored.
pub fn check_change(change: &CategoryChange) -> Result<CategoryChange, DomainError> {
    if change == &CategoryChange::default() {
        return Err(DomainError::invalid("category", "at least one field must be given"));
    }
    Ok(CategoryChange {
        name: change
            .name
            .as_deref()
            .map(|n| required_text("name", n, SHORT_TEXT_MAX_CHARS))
            .transpose()?,
        slug: change.slug.as_deref().map(check_slug).transpose()?,
        ..change.clone()
    })
}

/// A slug: 1..=100 of lower-case letters, digits and `-`.
pub fn check_slug(slug: &str) -> Result<String, DomainError> {
    let s = required_text("slug", slug, SHORT_TEXT_MAX_CHARS)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(DomainError::invalid("slug", "lower-case letters, digits and '-' only"));
    }
    Ok(s)
}

/// A new category under `parent` (whose path, root first, is `parent_path`).
pub fn create(
    id: Uuid,
    parent_path: &[CategoryNode],
    parent_id: Option<Uuid>,
    slug: &str,
    name: &str,
    position: i32,
    at: DateTime<Utc>,
) -> Result<Category, DomainError> {
    if parent_path.len() >= MAX_DEPTH {
        return Err(DomainError::invalid(
            "parent_id",
            format!("a category sits at most {MAX_DEPTH} deep"),
        ));
    }
    Ok(Category {
        id,
        parent_id,
        slug: check_slug(slug)?,
        name: required_text("name", name, SHORT_TEXT_MAX_CHARS)?,
        position,
        version: 1,
        created_at: at,
        updated_at: at,
    })
}

/// The category after `change`. `new_parent_path` is the path of the new parent when the
/// change moves it (root first; the move is refused when it holds the category itself, which
/// is how moving under a descendant shows), and `depth_below` how many levels its deepest
/// descendant sits under it.
pub fn decide_change(
    current: &Category,
    change: &CategoryChange,
    new_parent_path: &[CategoryNode],
    depth_below: usize,
    at: DateTime<Utc>,
) -> Result<Category, DomainError> {
    let checked = check_change(change)?;
    let mut next = current.clone();
    if let Some(n) = checked.name {
        next.name = n;
    }
    if let Some(s) = checked.slug {
        next.slug = s;
    }
    if let Some(p) = change.parent_id {
        if p == Some(current.id) || new_parent_path.iter().any(|n| n.id == current.id) {
            return Err(DomainError::invalid(
                "parent_id",
                "a category cannot move under itself or its descendants",
            ));
        }
        if new_parent_path.len() + 1 + depth_below > MAX_DEPTH {
            return Err(DomainError::invalid(
                "parent_id",
                format!("the tree would be deeper than {MAX_DEPTH}"),
            ));
        }
        next.parent_id = p;
    }
    if let Some(pos) = change.position {
        next.position = pos;
    }
    next.version += 1;
    next.updated_at = at;
    Ok(next)
}

/// The path (root first) of the category with `slug` among `all` (the whole tree); empty
/// when there is no such category. Walks at most [`MAX_DEPTH`] parents.
pub fn path_in(all: &[Category], slug: &str) -> Vec<CategoryNode> {
    let mut path = Vec::new();
    let mut at = all.iter().find(|c| c.slug == slug);
    while let Some(c) = at {
        if path.len() > MAX_DEPTH {
            break;
        }
        path.push(c.node());
        at = c.parent_id.and_then(|p| all.iter().find(|x| x.id == p));
    }
    path.reverse();
    path
}

/// The display form of a path: `Electronics › Audio › Headphones`.
pub fn display(path: &[CategoryNode]) -> String {
    path.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(" › ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u128, slug: &str) -> CategoryNode {
        CategoryNode {
            id: Uuid::from_u128(id),
            slug: slug.into(),
            name: slug.to_uppercase(),
        }
    }

    fn audio() -> Category {
        create(
            Uuid::from_u128(2),
            &[node(1, "electronics")],
            Some(Uuid::from_u128(1)),
            "audio",
            "Audio",
            0,
            Utc::now(),
        )
        .expect("valid")
    }

    #[test]
    fn a_category_never_moves_under_itself_or_a_descendant() {
        let a = audio();
        let under_child = [node(1, "electronics"), node(2, "audio"), node(3, "headphones")];
        let move_to = |p: u128| CategoryChange {
            parent_id: Some(Some(Uuid::from_u128(p))),
            ..Default::default()
        };
        assert!(decide_change(&a, &move_to(3), &under_child, 1, Utc::now()).is_err());
        assert!(decide_change(&a, &move_to(2), &under_child[..2], 1, Utc::now()).is_err());
        let root = CategoryChange {
            parent_id: Some(None),
            ..Default::default()
        };
        let moved = decide_change(&a, &root, &[], 1, Utc::now()).expect("to the root");
        assert_eq!((moved.parent_id, moved.version), (None, 2));
    }

    #[test]
    fn slugs_names_and_depth_are_checked() {
        assert!(check_slug("Audio Gear").is_err());
        assert_eq!(check_slug("audio-gear").as_deref(), Ok("audio-gear"));
        let deep: Vec<CategoryNode> = (0..MAX_DEPTH as u128).map(|i| node(i + 10, "x")).collect();
        assert!(create(Uuid::nil(), &deep, Some(Uuid::from_u128(19)), "y", "Y", 0, Utc::now()).is_err());
        assert!(decide_change(&audio(), &CategoryChange::default(), &[], 0, Utc::now()).is_err());
        assert_eq!(
            display(&[node(1, "electronics"), node(2, "audio")]),
            "ELECTRONICS › AUDIO"
        );
    }
}
