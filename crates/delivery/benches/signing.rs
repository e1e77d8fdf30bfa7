//! Outbound signing, per delivery: Standard Webhooks `v1` (HMAC-SHA256 over `id.timestamp.body`,
//! base64), `v1a` (ed25519), and the Meta-compatible mode (the item's Meta body, and
//! `X-Hub-Signature-256` over it). The event is a realistic 1 KiB Messenger message. Reproduce
//! with `cargo bench -p pagewire-delivery --bench signing` (figures in `docs/benchmarks.md`).

use std::hint::black_box;

// The allocator the `pagewire` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pagewire_core::{Ed25519Key, EndpointSecret};
use pagewire_delivery::{hub_signature, meta_body};
use serde_json::json;

fn event() -> String {
    let text = "Hej! Ich möchte meine Bestellung ändern, bitte 🙏 ".repeat(12);
    json!({
        "id": "evt_01M84FYBGSEP014SJAZDGHD9ZM",
        "type": "messenger.message",
        "version": 1,
        "tenant_id": "ten_01M84FW680X7D8DMTHSYD7CGPR",
        "platform": "messenger",
        "page_id": "104872345678901",
        "conversation_id": "104872345678901:6543210987654321",
        "sender_id": "6543210987654321",
        "recipient_id": "104872345678901",
        "direction": "inbound",
        "standby": false,
        "timestamp_ms": 1_747_231_892_100_i64,
        "received_at": "2026-11-23T17:00:00.000Z",
        "data": {"mid": "m_1", "text": text},
        "raw": {"sender": {"id": "6543210987654321"}, "recipient": {"id": "104872345678901"},
                "timestamp": 1_747_231_892_100_i64, "message": {"mid": "m_1", "text": text}},
        "source": {"inbound_id": "inb_01M84FYBGTWDCJ5JEBFD34ZT1V", "entry": 0, "item": 0, "field": "messaging"}
    })
    .to_string()
}

fn signing(c: &mut Criterion) {
    let payload = event();
    let secret = EndpointSecret::generate();
    let ed25519 = Ed25519Key::generate();
    let mut group = c.benchmark_group("outbound_signing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("standard_webhooks_v1", |b| {
        b.iter(|| {
            secret.sign(
                black_box("evt_01M84FYBGSEP014SJAZDGHD9ZM"),
                1_747_231_892,
                black_box(payload.as_bytes()),
            )
        });
    });
    group.bench_function("standard_webhooks_v1a_ed25519", |b| {
        b.iter(|| {
            ed25519.sign(
                black_box("evt_01M84FYBGSEP014SJAZDGHD9ZM"),
                1_747_231_892,
                black_box(payload.as_bytes()),
            )
        });
    });
    group.bench_function("meta_compatible_body_and_signature", |b| {
        b.iter(|| {
            let body = meta_body(black_box(&payload)).unwrap_or_default();
            hub_signature("whsec_bench", body.as_bytes())
        });
    });
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
