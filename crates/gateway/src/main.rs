//! The `gateway` binary: parse configuration, set up logging, run.

use std::io::Write;

/// jemalloc rather than the system allocator: measured on this gateway (docs/benchmarks.md), an
/// idle connection costs 0.4 KiB less RSS and a persisted message ~10 % less CPU, because the
/// message path allocates and frees futures and frames larger than glibc's per-thread cache
/// takes.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use switchboard_gateway::auth::TokenSigner;
use switchboard_gateway::config::{Cli, Command, Config, LogFormat, ProcessEnv};
use switchboard_protocol::{UserId, UserRef};

fn main() -> anyhow::Result<()> {
    let cli = Cli::try_parse_with(std::env::args_os(), &ProcessEnv).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Token(args)) => print_token(&cli.config, &args),
        Some(Command::Serve) | None => {
            init_logging(&cli.config)?;
            // Before the runtime exists: its thread count is one of the settings checked.
            cli.config.validate()?;
            let runtime = runtime(&cli.config)?;
            runtime.block_on(async {
                let app = switchboard_gateway::build(cli.config).await?;
                switchboard_gateway::serve(app).await?;
                anyhow::Ok(())
            })
        }
    }
}

/// The current-thread scheduler when asked for (`SWITCHBOARD_WORKER_THREADS=1`), or by default on
/// one CPU in embedded mode: every runnable session then waits in one FIFO queue, where the
/// multi-thread scheduler's bounded local queue (256) pushes a large room's wake-ups out to its
/// global queue and reorders them, which shows as tail latency. With Redis or PostgreSQL a
/// session also waits on backend client tasks (a publish, a commit); in one FIFO queue those wait
/// behind every session woken before them, so on one CPU the default stays multi-thread, whose
/// LIFO slot runs a just-woken client task first.
fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let embedded = config.redis_url.is_none() && config.database_url.is_none();
    let current_thread = match config.worker_threads {
        Some(threads) => threads == 1,
        None => cpus == 1 && embedded,
    };
    let mut builder = if current_thread {
        tracing::info!(scheduler = "current-thread", "starting the runtime");
        tokio::runtime::Builder::new_current_thread()
    } else {
        let threads = config.worker_threads.unwrap_or(cpus);
        tracing::info!(scheduler = "multi-thread", threads, "starting the runtime");
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    Ok(builder.enable_all().build()?)
}

fn print_token(
    config: &Config,
    args: &switchboard_gateway::config::TokenArgs,
) -> anyhow::Result<()> {
    let id = UserId::parse(args.user.as_str()).context("--user")?;
    let name = args.name.clone().unwrap_or_else(|| id.to_string());
    let signer = TokenSigner::from_config(config, args.private_key_file.as_deref(), None)?;
    let token = signer.sign(&UserRef { id, name }, args.ttl)?;
    writeln!(std::io::stdout(), "{token}")?;
    Ok(())
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid SWITCHBOARD_LOG filter {:?}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
