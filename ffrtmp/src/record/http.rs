//! `GET /metrics` (Prometheus text) and `GET /healthz` (JSON; 503 when unhealthy), on
//! `metrics_addr`. A small HTTP/1.x responder: one request per connection, bounded in size
//! and time, so a slow or hostile client cannot hold the daemon.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::health::HealthStatus;
use super::metrics::{render, Telemetry};
use crate::placer::Usage;

/// Reads a job cgroup's live numbers at scrape time.
pub type UsageReader = Arc<dyn Fn(&str) -> Usage + Send + Sync>;

const MAX_REQUEST: usize = 8192;
const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog. Keeps a flood of scrapers
/// from taking the file descriptors the daemon needs for pidfds.
const MAX_CONNECTIONS: usize = 16;

/// Serve until the task is aborted.
pub async fn serve(listener: TcpListener, telemetry: Arc<Mutex<Telemetry>>, usage: UsageReader) {
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
        let (t, u) = (telemetry.clone(), usage.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, handle(stream, t, u)).await;
            drop(slot);
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    telemetry: Arc<Mutex<Telemetry>>,
    usage: UsageReader,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", b"request too large\n").await;
        }
    }
    let line =
        String::from_utf8_lossy(buf.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", b"only GET\n").await;
    }
    let snapshot = telemetry.lock().expect("telemetry lock").clone();
    match path {
        "/metrics" => {
            let body = tokio::task::spawn_blocking(move || render(&snapshot, &*usage))
                .await
                .unwrap_or_default();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
            .await
        }
        "/healthz" => {
            let (code, body) = healthz(&snapshot);
            respond(&mut stream, code, "application/json", body.as_bytes()).await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                b"try /metrics or /healthz\n",
            )
            .await
        }
    }
}

/// Status code and JSON body of `/healthz`: 200 when healthy or degraded, 503 when unhealthy.
pub fn healthz(t: &Telemetry) -> (u16, String) {
    let code = if t.health == HealthStatus::Unhealthy {
        503
    } else {
        200
    };
    let body = serde_json::json!({
        "status": t.health,
        "source": t.source,
        "governed": t.jobs.len(),
        "scan_failures": t.scan_failures,
        "attach_failures": t.attach_failures,
        "placements_missing_limits": t.limits_missing,
        "events_lost": t.events_lost,
    });
    (code, format!("{body}\n"))
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Arc::new(Mutex::new(Telemetry::default()));
        t.lock().unwrap().exec_events.insert("ebpf", 3);
        let usage: UsageReader = Arc::new(|_| Usage::default());
        let server = tokio::spawn(serve(listener, t.clone(), usage));

        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(
            r.contains("ffrtmp_exec_events_total{source=\"ebpf\"} 3"),
            "{r}"
        );

        let r = get(addr, "GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK") && r.contains("\"status\":\"healthy\""),
            "{r}"
        );
        t.lock().unwrap().health = HealthStatus::Degraded;
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        t.lock().unwrap().health = HealthStatus::Unhealthy;
        let r = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("unhealthy"),
            "{r}"
        );

        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431"));
        server.abort();
    }
}
