//! A small command-line client for checking a gateway end to end, used by
//! the Windows suite under wine (`scripts/windows-tests.sh`) and handy on a
//! real VM. Never prints a token or a secret value, only facts about them.
//!
//! ```text
//! gateway-probe token  TARGET RESOURCE
//! gateway-probe secret TARGET VAULT_URL NAME
//! gateway-probe burst  TARGET N RESOURCE      N clients, each on its own connection
//! gateway-probe hold   TARGET N RESOURCE      N connections opened one after another, each
//!                                             kept open after its call; prints how many were served
//! gateway-probe watch  TARGET RESOURCE        first token, then waits for the stream's end
//! gateway-probe owner  TARGET SID             connect requiring the pipe owner SID
//! gateway-probe sddl   PIPE                   the pipe's owner and DACL (Windows)
//! ```
//! TARGET is a pipe (`\\.\pipe\identity-gateway`), a socket path or a URL.
//! Exit status 0 when the check passed.

use std::{process::ExitCode, time::Duration};

use futures::StreamExt;
use identity_gateway_client::{ConnectOptions, GatewayClient, Identity};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            println!("FAILED: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[&str]) -> Result<String, String> {
    match args {
        ["token", target, resource] => {
            let client = connect(target).await?;
            let token = client
                .get_token(resource)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "token ok: resource {}, {} bytes, type {}",
                token.resource,
                token.secret().len(),
                token.token_type
            ))
        }
        ["secret", target, vault, name] => {
            let client = connect(target).await?;
            let secret = client
                .get_secret(vault, name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("secret ok: {name}, {} bytes", secret.value.len()))
        }
        ["burst", target, n, resource] => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("N must be a number, got {n}"))?;
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let target = target.to_string();
                    let resource = resource.to_string();
                    tokio::spawn(async move {
                        let client = GatewayClient::connect(&target)
                            .await
                            .map_err(|e| e.to_string())?;
                        client
                            .get_token(&resource)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            let mut failures = Vec::new();
            for task in tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(e),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if failures.is_empty() {
                Ok(format!("burst ok: {n} connections, 0 failed"))
            } else {
                Err(format!(
                    "burst: {} of {n} failed, first: {}",
                    failures.len(),
                    failures[0]
                ))
            }
        }
        ["hold", target, n, resource] => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("N must be a number, got {n}"))?;
            // Every client stays alive (its connection open) until the end,
            // so each later one meets the connections of the earlier ones.
            let mut held = Vec::new();
            let mut served = 0;
            let mut first_refusal = None;
            for _ in 0..n {
                let outcome = match GatewayClient::connect(target).await {
                    Ok(client) => {
                        let call = client.get_token(resource).await.map(drop);
                        held.push(client);
                        call.map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => served += 1,
                    Err(e) => {
                        first_refusal.get_or_insert(e);
                    }
                }
            }
            let line = format!("hold: {n} connections, {served} served");
            match first_refusal {
                None => Ok(line),
                Some(e) => Ok(format!("{line}, first refusal: {e}")),
            }
        }
        ["watch", target, resource] => {
            let client = connect(target).await?;
            let mut stream = Box::pin(
                client
                    .watch_token(resource, Identity::SystemAssigned)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            stream
                .next()
                .await
                .ok_or("the watch ended before its first token")?
                .map_err(|e| e.to_string())?;
            println!("watch: first token received");
            match tokio::time::timeout(Duration::from_secs(120), stream.next()).await {
                Err(_) => Err("the watch did not end within 120 s".into()),
                Ok(None) => Ok("watch ended: stream closed".into()),
                Ok(Some(Ok(_))) => Err("a refreshed token instead of the end".into()),
                Ok(Some(Err(e))) => Ok(format!("watch ended: {e}")),
            }
        }
        ["owner", target, sid] => {
            let options = ConnectOptions {
                pipe_owners: Some(vec![sid.to_string()]),
                ..ConnectOptions::default()
            };
            match GatewayClient::connect_with(target, &options).await {
                Ok(_) => Ok(format!("owner ok: the pipe is owned by {sid}")),
                Err(e) => Err(format!("owner: {e}")),
            }
        }
        #[cfg(windows)]
        ["sddl", pipe] => sddl(pipe),
        _ => Err(format!(
            "unknown command {args:?}; see the doc comment in gateway_probe.rs"
        )),
    }
}

async fn connect(target: &str) -> Result<GatewayClient, String> {
    GatewayClient::connect(target)
        .await
        .map_err(|e| e.to_string())
}

/// The pipe's owner and DACL as SDDL, read through a client handle.
#[cfg(windows)]
fn sddl(pipe: &str) -> Result<String, String> {
    use std::{ffi::c_void, os::windows::io::AsRawHandle, ptr};
    use windows_sys::Win32::{
        Foundation::{LocalFree, HANDLE},
        Security::{
            Authorization::{
                ConvertSecurityDescriptorToStringSecurityDescriptorW, GetSecurityInfo,
                SDDL_REVISION_1, SE_FILE_OBJECT,
            },
            DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
        },
    };
    let client = tokio::net::windows::named_pipe::ClientOptions::new()
        .open(pipe)
        .map_err(|e| format!("open {pipe}: {e}"))?;
    let info = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
    let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: an open handle; the system allocates `descriptor`.
    let rc = unsafe {
        GetSecurityInfo(
            client.as_raw_handle() as HANDLE,
            SE_FILE_OBJECT,
            info,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut descriptor,
        )
    };
    if rc != 0 {
        return Err(format!(
            "GetSecurityInfo: {}",
            std::io::Error::from_raw_os_error(rc as i32)
        ));
    }
    let mut text: *mut u16 = ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: a valid descriptor; the system allocates `text`.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor,
            SDDL_REVISION_1,
            info,
            &mut text,
            &mut len,
        )
    };
    // SAFETY: NUL-terminated output of the call above; both freed here.
    let sddl = unsafe {
        let out = (ok != 0 && !text.is_null()).then(|| {
            let n = (0..).take_while(|&i| *text.add(i) != 0).count();
            String::from_utf16_lossy(std::slice::from_raw_parts(text, n))
        });
        LocalFree(text as *mut c_void);
        LocalFree(descriptor);
        out
    };
    sddl.map(|s| format!("sddl: {s}"))
        .ok_or_else(|| "cannot format the descriptor".to_string())
}
