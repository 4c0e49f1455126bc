//! The `identity-gateway` binary: parse configuration, bind, serve until
//! SIGTERM or Ctrl-C, drain, remove the socket.

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use identity_gateway::{
    config::{Cli, Config},
    emulator_mode, gateway, identity_endpoint, transport,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match Config::from_cli(Cli::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("identity-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
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
    tracing::info!(
        socket = %config.socket.display(),
        tcp = ?config.tcp,
        source = %state.tokens.source_description(),
        "identity-gateway serving"
    );
    if let Some(emulator) = &emulator {
        println!("{}", emulator_mode::banner(&config, emulator));
    }
    let identity_endpoint = identity_endpoint::start(&state).await?;
    if let Some(endpoint) = &identity_endpoint {
        println!("identity endpoint: {}", endpoint.url());
        println!("identity header file: {}", endpoint.header_file().display());
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
