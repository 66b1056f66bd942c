//! Listeners: the main (proxy) listener speaking HTTP/1.1 and h2c, the admin listener with
//! `/metrics`, `/healthz` and `/readyz`, and graceful shutdown that drains in-flight requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigErrors};
use crate::hooks::Guard;
use crate::metrics::Metrics;
use crate::proxy::{self, text_response, Shared, Upstream, UpstreamSetupError};

/// The upstream used when nothing else names one.
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com/v1";

/// Options from the `serve` command line; each overrides the config file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Configuration file; built-in defaults without it.
    pub config_path: Option<PathBuf>,
    /// Main listener address.
    pub listen: Option<SocketAddr>,
    /// Admin listener address.
    pub admin_listen: Option<SocketAddr>,
    /// Upstream base URL.
    pub upstream: Option<String>,
    /// Rule pack folder for the engine.
    pub rules_dir: Option<PathBuf>,
    /// Audit log folder (overrides `[audit] dir`).
    pub audit_dir: Option<PathBuf>,
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration file is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigErrors),
    /// A listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The upstream client could not be set up.
    #[error("upstream setup failed")]
    Upstream(#[from] UpstreamSetupError),
    /// The metrics registry refused a metric.
    #[error("metrics setup failed")]
    Metrics(#[from] prometheus::Error),
    /// The rule packs or the safe replies are invalid.
    #[error("invalid rules")]
    Rules(#[from] crate::engine::PackErrors),
    /// The audit log could not start.
    #[error("audit log")]
    Audit(#[from] crate::audit::AuditError),
    /// Waiting for the shutdown signal failed.
    #[error("cannot listen for shutdown signals")]
    Signal(#[source] std::io::Error),
}

/// Resolves the upstream base URL: the config's (flags already applied), then `OPENAI_BASE_URL`,
/// then [`DEFAULT_UPSTREAM`].
pub fn resolve_upstream(config: &Config) -> String {
    config
        .upstream
        .base_url
        .clone()
        .or_else(|| {
            std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_UPSTREAM.to_owned())
}

/// Runs `careguard serve` until SIGTERM or ctrl-c, then drains and returns.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let mut config = match &options.config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = options.listen {
        config.server.listen = addr;
    }
    if let Some(addr) = options.admin_listen {
        config.server.admin_listen = addr;
    }
    if let Some(url) = options.upstream {
        crate::config::check_base_url(&url).map_err(UpstreamSetupError::BadUrl)?;
        config.upstream.base_url = Some(url);
    }
    if let Some(dir) = options.rules_dir {
        config.rules.dir = Some(dir);
    }
    if let Some(dir) = options.audit_dir {
        config.audit.dir = Some(dir);
    }
    let metrics = Arc::new(Metrics::new()?);
    let guarded = build_guard(&config, &metrics)?;
    let server = Server::start_with_metrics(config, guarded.guard.clone(), metrics).await?;
    tracing::info!(
        listen = %server.addr,
        admin = %server.admin_addr,
        upstream = %server.upstream,
        "careguard listening"
    );
    shutdown_signal().await.map_err(ServeError::Signal)?;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    if let Some(audit) = &guarded.audit {
        audit.shutdown();
    }
    Ok(())
}

/// The guard built from the configuration, and the audit log behind it (if any).
pub struct Guarded {
    /// The guard to hand to [`Server::start_with_metrics`].
    pub guard: Arc<crate::guard::CareGuard>,
    /// The audit log; call `shutdown` after the server has drained.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// The engine, for callers that want to assess text themselves (the demo).
    pub engine: Arc<crate::engine::Engine>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").finish_non_exhaustive()
    }
}

/// Builds the careguard guard from the configuration: rule packs (`[rules] dir` or the embedded
/// ones), safe replies and crisis lines, the policy, the guard's metrics on `metrics`, and the
/// audit log when `[audit] dir` is set.
pub fn build_guard(config: &Config, metrics: &Metrics) -> Result<Guarded, ServeError> {
    use crate::engine::{Engine, RuleSet};
    use crate::guard::{policy::Policy, replies::SafeTexts, CareGuard};
    let dir = config.rules.dir.as_deref();
    let rules = match dir {
        Some(dir) => RuleSet::from_dir(dir)?,
        None => RuleSet::embedded()?,
    };
    let texts = SafeTexts::load(dir)?;
    let today = crate::audit::record::rfc3339(std::time::SystemTime::now())[..10].to_string();
    for line in texts.stale_lines(&today, 365) {
        tracing::warn!(region = %line.region, name = %line.name, checked = %line.checked, "crisis line not checked for over a year: re-verify it");
    }
    tracing::info!(
        version = rules.version(),
        rules = rules.rules().len(),
        "rule packs loaded"
    );
    let engine = Arc::new(Engine::new(rules));
    let guard_metrics = crate::metrics::GuardMetrics::new(metrics.registry())?;
    let mut guard = CareGuard::new(
        Arc::clone(&engine),
        Policy::new(config.policy.clone()),
        texts,
        guard_metrics,
    );
    let audit = match &config.audit.dir {
        Some(_) => {
            let audit_metrics = crate::audit::AuditMetrics::register(metrics.registry())?;
            let log = Arc::new(crate::audit::AuditLog::start(&config.audit, audit_metrics)?);
            tracing::info!(dir = %log.dir().display(), "audit log open");
            guard = guard.with_sink(Arc::clone(&log) as Arc<dyn crate::guard::ExchangeSink>);
            Some(log)
        }
        None => None,
    };
    Ok(Guarded {
        guard: Arc::new(guard),
        audit,
        engine,
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// A running server (both listeners). Used by `serve` and by tests.
pub struct Server {
    /// Bound address of the main listener.
    pub addr: SocketAddr,
    /// Bound address of the admin listener.
    pub admin_addr: SocketAddr,
    /// The upstream base URL in use.
    pub upstream: String,
    /// The metrics (register engine metrics on `metrics.registry()`).
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    drain_timeout: Duration,
    main: JoinHandle<GracefulShutdown>,
    admin: JoinHandle<GracefulShutdown>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds both listeners and starts serving with `guard` behind the hooks.
    pub async fn start(config: Config, guard: Arc<dyn Guard>) -> Result<Server, ServeError> {
        Self::start_with_metrics(config, guard, Arc::new(Metrics::new()?)).await
    }

    /// Like [`Server::start`], recording into `metrics` (on which the engine may have registered).
    pub async fn start_with_metrics(
        config: Config,
        guard: Arc<dyn Guard>,
        metrics: Arc<Metrics>,
    ) -> Result<Server, ServeError> {
        let upstream_url = resolve_upstream(&config);
        let upstream = Upstream::new(&upstream_url, &config.upstream)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let main_listener = bind(config.server.listen).await?;
        let admin_listener = bind(config.server.admin_listen).await?;
        let addr = main_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: config.server.admin_listen,
                source,
            })?;
        let shared = Arc::new(Shared {
            upstream,
            guard,
            metrics: Arc::clone(&metrics),
            proxy: config.proxy.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));

        let main_service = TowerToHyperService::new(proxy::service(shared));
        let main = tokio::spawn(accept_loop(main_listener, stop_rx.clone(), move || {
            main_service.clone()
        }));
        let admin_metrics = Arc::clone(&metrics);
        let admin_draining = Arc::clone(&draining);
        let admin = tokio::spawn(accept_loop(admin_listener, stop_rx, move || {
            let metrics = Arc::clone(&admin_metrics);
            let draining = Arc::clone(&admin_draining);
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = Arc::clone(&metrics);
                let draining = Arc::clone(&draining);
                async move { Ok::<_, Infallible>(admin(&req, &metrics, &draining)) }
            })
        }));
        Ok(Server {
            addr,
            admin_addr,
            upstream: upstream_url,
            metrics,
            stop,
            draining,
            drain_timeout: config.server.drain_timeout(),
            main,
            admin,
        })
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), then returns.
    pub async fn shutdown(self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let drain = async {
            if let Ok(graceful) = self.main.await {
                graceful.shutdown().await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
        if let Ok(graceful) = self.admin.await {
            let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
        }
    }
}

fn admin(
    req: &Request<Incoming>,
    metrics: &Metrics,
    draining: &AtomicBool,
) -> http::Response<proxy::ResBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(metrics.render()),
        ),
        (&Method::GET, "/healthz") => {
            text_response(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
        }
        (&Method::GET, "/readyz") if draining.load(Ordering::SeqCst) => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"draining\n"),
        ),
        (&Method::GET, "/readyz") => {
            text_response(StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n"))
        }
        _ => text_response(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    }
}

/// Accepts connections until `stop` flips, serving each with a fresh service from `make`.
/// Returns the graceful-shutdown tracker of the connections still open.
async fn accept_loop<M, S>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    make: M,
) -> GracefulShutdown
where
    M: Fn() -> S,
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<proxy::ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection(TokioIo::new(stream), make())
            .into_owned();
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful
}
