//! What the delivery crate's integration tests share: a delivery to send, and a tiny HTTP server that
//! records every request reaching it (as a proxy or as an endpoint) and answers each with 200 and its
//! own name, so that a report tells who answered.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pagewire_core::{DeliveryId, EndpointId, EndpointSecret, EventId, PayloadFormat, TenantId};
use pagewire_store::LeasedDelivery;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A leased delivery of a small event to `url`.
pub fn delivery(url: &str) -> LeasedDelivery {
    LeasedDelivery {
        id: DeliveryId::new(),
        lease_seq: 1,
        event_id: EventId::new(),
        event_type: String::from("messenger.message"),
        endpoint_id: EndpointId::new(),
        tenant_id: TenantId::new(),
        url: url.to_owned(),
        secrets: vec![EndpointSecret::generate()],
        ed25519: None,
        controls: pagewire_core::DeliveryControls::default(),
        format: PayloadFormat::Standard,
        headers: Vec::new(),
        payload: String::from("{}"),
        attempts: 0,
    }
}

/// The head of one request a [`Recorder`] got.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST http://host/path HTTP/1.1` through a proxy, `POST /path HTTP/1.1` at an endpoint.
    pub line: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Counts connections and records requests; answers every request with 200 and `name`. Each request
/// is recorded before it is answered, so once a send has returned what it sent is here.
#[derive(Debug)]
pub struct Recorder {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    pub async fn start(name: &'static str) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Self::serve(listener, name)
    }

    /// Serves on a listener bound beforehand (with no runtime yet).
    pub fn serve(listener: std::net::TcpListener, name: &'static str) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let recorder = Self {
            addr: listener.local_addr()?,
            connections: Arc::default(),
            requests: Arc::default(),
        };
        let (connections, requests) = (Arc::clone(&recorder.connections), Arc::clone(&recorder.requests));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(socket, name, Arc::clone(&requests)));
            }
        });
        Ok(recorder)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The request lines, in the order they came.
    pub fn lines(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.line).collect()
    }
}

/// Reads requests off one connection (head, then as many body bytes as `content-length` says) and
/// answers each.
async fn answer(mut socket: TcpStream, name: &'static str, requests: Arc<Mutex<Vec<Recorded>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..end + 4 + length);
        requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Recorded { line, headers });
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}", name.len());
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
