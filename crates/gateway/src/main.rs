//! The `gateway` binary: parse configuration, set up logging, run.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use switchboard_gateway::auth::TokenSigner;
use switchboard_gateway::config::{Cli, Command, Config, LogFormat};
use switchboard_protocol::{UserId, UserRef};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => print_token(&cli.config, &args),
        Some(Command::Serve) | None => {
            init_logging(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let app = switchboard_gateway::build(cli.config).await?;
                switchboard_gateway::serve(app).await?;
                anyhow::Ok(())
            })
        }
    }
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
