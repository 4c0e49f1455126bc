//! The `identity-gateway` binary: parse configuration, [`App::start`], serve
//! until SIGTERM or Ctrl-C, drain, remove the socket. SIGHUP reloads the
//! caller policy from the configuration file.

use std::{error::Error, process::ExitCode};

use clap::Parser;
use identity_gateway::{
    config::{Cli, Config},
    error_chain, logging, App, Options, StartupError,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "emulator")]
    let emulator = cli.emulator;
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("identity-gateway: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(logging::env_filter(&config.log))
        .with_writer(std::io::stderr)
        .init();
    identity_gateway::transport::limits::raise_descriptor_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("identity-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        #[cfg(feature = "emulator")]
        emulator,
        ..Options::default()
    };
    match runtime.block_on(run(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("identity-gateway: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn chain(error: &dyn Error) -> String {
    error_chain(error)
}

async fn run(config: Config, options: Options) -> Result<(), StartupError> {
    // Before anything else: SIGHUP's default action would end the process.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let app = App::start_with(config, options).await?;
    #[cfg(unix)]
    if let Some(mut hangups) = hangups.take() {
        let reloader = app.reloader();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the caller policy");
                // The outcome is logged by the reloader.
                let _ = reloader.reload();
            }
        });
    }
    let config = app.config();
    tracing::info!(
        socket = %config.socket.display(),
        tcp = ?config.tcp,
        source = %app.gateway().tokens().source_description(),
        "identity-gateway serving"
    );
    #[cfg(feature = "emulator")]
    if let Some(emulator) = app.emulator() {
        println!(
            "{}",
            identity_gateway::emulator_mode::banner(config, emulator)
        );
    }
    if let Some(endpoint) = app.identity_endpoint() {
        println!("identity endpoint: {}", endpoint.url());
        println!("identity header file: {}", endpoint.header_file().display());
    }
    app.serve(shutdown_signal()).await?;
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
