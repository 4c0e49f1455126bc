//! Dialing the gateway: Unix socket, Windows named pipe, or TCP URL.

use tonic::transport::{Channel, Endpoint, Uri};

use crate::{ConnectOptions, Error};

/// Where a system install listens.
#[cfg(not(windows))]
pub const DEFAULT_SOCKET: &str = "/run/identity-gateway/gateway.sock";
/// Where a system install listens: the named pipe on Windows.
#[cfg(windows)]
pub const DEFAULT_SOCKET: &str = r"\\.\pipe\identity-gateway";

pub(crate) async fn channel(target: &str, options: &ConnectOptions) -> Result<Channel, Error> {
    let connect_error = |e: &dyn std::fmt::Display| Error::Connect {
        target: target.to_string(),
        message: e.to_string(),
    };
    if target.starts_with("http://") || target.starts_with("https://") {
        return tune(Endpoint::from_shared(target.to_string()).map_err(|e| connect_error(&e))?)
            .connect()
            .await
            .map_err(|e| connect_error(&source_chain(&e)));
    }
    // The URI is a placeholder: the connector below decides where bytes go.
    let endpoint = tune(Endpoint::from_static("http://identity-gateway.local"));
    #[cfg(windows)]
    if target.starts_with(r"\\") {
        let name = target.to_string();
        let options = options.clone();
        return endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let name = name.clone();
                let options = options.clone();
                async move {
                    let pipe = crate::pipe::open(&name, &options).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(pipe))
                }
            }))
            .await
            .map_err(|e| connect_error(&source_chain(&e)));
    }
    #[cfg(not(windows))]
    let _ = options;
    #[cfg(unix)]
    {
        let path = target.strip_prefix("unix://").unwrap_or(target).to_string();
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| connect_error(&source_chain(&e)))
    }
    #[cfg(not(unix))]
    {
        let _ = endpoint;
        Err(connect_error(
            &"Unix sockets are not available on this platform; use a pipe or URL",
        ))
    }
}

/// HTTP/2 windows sized for a local socket: many concurrent calls (each token
/// reply is ~1.5 KB) and streamed blobs and rows must not stall on the 64 KiB
/// protocol default while the peer waits for WINDOW_UPDATE frames. Frames of
/// up to 1 MiB (the protocol default is 16 KiB) let a batch of rows or a blob
/// chunk arrive as one DATA frame: fewer frames to parse and fewer wake-ups
/// (QuerySql 0.70 -> ~0.78 of tiberius used directly, BENCHMARKS.md).
pub(crate) fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(1024 * 1024)
        .max_frame_size(1024 * 1024)
}

fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        // Some layers repeat their cause in their own message.
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}
