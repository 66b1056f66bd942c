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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
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
    /// Proxy threads (overrides `[server] workers`).
    pub workers: Option<usize>,
}

/// A started `serve`: the server, its guard and audit log, and the reloader.
pub struct Running {
    /// The server (addresses, metrics).
    pub server: Server,
    /// The audit log, if any (closed by [`Running::shutdown`]).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
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
        if let Some(audit) = &self.audit {
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
    /// A proxy thread (or its runtime) could not start.
    #[error("cannot start a proxy thread")]
    Threads(#[source] std::io::Error),
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

/// The control runtime `serve` runs on: one thread for accepting connections, the admin
/// listener, signals and reloads. Requests are served on the proxy threads that
/// [`Server::start`] starts (see [`proxy_threads`]), each with an event loop of its own.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// How many proxy threads serve requests for `[server] workers`: that number, or for 0 the
/// `TOKIO_WORKER_THREADS` environment variable if set, else one per CPU core.
pub fn proxy_threads(workers: usize) -> usize {
    if workers > 0 {
        return workers;
    }
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
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
    if let Some(n) = options.workers {
        config.server.workers = n;
    }
    let metrics = Arc::new(Metrics::new()?);
    let guarded = build_guard(&config, &metrics)?;
    // Nothing here needs the start-up engine beyond its guard set: kept, it would stay resident
    // (a whole compiled rule set, ~25 MB) after the first reload replaced that set.
    let Guarded {
        guard,
        audit,
        engine,
        builder,
    } = guarded;
    drop(engine);
    let reloader = crate::runtime::Reloader {
        config_path: options.config_path.clone(),
        apply_overrides: Box::new(move |c: &mut Config| {
            if let Some(dir) = &options.rules_dir {
                c.rules.dir = Some(dir.clone());
            }
        }),
        build: {
            Box::new(move |c: &Config| {
                builder
                    .build(c)
                    .map(|(set, _)| set)
                    .map_err(|e| error_chain(&e))
            })
        },
        live: Arc::clone(&guard),
        poll: options.reload_poll.unwrap_or(Duration::from_secs(2)),
    };
    let reloader = Arc::new(reloader);
    let snapshot = reloader.snapshot(&config);
    let reload_task = tokio::spawn(Arc::clone(&reloader).run(snapshot));
    let server = Server::start_with_metrics(config, guard, metrics).await?;
    Ok(Running {
        server,
        audit,
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
    main: JoinHandle<()>,
    workers: Vec<WorkerHandle>,
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
        let threads = proxy_threads(config.server.workers);
        // One upstream client per proxy thread: a pooled connection is driven by a task on the
        // thread that opened it, so a thread reusing only its own never hands work to another.
        let upstreams = (0..threads)
            .map(|_| Upstream::new(&upstream_url, &config.upstream))
            .collect::<Result<Vec<_>, _>>()?;
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
        let (stop, stop_rx) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));

        let mut conns = Vec::with_capacity(threads);
        let mut workers = Vec::with_capacity(threads);
        for (index, upstream) in upstreams.into_iter().enumerate() {
            let shared = Arc::new(Shared {
                upstream,
                guard: Arc::clone(&guard),
                metrics: Arc::clone(&metrics),
                proxy: config.proxy.clone(),
            });
            let service = TowerToHyperService::new(proxy::service(shared));
            let (sender, handle) =
                spawn_worker(index, move || service.clone()).map_err(ServeError::Threads)?;
            conns.push(sender);
            workers.push(handle);
        }
        let main = tokio::spawn(dispatch_loop(main_listener, stop_rx.clone(), conns));
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
            workers,
            admin,
        })
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), then returns.
    pub async fn shutdown(self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        // The dispatcher stops accepting and drops its senders: each proxy thread then waits
        // for its open connections to finish their requests and exits.
        let _ = self.main.await;
        let (forces, mut done): (Vec<_>, Vec<_>) =
            self.workers.into_iter().map(|w| (w.force, w.done)).unzip();
        if tokio::time::timeout(self.drain_timeout, all_exited(&mut done))
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached; closing remaining connections");
            for force in forces {
                let _ = force.send(());
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), all_exited(&mut done)).await;
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

/// Waits until every proxy thread whose `done` is in `done` has exited.
async fn all_exited(done: &mut [oneshot::Receiver<()>]) {
    for d in done {
        let _ = d.await;
    }
}

/// One proxy thread, seen from the control thread.
struct WorkerHandle {
    /// Sending `()` closes the thread's remaining connections at once (drain timeout).
    force: oneshot::Sender<()>,
    /// Resolves when the thread has exited.
    done: oneshot::Receiver<()>,
}

/// Starts proxy thread `index`: a single-threaded runtime serving the connections sent to it,
/// each with a service from `make`. It exits once the sender is dropped and its connections
/// have finished (or at once on `force`).
fn spawn_worker<M, S>(
    index: usize,
    make: M,
) -> std::io::Result<(mpsc::UnboundedSender<std::net::TcpStream>, WorkerHandle)>
where
    M: Fn() -> S + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<proxy::ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sender, mut conns) = mpsc::unbounded_channel::<std::net::TcpStream>();
    let (force_tx, force) = oneshot::channel::<()>();
    let (done_tx, done) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("careguard-proxy-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let serve = async move {
                    let graceful = GracefulShutdown::new();
                    let builder = conn_builder();
                    while let Some(stream) = conns.recv().await {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => serve_connection(&builder, &graceful, stream, make()),
                            Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
                        }
                    }
                    graceful.shutdown().await;
                };
                tokio::select! {
                    () = serve => {}
                    Ok(()) = force => {}
                }
            });
            // Dropping the runtime cancels whatever is left (only after `force`).
            drop(runtime);
            let _ = done_tx.send(());
        })?;
    Ok((
        sender,
        WorkerHandle {
            force: force_tx,
            done,
        },
    ))
}

/// Accepts proxy connections until `stop` flips and hands them to the proxy threads in turn.
/// Connections are long-lived (keep-alive), so taking turns spreads them evenly.
async fn dispatch_loop(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    workers: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
) {
    let mut next = 0usize;
    while let Some(stream) = accept(&listener, &mut stop).await {
        match stream.into_std() {
            Ok(stream) => {
                let _ = workers[next % workers.len()].send(stream);
                next = next.wrapping_add(1);
            }
            Err(e) => tracing::debug!(error = %e, "cannot hand over a connection"),
        }
    }
}

fn conn_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves one connection on the current runtime, tracked by `graceful`.
fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    service: S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<proxy::ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = watched.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// Accepts connections until `stop` flips, serving each on the current runtime with a fresh
/// service from `make` (the admin listener). Returns the graceful-shutdown tracker of the
/// connections still open.
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
    let builder = conn_builder();
    while let Some(stream) = accept(&listener, &mut stop).await {
        serve_connection(&builder, &graceful, stream, make());
    }
    graceful
}

/// The next accepted connection (with `TCP_NODELAY`), or `None` once `stop` flips.
async fn accept(listener: &TcpListener, stop: &mut watch::Receiver<bool>) -> Option<TcpStream> {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}
