//! The `identity-gateway` binary: parse configuration, [`App::start`], serve
//! until SIGTERM or Ctrl-C (or a Windows service stop), drain, remove the
//! socket. SIGHUP (Ctrl-Break in a Windows console, PARAMCHANGE for the
//! Windows service) reloads the caller policy from the configuration file.
//! `identity-gateway service ...` manages the Windows service. Or run a
//! subcommand (`diagnose`, `healthcheck`).

use std::{error::Error, io::Write as _, process::ExitCode};

use clap::Parser;
use identity_gateway::{
    config::{Cli, Command, Config},
    error_chain,
    healthcheck::{self, HealthcheckArgs},
    lifecycle::{self, ReloadTrigger, RunControl},
    logging, App, Options, StartupError,
};

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "service") {
        return service(std::env::args_os().skip(1).collect());
    }
    let mut cli = Cli::parse();
    let command = cli.command.take();
    #[cfg(feature = "emulator")]
    let emulator = cli.emulator;
    // Before the configuration is resolved: diagnose reports a configuration
    // that does not load as a failed check.
    if let Some(Command::Diagnose(args)) = &command {
        return diagnose(cli, args.clone());
    }
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("identity-gateway: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck(args)) = &command {
        return healthcheck(&config, args);
    }
    logging::init(&config.log, config.log_format);
    identity_gateway::transport::limits::raise_descriptor_limit();
    let options = Options {
        #[cfg(feature = "emulator")]
        emulator,
        ..Options::default()
    };
    match run_blocking(config, options, RunControl::new(shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("identity-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `identity-gateway diagnose`: the report on stdout; exit 1 if a check
/// failed (a configuration that does not load is a failed check too).
fn diagnose(cli: Cli, args: identity_gateway::diagnose::DiagnoseArgs) -> ExitCode {
    use identity_gateway::diagnose::{self, Report};
    #[cfg(feature = "emulator")]
    let emulator = cli.emulator;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("identity-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match Config::from_cli(cli) {
        Err(e) => Report::bad_config(&chain(&e)),
        Ok(config) => runtime.block_on(async {
            #[cfg(feature = "emulator")]
            let mut config = config;
            // `--emulator diagnose` checks the gateway's view of the emulator.
            #[cfg(feature = "emulator")]
            let _emulator = if emulator {
                match identity_gateway::emulator_mode::start(&config.socket).await {
                    Ok(running) => {
                        running.configure(&mut config);
                        Some(running)
                    }
                    Err(e) => return Report::bad_config(&chain(&e)),
                }
            } else {
                None
            };
            diagnose::run(&config, &args).await
        }),
    };
    let text = if args.json {
        report.to_json()
    } else {
        report.to_text()
    };
    println!("{text}");
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(windows)]
fn service(args: Vec<std::ffi::OsString>) -> ExitCode {
    identity_gateway::windows::service::main(args, |config, control| {
        run_blocking(config, Options::default(), control)
    })
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
fn run_blocking(config: Config, options: Options, control: RunControl) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime
        .block_on(run(config, options, control))
        .map_err(|e| chain(&e));
    // The drain has ended (or timed out). A SQL result still being read on
    // its blocking thread must not hold the exit back.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
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
    let target = healthcheck::Target::of(config);
    let health = runtime.block_on(healthcheck::check(&target, &args.service, timeout));
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

async fn run(config: Config, options: Options, control: RunControl) -> Result<(), StartupError> {
    let RunControl {
        shutdown,
        ready,
        reloads,
    } = control;
    // Before anything else: SIGHUP's default action would end the process,
    // Ctrl-Break's a Windows console gateway (without a drain).
    forward_reload_signals(reloads.trigger());
    let app = App::start_with(config, options).await?;
    identity_gateway::memory::spawn_trimmer();
    // One path for every source: SIGHUP, Ctrl-Break, the service's PARAMCHANGE.
    let reloader = app.reloader();
    tokio::spawn(lifecycle::answer_reloads(reloads, move || {
        // The outcome is logged by the reloader.
        let _ = reloader.reload();
    }));
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
    if let Some(ready) = ready {
        ready();
    }
    app.serve(async move {
        let reason = shutdown.await;
        tracing::info!("{reason}: draining");
    })
    .await?;
    tracing::info!("identity-gateway stopped");
    Ok(())
}

/// Turns this process's reload signal into reload requests: SIGHUP on Unix
/// (`systemctl reload`); Ctrl-Break on Windows, which only the console the
/// gateway runs in can send (the keyboard, or `GenerateConsoleCtrlEvent` from
/// a process attached to it); a service has no console and reloads on
/// PARAMCHANGE instead. Must run inside the runtime, before the app starts.
fn forward_reload_signals(trigger: ReloadTrigger) {
    #[cfg(unix)]
    let (signal, name) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()),
        "SIGHUP",
    );
    #[cfg(windows)]
    let (signal, name) = (tokio::signal::windows::ctrl_break(), "Ctrl-Break");
    #[cfg(any(unix, windows))]
    match signal {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    if trigger.request(name) == lifecycle::ReloadRequest::Merged {
                        tracing::info!("{name}: a reload is already pending");
                    }
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for {name}: it will not reload the caller policy")
        }
    }
    #[cfg(not(any(unix, windows)))]
    drop(trigger);
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
