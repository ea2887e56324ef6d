//! `aliexpress dlq triage`: dead letters grouped by cause instead of listed one by one.
//!
//! A record's fingerprint is the SHA-256 (first 12 hex digits) of its stage, its error class
//! and its reason with the particulars taken out (ids, hex strings and numbers become `<id>`
//! and `<n>`), so 3 000 letters of one bug are one line with a count, first and last seen,
//! the products affected and the binary versions that wrote them. `dlq redrive --fingerprint
//! F` redrives one group (`--canary N` first tries N); letters that already failed after a
//! redrive are counted per group.

use rdkafka::message::{Message, OwnedMessage};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use crate::bus::consumer::header_str;
use crate::bus::dlq::dlq_headers;

/// Dead letters of one cause.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The cause's fingerprint.
    pub fingerprint: String,
    /// Where it failed (`decode`, `index`, ...).
    pub stage: String,
    /// Error class.
    pub error_class: String,
    /// The reason, particulars taken out.
    pub reason: String,
    /// Records.
    pub count: usize,
    /// Earliest `failed_at`.
    pub first_seen: String,
    /// Latest `failed_at`.
    pub last_seen: String,
    /// Distinct keys (products).
    pub products: usize,
    /// Versions of the binaries that dead-lettered them.
    pub app_versions: Vec<String>,
    /// Records that failed again after a redrive (they carry `redrive.count`).
    pub failed_after_redrive: usize,
    /// (partition, offset) of each record.
    pub records: Vec<(i32, i64)>,
}

/// `reason` with ids, hex strings and numbers replaced, so that one cause reads the same
/// whatever product or offset it hit.
pub fn normalize(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        let hexish = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if hexish && word.len() >= 8 && word.chars().any(|c| c.is_ascii_digit()) {
            out.push_str("<id>");
        } else {
            let mut in_number = false;
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !in_number {
                        out.push_str("<n>");
                    }
                    in_number = true;
                } else {
                    in_number = false;
                    out.push(c);
                }
            }
        }
        word.clear();
    };
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The fingerprint of a cause.
pub fn fingerprint(stage: &str, class: &str, normalized_reason: &str) -> String {
    let d = Sha256::digest(format!("{stage}\u{1f}{class}\u{1f}{normalized_reason}").as_bytes());
    hex::encode(d)[..12].to_owned()
}

/// The fingerprint of one dead letter.
pub fn fingerprint_of(m: &OwnedMessage) -> String {
    let h = |n| header_str(m, n).unwrap_or("");
    fingerprint(
        h(dlq_headers::STAGE),
        h(dlq_headers::ERROR_CLASS),
        &normalize(h(dlq_headers::ERROR_MESSAGE)),
    )
}

/// The groups of `msgs`, largest first.
pub fn triage(msgs: &[OwnedMessage]) -> Vec<Group> {
    let mut groups: BTreeMap<String, (Group, BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for m in msgs {
        let h = |n| header_str(m, n).unwrap_or("").to_owned();
        let (stage, class, reason) = (
            h(dlq_headers::STAGE),
            h(dlq_headers::ERROR_CLASS),
            normalize(&h(dlq_headers::ERROR_MESSAGE)),
        );
        let fp = fingerprint(&stage, &class, &reason);
        let at = h(dlq_headers::FAILED_AT);
        let (g, keys, versions) = groups.entry(fp.clone()).or_insert_with(|| {
            (
                Group {
                    fingerprint: fp,
                    stage,
                    error_class: class,
                    reason,
                    count: 0,
                    first_seen: at.clone(),
                    last_seen: at.clone(),
                    products: 0,
                    app_versions: Vec::new(),
                    failed_after_redrive: 0,
                    records: Vec::new(),
                },
                BTreeSet::new(),
                BTreeSet::new(),
            )
        });
        g.count += 1;
        g.records.push((m.partition(), m.offset()));
        if header_str(m, crate::bus::dlq::REDRIVE_COUNT).is_some() {
            g.failed_after_redrive += 1;
        }
        if at < g.first_seen {
            g.first_seen = at.clone();
        }
        if at > g.last_seen {
            g.last_seen = at;
        }
        keys.insert(
            m.key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
        );
        versions.insert(h(dlq_headers::APP_VERSION));
    }
    let mut out: Vec<Group> = groups
        .into_values()
        .map(|(mut g, keys, versions)| {
            g.products = keys.len();
            g.app_versions = versions.into_iter().filter(|v| !v.is_empty()).collect();
            g
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn particulars_are_taken_out_of_a_reason() {
        assert_eq!(
            normalize("state id/version do not match: 01a2496d-c4da-7293-87ba-07a26ee2c3cf at 12"),
            "state id/version do not match: <id> at <n>"
        );
        assert_eq!(
            normalize("expected value at line 1 column 5"),
            "expected value at line <n> column <n>"
        );
        assert_eq!(normalize("unknown event_type \"Nope\""), "unknown event_type \"Nope\"");
        assert_eq!(
            normalize("v2 schema"),
            "v<n> schema",
            "digits inside a word are a number too"
        );
    }

    #[test]
    fn one_cause_is_one_fingerprint_whatever_it_hit() {
        let a = fingerprint(
            "decode",
            "invalid_json",
            &normalize("expected value at line 1 column 5"),
        );
        let b = fingerprint(
            "decode",
            "invalid_json",
            &normalize("expected value at line 3 column 17"),
        );
        let c = fingerprint(
            "index",
            "invalid_json",
            &normalize("expected value at line 3 column 17"),
        );
        assert_eq!(a, b);
        assert_ne!(a, c, "another stage is another cause");
        assert_eq!(a.len(), 12);
    }
}
