//! The load generator's HTTP/1.1 connections to the gateway. Each is a keep-alive connection that
//! the task sending on it also drives, so a webhook costs the generator no hop between tasks, no
//! pool lookup and no URL parsing: on a machine the gateway shares with its load, whatever the
//! generator spends is taken from the gateway (Meta's senders are not on the gateway's machine).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Waker};

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the webhooks go: the gateway's address, and the path and `Host` of each request.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    path: Uri,
}

impl Target {
    /// From the gateway's URL (`http://127.0.0.1:<port>/<path>`).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("the gateway's URL {url}"))?;
        let authority = uri.authority().with_context(|| format!("{url} names no host"))?;
        let addr = authority
            .as_str()
            .parse()
            .with_context(|| format!("{url}: the load generator sends to an IP address and port"))?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .with_context(|| format!("the path of {url}"))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            path,
        })
    }
}

/// One keep-alive connection, driven whenever a request is on it.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    /// False once the gateway asked to close it, or it failed or ended.
    open: bool,
}

impl Conn {
    pub async fn open(target: &Target) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Self {
            sender,
            driver: Box::pin(driver),
            open: true,
        })
    }

    /// Whether the connection can take another request: polls it once without waiting, so a
    /// connection the gateway closed while it sat idle is noticed here and not on the next
    /// webhook.
    pub fn is_open(&mut self) -> bool {
        if self.open
            && self
                .driver
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_ready()
        {
            self.open = false;
        }
        self.open && !self.sender.is_closed()
    }

    /// POSTs a signed webhook and reads the whole answer: its status, or `None` when the
    /// connection failed (it is then closed).
    pub async fn post(&mut self, target: &Target, body: Bytes, signature: &str) -> Option<StatusCode> {
        let request = Request::post(target.path.clone())
            .header(HOST, target.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-hub-signature-256", signature)
            .body(Full::new(body))
            .ok()?;
        let sender = &mut self.sender;
        let exchange = async move {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let close = response
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, close))
        };
        let answer = tokio::select! {
            biased;
            answer = exchange => answer.ok(),
            // The connection ended before the answer was read.
            _ = self.driver.as_mut() => None,
        };
        match answer {
            Some((status, close)) => {
                self.open = !close;
                Some(status)
            }
            None => {
                self.open = false;
                None
            }
        }
    }
}

/// Sends on `conn`, opening a new connection first when there is none or it was closed; leaves
/// `None` behind when the connection failed.
pub async fn post(conn: &mut Option<Conn>, target: &Target, body: Bytes, signature: &str) -> Option<StatusCode> {
    if !conn.as_mut().is_some_and(Conn::is_open) {
        *conn = Conn::open(target).await.ok();
    }
    let status = conn.as_mut()?.post(target, body, signature).await;
    if status.is_none() {
        *conn = None;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_the_gateways_address_host_and_path() {
        let target = Target::parse("http://127.0.0.1:8080/webhooks/meta").expect("an address and a path");
        assert_eq!(target.addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(target.host, "127.0.0.1:8080");
        assert_eq!(target.path, "/webhooks/meta");
        assert!(Target::parse("http://localhost:8080/webhooks/meta").is_err());
    }
}
