//! The `identity-gateway` binary: parse configuration, bind, serve until
//! SIGTERM or Ctrl-C, drain, remove the socket.

use std::{io::Write as _, process::ExitCode, sync::Arc};

use clap::Parser;
use identity_gateway::{
    config::{Cli, Command, Config},
    emulator_mode, gateway,
    healthcheck::{self, HealthcheckArgs},
    identity_endpoint, logging, transport,
};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("identity-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck(args)) = command {
        return healthcheck(&config, &args);
    }
    logging::init(&config.log, config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("identity-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("identity-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(config: &Config, args: &HealthcheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("identity-gateway healthcheck: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = std::time::Duration::from_secs(args.timeout);
    let health = runtime.block_on(healthcheck::check(&config.socket, &args.service, timeout));
    match health {
        healthcheck::Health::Serving => print_stdout(&health.to_string()),
        _ => eprintln!("identity-gateway healthcheck: {health}"),
    }
    ExitCode::from(health.exit_code())
}

/// Prints to stdout; a reader that went away (`identity-gateway --emulator |
/// head`) is not an error worth dying or panicking for: the banner is a
/// courtesy, the gateway keeps serving.
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!(error = %e, "cannot write to stdout");
        }
    }
}

async fn run(mut config: Config) -> Result<(), String> {
    // Bind first: a second instance fails on the live socket before it
    // starts anything else.
    let listeners = transport::bind(&config).await?;
    let emulator = if config.emulator {
        Some(emulator_mode::start(&mut config).await?)
    } else {
        None
    };
    let state = Arc::new(gateway::GatewayState::new(config.clone())?);
    let identity_endpoint = identity_endpoint::start(&state).await?;
    logging::log_startup(
        &config,
        &state.tokens.source_description(),
        identity_endpoint.as_ref().map(|e| e.url()).as_deref(),
    );
    if let Some(emulator) = &emulator {
        print_stdout(&emulator_mode::banner(&config, emulator));
    }
    if let Some(endpoint) = &identity_endpoint {
        print_stdout(&format!("identity endpoint: {}", endpoint.url()));
        print_stdout(&format!(
            "identity header file: {}",
            endpoint.header_file().display()
        ));
    }
    gateway::serve(state, listeners, shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    if let Some(endpoint) = identity_endpoint {
        endpoint.stop().await;
    }
    tracing::info!("identity-gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: draining"),
        _ = term => tracing::info!("SIGTERM: draining"),
    }
}
