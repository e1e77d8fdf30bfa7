use pagewire_meta::{sign, Envelope, SignatureHeader};
use std::time::Instant;

#[test]
#[ignore]
fn throughput() {
    let kinds = [
        r#"{"sender":{"id":"7012345678901234"},"recipient":{"id":"104881234567890"},"timestamp":1747231892100,"message":{"mid":"m_Qk3vX8pL2rT9wY6nB1cF4hJ7dS0aG5eK8mN2qR4tV6xZ9","text":"Hyv\u00e4\u00e4 p\u00e4iv\u00e4\u00e4 \ud83d\ude00 https:\/\/example.com"}}"#,
        r#"{"sender":{"id":"7012345678901234"},"recipient":{"id":"104881234567890"},"timestamp":1747231892100,"postback":{"mid":"m_abc","title":"Track My Order","payload":"TRACK_ORDER"}}"#,
        r#"{"sender":{"id":"7012345678901234"},"recipient":{"id":"104881234567890"},"timestamp":1747231892100,"read":{"watermark":1747231890000}}"#,
        r#"{"sender":{"id":"7012345678901234"},"recipient":{"id":"104881234567890"},"timestamp":1747231892100,"message":{"mid":"m_img","attachments":[{"type":"image","payload":{"url":"https:\/\/scontent.xx.fbcdn.net\/v\/t1\/449563121_n.jpg?oh=1"}}]}}"#,
    ];
    let items: Vec<&str> = (0..1000).map(|i| kinds[i % kinds.len()]).collect();
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"104881234567890","time":1747231892600,"messaging":[{}]}}]}}"#,
        items.join(",")
    );
    let secret = b"secret";
    let sig = sign(secret, body.as_bytes());
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let header = SignatureHeader::parse(Some(sig.as_bytes()), false).expect("ok");
    let t = Instant::now();
    for _ in 0..rounds {
        let proof = header.verify(secret, body.as_bytes()).expect("ok");
        let env = Envelope::parse(body.as_bytes()).expect("ok").into_verified(proof).expect("ok");
        std::hint::black_box(env.normalize());
    }
    println!("all     {:.3} us/item", t.elapsed().as_secs_f64() * 1e6 / (rounds * 1000) as f64);
    let proof = header.verify(secret, body.as_bytes()).expect("ok");
    let env = Envelope::parse(body.as_bytes())
        .expect("ok")
        .into_verified(proof)
        .expect("ok");
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(env.normalize());
    }
    println!(
        "normal  {:.3} us/item",
        t.elapsed().as_secs_f64() * 1e6 / (rounds * 1000) as f64
    );
}
