//! Verify + parse + normalize, the ingress hot path before the database: a 1-item body and a
//! 1000-item body of mixed Messenger items, and a 1000-item WhatsApp body, encoded as Meta encodes
//! them; and the envelope parse alone (with its duplicate-key check) over the same bodies. Reproduce
//! with `cargo bench -p pagewire-meta --bench normalize` (figures in `docs/benchmarks.md`).

use std::hint::black_box;

// The allocator the `pagewire` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pagewire_meta::{sign, Envelope, SignatureHeader, VerifiedEnvelope};
use serde_json::{json, Value};

const SECRET: &[u8] = b"0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE: &str = "104872345678901";

/// Non-ASCII as `\uXXXX` and `/` as `\/`, as Meta sends bodies.
fn meta_encode(value: &Value) -> Vec<u8> {
    let plain = value.to_string();
    let mut out = String::with_capacity(plain.len() + plain.len() / 8);
    for c in plain.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.into_bytes()
}

fn messenger_item(n: usize) -> Value {
    let psid = format!("61000000000{:05}", n % 50);
    let base =
        json!({"sender": {"id": psid}, "recipient": {"id": PAGE}, "timestamp": 1_747_231_892_100_i64 + n as i64});
    let mut item = base;
    match n % 5 {
        0 => item["message"] = json!({"mid": format!("m_{n:020}"), "text": "Hei! Onko kesätarjous vielä voimassa? 😀"}),
        1 => {
            item["postback"] = json!({"mid": format!("m_{n:020}"), "title": "Track My Order", "payload": "TRACK_ORDER"})
        }
        2 => {
            item["message"] =
                json!({"mid": format!("m_{n:020}"), "text": "Yes", "quick_reply": {"payload": "CONFIRM_YES"}})
        }
        3 => item["read"] = json!({"watermark": 1_747_231_892_000_i64 + n as i64}),
        _ => {
            item["message"] = json!({"mid": format!("m_{n:020}"), "attachments": [{"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/v/t1.15752-9/img.png"}}]})
        }
    }
    item
}

fn messenger_body(items: usize) -> Vec<u8> {
    // Several entries, as Meta batches them.
    let entries: Vec<Value> = (0..items)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|chunk| json!({"id": PAGE, "time": 1_747_231_892_100_i64, "messaging": chunk.iter().map(|n| messenger_item(*n)).collect::<Vec<_>>()}))
        .collect();
    meta_encode(&json!({"object": "page", "entry": entries}))
}

fn whatsapp_body(items: usize) -> Vec<u8> {
    let messages: Vec<Value> = (0..items)
        .map(|n| json!({"from": format!("1650555{:04}", n % 100), "id": format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz{n:08}"), "timestamp": "1749416383", "type": "text", "text": {"body": "Hej! Är ni öppna idag?"}}))
        .collect();
    let value = json!({"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Märta"}, "wa_id": "16505550001"}], "messages": messages});
    meta_encode(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]}),
    )
}

/// What ingress does before the database: check the signature, parse, normalize every item.
fn verify_and_normalize(body: &[u8], header: &SignatureHeader) -> usize {
    let Ok(proof) = header.verify(SECRET, body) else {
        return 0;
    };
    let Ok(envelope) = VerifiedEnvelope::parse(proof) else {
        return 0;
    };
    envelope.normalize().len()
}

fn bodies() -> [(&'static str, Vec<u8>, usize); 3] {
    [
        ("messenger_1", messenger_body(1), 1),
        ("messenger_1000", messenger_body(1000), 1000),
        ("whatsapp_1000", whatsapp_body(1000), 1000),
    ]
}

/// The envelope parse alone, as the shared route does it before verifying: the one-pass read of
/// `object` and `entry[]` and the walk that refuses duplicate keys anywhere in the body.
fn parse(body: &[u8]) -> usize {
    Envelope::parse(body).map_or(0, |envelope| envelope.entries().len())
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_normalize");
    for (name, body, items) in bodies() {
        let signature = sign(SECRET, &body);
        let Ok(header) = SignatureHeader::parse(Some(signature.as_bytes()), false) else {
            panic!("the signature header does not parse");
        };
        assert_eq!(verify_and_normalize(&body, &header), items, "{name}");
        group.throughput(Throughput::Elements(items as u64));
        group.bench_function(name, |b| b.iter(|| verify_and_normalize(black_box(&body), &header)));
    }
    group.finish();

    let mut group = c.benchmark_group("parse");
    for (name, body, _) in bodies() {
        assert!(parse(&body) > 0, "{name}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(black_box(&body))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
