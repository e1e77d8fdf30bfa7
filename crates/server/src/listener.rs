//! The gateway's HTTP server: a TCP listener with a bound on the connections it holds open, and
//! connections that close when idle.
//!
//! Shedding webhooks with 503 bounds the requests a node works on, not the connections it keeps:
//! when a node falls behind, a sender that opens a new connection for each webhook it has not yet
//! had answered (an open-loop load, a fleet of retrying clients) makes the node accept thousands
//! of them, and each costs memory and a share of the CPU that the node needed to catch up. Seen
//! under load on a throttled disk: thousands of connections and 1.3 GB where 80 MB was enough.
//! At the bound the node stops accepting; new connections wait in the kernel's backlog (and the
//! sender times out and sends again, as Meta does) until one closes.
//!
//! While a connection waits, every answer closes its connection (`Connection: close`): a busy
//! client keeps its connections alive with request after request, so the bound would otherwise
//! let nobody else in until the load stopped (seen: a connection that waited 30 s, its whole
//! run and then the idle timeout, behind the open-loop generator's others).
//!
//! A bound on connections is only safe when idle ones close: otherwise clients that keep
//! connections alive without using them (a connection pool, or someone who means harm) would
//! hold the node's every connection. A connection that sends no request for its idle timeout
//! (or sends the head of one that slowly) is closed, by hyper's header read timeout, which runs
//! while a keep-alive connection waits for its next request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::Response;
use axum::serve::Listener as _;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use pagewire_core::Clock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::ingress::Throttled;

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets each
/// open connection finish the request it is in, and returns once all are closed. A connection
/// that waits `idle` for a request (or for the rest of a request's head) is closed.
pub async fn serve(mut listener: BoundedListener, router: Router, idle: Duration, shutdown: CancellationToken) {
    let router = router.layer(middleware::map_response_with_state(
        Arc::clone(&listener.waiting),
        close_while_one_waits,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(idle.max(Duration::from_millis(1)));
    let open = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = open.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "a connection ended with an error");
            }
        });
    }
    drop(listener);
    open.shutdown().await;
}

/// How many connections the kernel holds for the node before it accepts them. The standard
/// library's 128 is too few for a burst: when Meta (or a load balancer) opens more connections at
/// once than the queue holds, the kernel drops the rest of their SYNs, and each of those senders
/// waits a second before it tries again. Linux caps it at `net.core.somaxconn` (4096 by default).
pub const BACKLOG: u32 = 4096;

/// Listens on `addr` with room for [`BACKLOG`] connections not yet accepted.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As the standard library's listeners do on Unix: a restarted node can listen again at once,
    // while its previous connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Has the answer close its connection while another connection waits for room.
async fn close_while_one_waits(State(waiting): State<Arc<AtomicBool>>, mut response: Response) -> Response {
    if waiting.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A [`TcpListener`] that holds at most `max` connections open at once.
#[derive(Debug)]
pub struct BoundedListener {
    inner: TcpListener,
    open: Arc<Semaphore>,
    /// Whether an accepted connection waits for one of the others to close.
    waiting: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    /// Times the bound held a connection back, logged now and then.
    waited: Throttled,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, max: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            open: Arc::new(Semaphore::new(max.max(1))),
            waiting: Arc::new(AtomicBool::new(false)),
            clock,
            waited: Throttled::default(),
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Counted;
    type Addr = SocketAddr;

    /// Takes the next connection from the kernel, then waits for room for it (the rest wait in
    /// the kernel's backlog meanwhile): so the node knows that somebody waits.
    async fn accept(&mut self) -> (Counted, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Answers leave at once. With Nagle's algorithm the tail of an answer longer than one
        // segment (an admin API page, the dashboard's assets) waits until the client acknowledges
        // the first part, and clients delay their acknowledgements (40 ms on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let permit = match Arc::clone(&self.open).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(total) = self.waited.note(self.clock.now_ms()) {
                    tracing::warn!(
                        total,
                        "at the limit of open connections (max_connections): new connections wait until one \
                         closes, and answers close theirs meanwhile"
                    );
                }
                self.waiting.store(true, Ordering::Relaxed);
                let permit = Arc::clone(&self.open).acquire_owned().await;
                self.waiting.store(false, Ordering::Relaxed);
                match permit {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => return std::future::pending().await,
                }
            }
        };
        (Counted { stream, _open: permit }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, counted against the bound until it is dropped (closed).
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    _open: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More connections than the standard library's backlog holds, none of them accepted yet:
    /// each must connect at once. A SYN the kernel drops is sent again only after a second.
    #[tokio::test]
    async fn a_burst_of_new_connections_waits_in_the_backlog() {
        // Linux caps the backlog at `net.core.somaxconn`; old kernels default it to 128.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listening on a free port");
        let addr = listener.local_addr().expect("its address");
        let mut open = Vec::new();
        for n in 0..cap.min(512) {
            let connect = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await;
            match connect {
                Ok(Ok(stream)) => open.push(stream),
                Ok(Err(e)) => panic!("connection {n}: {e}"),
                Err(_) => panic!("connection {n} waited: the kernel dropped its SYN, its backlog is full"),
            }
        }
        drop(listener);
    }

    /// An accepted connection sends its answers without waiting for the client's
    /// acknowledgements (TCP_NODELAY).
    #[tokio::test]
    async fn accepted_connections_send_at_once() {
        let inner = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listening on a free port");
        let addr = inner.local_addr().expect("its address");
        let mut listener = BoundedListener::new(inner, 4, Arc::new(pagewire_core::SystemClock));
        let client = TcpStream::connect(addr).await.expect("connecting");
        let (accepted, _) = axum::serve::Listener::accept(&mut listener).await;
        assert!(accepted.stream.nodelay().expect("reading TCP_NODELAY"));
        drop(client);
    }
}
