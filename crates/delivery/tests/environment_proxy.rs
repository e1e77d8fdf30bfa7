//! Proxies named in the environment are never used: through one, the checking resolver would judge
//! only the proxy's name, and the proxy would go wherever a customer URL says.
//!
//! Environment variables belong to the process, and the client reads them when it is built, so this
//! file is a test binary (a process) of its own, with one test that sets them before anything else.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pagewire_core::DeliveryOutcome;
use pagewire_delivery::{DestinationPolicy, Sender};
use support::{delivery, Recorder, TestResult};

const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

#[test]
fn ignores_proxies_named_in_the_environment() -> TestResult {
    // The variables are set before the runtime exists, while no other thread can be reading them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    for name in PROXY_VARIABLES {
        std::env::set_var(name, &proxy_url);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let proxy = Recorder::serve(listener, "proxy")?;
        assert_eq!(proxy.url(), proxy_url);

        let strict = Sender::new(
            Duration::from_secs(5),
            Arc::new(DestinationPolicy::default()),
            1024,
            None,
        )?;
        let report = strict
            .send(&mut delivery("http://metadata.google.internal/computeMetadata/v1/"), 0)
            .await;
        assert!(
            matches!(
                report.outcome,
                DeliveryOutcome::Blocked | DeliveryOutcome::ConnectionFailed
            ),
            "the metadata server's name is judged here, not handed to a proxy: {report:?}"
        );

        // A receiver the policy permits is reached directly: it, not the proxy, answers.
        let receiver = Recorder::start("receiver").await?;
        let permissive = Sender::new(
            Duration::from_secs(5),
            Arc::new(DestinationPolicy::permissive()),
            1024,
            None,
        )?;
        let report = permissive
            .send(&mut delivery(&format!("http://127.0.0.1:{}/hook", receiver.port())), 0)
            .await;
        assert_eq!(report.outcome, DeliveryOutcome::Delivered { status: 200 }, "{report:?}");
        assert_eq!(report.response_excerpt.as_deref(), Some("receiver"));
        assert_eq!(receiver.lines(), ["POST /hook HTTP/1.1"]);
        assert!(receiver.requests()[0].header("webhook-signature").is_some());

        // Both sends have returned, and the proxy would have recorded a request before answering it.
        assert_eq!(proxy.connections(), 0, "the proxy was contacted: {:?}", proxy.lines());
        Ok(())
    })
}
