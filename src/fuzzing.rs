//! The checks behind the fuzz targets (`fuzz/`, cargo-fuzz): one function per decoder of
//! outside bytes, each panicking only when a property the platform relies on breaks. libFuzzer
//! calls them with generated input (`make fuzz`); the unit tests below replay every committed
//! corpus file (`fuzz/corpus/<target>/`) on stable, so CI runs each target's corpus on every
//! change and a crash once found stays fixed.

use actix_web::test::TestRequest;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
use serde_json::Value;

use crate::bus::envelope::{decode_command, decode_event};
use crate::search::cursor::{Cursor, Primary};
use crate::telemetry::trace_context::TraceParent;

/// A target's check: panics when a property breaks.
pub type Check = fn(&[u8]);

/// The targets, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: [(&str, Check); 7] = [
    ("decode_event", event),
    ("decode_command", command),
    ("dlq_record", dlq_record),
    ("traceparent", traceparent),
    ("request_headers", request_headers),
    ("search_cursor", search_cursor),
    ("request_body", request_body),
];

/// An event message: refused with a class, or decoded into an envelope that encodes and
/// decodes again to itself (upcast once, never twice).
pub fn event(data: &[u8]) {
    if let Ok(e) = decode_event(Some(data)) {
        assert_eq!((e.state.id, e.state.version), (e.aggregate_id, e.aggregate_version));
        let again = serde_json::to_vec(&e).expect("an envelope encodes");
        assert_eq!(
            decode_event(Some(&again)).as_ref().ok(),
            Some(&e),
            "re-decoding changes nothing"
        );
    }
}

/// A command message: refused with a class, or decoded.
pub fn command(data: &[u8]) {
    if let Err(e) = decode_command(Some(data)) {
        assert!(!e.class.is_empty());
    }
}

/// A dead letter with arbitrary headers, key and payload: read, fingerprinted and triaged.
pub fn dlq_record(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0xff);
    let payload = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    let mut headers = OwnedHeaders::new();
    let names = crate::bus::dlq::dlq_headers::ALL;
    for (i, value) in parts.enumerate() {
        headers = headers.insert(Header {
            key: names[i % names.len()],
            value: Some(value),
        });
    }
    let m = OwnedMessage::new(
        Some(payload.to_vec()),
        Some(key.to_vec()),
        "dlq.fuzz".into(),
        Timestamp::NotAvailable,
        0,
        0,
        Some(headers),
    );
    let r = crate::ops::dlq::DlqRecord::from_message(&m);
    assert_eq!((r.partition, r.offset), (0, 0));
    let fp = crate::ops::triage::fingerprint_of(&m);
    let groups = crate::ops::triage::triage(std::slice::from_ref(&m));
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].fingerprint, fp);
}

/// A `traceparent` header: refused, or parsed into one that prints as a header parsing back
/// to itself.
pub fn traceparent(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(tp) = TraceParent::parse(s) {
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
    }
}

/// `If-Match` and `Idempotency-Key` as a client may send them (the first byte splits the two).
pub fn request_headers(data: &[u8]) {
    let cut = data.first().map_or(0, |b| usize::from(*b) % (data.len().max(1)));
    let (a, b) = data.split_at(cut.min(data.len()));
    let mut req = TestRequest::default();
    if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(a) {
        req = req.insert_header(("If-Match", v));
    }
    if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(b) {
        req = req.insert_header(("Idempotency-Key", v));
    }
    let req = req.to_http_request();
    let _ = crate::http::products::if_match(&req);
    if let Ok(Some(k)) = crate::http::idempotency::key(&req) {
        assert!(
            !k.is_empty() && k.len() <= crate::http::idempotency::MAX_KEY_LEN,
            "{k:?}"
        );
    }
}

/// A search `after` cursor: refused, or decoded into sort values that encode to a cursor
/// decoding to the same values.
pub fn search_cursor(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for primary in [Primary::Score, Primary::Long] {
        if let Ok(c) = Cursor::decode(s, primary) {
            assert_eq!(Cursor::decode(&c.encode(), primary).as_ref(), Ok(&c));
        }
    }
}

/// A request body: JSON or not; a NUL anywhere is found; the write bodies decode or refuse.
pub fn request_body(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(path) = crate::schema::text::first_nul(&v, "body") {
        assert!(path.starts_with("body"));
    }
    let _ = serde_json::from_value::<crate::http::bodies::CreateProductBody>(v.clone());
    let _ = serde_json::from_value::<crate::http::bodies::UpdateDetailsBody>(v.clone());
    let _ = serde_json::from_value::<crate::http::bodies::StockBody>(v.clone());
    let _ = serde_json::from_value::<crate::http::bodies::NewVariantBody>(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus file of every target, through its check.
    #[test]
    fn every_committed_corpus_input_passes_its_check() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut ran = 0;
        for (name, check) in TARGETS {
            let dir = root.join(name);
            let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut n = 0;
            for f in files.flatten() {
                check(&std::fs::read(f.path()).expect("corpus file"));
                n += 1;
            }
            assert!(n > 0, "{name} has a seed corpus");
            ran += n;
        }
        assert!(ran >= TARGETS.len());
    }

    /// Writes one seed of `target`.
    fn seed(target: &str, name: &str, bytes: &[u8]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(name), bytes).expect("seed");
    }

    const SEED_ID: uuid::Uuid = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

    /// Seeds of the two message decoders: real envelopes, commands, and broken ones.
    fn message_seeds() {
        use crate::domain::product::{execute, CreateProduct, EventEnvelope, EventMeta, ProductCommand};
        use serde_json::json;
        let id = SEED_ID;
        let (p, change) = execute(
            None,
            id,
            &ProductCommand::CreateProduct(CreateProduct::simple("SEED-1", "Seed lamp", None, 1)),
            chrono::DateTime::UNIX_EPOCH,
        )
        .expect("created");
        let meta = EventMeta {
            event_id: id,
            causation_id: None,
            correlation_id: None,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            actor: Some("seed".into()),
        };
        let created = EventEnvelope::new(&change, &p, meta.clone());
        seed("decode_event", "created", &serde_json::to_vec(&created).expect("json"));
        let snapshot = EventEnvelope::snapshot(&p, meta, "seed");
        seed(
            "decode_event",
            "snapshot",
            &serde_json::to_vec(&snapshot).expect("json"),
        );
        seed("decode_event", "empty_object", b"{}");
        seed("decode_event", "not_json", b"{\"event_type\": ");
        let cmd = |t: &str, payload: Value| {
            serde_json::to_vec(&json!({"command_id": id, "product_id": id, "command_type": t, "payload": payload}))
                .expect("json")
        };
        let create = json!({"sku": "SEED-1", "title": "Seed lamp", "price": {"amount_minor": 100, "currency": "EUR"}});
        seed("decode_command", "create", &cmd("CreateProduct", create));
        let price = json!({"price": {"amount_minor": 5, "currency": "EUR"}});
        seed("decode_command", "change_price", &cmd("ChangePrice", price));
        seed(
            "decode_command",
            "nul_key",
            &cmd("ChangePrice", json!({"price": {"\u{0}x": 1}})),
        );
        seed("decode_command", "unknown", &cmd("Explode", json!(null)));
    }

    /// Seeds of the header, cursor, dead-letter and body decoders.
    fn other_seeds() {
        use serde_json::json;
        let mut dlq = b"{\"event_type\": \xffkey-1\xffproduct.events\xff0\xff12".to_vec();
        dlq.extend_from_slice(b"\xff1700000000000\xffgroup\xffdecode\xffinvalid_json\xffexpected value at line 1");
        seed("dlq_record", "letter", &dlq);
        seed(
            "traceparent",
            "valid",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        seed(
            "traceparent",
            "zero_trace",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        );
        seed(
            "traceparent",
            "future_version",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        );
        seed("request_headers", "quoted", b"\x04\"3\"\"key-1\"");
        seed("request_headers", "weak", b"\x05W/\"7\"abc");
        for (name, sort) in [
            ("score", json!([1.5, SEED_ID.to_string()])),
            ("long", json!([1000, SEED_ID.to_string()])),
        ] {
            let c = Cursor::from_sort(sort).expect("cursor");
            seed("search_cursor", name, c.encode().as_bytes());
        }
        seed("search_cursor", "garbage", b"!!not-a-cursor");
        let create = br#"{"sku": "SEED-1", "title": "Seed lamp", "price": {"amount_minor": 100, "currency": "EUR"}, "variants": [{"sku": "SEED-1-S", "options": {"size": "S"}}]}"#;
        seed("request_body", "create", create);
        seed(
            "request_body",
            "update",
            br#"{"title": "Brighter", "attributes": {"watts": {"number": 5}}}"#,
        );
        seed("request_body", "stock", br#"{"set": 3}"#);
        seed(
            "request_body",
            "nested_nul",
            br#"{"payload": {"price": {"\u0000x": 1}}}"#,
        );
    }

    /// Writes the seed corpora (run once by hand: `cargo test --lib fuzzing -- --ignored`);
    /// libFuzzer adds what it finds to them under `fuzz/corpus/`.
    #[test]
    #[ignore = "writes fuzz/corpus seeds"]
    fn write_seed_corpus() {
        message_seeds();
        other_seeds();
    }
}
