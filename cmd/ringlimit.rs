//! The `ringlimit` command: one binary, with subcommands. `ringlimit` alone serves.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ringlimit::config::{self, LogFormat, ServerConfig};
use tracing_subscriber::EnvFilter;

/// A peer-to-peer clustered rate-limit service, wire-compatible with Gubernator v2.
#[derive(Debug, Parser)]
#[command(name = "ringlimit", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Load `KEY=value` lines (GUBER_* variables) from FILE; flags still take precedence.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServerConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default when no subcommand is given).
    Serve(ServerConfig),
}

fn main() -> ExitCode {
    let command = Cli::command().args_override_self(true);
    let args: Vec<String> = std::env::args().collect();
    let (args, warnings) = match config::expand_config_file(args, &command) {
        Ok(expanded) => expanded,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = match command
        .clone()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) {
                eprintln!("{}", config::describe_error(&error, &command));
            } else {
                let _ = error.print();
            }
            return ExitCode::from(2);
        }
    };

    let server_config = match cli.command {
        Some(Command::Serve(server_config)) => server_config,
        None => cli.serve,
    };
    init_tracing(&server_config);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    serve(server_config)
}

fn serve(config: ServerConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let settings = config
        .describe()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %settings, "starting ringlimit");
    runtime.block_on(async {
        let server = match ringlimit::server::start(&config).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        match server.run_until_signal().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "unclean shutdown");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_tracing(config: &ServerConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
