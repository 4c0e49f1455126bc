using System.IO.Pipes;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Grpc.Net.Client;

namespace IdentityGateway.Sample;

/// <summary>
/// A gRPC channel to identity-gateway: its Unix socket on Linux and macOS, its
/// named pipe on Windows. HTTP/2 runs in clear text over the local transport,
/// so the address is a plain "http://localhost".
/// </summary>
public static class GatewayChannel
{
    public const string DefaultSocket = "/run/identity-gateway/gateway.sock";
    public const string DefaultPipe = "identity-gateway";

    /// <summary>
    /// Opens a channel. <paramref name="endpoint"/> is a socket path (Unix) or
    /// a pipe name (Windows); it defaults to IDENTITY_GATEWAY_SOCKET, then the
    /// gateway's default.
    /// </summary>
    public static GrpcChannel Create(string? endpoint = null)
    {
        endpoint ??= Environment.GetEnvironmentVariable("IDENTITY_GATEWAY_SOCKET");
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = RuntimeInformation.IsOSPlatform(OSPlatform.Windows)
                ? (_, ct) => ConnectPipeAsync(endpoint ?? DefaultPipe, ct)
                : (_, ct) => ConnectUnixAsync(endpoint ?? DefaultSocket, ct),
        };
        return GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler });
    }

    private static async ValueTask<Stream> ConnectUnixAsync(string path, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static async ValueTask<Stream> ConnectPipeAsync(string name, CancellationToken ct)
    {
        // Accept both "identity-gateway" and @"\\.\pipe\identity-gateway".
        const string prefix = @"\\.\pipe\";
        if (name.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
        {
            name = name[prefix.Length..];
        }
        var pipe = new NamedPipeClientStream(".", name, PipeDirection.InOut, PipeOptions.Asynchronous);
        try
        {
            await pipe.ConnectAsync(ct).ConfigureAwait(false);
            return pipe;
        }
        catch
        {
            await pipe.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }
}
