//! `GET /metrics` (Prometheus text) and `GET /healthz` (JSON; 503 when unhealthy), on
//! `metrics_addr`, served by hyper's HTTP/1 server. Each connection gets a short deadline
//! for its request head and one response (no keep-alive), so idle or slow clients cannot
//! hold the endpoint: `/healthz` answers while dozens of idle connections are open. HEAD
//! answers without a body. The connection cap is far above what scrapers need and far
//! below the file descriptors the daemon keeps for pidfds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::health::HealthStatus;
use super::metrics::{render, BuildInfo, Snapshot};
use super::observe::Observer;
use super::tally::Count;
use crate::placer::Usage;

/// Reads a job cgroup's live numbers at scrape time.
pub type UsageReader = Arc<dyn Fn(&str) -> Usage + Send + Sync>;

/// A client must send its whole request head within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole exchange.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 512;
const MAX_REQUEST: usize = 8192;

/// What the endpoint shows: the record loop's snapshot, asked for each request.
pub struct Exposition {
    pub observer: Observer,
    pub build: BuildInfo,
    pub usage: UsageReader,
}

/// Serve until the task is aborted.
pub async fn serve(listener: TcpListener, expo: Arc<Exposition>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: do not spin; the next accept may work.
                tracing::warn!("/metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let expo = expo.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |req| respond(req, expo.clone())),
                );
            let _ = tokio::time::timeout(TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn reply(code: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let body: Bytes = body.into();
    let mut r = Response::new(Full::new(body.clone()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, ctype.parse().expect("static header value"));
    r.headers_mut().insert(CONTENT_LENGTH, body.len().into());
    r
}

async fn respond(
    req: Request<Incoming>,
    expo: Arc<Exposition>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n",
        ));
    }
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /healthz\n",
        ));
    }
    // Only now asked of the record loop: a stray request costs it nothing.
    let Some(snapshot) = expo.observer.snapshot().await else {
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the daemon is stopping\n",
        ));
    };
    Ok(match path {
        "/metrics" => {
            // Reads every job cgroup's files: off the event loop.
            let e = expo.clone();
            let body = tokio::task::spawn_blocking(move || render(&snapshot, &e.build, &*e.usage))
                .await
                .unwrap_or_default();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        _ => {
            let (code, body) = healthz(&snapshot);
            reply(
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                "application/json",
                body,
            )
        }
    })
}

/// Status code and JSON body of `/healthz`: 200 when healthy or degraded, 503 when unhealthy.
pub fn healthz(t: &Snapshot) -> (u16, String) {
    let code = if t.health.status == HealthStatus::Unhealthy {
        503
    } else {
        200
    };
    let body = serde_json::json!({
        "status": t.health.status,
        "source": t.source,
        "governed": t.jobs.live.len(),
        "scan_failures": t.health.scan_failures,
        "attach_failures": t.health.attach_failures,
        "placements_missing_limits": t.health.limits_missing,
        "events_lost": t.tally.get(Count::EventsLost),
    });
    (code, format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// A server whose snapshots come from `state` (what the record loop would answer).
    async fn server() -> (
        std::net::SocketAddr,
        Arc<std::sync::Mutex<Snapshot>>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(std::sync::Mutex::new(Snapshot::default()));
        let (observer, mut queries) = crate::record::observe::channel();
        let answers = state.clone();
        tokio::spawn(async move {
            while let Some(q) = queries.recv().await {
                q.answer(Arc::new(answers.lock().unwrap().clone()));
            }
        });
        let expo = Arc::new(Exposition {
            observer,
            build: BuildInfo::default(),
            usage: Arc::new(|_| Usage::default()),
        });
        (addr, state, tokio::spawn(serve(listener, expo)))
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let (addr, t, server) = server().await;
        t.lock().unwrap().execs = vec![("ebpf", 3)];
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(
            r.contains("ffrtmp_exec_events_total{source=\"ebpf\"} 3"),
            "{r}"
        );

        let r = get(addr, "GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(
            r.contains(" 200 OK") && r.contains("\"status\":\"healthy\""),
            "{r}"
        );
        t.lock().unwrap().health.status = HealthStatus::Degraded;
        assert!(get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        t.lock().unwrap().health.status = HealthStatus::Unhealthy;
        let r = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("unhealthy"),
            "{r}"
        );

        assert!(get(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 405"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431"));
        server.abort();
    }

    #[tokio::test]
    async fn head_has_the_headers_and_no_body() {
        let (addr, _t, server) = server().await;
        for path in ["/metrics", "/healthz"] {
            let r = get(addr, &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{r}");
            assert!(
                head.to_ascii_lowercase().contains("content-length: "),
                "{head}"
            );
            assert_eq!(body, "", "HEAD {path} returned a body");
        }
        server.abort();
    }

    /// Idle clients that never send a request do not hold /healthz: 64 of them open, and a
    /// real request is still answered at once; the idle ones are closed after the head
    /// deadline.
    #[tokio::test]
    async fn healthz_answers_while_idle_connections_are_open() {
        let (addr, _t, server) = server().await;
        let mut idle = Vec::new();
        for _ in 0..64 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await
        .expect("/healthz did not answer within 1 s with 64 idle connections open");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // An idle connection is closed by the server once the head deadline passed.
        let mut s = idle.pop().unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(HEAD_TIMEOUT + Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the idle connection was not closed")
            .unwrap_or(0);
        let _ = n; // closed (0) or a 408 response: either way the slot is free
        server.abort();
    }
}
