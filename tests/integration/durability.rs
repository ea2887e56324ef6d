//! The local stack's Postgres is durable by default (issue 9, defect 4): a commit that was
//! acknowledged survives a machine crash, so no benchmark or test figure is taken on a server
//! that could lose acknowledged writes.

use diesel_async::RunQueryDsl;
use std::time::Duration;

use crate::helpers::base_database_url;

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    setting: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_postgres_flushes_every_commit_to_disk() {
    let mut conn = aliexpress::store::pool::connect(&base_database_url(), Duration::from_secs(30))
        .await
        .expect("the stack's postgres");
    let rows: Vec<Setting> = diesel::sql_query(
        "SELECT name, setting FROM pg_settings \
         WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes') ORDER BY name",
    )
    .load(&mut conn)
    .await
    .expect("settings");
    let got: Vec<(String, String)> = rows.into_iter().map(|r| (r.name, r.setting)).collect();
    assert_eq!(
        got,
        vec![
            ("fsync".to_owned(), "on".to_owned()),
            ("full_page_writes".to_owned(), "on".to_owned()),
            ("synchronous_commit".to_owned(), "on".to_owned()),
        ],
        "deploy/local/stack must run Postgres durably"
    );
}
