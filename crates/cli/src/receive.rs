//! `pagewire receive`: a local endpoint that prints the events it gets and checks their Standard
//! Webhooks signatures, for trying Pagewire and debugging an integration.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use pagewire_core::EndpointSecret;

#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The endpoint's `whsec_…` secret; when given, every signature is checked.
    #[arg(long, env = "PAGEWIRE_RECEIVE_SECRET")]
    secret: Option<String>,
}

/// Signatures older or newer than this are refused, as Standard Webhooks libraries do.
const TOLERANCE_SECS: i64 = 300;

pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    let secret = args
        .secret
        .as_deref()
        .map(EndpointSecret::parse)
        .transpose()
        .context("--secret must be the endpoint's whsec_… secret")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "receiving on http://{} ({}); press Ctrl-C to stop",
        listener.local_addr()?,
        if secret.is_some() {
            "checking signatures"
        } else {
            "not checking signatures: pass --secret"
        }
    );
    let app = Router::new().fallback(receive).with_state(Arc::new(secret));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn receive(State(secret): State<Arc<Option<EndpointSecret>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let id = header("webhook-id");
    let verdict = match secret.as_ref() {
        None => "signature not checked",
        Some(secret) => match check(
            secret,
            id,
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
        ) {
            Ok(()) => "signature verified",
            Err(reason) => reason,
        },
    };
    let pretty = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let event_type = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    println!("── {id} {event_type} ({verdict})\n{pretty}");
    if verdict.starts_with("signature verified") || secret.is_none() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

fn check(
    secret: &EndpointSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
) -> Result<(), &'static str> {
    let timestamp: i64 = timestamp.parse().map_err(|_| "REJECTED: no webhook-timestamp")?;
    let now = pagewire_core::Clock::now_ms(&pagewire_core::SystemClock) / 1000;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err("REJECTED: timestamp outside the five-minute window");
    }
    let expected = secret.sign(id, timestamp, body);
    if signatures.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err("REJECTED: signature does not match")
    }
}
