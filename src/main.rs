//! The `careguard` command line: `serve`, `config check`, `check`, `rules test|lint`, `eval`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// careguard: a guardrail proxy for mental-health and companion chatbots.
#[derive(Debug, Parser)]
#[command(name = "careguard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The built-in demo: careguard in front of a simulated failing bot, offline.
    Demo(DemoArgs),
    /// Run the proxy in front of an OpenAI-compatible upstream.
    Serve(ServeArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Re-run the engine over logged exchanges and report what would change.
    Replay(careguard::audit::commands::ReplayArgs),
    /// Counts by month and tenant, with the SB 243 annual figures.
    Report(careguard::audit::commands::ReportArgs),
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Assess one conversation (and reply) read as JSON on stdin; print the verdict as JSON.
    Check {
        /// Load rule packs from this folder instead of the embedded ones.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Rule pack tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Score the engine on labelled cases (JSON Lines).
    Eval {
        /// A dataset file; repeat for several.
        #[arg(long = "dataset", required = true)]
        datasets: Vec<PathBuf>,
        /// Print exactly one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Write the cases the engine gets wrong to this file (JSON Lines).
        #[arg(long)]
        failures: Option<PathBuf>,
        /// Load rule packs from this folder instead of the embedded ones.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Run every rule's embedded examples; non-zero exit on any failure.
    Test {
        /// Rules folder [default: the embedded packs].
        dir: Option<PathBuf>,
        /// Same as DIR.
        #[arg(long, conflicts_with = "dir")]
        rules: Option<PathBuf>,
    },
    /// Flag rules without both kinds of examples, duplicate ids and dead patterns.
    Lint {
        /// Rules folder [default: the embedded packs].
        dir: Option<PathBuf>,
        /// Same as DIR.
        #[arg(long, conflicts_with = "dir")]
        rules: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML). Without it, built-in defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of the main (proxy) listener [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the admin listener (/metrics, /healthz, /readyz) [default: 127.0.0.1:9090].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Upstream base URL, e.g. https://api.openai.com/v1 (then config, then OPENAI_BASE_URL).
    #[arg(long)]
    upstream: Option<String>,
    /// Load rule packs from this folder instead of the embedded ones.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Write the audit log to this folder (overrides `[audit] dir`).
    #[arg(long)]
    audit_dir: Option<PathBuf>,
    /// Proxy threads, each with its own event loop (overrides `[server] workers`; 0: one per
    /// core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Keep careguard and the simulated bot running afterwards (127.0.0.1:8080, admin :9090).
    #[arg(long)]
    serve: bool,
    /// careguard's listener address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// careguard's admin listener address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Load rule packs from this folder instead of the embedded ones.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Run only the simulated bot, as an upstream for your own careguard (compose setups).
    #[arg(long)]
    bot_only: bool,
    /// The simulated bot's address [default: 127.0.0.1:0, or 127.0.0.1:8000 with --bot-only].
    #[arg(long)]
    bot_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain across segments; non-zero exit naming the first broken record.
    Verify(careguard::audit::commands::VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print every problem as `path:line:col: message`.
    Check {
        /// The file to check [default: config/careguard.toml].
        path: Option<PathBuf>,
    },
}

/// Loads the rule set from `dir`, or the embedded packs; errors come out as `file:line:col` lines.
fn load_rules(dir: Option<&Path>) -> anyhow::Result<careguard::engine::RuleSet> {
    let loaded = match dir {
        Some(dir) => careguard::engine::RuleSet::from_dir(dir),
        None => careguard::engine::RuleSet::embedded(),
    };
    loaded.map_err(|errors| anyhow::anyhow!("invalid rule packs:\n{errors}"))
}

/// `careguard check`: one JSON object on stdin, the verdict on stdout.
fn check(rules: Option<&Path>) -> anyhow::Result<ExitCode> {
    let engine = careguard::engine::Engine::new(load_rules(rules)?);
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).context("reading stdin")?;
    let request: serde_json::Value =
        serde_json::from_str(&input).context("stdin is not a JSON object")?;
    let messages = request
        .get("messages")
        .and_then(|m| m.as_array())
        .context("stdin JSON needs a `messages` array")?;
    let messages: Vec<careguard::engine::Message> = messages
        .iter()
        .filter_map(careguard::engine::Message::from_json)
        .collect();
    let assessment = engine.classify(&messages);
    let violations = match request.get("response") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(reply)) => engine.check(&assessment, reply),
        Some(_) => anyhow::bail!("`response` must be a string"),
    };
    let out = serde_json::json!({
        "crisis": assessment.crisis,
        "conditions": assessment.conditions,
        "requests": assessment.requests,
        "violations": violations,
        "rules_version": engine.rules().version(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn rules_test(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let rules = load_rules(dir)?;
    let (failures, run) = careguard::engine::examples::test(&rules);
    for f in &failures {
        println!("{f}");
    }
    println!(
        "rules {}: {} rules, {} examples, {} passed, {} failed",
        rules.version(),
        rules.rules().len(),
        run,
        run - failures.len(),
        failures.len()
    );
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn rules_lint(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let rules = load_rules(dir)?;
    let findings = careguard::engine::examples::lint(&rules);
    for f in &findings {
        println!("{f}");
    }
    println!("{} rules, {} findings", rules.rules().len(), findings.len());
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn eval(
    datasets: &[PathBuf],
    json: bool,
    failures: Option<&Path>,
    rules: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let engine = careguard::engine::Engine::new(load_rules(rules)?);
    let mut file = match failures {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let report = careguard::eval::run(
        &engine,
        datasets,
        file.as_mut().map(|f| f as &mut dyn std::io::Write),
    )?;
    if let Some(mut f) = file {
        std::io::Write::flush(&mut f).context("writing failures")?;
    }
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            let options = careguard::server::ServeOptions {
                config_path: args.config,
                listen: args.listen,
                admin_listen: args.admin_listen,
                upstream: args.upstream,
                rules_dir: args.rules,
                audit_dir: args.audit_dir,
                reload_poll: None,
                workers: args.workers,
            };
            let runtime = careguard::server::runtime().context("starting the runtime")?;
            runtime
                .block_on(careguard::server::serve(options))
                .context("serve")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { path },
        } => {
            let path = path.unwrap_or_else(|| PathBuf::from("config/careguard.toml"));
            match careguard::config::Config::load(&path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Demo(args) => {
            if args.serve || args.bot_only {
                init_tracing();
            }
            let options = careguard::demo::DemoOptions {
                serve: args.serve,
                listen: args.listen,
                admin_listen: args.admin_listen,
                rules_dir: args.rules,
                bot_only: args.bot_only,
                bot_listen: args.bot_listen,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime
                .block_on(careguard::demo::run(options))
                .context("demo")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => Ok(careguard::audit::commands::run_verify(args)?),
        Command::Replay(args) => Ok(careguard::audit::commands::run_replay(args)?),
        Command::Report(args) => Ok(careguard::audit::commands::run_report(args)?),
        Command::Check { rules } => check(rules.as_deref()),
        Command::Rules {
            command: RulesCommand::Test { dir, rules },
        } => rules_test(dir.or(rules).as_deref()),
        Command::Rules {
            command: RulesCommand::Lint { dir, rules },
        } => rules_lint(dir.or(rules).as_deref()),
        Command::Eval {
            datasets,
            json,
            failures,
            rules,
        } => eval(&datasets, json, failures.as_deref(), rules.as_deref()),
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`). Message text is never logged at info.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
