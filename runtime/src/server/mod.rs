//! The HTTP server loop of both processes: optional TLS, timeouts and a connection limit.
//!
//! `axum::serve` keeps a connection for as long as the client likes: 3,000 half-sent
//! requests held each process open until the fd limit refused valid POSTs. Here every
//! connection holds a permit of a bounded pool (further ones wait in the kernel backlog),
//! headers and the TLS handshake must arrive within `header_read_timeout_ms` (hyper closes
//! the connection otherwise, idle keep-alive ones included), and a request must be read and
//! answered within `request_timeout_ms` (408, connection closed).

pub mod auth;
mod config;
pub mod error;

pub use config::{HttpLimits, HttpTlsConfig, Scope, TokenConfig};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::tls::TlsError;

/// How long stopping waits for in-flight requests before dropping their connections.
const DRAIN: Duration = Duration::from_secs(10);

/// A bound listener with its TLS and limits, ready to serve a router.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
}

impl Server {
    /// Loads the certificate (if any) now, so a bad file refuses the start.
    pub fn new(
        listener: TcpListener,
        tls: Option<&HttpTlsConfig>,
        limits: HttpLimits,
    ) -> Result<Server, TlsError> {
        let tls = match tls {
            Some(t) => Some(TlsAcceptor::from(crate::tls::server_config(
                &t.cert_file,
                &t.key_file,
            )?)),
            None => None,
        };
        Ok(Server {
            listener,
            tls,
            limits,
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves `router` until `shutdown` turns true, then lets in-flight requests finish.
    pub async fn serve(
        self,
        router: Router,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let request_timeout = Duration::from_millis(self.limits.request_timeout_ms);
        let header_timeout = Duration::from_millis(self.limits.header_read_timeout_ms);
        let router = router.layer(axum::middleware::from_fn_with_state(
            request_timeout,
            limit_request_time,
        ));
        let permits = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let mut conns = JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.changed() => break,
            };
            let stream = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of fds or a connection reset before accept: retry shortly.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let (router, tls, stop) = (router.clone(), self.tls.clone(), shutdown.clone());
            conns.spawn(async move {
                let _permit = permit;
                match tls {
                    None => connection(stream, router, header_timeout, stop).await,
                    Some(tls) => {
                        match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                connection(stream, router, header_timeout, stop).await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            conns.abort_all();
        }
        Ok(())
    }
}

async fn connection<I>(
    io: I,
    router: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection closed with an error");
    }
}

async fn limit_request_time(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let body = serde_json::json!({
                "error": "request timeout",
                "field": null,
                "detail": format!("the request was not complete within {} ms", limit.as_millis()),
            });
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                Json(body),
            )
                .into_response()
        }
    }
}
