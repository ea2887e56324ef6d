//! Swagger UI at /docs/ over the served OpenAPI document.

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_is_served_at_docs_over_openapi_json_with_its_own_content_policy() {
    let app = TestApp::spawn().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "the UI may run its own scripts and nothing else: {csp}"
    );
    let html = page.text().await.expect("page");
    assert!(
        html.contains("swagger-ui"),
        "Swagger UI's page: {}",
        &html[..html.len().min(300)]
    );
    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status(), 200);
    let js = init.text().await.expect("initializer");
    assert!(js.contains("/openapi.json"), "the UI reads the served contract: {js}");
    // JSON answers keep the strict policy.
    let api = app.get("/openapi.json").await;
    let strict = api
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(strict.starts_with("default-src 'none'"), "{strict}");
}
