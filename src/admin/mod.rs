//! The admin HTTP listener (`admin.listen`): `GET /metrics` (Prometheus text), `GET /health`
//! and `GET /ready` (probes), `GET /config` (the configuration in force, secrets redacted),
//! `POST /reload` (re-read the config file, as SIGHUP does).
//! It runs on the accept loop's runtime, never on a worker thread.

pub mod metrics;
pub mod probes;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::reload::Reloader;
use crate::shared::Shared;

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, reloader: Arc<Reloader>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(route(&shared, &reloader, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// A response with a body and its content type.
fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn route(
    shared: &Shared,
    reloader: &Reloader,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if path == "/reload" {
        if method != Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use POST /reload\n");
        }
        return match reloader.reload_and_log("POST /reload").await {
            Ok(o) => reply(
                StatusCode::OK,
                TEXT,
                format!(
                    "reloaded\napplied: {}\nneed a restart (running values kept): {}\n",
                    o.applied.join(", "),
                    o.kept.join(", ")
                ),
            ),
            Err(e) => reply(
                StatusCode::BAD_REQUEST,
                TEXT,
                format!("rejected, the running configuration stays: {e}\n"),
            ),
        };
    }
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("{method} is not served on {path}\n"),
        );
    }
    match path.as_str() {
        "/health" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/ready" => match probes::ready(shared).await {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n"),
            Err(reason) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => match metrics::render(shared).await {
            Ok(text) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot encode the metrics: {e}\n"),
            ),
        },
        "/config" => reply(
            StatusCode::OK,
            "application/yaml; charset=utf-8",
            shared.live().redacted_yaml(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /health, /ready or /config\n",
        ),
    }
}
