//! The Meta load generator: signed webhooks (one-item bodies of about 1 KiB with non-ASCII text,
//! or a mix with batches of 10 and 100 items) for many Pages of several tenants, closed-loop at
//! maximum or open-loop at a fixed rate. Every acknowledgement's latency goes into an HDR histogram; in open loop it is
//! measured from the moment the request was due, not sent, so a stalled gateway cannot hide its
//! stall (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::fmt::Write as _;

use anyhow::Context as _;

use crate::http1::{self, Conn, Target};

/// Makes unique, signed bodies cheaply: each shape of body is built once per Page with the
/// simulator, and only the markers (a message id, or a reader's id) change. With the mix, nine
/// bodies in ten carry one message, then one in ten carries ten items and one in a hundred a
/// hundred (messages with non-ASCII text, postbacks, reads): 2.8 items per body on average.
pub struct Bodies {
    /// Per Page: the one-item body, then (with the mix) the ten- and hundred-item bodies, each cut
    /// at its markers.
    templates: Vec<[Template; 3]>,
    mix: bool,
    secret: Vec<u8>,
    next: AtomicU64,
}

/// A body cut where its markers were: `parts.len()` is `markers.len()` plus one.
struct Template {
    parts: Vec<String>,
    markers: Vec<Marker>,
}

/// What goes between two parts of a template.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// An item's unique token (its message id, or a reader's id).
    Item,
    /// The time of sending, in Unix ms: Meta times every item and entry as it sends them, and the
    /// gateway keeps dedup keys in the order of that time.
    Time,
}

/// One body to send.
pub struct Body {
    pub bytes: Bytes,
    pub signature: String,
    /// Its number: the items' markers carry it, so a receiver can tell when it was sent.
    pub number: u64,
    pub items: u64,
}

const MARKER: &str = "MIDMARKER";

/// What customers write, in the languages and scripts a Page hears: each item's text is a
/// different choice of these, none twice, so that it compresses as chat text does (about a
/// third) and not as one phrase repeated does.
const SENTENCES: &[&str] = &[
    "Hi! I ordered a jacket last week (order 48213) and the tracking page still says pending.",
    "Could you change the delivery address to Lindenstraße 12? I wrote 21 by mistake.",
    "Is the blue one still available in size M, or only in black?",
    "My discount code SPRING-24 did not work at checkout, it said expired.",
    "Hallo! Ich möchte meine Bestellung ändern, bitte 🙏",
    "Wann öffnet der Laden am Samstag? Ich komme aus Köln.",
    "Bonjour, je voudrais savoir si vous livrez en Belgique avant vendredi.",
    "La commande est arrivée mais il manque la ceinture, pouvez-vous vérifier ?",
    "¿Hacen envíos a Valencia? Necesito el regalo para el cumpleaños de mi hermana 🎂",
    "Olá! Vocês têm a versão de 256 GB em estoque na loja de Lisboa?",
    "Спасибо за помощь! Посылка пришла вовремя.",
    "Xin chào, tôi muốn đổi size áo sang L được không ạ?",
    "こんにちは！返品の手続きはどうすればいいですか？",
    "Thanks a lot 😊 that solved it, the app works again after the update.",
    "I was charged twice for the same order, can you refund one of the payments?",
    "Do you have a store near Manchester Piccadilly? I'd rather pick it up myself.",
    "The package says delivered but nobody rang the bell and it's not at the door.",
    "Can I still cancel? I placed the order ten minutes ago and chose the wrong colour.",
    "Merci beaucoup ! Bonne journée 🌞",
    "Ist Expressversand möglich? Ich bräuchte es bis Donnerstag.",
    "Where can I find the size chart for kids' shoes?",
    "Hola, ¿el descuento del 20 % también vale para artículos rebajados?",
    "My account is locked after three wrong passwords, the reset email never arrives.",
    "Can you send the invoice with my company's VAT number, DE 811 569 869?",
    "It's a gift, could you leave the price off the receipt and add a card?",
    "Does the warranty cover water damage? The watch stopped after swimming 🏊",
    "Ok perfect, see you tomorrow at 10:30 then!",
    "Bonjour, le lien de suivi ne fonctionne pas, il affiche une erreur 404.",
    "Gibt es die Tasche auch in Braun? Auf der Website sehe ich nur Schwarz.",
    "I'd like to book a table for four on Friday at 8 pm, terrace if possible.",
    "Is parking included with the room, and can we check in after midnight?",
    "Do you ship to Norway, and who pays the customs fees?",
];

/// About 900 bytes of an item's text: sentences in an order of its own (the Page, the template
/// and the item choose it), none twice.
fn chat_text(page: &str, items: usize, item: usize) -> String {
    let mut state = page.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    state ^= (items as u64) << 32 | item as u64;
    let mut order: Vec<usize> = (0..SENTENCES.len()).collect();
    // A Fisher-Yates shuffle driven by a 64-bit LCG (Knuth's MMIX constants).
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    let mut text = String::new();
    for sentence in order.into_iter().map(|k| SENTENCES[k]) {
        if text.len() + sentence.len() > 900 {
            break;
        }
        text.push_str(sentence);
        text.push(' ');
    }
    text
}
/// The time every template is built with, replaced by the time of sending (13 digits, as now's).
const TIME_MARKER: i64 = 4_102_444_800_000;
/// What every item's marker becomes: `m_bench`, the body's number (12 digits), `x`, the item.
pub const TOKEN_PREFIX: &str = "m_bench";

impl Bodies {
    pub fn new(pages: &[String], secret: &str, mix: bool) -> Self {
        let template = |page: &str, items: usize| {
            let items: Vec<serde_json::Value> = (0..items)
                .map(|k| {
                    // Seven messages, two postbacks and a read in every ten items; a read's
                    // reader is its marker, which keeps each read distinct.
                    let (kind, psid) = match k % 10 {
                        7 | 8 => (pagewire_testkit::Kind::Postback, "6100000000000001"),
                        9 => (pagewire_testkit::Kind::Read, MARKER),
                        _ => (pagewire_testkit::Kind::Message, "6100000000000001"),
                    };
                    let text = chat_text(page, items, k);
                    let mut item = kind.item(page, psid, TIME_MARKER, &text, 0);
                    if kind != pagewire_testkit::Kind::Read {
                        let field = if kind == pagewire_testkit::Kind::Postback {
                            "postback"
                        } else {
                            "message"
                        };
                        item[field]["mid"] = serde_json::Value::from(MARKER);
                    }
                    item
                })
                .collect();
            let body = pagewire_testkit::MetaBody::page()
                .messaging(page, TIME_MARKER, items)
                .to_bytes();
            Template::cut(&String::from_utf8_lossy(&body))
        };
        let templates = pages
            .iter()
            .map(|page| [template(page, 1), template(page, 10), template(page, 100)])
            .collect();
        Self {
            templates,
            mix,
            secret: secret.as_bytes().to_vec(),
            next: AtomicU64::new(0),
        }
    }

    /// The next body and its `X-Hub-Signature-256`.
    pub fn next(&self) -> Body {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let shape = match number % 100 {
            _ if !self.mix => 0,
            99 => 2,
            n if n % 10 == 9 => 1,
            _ => 0,
        };
        let page = usize::try_from(number).unwrap_or(0) % self.templates.len().max(1);
        let template = &self.templates[page][shape];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut body =
            String::with_capacity(template.parts.iter().map(String::len).sum::<usize>() + 24 * template.parts.len());
        let mut items = 0_u64;
        for (k, part) in template.parts.iter().enumerate() {
            body.push_str(part);
            match template.markers.get(k) {
                Some(Marker::Item) => {
                    let _ = write!(body, "{TOKEN_PREFIX}{number:012}x{items:03}");
                    items += 1;
                }
                Some(Marker::Time) => {
                    let _ = write!(body, "{now}");
                }
                None => {}
            }
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        Body {
            bytes: Bytes::from(body),
            signature,
            number,
            items,
        }
    }

    /// Bytes of a one-item body.
    pub fn len(&self) -> usize {
        self.templates.first().map_or(0, |t| {
            let markers: usize = t[0]
                .markers
                .iter()
                .map(|m| if *m == Marker::Item { 20 } else { 13 })
                .sum();
            t[0].parts.iter().map(String::len).sum::<usize>() + markers
        })
    }
}

impl Template {
    /// Cuts `body` at every item marker and every occurrence of the time marker.
    fn cut(body: &str) -> Self {
        let time = TIME_MARKER.to_string();
        let (mut parts, mut markers) = (Vec::new(), Vec::new());
        let mut rest = body;
        loop {
            let next = [
                (rest.find(MARKER), Marker::Item, MARKER.len()),
                (rest.find(&time), Marker::Time, time.len()),
            ]
            .into_iter()
            .filter_map(|(at, marker, len)| at.map(|at| (at, marker, len)))
            .min_by_key(|(at, ..)| *at);
            let Some((at, marker, len)) = next else {
                parts.push(rest.to_owned());
                return Self { parts, markers };
            };
            parts.push(rest[..at].to_owned());
            markers.push(marker);
            rest = &rest[at + len..];
        }
    }
}

impl IngestReport {
    /// Open loop: how late the generator sent, which the latencies include.
    pub fn lateness(&self) -> Option<String> {
        let (p50, p99) = self.sent_late_p50_ms.zip(self.sent_late_p99_ms)?;
        Some(format!(
            "sent p50 {p50:.2} ms, p99 {p99:.2} ms after due (the latencies include it)"
        ))
    }
}

/// When each body was due (open loop) or sent (closed loop), for the receiver's ingest-to-customer
/// latency.
pub struct Timeline {
    started: Instant,
    /// Microseconds after `started`, plus one (0: not sent), by body number.
    sent: Vec<AtomicU64>,
}

impl Timeline {
    pub fn new(capacity: u64) -> Self {
        Self {
            started: Instant::now(),
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn mark(&self, number: u64, at: Instant) {
        if let Some(slot) = usize::try_from(number).ok().and_then(|n| self.sent.get(n)) {
            let micros = u64::try_from(at.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX);
            slot.store(micros.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// How long ago body `number` was due or sent.
    pub fn since_sent(&self, number: u64) -> Option<Duration> {
        let slot = self.sent.get(usize::try_from(number).ok()?)?.load(Ordering::Relaxed);
        let sent = Duration::from_micros(slot.checked_sub(1)?);
        Some(self.started.elapsed().saturating_sub(sent))
    }
}

/// The body number in an item's marker, found in a delivered event.
pub fn body_number(event: &[u8]) -> Option<u64> {
    let prefix = TOKEN_PREFIX.as_bytes();
    let at = event.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let digits = event.get(at..at + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What one ingest run measured.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub name: String,
    pub seconds: f64,
    pub requests: u64,
    /// Requests answered with neither 2xx nor 503, or not at all.
    pub errors: u64,
    /// Requests the gateway refused with 503 to shed load.
    pub shed: u64,
    pub requests_per_second: f64,
    /// Items in the bodies acknowledged (each becomes one event).
    pub events: u64,
    pub events_per_second: f64,
    /// Bytes of a one-item body.
    pub body_bytes: usize,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    pub ack_max_ms: f64,
    /// Open loop: how late the generator sent the webhooks after they were due, which the
    /// acknowledgement latency includes (half a millisecond or less at the median, when the
    /// machine is not overloaded).
    pub sent_late_p50_ms: Option<f64>,
    pub sent_late_p99_ms: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// CPU time of the gateway per acknowledged request, in microseconds.
    pub gateway_cpu_us_per_request: Option<f64>,
    /// CPU time of the harness (the load generator; and the receiver, end to end) per
    /// acknowledged request, in microseconds: taken from the machine the gateway shares.
    pub harness_cpu_us_per_request: Option<f64>,
    /// What the gateway wrote to storage per acknowledged request, in KiB (with SQLite: the log,
    /// then the same pages again into the database file).
    pub gateway_written_kib_per_request: Option<f64>,
    /// With `--commit-pages` on SQLite: where the commits' pages went.
    pub commit_pages: Option<crate::commit_pages::CommitPages>,
}

struct Tally {
    histogram: Mutex<Histogram<u64>>,
    /// Open loop: how late each webhook left the generator after it was due (µs).
    late: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    acknowledged_items: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())),
            late: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())),
            ok: AtomicU64::new(0),
            acknowledged_items: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// How late a request of the open loop started after it was due.
    fn record_lateness(&self, late: Duration) {
        let micros = u64::try_from(late.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.late.lock() {
            let _ = h.record(micros.min(60_000_000));
        }
    }

    /// One request's latency (acknowledgements only: a shed request is answered at once) and
    /// answer.
    fn record(&self, latency: Duration, answer: Answer) {
        match answer {
            Answer::Acknowledged(items) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
                if let Ok(mut h) = self.histogram.lock() {
                    let _ = h.record(micros.min(60_000_000));
                }
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.acknowledged_items.fetch_add(items, Ordering::Relaxed);
            }
            Answer::Shed => {
                self.shed.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Failed => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn report(&self, name: String, seconds: f64, bodies: &Bodies) -> IngestReport {
        let h = self
            .histogram
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let late = self.late.lock().ok().filter(|h| !h.is_empty()).map(|h| {
            (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            )
        });
        let requests = self.ok.load(Ordering::Relaxed);
        IngestReport {
            name,
            seconds,
            requests,
            errors: self.errors.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            requests_per_second: requests as f64 / seconds,
            events: self.acknowledged_items.load(Ordering::Relaxed),
            events_per_second: self.acknowledged_items.load(Ordering::Relaxed) as f64 / seconds,
            body_bytes: bodies.len(),
            ack_p50_ms: ms(0.5),
            ack_p99_ms: ms(0.99),
            ack_p999_ms: ms(0.999),
            ack_max_ms: h.max() as f64 / 1000.0,
            sent_late_p50_ms: late.map(|l| l.0),
            sent_late_p99_ms: late.map(|l| l.1),
            peak_rss_mb: None,
            gateway_cpu_us_per_request: None,
            harness_cpu_us_per_request: None,
            gateway_written_kib_per_request: None,
            commit_pages: None,
        }
    }
}

/// Where and what to send, shared by the loops.
pub struct Load {
    pub target: Target,
    pub bodies: Arc<Bodies>,
    /// Marks when each body was due or sent, for a receiver measuring ingest-to-customer latency.
    pub timeline: Option<Arc<Timeline>>,
}

/// How the gateway answered one webhook.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// 2xx: stored; it carried this many items.
    Acknowledged(u64),
    /// 503: the node shed load (Meta would send it again).
    Shed,
    /// Anything else, or no answer.
    Failed,
}

/// Sends the next body on `conn` (opening one when needed).
async fn send(conn: &mut Option<Conn>, load: &Load, due: Option<Instant>) -> Answer {
    let body = load.bodies.next();
    if let Some(timeline) = &load.timeline {
        timeline.mark(body.number, due.unwrap_or_else(Instant::now));
    }
    match http1::post(conn, &load.target, body.bytes, &body.signature).await {
        Some(status) if status.is_success() => Answer::Acknowledged(body.items),
        Some(http::StatusCode::SERVICE_UNAVAILABLE) => Answer::Shed,
        _ => Answer::Failed,
    }
}

/// As fast as `connections` requests in flight allow, for `duration` or until `limit` webhooks
/// were sent.
pub async fn closed_loop(load: Arc<Load>, connections: usize, duration: Duration, limit: Option<u64>) -> IngestReport {
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let end = started + duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (load, tally, claimed) = (Arc::clone(&load), Arc::clone(&tally), Arc::clone(&claimed));
        tasks.spawn(async move {
            // One keep-alive connection per request in flight.
            let mut conn = None;
            while Instant::now() < end && limit.is_none_or(|limit| claimed.fetch_add(1, Ordering::Relaxed) < limit) {
                let sent = Instant::now();
                let answer = send(&mut conn, &load, None).await;
                tally.record(sent.elapsed(), answer);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let name = match limit {
        Some(limit) => format!("burst of {limit}, {connections} in flight"),
        None => format!("closed loop, {connections} in flight"),
    };
    tally.report(name, started.elapsed().as_secs_f64(), &load.bodies)
}

/// The pacer sleeps at least this long, then sends every webhook that fell due meanwhile (a
/// webhook leaves at most this late). Each wake of the pacer, and of the runtime's worker it hands
/// webhooks to, costs the machine that the gateway shares: woken for every webhook, at 5,000/s,
/// the harness took 72 s of CPU per million webhooks of the end-to-end run, against 59 s with this
/// quantum.
const PACER_QUANTUM: Duration = Duration::from_micros(500);

/// `rate` requests per second for `duration`, each on its schedule whatever the answers do;
/// latency counts from when a request was due.
///
/// The schedule is kept by a thread of its own, which sleeps until webhooks are due and then
/// hands them to the runtime. Tokio's timer fires on whole milliseconds: paced by it, each
/// millisecond's webhooks left together and a millisecond late (1.2 ms at the median, 2.4 at
/// p99, at 10,000/s), and the acknowledgement latency counted that against the gateway.
pub async fn open_loop(load: Arc<Load>, rate: u64, duration: Duration) -> anyhow::Result<IngestReport> {
    let tally = Arc::new(Tally::new());
    // Idle keep-alive connections; a webhook due when none is idle opens another.
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let total = rate.saturating_mul(duration.as_secs()).max(1);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let runtime = tokio::runtime::Handle::current();
    // Each request holds a sender; the receiver hears the end when the last one is dropped.
    let (running, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let started = Instant::now();
    let pacer = {
        let (load, tally) = (Arc::clone(&load), Arc::clone(&tally));
        std::thread::Builder::new().name(String::from("pacer")).spawn(move || {
            for n in 0..total {
                let due = started + interval.mul_f64(n as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait.max(PACER_QUANTUM));
                }
                let (load, tally, idle, running) = (
                    Arc::clone(&load),
                    Arc::clone(&tally),
                    Arc::clone(&idle),
                    running.clone(),
                );
                runtime.spawn(async move {
                    tally.record_lateness(due.elapsed());
                    let mut conn = idle.lock().ok().and_then(|mut idle| idle.pop());
                    let answer = send(&mut conn, &load, Some(due)).await;
                    tally.record(due.elapsed(), answer);
                    if let (Some(conn), Ok(mut idle)) = (conn, idle.lock()) {
                        idle.push(conn);
                    }
                    drop(running);
                });
            }
        })
    };
    // The pacer ends on its own once it has handed over the last webhook.
    pacer.context("starting the load generator's pacer thread")?;
    // Every request's sender is dropped once it is answered, and the pacer's when it is done.
    let _ = all_done.recv().await;
    Ok(tally.report(
        format!("open loop, {rate} webhooks/s"),
        started.elapsed().as_secs_f64(),
        &load.bodies,
    ))
}
