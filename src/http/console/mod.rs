//! The operations console at `/console/`: one static page (HTML, script, styles and the
//! vendored uPlot chart library, compiled into the binary: nothing is fetched from elsewhere)
//! over JSON endpoints under `/console/api/` that call the operator tools of `ops` and the
//! store's own queries, the same ones the CLI uses.
//!
//! Access: the page and its assets are anonymous (they hold no data). Every endpoint needs a
//! token: a read token sees health, backlog, lag, dead letters with their payloads, parked
//! rows and replays, and may ask for a dry run; executing an action (DLQ redrive, retry of
//! parked outbox rows) needs a write token. The page keeps the token in `sessionStorage`.
//!
//! Failures: a dependency that is down shows in the health panel; an endpoint whose
//! dependency is down answers 503 with `Retry-After` like the rest of the API.

pub mod api;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse};

/// Content security policy of the page: its own script, styles and canvas images only, JSON
/// from the same origin, no framing, no inline script or style attribute.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's files: (path under `/console/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "vendor/uPlot.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("assets/vendor/uplot/LICENSE"),
    ),
];

const INDEX: &str = include_str!("assets/index.html");

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(INDEX)
}

async fn asset(path: web::Path<String>) -> Result<HttpResponse, super::ApiError> {
    let name = path.into_inner();
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| super::ApiError::NotFound("no such console asset".into()))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(*body))
}

/// The page and its assets, with the page's content security policy. `/console` redirects
/// to `/console/` so relative URLs resolve the same either way.
pub fn page() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/console")
        .wrap(DefaultHeaders::new().add(("Content-Security-Policy", CSP)))
        .route(
            "",
            web::get().to(|| async {
                HttpResponse::PermanentRedirect()
                    .insert_header(("Location", "/console/"))
                    .finish()
            }),
        )
        .route("/", web::get().to(index))
        .route("/{asset:(console\\.(js|css)|vendor/[A-Za-z.]+)}", web::get().to(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_assets_it_serves() {
        for src in INDEX.split(['"', '\'']).filter(|s| s.starts_with("/console/")) {
            let name = src.trim_start_matches("/console/");
            assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{src} is not served");
        }
        assert!(
            !INDEX.contains("http://") && !INDEX.contains("https://"),
            "nothing from elsewhere"
        );
    }
}
