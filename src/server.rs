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
    /// How often the config file and rules folder are polled for changes (default 2 s).
    pub reload_poll: Option<Duration>,
}

/// A started `serve`: the server, its guard and audit log, and the reloader.
pub struct Running {
    /// The server (addresses, metrics).
    pub server: Server,
    /// The guard and audit log.
    pub guarded: Guarded,
    /// Reloads on demand (what SIGHUP does).
    pub reloader: Arc<crate::runtime::Reloader>,
    reload_task: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Stops reloading, drains the server, then flushes and closes the audit log.
    pub async fn shutdown(self) {
        self.reload_task.abort();
        self.server.shutdown().await;
        if let Some(audit) = &self.guarded.audit {
            audit.shutdown();
        }
    }
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

/// The runtime `serve` runs on: `workers` threads (`[server] workers`); 1 is a single-threaded
/// runtime (no hand-offs between threads), 0 leaves the count to tokio (`TOKIO_WORKER_THREADS`,
/// else one per core).
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match workers {
        0 => std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 1 {
            b.worker_threads(workers);
        }
        b
    };
    builder.enable_all().build()
}

/// Runs `careguard serve` until SIGTERM or ctrl-c, then drains and returns.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let running = start(options).await?;
    tracing::info!(
        listen = %running.server.addr,
        admin = %running.server.admin_addr,
        upstream = %running.server.upstream,
        "careguard listening"
    );
    shutdown_signal().await.map_err(ServeError::Signal)?;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}

/// Starts everything `serve` runs (server, guard, audit log, reloader) and returns it running.
pub async fn start(options: ServeOptions) -> Result<Running, ServeError> {
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
    if let Some(dir) = options.rules_dir.clone() {
        config.rules.dir = Some(dir);
    }
    if let Some(dir) = options.audit_dir {
        config.audit.dir = Some(dir);
    }
    let metrics = Arc::new(Metrics::new()?);
    let guarded = build_guard(&config, &metrics)?;
    let reloader = crate::runtime::Reloader {
        config_path: options.config_path.clone(),
        apply_overrides: Box::new(move |c: &mut Config| {
            if let Some(dir) = &options.rules_dir {
                c.rules.dir = Some(dir.clone());
            }
        }),
        build: {
            let builder = Arc::clone(&guarded.builder);
            Box::new(move |c: &Config| {
                builder
                    .build(c)
                    .map(|(set, _)| set)
                    .map_err(|e| error_chain(&e))
            })
        },
        live: Arc::clone(&guarded.guard),
        poll: options.reload_poll.unwrap_or(Duration::from_secs(2)),
    };
    let reloader = Arc::new(reloader);
    let snapshot = reloader.snapshot(&config);
    let reload_task = tokio::spawn(Arc::clone(&reloader).run(snapshot));
    let server = Server::start_with_metrics(config, guarded.guard.clone(), metrics).await?;
    Ok(Running {
        server,
        guarded,
        reloader,
        reload_task,
    })
}

/// An error and its causes, one per line (rule-pack and config errors carry `file:line:col`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(":\n");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The guard built from the configuration, and the audit log behind it (if any).
pub struct Guarded {
    /// The guard to hand to [`Server::start_with_metrics`]: routes to tenants, swappable.
    pub guard: Arc<crate::runtime::LiveGuard>,
    /// The audit log; call `shutdown` after the server has drained.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// The engine of the set in force at start-up (the demo's bot uses it).
    pub engine: Arc<crate::engine::Engine>,
    /// Builds new guard sets (for reloads) with the same metrics and audit log.
    pub builder: Arc<GuardBuilder>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").finish_non_exhaustive()
    }
}

/// Builds guard sets from configurations; holds what outlives a reload (metrics, audit log).
pub struct GuardBuilder {
    metrics: crate::metrics::GuardMetrics,
    audit: Option<Arc<crate::audit::AuditLog>>,
}

impl GuardBuilder {
    /// Compiles the rule packs (`[rules] dir` or the embedded ones), the safe replies and crisis
    /// lines, and one guard per tenant (`[tenancy]`) with its merged policy.
    pub fn build(
        &self,
        config: &Config,
    ) -> Result<(crate::runtime::GuardSet, Arc<crate::engine::Engine>), ServeError> {
        use crate::engine::{Engine, RuleSet};
        use crate::guard::{policy::Policy, replies::SafeTexts, CareGuard, ExchangeSink};
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
        let version = rules.version().to_string();
        tracing::info!(version = %version, rules = rules.rules().len(), "rule packs loaded");
        let engine = Arc::new(Engine::new(rules).with_message_cache(config.rules.message_cache));
        // What compiling the packs freed would otherwise stay resident (see `crate::memory`).
        crate::memory::release_free_heap();
        let make =
            |policy: crate::guard::policy::PolicyConfig, tenant: Option<&str>| -> Arc<dyn Guard> {
                let mut guard = CareGuard::new(
                    Arc::clone(&engine),
                    Policy::new(policy),
                    texts.clone(),
                    self.metrics.clone(),
                );
                if let Some(log) = &self.audit {
                    let sink: Arc<dyn ExchangeSink> = match tenant {
                        Some(t) => Arc::new(crate::audit::writer::TenantSink {
                            log: Arc::clone(log),
                            tenant: t.to_string(),
                        }),
                        None => Arc::clone(log) as Arc<dyn ExchangeSink>,
                    };
                    guard = guard.with_sink(sink);
                }
                Arc::new(guard)
            };
        let default = make(config.policy.clone(), None);
        let tenants = config
            .tenancy
            .tenants
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    make(crate::runtime::merge(&config.policy, &t.policy), Some(name)),
                )
            })
            .collect();
        let set = crate::runtime::GuardSet::new(default, tenants, &config.tenancy, version);
        Ok((set, engine))
    }
}

/// Builds the careguard guard from the configuration: the guard metrics on `metrics`, the audit
/// log when `[audit] dir` is set, and the first guard set (see [`GuardBuilder::build`]).
pub fn build_guard(config: &Config, metrics: &Metrics) -> Result<Guarded, ServeError> {
    let guard_metrics = crate::metrics::GuardMetrics::new(metrics.registry())?;
    let audit = match &config.audit.dir {
        Some(_) => {
            let audit_metrics = crate::audit::AuditMetrics::register(metrics.registry())?;
            let log = Arc::new(crate::audit::AuditLog::start(&config.audit, audit_metrics)?);
            tracing::info!(dir = %log.dir().display(), "audit log open");
            Some(log)
        }
        None => None,
    };
    let builder = Arc::new(GuardBuilder {
        metrics: guard_metrics.clone(),
        audit: audit.clone(),
    });
    let (set, engine) = builder.build(config)?;
    Ok(Guarded {
        guard: Arc::new(crate::runtime::LiveGuard::new(set, guard_metrics)),
        audit,
        engine,
        builder,
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
