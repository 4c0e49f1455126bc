//! The `identity-gateway` binary: parse configuration, bind, serve until
//! SIGTERM or Ctrl-C (or a Windows service stop), drain, remove the socket.
//! `identity-gateway service ...` manages the Windows service.

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use identity_gateway::{
    config::{Cli, Config},
    emulator_mode, gateway, identity_endpoint,
    lifecycle::RunControl,
    logging, transport,
};

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "service") {
        return service(std::env::args_os().skip(1).collect());
    }
    let config = match Config::from_cli(Cli::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("identity-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init_stderr(&config.log);
    match run_blocking(config, RunControl::new(shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("identity-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(windows)]
fn service(args: Vec<std::ffi::OsString>) -> ExitCode {
    identity_gateway::windows::service::main(args, run_blocking)
}

#[cfg(not(windows))]
fn service(_args: Vec<std::ffi::OsString>) -> ExitCode {
    eprintln!(
        "identity-gateway: `service` manages the Windows service; on Linux use the systemd \
         unit (deploy/identity-gateway.service)"
    );
    ExitCode::from(2)
}

/// Runs the gateway on its own runtime until `control.shutdown` resolves.
fn run_blocking(config: Config, control: RunControl) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run(config, control))
}

async fn run(mut config: Config, control: RunControl) -> Result<(), String> {
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
        listening = %transport::describe(&config),
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
    if let Some(ready) = control.ready {
        ready();
    }
    let shutdown = control.shutdown;
    gateway::serve(state, listeners, async move {
        let reason = shutdown.await;
        tracing::info!("{reason}: draining");
    })
    .await
    .map_err(|e| format!("server failed: {e}"))?;
    if let Some(endpoint) = identity_endpoint {
        endpoint.stop().await;
    }
    tracing::info!("identity-gateway stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
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
        "SIGTERM"
    };
    // Closing the console window, logoff and shutdown of a console gateway.
    #[cfg(windows)]
    let term = async {
        let (Ok(mut close), Ok(mut shutdown)) = (
            tokio::signal::windows::ctrl_close(),
            tokio::signal::windows::ctrl_shutdown(),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = close.recv() => "console closed",
            _ = shutdown.recv() => "system shutdown",
        }
    };
    #[cfg(not(any(unix, windows)))]
    let term = std::future::pending::<&'static str>();
    tokio::select! {
        _ = ctrl_c => "Ctrl-C",
        reason = term => reason,
    }
}
