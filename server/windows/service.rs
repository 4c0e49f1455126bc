//! `identity-gateway service install|uninstall|run`: the gateway as a real
//! Windows service.
//!
//! - `install [GATEWAY FLAGS]` checks the flags (a config that cannot load
//!   fails now, not at the next boot), creates the automatic-start service
//!   running `identity-gateway.exe service run [GATEWAY FLAGS]` as
//!   LocalSystem, sets recovery actions (restart after 5 s, 30 s, 60 s, also
//!   on non-crash failures), the PRESHUTDOWN timeout, the Event Log source,
//!   and `%ProgramData%\identity-gateway` with its restrictive ACL.
//! - `run` is what the Service Control Manager starts: it reports
//!   START_PENDING, RUNNING once the pipe is bound, and turns STOP, SHUTDOWN
//!   and PRESHUTDOWN into the same drain SIGTERM triggers on Linux
//!   ([`crate::lifecycle`]), reporting STOP_PENDING with a wait hint covering
//!   the drain. PARAMCHANGE (`sc.exe control identity-gateway paramchange`)
//!   is the service's SIGHUP: a reload request on the same stream, answered
//!   by the same reloader (the handler only queues it). Logs go to rotating
//!   files; start, stop and fatal errors also to the Event Log.
//! - `uninstall` stops the service (waiting for its drain) and deletes it.

use std::{
    ffi::OsString,
    process::ExitCode,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use windows_service::{
    define_windows_service,
    service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    },
    service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle},
    service_dispatcher,
    service_manager::{ServiceManager, ServiceManagerAccess},
};

use super::{data_dir, eventlog, log_dir, secure_dir, SERVICE_NAME};
use crate::{
    app::DRAIN_TIMEOUT,
    config::{Cli, Config},
    lifecycle::{ReloadRequest, Reloads, RunControl, Runner},
};

/// Windows service management.
#[derive(Debug, Parser)]
#[command(name = "identity-gateway service")]
struct ServiceCli {
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Registers the identity-gateway service (automatic start, LocalSystem,
    /// restart on failure), to run with the gateway flags given after
    /// `install`, e.g. `install --config C:\ProgramData\identity-gateway\config.toml`.
    /// Needs an elevated (Administrator) shell.
    Install {
        /// Gateway flags the service runs with (see `identity-gateway --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        gateway_flags: Vec<OsString>,
    },
    /// Stops (draining calls) and removes the service. Needs an elevated shell.
    Uninstall,
    /// Run by the Service Control Manager; not for interactive use.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        gateway_flags: Vec<OsString>,
    },
}

/// Wait hint while stopping: the drain plus time to write the last logs.
const STOP_WAIT_HINT: Duration = Duration::from_secs(DRAIN_TIMEOUT.as_secs() + 10);
/// `ERROR_SERVICE_EXISTS`.
const ERROR_SERVICE_EXISTS: i32 = 1073;
/// `ERROR_SERVICE_DOES_NOT_EXIST`.
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
/// `ERROR_FAILED_SERVICE_CONTROLLER_CONNECT`: `run` from a console.
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;
/// `ERROR_ACCESS_DENIED`.
const ERROR_ACCESS_DENIED: i32 = 5;
/// The reload request's reason in the log.
const PARAMCHANGE: &str = "SERVICE_CONTROL_PARAMCHANGE";

/// `identity-gateway service ...`; `args` starts with the `service` word.
pub fn main(args: Vec<OsString>, runner: Runner) -> ExitCode {
    let cli = match ServiceCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        ServiceCommand::Install { gateway_flags } => install(gateway_flags),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Run { gateway_flags } => dispatch(gateway_flags, runner),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("identity-gateway service: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The gateway configuration the flags describe, checked like at start.
fn config_from_flags(flags: &[OsString]) -> Result<Config, String> {
    let argv = std::iter::once(OsString::from("identity-gateway")).chain(flags.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    Config::from_cli(cli).map_err(|e| e.to_string())
}

fn win_error(what: &str, e: windows_service::Error) -> String {
    if let windows_service::Error::Winapi(io) = &e {
        if io.raw_os_error() == Some(ERROR_ACCESS_DENIED) {
            return format!("{what}: access denied (run from an elevated Administrator shell)");
        }
    }
    format!("{what}: {e}")
}

fn install(gateway_flags: Vec<OsString>) -> Result<(), String> {
    config_from_flags(&gateway_flags).map_err(|e| format!("the gateway flags do not work: {e}"))?;
    let executable_path =
        std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    secure_dir(&data_dir())?;
    std::fs::create_dir_all(log_dir())
        .map_err(|e| format!("cannot create {}: {e}", log_dir().display()))?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| win_error("cannot open the Service Control Manager", e))?;
    let mut launch_arguments = vec![OsString::from("service"), OsString::from("run")];
    launch_arguments.extend(gateway_flags);
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: "identity-gateway (Azure managed identity broker)".into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path,
        launch_arguments,
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
        )
        .map_err(|e| match &e {
            windows_service::Error::Winapi(io)
                if io.raw_os_error() == Some(ERROR_SERVICE_EXISTS) =>
            {
                "the service is already installed; run `identity-gateway service uninstall` first"
                    .to_string()
            }
            _ => win_error("cannot create the service", e),
        })?;
    let configure = || -> Result<(), windows_service::Error> {
        service.set_description(
            "Brokers this VM's Azure managed identity to local processes over gRPC on \
             \\\\.\\pipe\\identity-gateway.",
        )?;
        service.update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart_after(5), restart_after(30), restart_after(60)]),
        })?;
        service.set_failure_actions_on_non_crash_failures(true)?;
        service.set_preshutdown_timeout(STOP_WAIT_HINT)?;
        Ok(())
    };
    if let Err(e) = configure() {
        // Wine's service manager lacks some of these; say so, keep the service.
        eprintln!("identity-gateway service: warning: recovery settings not applied: {e}");
    }
    if let Err(e) = eventlog::register_source() {
        eprintln!("identity-gateway service: warning: {e}");
    }
    println!(
        "installed service {SERVICE_NAME} (automatic start, LocalSystem, restarts on failure); \
         logs in {}\nstart it with: Start-Service {SERVICE_NAME}",
        log_dir().display()
    );
    Ok(())
}

fn restart_after(secs: u64) -> ServiceAction {
    ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    }
}

fn uninstall() -> Result<(), String> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| win_error("cannot open the Service Control Manager", e))?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(|e| match &e {
            windows_service::Error::Winapi(io)
                if io.raw_os_error() == Some(ERROR_SERVICE_DOES_NOT_EXIST) =>
            {
                "the service is not installed".to_string()
            }
            _ => win_error("cannot open the service", e),
        })?;
    let status = service
        .query_status()
        .map_err(|e| win_error("cannot query the service", e))?;
    if status.current_state != ServiceState::Stopped {
        service
            .stop()
            .map_err(|e| win_error("cannot stop the service", e))?;
        let deadline = Instant::now() + STOP_WAIT_HINT;
        while Instant::now() < deadline {
            match service.query_status() {
                Ok(s) if s.current_state == ServiceState::Stopped => break,
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
    service
        .delete()
        .map_err(|e| win_error("cannot delete the service", e))?;
    eventlog::unregister_source();
    println!(
        "removed service {SERVICE_NAME}; {} (config, logs) is left in place",
        data_dir().display()
    );
    Ok(())
}

/// What the service main needs from the `run` command line.
struct ServiceStart {
    gateway_flags: Vec<OsString>,
    runner: Runner,
}

static START: OnceLock<ServiceStart> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

fn dispatch(gateway_flags: Vec<OsString>, runner: Runner) -> Result<(), String> {
    let _ = START.set(ServiceStart {
        gateway_flags,
        runner,
    });
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| match &e {
        windows_service::Error::Winapi(io)
            if io.raw_os_error() == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) =>
        {
            "`service run` is started by the Service Control Manager; to serve from this \
             console run identity-gateway without `service`"
                .to_string()
        }
        _ => format!("cannot reach the Service Control Manager: {e}"),
    })
}

fn status(state: ServiceState, exit_code: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
    let controls_accepted = if state == ServiceState::Running {
        ServiceControlAccept::STOP
            | ServiceControlAccept::PRESHUTDOWN
            | ServiceControlAccept::PARAM_CHANGE
    } else {
        ServiceControlAccept::empty()
    };
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

fn service_main(_scm_args: Vec<OsString>) {
    let Some(start) = START.get() else { return };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let stop_tx = Mutex::new(Some(stop_tx));
    let reloads = Reloads::new();
    let reload = reloads.trigger();
    // Runs on the dispatcher's thread: it must answer at once, so it only
    // hands requests over to the runtime.
    let handler = move |control| {
        let reason = match control {
            ServiceControl::ParamChange => {
                if reload.request(PARAMCHANGE) == ReloadRequest::Merged {
                    tracing::info!("{PARAMCHANGE}: a reload is already pending");
                }
                return ServiceControlHandlerResult::NoError;
            }
            ServiceControl::Stop => "SERVICE_CONTROL_STOP",
            ServiceControl::Preshutdown => "SERVICE_CONTROL_PRESHUTDOWN",
            ServiceControl::Shutdown => "SERVICE_CONTROL_SHUTDOWN",
            ServiceControl::Interrogate => return ServiceControlHandlerResult::NoError,
            _ => return ServiceControlHandlerResult::NotImplemented,
        };
        if let Some(tx) = stop_tx.lock().ok().and_then(|mut tx| tx.take()) {
            let _ = tx.send(reason);
        }
        ServiceControlHandlerResult::NoError
    };
    let handle = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(handle) => handle,
        Err(e) => {
            eventlog::report(
                eventlog::Event::Fatal,
                &format!("cannot register the service control handler: {e}"),
            );
            return;
        }
    };
    let set = |s: ServiceStatus| {
        let _ = handle.set_service_status(s);
    };
    set(status(
        ServiceState::StartPending,
        ServiceExitCode::NO_ERROR,
        Duration::from_secs(30),
    ));
    let outcome = run_service(start, handle, stop_rx, reloads);
    match &outcome {
        Ok(()) => {
            tracing::info!("service stopped");
            eventlog::report(eventlog::Event::Stopped, "identity-gateway stopped");
        }
        Err(e) => {
            tracing::error!(error = %e, "service failed");
            eventlog::report(
                eventlog::Event::Fatal,
                &format!("identity-gateway failed: {e}"),
            );
        }
    }
    set(status(
        ServiceState::Stopped,
        match outcome {
            Ok(()) => ServiceExitCode::NO_ERROR,
            // Non-zero: the recovery actions restart the service.
            Err(_) => ServiceExitCode::ServiceSpecific(1),
        },
        Duration::ZERO,
    ));
}

fn run_service(
    start: &ServiceStart,
    handle: ServiceStatusHandle,
    stop_rx: tokio::sync::oneshot::Receiver<&'static str>,
    reloads: Reloads,
) -> Result<(), String> {
    let config = config_from_flags(&start.gateway_flags)?;
    if let Err(e) = secure_dir(&data_dir()) {
        eventlog::report(eventlog::Event::Warning, &e);
    }
    crate::logging::init_files(&config.log, config.log_format, &log_dir())?;
    let shutdown = async move {
        let reason = stop_rx.await.unwrap_or("the control handler went away");
        tracing::info!(reason, "service stop requested: draining");
        let _ = handle.set_service_status(status(
            ServiceState::StopPending,
            ServiceExitCode::NO_ERROR,
            STOP_WAIT_HINT,
        ));
        reason
    };
    let ready = move || {
        let _ = handle.set_service_status(status(
            ServiceState::Running,
            ServiceExitCode::NO_ERROR,
            Duration::ZERO,
        ));
        eventlog::report(eventlog::Event::Started, "identity-gateway serving");
    };
    let control = RunControl {
        shutdown: Box::pin(shutdown),
        ready: Some(Box::new(ready)),
        reloads,
    };
    (start.runner)(config, control)
}
