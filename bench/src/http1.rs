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
    /// `None` once the connection ended, or the gateway asked to close it.
    driver: Option<Driver>,
}

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// What became of a request on a connection.
enum Outcome {
    Answered(StatusCode),
    /// The connection ended before the request went out (the gateway had closed it): it can go
    /// again on a new connection.
    Unsent(Box<Request<Full<Bytes>>>),
    /// Sent and not answered, or the connection failed.
    Failed,
}

impl Conn {
    pub async fn open(target: &Target) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Self {
            sender,
            driver: Some(Box::pin(driver)),
        })
    }

    /// Whether the connection can take another request: polls it once without waiting, so a
    /// connection the gateway closed while it sat idle is noticed here and not on the next
    /// webhook.
    pub fn is_open(&mut self) -> bool {
        if let Some(driver) = &mut self.driver {
            if driver.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready() {
                self.driver = None;
            }
        }
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Sends `request` and reads the whole answer.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Outcome {
        let Some(driver) = self.driver.as_mut() else {
            return Outcome::Unsent(Box::new(request));
        };
        let sender = &mut self.sender;
        let exchange = async move {
            if sender.ready().await.is_err() {
                return Err(Some(request));
            }
            let response = sender
                .try_send_request(request)
                .await
                .map_err(|mut e| e.take_message())?;
            let close = response
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let status = response.status();
            response.into_body().collect().await.map_err(|_| None)?;
            Ok((status, close))
        };
        let mut exchange = std::pin::pin!(exchange);
        let first = tokio::select! {
            biased;
            answer = &mut exchange => Some(answer),
            _ = driver.as_mut() => None,
        };
        let answer = match first {
            Some(answer) => answer,
            None => {
                // The connection ended first. Dropping it answers a request it still held with
                // the request itself, when it never went out.
                self.driver = None;
                exchange.await
            }
        };
        match answer {
            Ok((status, close)) => {
                if close {
                    self.driver = None;
                }
                Outcome::Answered(status)
            }
            Err(Some(request)) => {
                self.driver = None;
                Outcome::Unsent(Box::new(request))
            }
            Err(None) => {
                self.driver = None;
                Outcome::Failed
            }
        }
    }
}

/// POSTs a signed webhook on `conn` and reads the whole answer: its status, or `None` when it
/// failed. Opens a new connection first when there is none or it was closed, and sends again on
/// a new one a webhook that a closing connection never sent (as pooled clients do: the gateway
/// may close a keep-alive connection after an answer, and the next request can meet the close);
/// leaves `None` behind when the connection failed.
pub async fn post(conn: &mut Option<Conn>, target: &Target, body: Bytes, signature: &str) -> Option<StatusCode> {
    let mut request = Request::post(target.path.clone())
        .header(HOST, target.host.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("x-hub-signature-256", signature)
        .body(Full::new(body))
        .ok()?;
    for _ in 0..2 {
        if !conn.as_mut().is_some_and(Conn::is_open) {
            *conn = Conn::open(target).await.ok();
        }
        match conn.as_mut()?.send(request).await {
            Outcome::Answered(status) => return Some(status),
            Outcome::Unsent(again) => {
                *conn = None;
                request = *again;
            }
            Outcome::Failed => {
                *conn = None;
                return None;
            }
        }
    }
    None
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
