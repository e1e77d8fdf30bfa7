//! Deliveries through the operator's proxy: a target goes to the proxy only once its own addresses
//! pass the destination policy, and a tenant's headers never speak to the proxy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pagewire_core::DeliveryOutcome;
use pagewire_delivery::{DeliveryProxy, DestinationPolicy, Sender};
use support::{delivery, Recorder, TestResult};

fn sender(policy: DestinationPolicy, proxy: &str) -> Result<Sender, Box<dyn std::error::Error>> {
    let proxy = DeliveryProxy::parse(proxy)?;
    Ok(Sender::new(
        Duration::from_secs(5),
        Arc::new(policy),
        1024,
        Some(&proxy),
    )?)
}

#[tokio::test]
async fn a_configured_proxy_is_never_asked_for_a_refused_destination() -> TestResult {
    let proxy = Recorder::start("proxy").await?;
    let receiver = Recorder::start("receiver").await?;
    // Named, the proxy's own address (loopback) is not judged by the policy: the operator chose it.
    let strict = sender(
        DestinationPolicy::default(),
        &format!("http://localhost:{}", proxy.port()),
    )?;
    for url in [
        format!("{}/hook", receiver.url()),
        format!("http://localhost:{}/hook", receiver.port()),
        String::from("http://169.254.169.254/latest/meta-data/"),
        String::from("http://[::ffff:169.254.169.254]/"),
        String::from("http://[64:ff9b::a9fe:a9fe]/"),
        String::from("http://[2002:a9fe:a9fe::1]/"),
        String::from("http://168.63.129.16/metadata/instance"),
        String::from("http://192.0.0.170/"),
        String::from("http://10.0.0.1/"),
    ] {
        let report = strict.send(&mut delivery(&url), 0).await;
        assert_eq!(report.outcome, DeliveryOutcome::Blocked, "{url}: {report:?}");
    }
    // Not resolvable here, or resolvable to its link-local address: never the proxy's to resolve.
    let report = strict
        .send(&mut delivery("http://metadata.google.internal/computeMetadata/v1/"), 0)
        .await;
    assert!(
        matches!(
            report.outcome,
            DeliveryOutcome::Blocked | DeliveryOutcome::ConnectionFailed
        ),
        "{report:?}"
    );

    // A public address goes through (the proxy answers for it); it is the only request the proxy
    // ever saw, and every refused send returned before it started.
    let report = strict.send(&mut delivery("http://93.184.216.34/hook"), 0).await;
    assert_eq!(report.outcome, DeliveryOutcome::Delivered { status: 200 }, "{report:?}");
    assert_eq!(report.response_excerpt.as_deref(), Some("proxy"));
    assert_eq!(proxy.lines(), ["POST http://93.184.216.34/hook HTTP/1.1"]);
    assert_eq!(receiver.connections(), 0);
    Ok(())
}

#[tokio::test]
async fn a_configured_proxy_carries_deliveries_the_policy_permits() -> TestResult {
    let proxy = Recorder::start("proxy").await?;
    let receiver = Recorder::start("receiver").await?;

    let permissive = sender(DestinationPolicy::permissive(), &proxy.url())?;
    let by_address = format!("{}/by-address", receiver.url());
    let by_name = format!("http://localhost:{}/by-name", receiver.port());
    for url in [&by_address, &by_name] {
        let report = permissive.send(&mut delivery(url), 0).await;
        assert_eq!(
            report.outcome,
            DeliveryOutcome::Delivered { status: 200 },
            "{url}: {report:?}"
        );
        assert_eq!(report.response_excerpt.as_deref(), Some("proxy"), "{url}");
    }

    let allowed = DestinationPolicy {
        allowed_networks: vec!["127.0.0.0/8".parse()?],
        ..DestinationPolicy::default()
    };
    let in_allowed_network = format!("{}/allowed", receiver.url());
    let report = sender(allowed, &proxy.url())?
        .send(&mut delivery(&in_allowed_network), 0)
        .await;
    assert_eq!(report.outcome, DeliveryOutcome::Delivered { status: 200 }, "{report:?}");

    assert_eq!(
        proxy.lines(),
        [
            format!("POST {by_address} HTTP/1.1"),
            format!("POST {by_name} HTTP/1.1"),
            format!("POST {in_allowed_network} HTTP/1.1"),
        ],
        "the proxy gets the absolute URL"
    );
    assert_eq!(receiver.connections(), 0, "the proxy answered in the receiver's place");
    Ok(())
}

#[tokio::test]
async fn the_proxy_gets_the_operators_credentials_and_none_of_a_tenants_proxy_headers() -> TestResult {
    let proxy = Recorder::start("proxy").await?;
    let with_credentials = format!("http://pagewire:s3cret@127.0.0.1:{}", proxy.port());
    let permissive = sender(DestinationPolicy::permissive(), &with_credentials)?;
    let mut saved_before_they_were_reserved = delivery("http://127.0.0.1:9/hook");
    saved_before_they_were_reserved.headers = [
        ("Proxy-Authorization", "Basic dGVuYW50OnN0b2xlbg=="),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("Metadata-Flavor", "Google"),
        ("X-Api-Key", "tenant-key"),
    ]
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .to_vec();
    let report = permissive.send(&mut saved_before_they_were_reserved, 0).await;
    assert_eq!(report.outcome, DeliveryOutcome::Delivered { status: 200 }, "{report:?}");

    let requests = proxy.requests();
    let [request] = requests.as_slice() else {
        panic!("one request expected: {requests:?}");
    };
    // base64("pagewire:s3cret")
    assert_eq!(
        request.header("proxy-authorization"),
        Some("Basic cGFnZXdpcmU6czNjcmV0")
    );
    for reserved in ["x-forwarded-for", "forwarded", "metadata-flavor"] {
        assert_eq!(request.header(reserved), None, "{reserved}");
    }
    assert_eq!(request.header("x-api-key"), Some("tenant-key"));
    Ok(())
}
