//! Keeps the prepared form of statements diesel would prepare anew on every run.
//!
//! diesel caches a statement's prepared form only when its SQL cannot take an unbounded number
//! of shapes. It therefore never caches `sql_query`, `UPDATE`, an insert with an optional
//! column (`DEFAULT` or a bind) or a multi-row insert. With diesel-async each run of such a
//! statement costs a Parse/Describe round trip before the execution, a parse and a plan in
//! Postgres, and a Close: on a create (four such statements) and on the relays' "published"
//! mark, a quarter of Postgres's CPU per write (docs/BENCHMARKS.md, "Where the time goes").
//!
//! [`cached`] marks a statement as safe to keep. The cache is keyed by the statement's SQL
//! text and bind types, so each shape is kept once under its own key and a statement is never
//! run as another. Use it only where the text takes a bounded number of shapes: fixed SQL, an
//! insert whose optional columns are a few, a multi-row insert of at most a product's
//! variants (`VARIANTS_MAX`, 100), an `UPDATE` of a fixed set of columns. And only where one
//! plan suits every run: Postgres may switch a kept statement to a generic plan, which is why
//! the relays' claim is not kept (`outbox_repo::claim_batch`).

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;

/// A statement kept in the connection's prepared-statement cache (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(Q);

/// `statement`, kept in the connection's prepared-statement cache once prepared.
pub fn cached<Q>(statement: Q) -> Cached<Q> {
    Cached(statement)
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Cached<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// Keyed by SQL text and bind types, never by Rust type (the same type may write several
/// shapes of SQL).
impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::outbox;
    use diesel::prelude::*;

    #[test]
    fn statements_diesel_would_prepare_anew_are_kept() {
        let raw = diesel::sql_query("SELECT 1");
        assert!(!raw.is_safe_to_cache_prepared(&Pg).expect("walk"));
        assert!(cached(raw).is_safe_to_cache_prepared(&Pg).expect("walk"));
        let update = diesel::update(outbox::table.filter(outbox::id.eq(1))).set(outbox::attempts.eq(2));
        assert!(!update.is_safe_to_cache_prepared(&Pg).expect("walk"));
        assert!(cached(update).is_safe_to_cache_prepared(&Pg).expect("walk"));
    }

    #[test]
    fn the_text_is_the_statements_own() {
        let update = diesel::update(outbox::table.filter(outbox::id.eq(1))).set(outbox::attempts.eq(2));
        let expected = diesel::debug_query::<Pg, _>(&update).to_string();
        assert_eq!(diesel::debug_query::<Pg, _>(&cached(update)).to_string(), expected);
    }
}
