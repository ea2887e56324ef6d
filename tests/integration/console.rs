//! The operations console at /console/: its JSON endpoints (tokens, dry runs, actions) and
//! the page itself in a real headless chromium (no console errors, each group's lag and
//! catch-up, the drift check, a dead letter after poison and its cause, a product's trace, a
//! chart that moves), which also writes the screenshots in docs/screenshots/.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

use crate::browser::Browser;
use crate::helpers::{TestApp, READ_TOKEN, TOKEN};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = app.http.request(method, app.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Poison on the events topic, projected: one dead letter (`invalid_json`).
async fn inject_poison(app: &TestApp, p: &mut aliexpress::worker::projection::ProductEventConsumer) {
    let env = &app.env;
    env.produce(&env.names.events_topic(), "console-poison", b"this is not json")
        .await;
    let o = env.consume_until_idle(p).await;
    assert_eq!(o.dead_lettered, 1, "the poison is dead-lettered: {o:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_endpoints_need_a_token_and_actions_a_write_token_after_a_dry_run() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let product = app.create_product("CONSOLE-API-1", "Console API lamp").await;
    env.drain_outbox().await;
    let mut p = env.projector(None, None).await;
    env.consume_until_idle(&mut p).await;
    inject_poison(&app, &mut p).await;

    // The page is anonymous, with a policy that runs only its own scripts; data is not.
    let page = app.get("/console/").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(app.get("/console/vendor/uPlot.iife.min.js").await.status(), 200);
    for path in [
        "/console/api/overview",
        "/console/api/lag",
        "/console/api/dead-letters",
        "/console/api/outbox/parked",
    ] {
        assert_eq!(
            call(&app, reqwest::Method::GET, path, None, None).await.0,
            401,
            "{path}"
        );
    }

    let (s, o) = call(
        &app,
        reqwest::Method::GET,
        "/console/api/overview",
        Some(READ_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{o}");
    assert!(
        o["health"].as_array().expect("health").iter().all(|c| c["ok"] == true),
        "{o}"
    );
    assert_eq!(o["outbox"]["pending"], 0, "{o}");

    let (s, dl) = call(
        &app,
        reqwest::Method::GET,
        "/console/api/dead-letters",
        Some(READ_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{dl}");
    assert_eq!(dl["total"], 1, "{dl}");
    let letter = &dl["records"][0];
    assert_eq!(letter["error_class"], "invalid_json", "{letter}");
    assert_eq!(letter["payload"], "this is not json");
    assert_eq!(letter["redriven"], false);

    // Redrive: a dry run changes nothing, a read token may not execute, a write token does, once.
    let redrive = |execute: bool| json!({"topic": "events", "all": true, "execute": execute});
    let path = "/console/api/dead-letters/redrive";
    let (s, dry) = call(
        &app,
        reqwest::Method::POST,
        path,
        Some(READ_TOKEN),
        Some(redrive(false)),
    )
    .await;
    assert_eq!(
        (s, dry["executed"].clone(), dry["count"].clone()),
        (200, json!(false), json!(1)),
        "{dry}"
    );
    assert_eq!(
        call(&app, reqwest::Method::POST, path, None, Some(redrive(false)))
            .await
            .0,
        401
    );
    assert_eq!(
        call(&app, reqwest::Method::POST, path, Some(READ_TOKEN), Some(redrive(true)))
            .await
            .0,
        403
    );
    let (s, bad) = call(
        &app,
        reqwest::Method::POST,
        path,
        Some(TOKEN),
        Some(json!({"all": false})),
    )
    .await;
    assert_eq!(s, 422, "neither offsets nor all: {bad}");
    let (s, done) = call(&app, reqwest::Method::POST, path, Some(TOKEN), Some(redrive(true))).await;
    assert_eq!((s, done["count"].clone()), (200, json!(1)), "{done}");
    let who = aliexpress::identity::fingerprint(TOKEN);
    assert_eq!(
        app.env.count(&format!("dlq_redrives WHERE actor = '{who}'")).await,
        1,
        "the redrive records who asked"
    );
    let (_, again) = call(&app, reqwest::Method::POST, path, Some(TOKEN), Some(redrive(true))).await;
    assert_eq!(again["count"], 0, "each dead letter is redriven once: {again}");
    let (_, dl) = call(
        &app,
        reqwest::Method::GET,
        "/console/api/dead-letters",
        Some(READ_TOKEN),
        None,
    )
    .await;
    assert_eq!(dl["records"][0]["redriven"], true, "{dl}");

    // A parked outbox row: listed, a dry run leaves it parked, execute queues it again.
    app.post(
        &format!("/api/products/{}/stock", product["id"].as_str().expect("id")),
        json!({"set": 9}),
    )
    .await;
    let mut conn = aliexpress::store::pool::get(&env.pool).await.expect("conn");
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE outbox SET parked_at = now(), attempts = 5, last_error = 'Broker: Message size too large' \
             WHERE published_at IS NULL",
        ),
        &mut conn,
    )
    .await
    .expect("park");
    let (s, parked) = call(
        &app,
        reqwest::Method::GET,
        "/console/api/outbox/parked",
        Some(READ_TOKEN),
        None,
    )
    .await;
    assert_eq!((s, parked["total"].clone()), (200, json!(1)), "{parked}");
    let id = parked["rows"][0]["id"].as_i64().expect("id");
    assert_eq!(parked["rows"][0]["last_error"], "Broker: Message size too large");
    let retry = |execute: bool| json!({"ids": [id], "execute": execute});
    let path = "/console/api/outbox/retry";
    let (s, dry) = call(&app, reqwest::Method::POST, path, Some(READ_TOKEN), Some(retry(false))).await;
    assert_eq!((s, dry["count"].clone()), (200, json!(1)), "{dry}");
    assert_eq!(
        env.count("outbox WHERE parked_at IS NOT NULL").await,
        1,
        "a dry run changes nothing"
    );
    assert_eq!(
        call(&app, reqwest::Method::POST, path, Some(READ_TOKEN), Some(retry(true)))
            .await
            .0,
        403
    );
    let (s, done) = call(&app, reqwest::Method::POST, path, Some(TOKEN), Some(retry(true))).await;
    assert_eq!((s, done["count"].clone()), (200, json!(1)), "{done}");
    assert_eq!(env.count("outbox WHERE parked_at IS NOT NULL").await, 0);
    assert_eq!(env.drain_outbox().await, 1, "the retried row is published");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_a_browser_shows_each_groups_lag_a_dead_letter_and_a_moving_chart() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    // A projected catalog, then 4 events the projection has not read yet: lag 4.
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = app.create_product(&format!("CONSOLE-{i}"), "Console lamp").await;
        ids.push(c["id"].as_str().expect("id").to_owned());
    }
    env.drain_outbox().await;
    let mut p = env.projector(None, None).await;
    env.consume_until_idle(&mut p).await;
    // One document lost, found by the projection's drift check (run here once).
    crate::ops_watch::lose_document(env, &ids[0], 1).await;
    let deps = aliexpress::ops::reconcile::ReconcileDeps {
        pool: env.pool.clone(),
        cache: env.cache(),
        search: env.search(),
        names: env.names.clone(),
    };
    let check = aliexpress::worker::drift_watch::DriftWatch {
        every: Duration::from_secs(3600),
        sample: 100,
        grace: Duration::from_millis(500),
    };
    check
        .once(&deps, &aliexpress::worker::Shutdown::new())
        .await
        .expect("drift check")
        .expect("ran");
    for i in 3..7 {
        app.create_product(&format!("CONSOLE-{i}"), "Console lamp").await;
    }
    assert_eq!(env.drain_outbox().await, 4);
    let projection = env.names.projection_group();
    let commands = env.names.command_group();

    let browser = Browser::launch().await;
    browser.navigate(&app.url("/console")).await;
    assert_eq!(
        browser.eval("location.pathname").await,
        "/console/",
        "/console redirects"
    );
    browser
        .wait_for(
            "the chart library loads",
            Duration::from_secs(10),
            "typeof uPlot === 'function'",
        )
        .await;
    // The operator enters a read token, as on the page.
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{READ_TOKEN}'; \
             document.getElementById('token-form').requestSubmit(); true"
        ))
        .await;
    assert_eq!(
        browser.eval("sessionStorage.getItem('aliexpress.console.token')").await,
        READ_TOKEN,
        "the token is kept for the tab only"
    );

    // Health: four dependencies, all ok.
    browser
        .wait_for(
            "every dependency shows ok",
            Duration::from_secs(20),
            "[...document.querySelectorAll('#health tr[data-dependency]')].filter(r => r.cells[1].textContent === 'ok').length === 4",
        )
        .await;
    // Each group with its lag: the projection 4 behind (per partition too), the command group 0.
    let lag_of = |group: &str| {
        format!("(document.querySelector('#groups [data-group=\"{group}\"] .group-lag') || {{}}).textContent")
    };
    browser
        .wait_for(
            "the projection's lag",
            Duration::from_secs(20),
            &format!("{} === '4'", lag_of(&projection)),
        )
        .await;
    // Conditions waited for, not read once: the page re-renders its tables on every refresh.
    browser
        .wait_for(
            "the command group's lag",
            Duration::from_secs(20),
            &format!("{} === '0'", lag_of(&commands)),
        )
        .await;
    browser
        .wait_for(
            "partition rows add up to the group's lag",
            Duration::from_secs(20),
            &format!(
                "[...document.querySelectorAll('#groups [data-group=\"{projection}\"] .partition-lag')].map(c => Number(c.textContent)).reduce((a, b) => a + b, 0) === 4"
            ),
        )
        .await;
    browser
        .wait_for(
            "the projection's verdict says it is behind",
            Duration::from_secs(20),
            &format!(
                "['STALL', 'STOP', 'WARN'].includes((document.querySelector('#groups [data-group=\"{projection}\"] .verdict') || {{}}).textContent)"
            ),
        )
        .await;

    browser
        .wait_for(
            "the projection is not catching up (4 behind, nobody consuming; `ETA -` when one of them is on a partition with nothing committed yet, whose lag is unknown)",
            Duration::from_secs(20),
            &format!(
                "['not catching up', 'ETA -'].some(t => ((document.querySelector('#groups [data-group=\"{projection}\"] .group-eta') || {{}}).textContent || '').startsWith(t))"
            ),
        )
        .await;
    browser
        .wait_for(
            "the drift panel shows the lost document",
            Duration::from_secs(20),
            "(document.getElementById('drift-summary') || {}).textContent?.startsWith('drift: opensearch/missing 1')",
        )
        .await;

    // The chart gets new points as samples arrive.
    let points = "Number(document.getElementById('lag-chart').dataset.points)";
    let before = browser
        .wait_for(
            "the chart's first points",
            Duration::from_secs(20),
            &format!("{points} >= 2 && {points}"),
        )
        .await
        .as_u64()
        .expect("points");
    let after = browser
        .wait_for(
            "the chart moves",
            Duration::from_secs(20),
            &format!("{points} > {before} && {points}"),
        )
        .await;
    assert!(after.as_u64() > Some(before));
    browser
        .wait_for(
            "uPlot drew the chart",
            Duration::from_secs(20),
            "document.querySelectorAll('#lag-chart canvas').length > 0",
        )
        .await;

    // Poison: the dead letter shows with its reason.
    inject_poison(&app, &mut p).await;
    browser
        .wait_for(
            "the dead letter shows",
            Duration::from_secs(30),
            "[...document.querySelectorAll('#dead-letters tr.dead-letter .error-class')].some(c => c.textContent === 'invalid_json')",
        )
        .await;
    browser
        .wait_for(
            "the dead letter's cause shows in the triage table",
            Duration::from_secs(30),
            "[...document.querySelectorAll('#dlq-triage tr.cause')].some(r => r.querySelector('.error-class').textContent === 'invalid_json' && r.querySelector('.cause-count').textContent === '1')",
        )
        .await;
    // The projection caught up meanwhile (it read the poison after the 4 events).
    browser
        .wait_for(
            "the projection caught up",
            Duration::from_secs(20),
            &format!("{} === '0'", lag_of(&projection)),
        )
        .await;
    browser
        .wait_for(
            "its catch-up says so",
            Duration::from_secs(20),
            &format!(
                "(document.querySelector('#groups [data-group=\"{projection}\"] .group-eta') || {{}}).textContent === 'caught up'"
            ),
        )
        .await;
    // A product's trace, from the page's form.
    browser
        .eval(&format!(
            "document.getElementById('trace-id').value = '{}'; document.getElementById('trace-form').requestSubmit(); true",
            ids[1]
        ))
        .await;
    browser
        .wait_for(
            "the trace ends in its verdict",
            Duration::from_secs(20),
            "document.getElementById('trace-verdict').className === 'ok' && document.getElementById('trace-verdict').textContent.startsWith('ok: searchable') && document.querySelectorAll('#trace tr').length > 4",
        )
        .await;
    // A redrive is a dry run first; a read token cannot execute it.
    browser
        .eval("document.getElementById('dlq-dry-all').click(); true")
        .await;
    browser
        .wait_for(
            "the dry run shows",
            Duration::from_secs(20),
            "document.getElementById('dlq-plan').textContent.includes('Dry run: 1 would be changed')",
        )
        .await;
    assert_eq!(env.count("dlq_redrives").await, 0, "a dry run redrives nothing");
    // A wide chart of a few more samples for the screenshot.
    browser
        .wait_for(
            "more chart points",
            Duration::from_secs(20),
            &format!("{points} >= {}", before + 3),
        )
        .await;
    browser.screenshot(&screenshots().join("console.png")).await;
    browser
        .eval("document.querySelector('#dlq-plan button.danger').click(); true")
        .await;
    browser
        .wait_for(
            "the refusal shows",
            Duration::from_secs(20),
            "document.getElementById('dlq-plan').textContent.includes('use a write token')",
        )
        .await;
    assert_eq!(env.count("dlq_redrives").await, 0, "a read token executes nothing");
    // The 403 above is the page's own answer to show, not an error of the page: only the
    // browser's network log may name it.
    let errors: Vec<String> = browser
        .errors()
        .into_iter()
        .filter(|e| !(e.contains("status of 403") && e.contains("/console/api/dead-letters/redrive")))
        .collect();
    assert!(errors.is_empty(), "the console logged errors: {errors:#?}");

    // Swagger UI, for the docs' screenshot, with no errors either.
    browser.navigate(&app.url("/docs/")).await;
    browser
        .wait_for(
            "Swagger UI renders the contract",
            Duration::from_secs(30),
            "document.querySelectorAll('.swagger-ui .opblock').length > 10",
        )
        .await;
    browser.screenshot(&screenshots().join("swagger-ui.png")).await;
    let errors: Vec<String> = browser
        .errors()
        .into_iter()
        .filter(|e| !(e.contains("status of 403") && e.contains("/console/api/dead-letters/redrive")))
        .collect();
    assert!(errors.is_empty(), "Swagger UI logged errors: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_traces_a_product_as_the_command_line_does() {
    let app = TestApp::spawn().await;
    let p = app.create_product("CONSOLE-TRACE", "Traced from the console").await;
    let id = p["id"].as_str().expect("id");
    let path = format!("/console/api/trace/{id}");
    let (s, t) = call(&app, reqwest::Method::GET, &path, Some(READ_TOKEN), None).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["verdict"]["state"], "waiting", "committed, no relay ran: {t}");
    assert!(
        t["verdict"]["text"]
            .as_str()
            .expect("text")
            .contains("not published yet"),
        "{t}"
    );
    assert_eq!(t["hops"][0]["hop"], "write", "{t}");
    app.env.drain_outbox().await;
    let (_, t) = call(&app, reqwest::Method::GET, &path, Some(READ_TOKEN), None).await;
    assert!(t["facts"]["record"]["offset"].is_i64(), "published and found: {t}");
    assert_eq!(
        call(
            &app,
            reqwest::Method::GET,
            "/console/api/trace/not-a-uuid",
            Some(READ_TOKEN),
            None
        )
        .await
        .0,
        400
    );
    let page = app.get("/console/").await.text().await.expect("page");
    assert!(page.contains("id=\"trace-form\""), "the console has the trace panel");
}
