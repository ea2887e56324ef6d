//! The shared parts of the HTTP contract, declared once and used by each handler's
//! `#[utoipa::path]`: the document's title and security scheme ([`ApiDoc`], [`Security`]), the
//! problem answers each kind of operation can give ([`problems`], as `IntoResponses` sets
//! named after what the handler takes), the request headers of writes ([`IdempotencyKey`],
//! [`IfMatch`]), and the field schemas that carry the domain's limits ([`fields`]), built
//! from the same constants the server validates with.
//!
//! The document itself is a by-product of the route registration (`routes::document`): each
//! handler declares its path, parameters, bodies and answers next to its code, and
//! `utoipa-actix-web` collects them as the routes are registered.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{self, RefOr};
use utoipa::{Modify, OpenApi};

/// The document's head and what every operation shares.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aliexpress catalog API",
        description = "Products, commands and search. Errors are RFC 9457 problem+json with a stable `code`. Anonymous callers see published products only. Callers authenticate with a bearer token (scheme name case-insensitive): an identity provider's access token (`jwt`) or an API key (`bearer`). Each operation names the roles it accepts as its security scopes: `seller` (their own products), `catalog-admin` (every product, product types, the category tree), `operator` (the console and ops actions; changes no product), `reader` (every read). A missing role is 403; another seller's product is 404. Every client address is rate limited (429 with Retry-After)."
    ),
    modifiers(&Security),
    components(schemas(super::error::Problem, super::error::FieldError)),
    tags(
        (name = "products", description = "Products: create, read, change, publish"),
        (name = "variants", description = "A product's variants (SKU, options, prices per currency, stock) and its change history"),
        (name = "product-types", description = "Product types: the attributes a kind of product has, checked on every write"),
        (name = "categories", description = "The category tree: products follow a rename or move through their own events"),
        (name = "schemas", description = "JSON Schemas of the events and commands on the wire"),
        (name = "commands", description = "Commands for the write side, through product.commands"),
        (name = "search", description = "Full-text search over published products"),
        (name = "health", description = "Health, readiness, this document and metrics"),
        (name = "console", description = "The operations console's endpoints")
    )
)]
pub struct ApiDoc;

/// The security schemes: `bearer` (API keys, development tokens) and `jwt` (an identity
/// provider's access tokens). Handlers name `bearer` with the roles they accept as scopes;
/// every such requirement gets a `jwt` alternative with the same roles ([`with_jwt`]).
pub struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "An API key (`axk_...`, from `aliexpress keys create`: one role, optionally a seller) or, in development, a token of API_TOKENS (catalog-admin and operator) or API_READ_TOKENS (reader)".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        jwt.description = Some(
            "An access token of the configured identity provider (OIDC_ISSUER): RS256 or ES256, with the roles in OIDC_ROLE_CLAIM and the seller in OIDC_SELLER_CLAIM".into(),
        );
        components.add_security_scheme("jwt", SecurityScheme::Http(jwt));
    }
}

/// Gives every operation's `bearer` requirement a `jwt` alternative with the same roles.
pub fn with_jwt(doc: &mut openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let Some(reqs) = op.security.as_mut() else { continue };
            let json = serde_json::to_value(&*reqs).unwrap_or_default();
            let roles: Option<Vec<String>> = json.as_array().and_then(|all| {
                all.iter()
                    .find_map(|r| r.get("bearer"))
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
            });
            if let Some(roles) = roles {
                reqs.push(SecurityRequirement::new("jwt", roles));
            }
        }
    }
}

/// Problem answers, grouped by what an operation takes; a handler lists the groups it can
/// answer with (`responses((status = 200, ...), problems::Limits, problems::ById, ...)`).
pub mod problems {
    use std::collections::BTreeMap;
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, Type};
    use utoipa::IntoResponses;

    /// A problem+json response with the headers its status carries.
    pub fn response(status: u16, description: &str) -> RefOr<Response> {
        let mut r = ResponseBuilder::new().description(description).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        match status {
            401 => {
                r = r.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("Always `Bearer`"))
                        .build(),
                )
            }
            429 | 503 => {
                r = r.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        ))
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                )
            }
            _ => {}
        }
        RefOr::T(r.build())
    }

    fn set(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
        list.iter().map(|(s, d)| (s.to_string(), response(*s, d))).collect()
    }

    macro_rules! problem_set {
        ($(#[$doc:meta])* $name:ident: $($status:literal => $description:literal),+ $(,)?) => {
            $(#[$doc])*
            pub struct $name;
            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    set(&[$(($status, $description)),+])
                }
            }
        };
    }

    problem_set!(
        /// Every API operation: the per-client rate limit and an unavailable dependency.
        Limits:
        429 => "Rate limit of this client address spent; see Retry-After",
        503 => "A dependency is unavailable; see Retry-After",
    );
    problem_set!(
        /// Operations that touch no dependency: the per-client rate limit only.
        RateLimit: 429 => "Rate limit of this client address spent; see Retry-After",
    );
    problem_set!(
        /// Operations open to anonymous callers: a token, when given, must be valid.
        OptionalToken:
        401 => "Malformed or unknown bearer token",
        403 => "The caller may not see what it asked for (another seller's unpublished products)",
    );
    problem_set!(
        /// Operations that need a caller with one of the roles they name.
        Token:
        401 => "Missing, malformed or unknown bearer token",
        403 => "The caller lacks the role this needs",
    );
    problem_set!(
        /// Writes: they need one of the roles they name (and, for a seller, their own product).
        Writer:
        401 => "Missing, malformed or unknown bearer token",
        403 => "The caller lacks the role this needs",
    );
    problem_set!(
        /// Operations that read a JSON body.
        Body:
        400 => "Malformed JSON, a malformed id or an unreadable body",
        408 => "The body did not arrive within HTTP_BODY_READ_TIMEOUT_MS",
        413 => "Body over HTTP_BODY_LIMIT_BYTES",
        415 => "Content-Type is not application/json",
        422 => "A parameter or field breaks a rule; `errors` names it",
    );
    problem_set!(
        /// Operations on one resource by id.
        ById:
        400 => "Malformed JSON, a malformed id or an unreadable body",
        404 => "No such resource (an unpublished product is not found by callers who may not see it)",
    );
    problem_set!(
        /// Operations with parameters the server validates.
        Invalid: 422 => "A parameter or field breaks a rule; `errors` names it",
    );
    problem_set!(
        /// Product writes: state conflicts and idempotency keys in flight.
        Conflicts: 409 => "Conflicts with the current state (archived, a forbidden transition, not enough stock, a taken sku) or a request with this Idempotency-Key is in flight",
    );
    problem_set!(
        /// Writes that take `If-Match`.
        Stale: 412 => "If-Match does not name the current version",
    );
    problem_set!(
        /// The console's actions: a reader may see the dry run only.
        DryRunOnly:
        401 => "Missing, malformed or unknown bearer token",
        403 => "Executing needs the operator role",
    );
    problem_set!(
        /// Documents served by name (`/schemas/...`).
        NoSuchDocument: 404 => "No such document",
    );
    problem_set!(
        /// The console's dead-letter endpoints.
        NoTopic: 404 => "The dead-letter topic does not exist yet",
    );
}

/// `Idempotency-Key` on a product write.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "a parameter description; `idempotency::key` reads the header")]
pub struct IdempotencyKey {
    /// Makes a retry safe: the same key with the same body within 24 h returns the first
    /// response without applying again; another body is a 422, a request still in flight with
    /// the key a 409.
    #[param(rename = "Idempotency-Key", schema_with = fields::idempotency_key)]
    idempotency_key: Option<String>,
}

/// `If-Match` on a product change.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "a parameter description; `products::if_match` reads the header")]
pub struct IfMatch {
    /// Apply only at this product version (its ETag, e.g. "3"); otherwise 412.
    #[param(rename = "If-Match", schema_with = fields::if_match)]
    if_match: Option<String>,
}

/// Field schemas with the domain's limits (`domain::product::value`), for `schema_with`.
pub mod fields {
    use utoipa::openapi::schema::{AdditionalProperties, OneOfBuilder};
    use utoipa::openapi::{KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type};

    use crate::domain::product::{
        ATTRIBUTES_MAX, DESCRIPTION_MAX_CHARS, KNOWN_CURRENCIES, MAX_QUANTITY, OPTIONS_MAX, REQUIRED_TEXT_PATTERN,
        SHORT_TEXT_MAX_CHARS, TEXT_PATTERN, TITLE_MAX_CHARS,
    };
    use crate::http::idempotency::MAX_KEY_LEN;

    /// `If-Match`: `[W/]["]N["]`, what `products::parse_version_tag` accepts.
    pub const IF_MATCH_PATTERN: &str = "^(W/)?\"?[+-]?[0-9]{1,18}\"?$";
    /// `Idempotency-Key`: printable ASCII with one character that is neither a space nor a quote.
    pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[\\x20-\\x7E]*[\\x21\\x23-\\x7E][\\x20-\\x7E]*$";

    fn string(min: Option<usize>, max: usize, pattern: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(min)
            .max_length(Some(max))
            .pattern(Some(pattern))
    }

    /// Optional text up to `max` characters.
    pub fn text(max: usize) -> Object {
        string(None, max, TEXT_PATTERN).build()
    }

    /// Text of 1 to `max` characters.
    pub fn required_text(max: usize) -> Object {
        string(Some(1), max, REQUIRED_TEXT_PATTERN).build()
    }

    /// A product title.
    pub fn title() -> Object {
        required_text(TITLE_MAX_CHARS)
    }

    /// A product description.
    pub fn description() -> Object {
        text(DESCRIPTION_MAX_CHARS)
    }

    /// A category or brand.
    pub fn short_text() -> Object {
        text(SHORT_TEXT_MAX_CHARS)
    }

    /// The values of a one-of attribute: 1 to 200 texts of 1 to 100 characters.
    pub fn one_of_values() -> utoipa::openapi::schema::Array {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(required_text(SHORT_TEXT_MAX_CHARS))
            .min_items(Some(1))
            .max_items(Some(200))
            .description(Some("The allowed values of `one_of` (1 to 200); only with `one_of`."))
            .build()
    }

    /// A seller id.
    pub fn seller() -> Object {
        required_text(SHORT_TEXT_MAX_CHARS)
    }

    /// A sku.
    pub fn sku() -> Object {
        required_text(SHORT_TEXT_MAX_CHARS)
    }

    /// An integer within `min..=max`.
    pub fn int64(min: i64, max: i64) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min as isize))
            .maximum(Some(max as isize))
    }

    /// A stock level.
    pub fn quantity() -> Object {
        int64(0, MAX_QUANTITY).build()
    }

    /// An amount in minor units (> 0).
    pub fn amount_minor() -> Object {
        int64(1, i64::MAX).build()
    }

    /// An ISO 4217 currency the platform knows.
    pub fn currency() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(KNOWN_CURRENCIES.iter().copied()))
            .description(Some("ISO 4217 code, upper case"))
            .build()
    }

    /// A relative stock change: not 0.
    pub fn stock_delta() -> Schema {
        OneOfBuilder::new()
            .item(int64(-MAX_QUANTITY, -1).build())
            .item(int64(1, MAX_QUANTITY).build())
            .description(Some("Relative change, not 0"))
            .into()
    }

    /// String attributes (colour, size, ...).
    pub fn attributes() -> Object {
        let value = utoipa::openapi::schema::OneOfBuilder::new()
            .item(text(SHORT_TEXT_MAX_CHARS))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Attributes (colour, wattage, dimmable, ...): text, number or flag values; keys are trimmed.",
            ))
            .max_properties(Some(ATTRIBUTES_MAX))
            .property_names(Some(required_text(SHORT_TEXT_MAX_CHARS)))
            .additional_properties(Some(AdditionalProperties::RefOr(Schema::OneOf(value.build()).into())))
            .build()
    }

    /// A variant's option values: names and values 1..=100 characters, at most 10.
    pub fn options() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Option values (size, colour, ...) that tell a variant from its siblings.",
            ))
            .max_properties(Some(OPTIONS_MAX))
            .property_names(Some(required_text(SHORT_TEXT_MAX_CHARS)))
            .additional_properties(Some(AdditionalProperties::RefOr(
                required_text(SHORT_TEXT_MAX_CHARS).into(),
            )))
            .build()
    }

    /// The `Idempotency-Key` header.
    pub fn idempotency_key() -> Object {
        string(Some(1), MAX_KEY_LEN, IDEMPOTENCY_KEY_PATTERN).build()
    }

    /// The `If-Match` header.
    pub fn if_match() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(IF_MATCH_PATTERN))
            .build()
    }
}

/// A `$ref` to the component schema `name`.
pub fn reference(name: &str) -> RefOr<openapi::Schema> {
    RefOr::Ref(openapi::Ref::from_schema_name(name))
}
