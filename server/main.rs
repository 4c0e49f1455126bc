//! The `identity-gateway` binary: parse configuration, [`App::start`], serve
//! until SIGTERM or Ctrl-C, drain, remove the socket. SIGHUP reloads the
//! caller policy from the configuration file.

use std::{error::Error, io::Write as _, process::ExitCode};

use clap::Parser;
use identity_gateway::{
    config::{Cli, Command, Config},
    error_chain,
    healthcheck::{self, HealthcheckArgs},
    logging, App, Options, StartupError,
};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    #[cfg(feature = "emulator")]
    let emulator = cli.emulator;
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("identity-gateway: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck(args)) = command {
        return healthcheck(&config, &args);
    }
    logging::init(&config.log, config.log_format);
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
    logging::log_startup(
        config,
        &app.gateway().tokens().source_description(),
        &app.gateway().policy().summary(),
        app.identity_endpoint().map(|e| e.url()).as_deref(),
    );
    #[cfg(feature = "emulator")]
    if let Some(emulator) = app.emulator() {
        print_stdout(&identity_gateway::emulator_mode::banner(config, emulator));
    }
    if let Some(endpoint) = app.identity_endpoint() {
        print_stdout(&format!("identity endpoint: {}", endpoint.url()));
        print_stdout(&format!(
            "identity header file: {}",
            endpoint.header_file().display()
        ));
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
