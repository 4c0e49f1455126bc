"""The binary's life cycle as a Python user sees it: it becomes healthy on
its socket, and SIGTERM drains it, exits 0 and removes the socket."""

from gateway_process import GatewayProcess


def test_sigterm_drains_exits_zero_and_removes_the_socket(tmp_path, connect):
    process = GatewayProcess(tmp_path).start()
    with connect(str(process.socket)) as client:
        assert client.get_token("https://vault.azure.net").resource == "https://vault.azure.net"
        assert process.socket.exists()
        status = process.stop()
    assert status == 0, process.stderr()
    assert not process.socket.exists()


def test_sigterm_ends_open_watch_streams(tmp_path, connect):
    process = GatewayProcess(tmp_path).start()
    with connect(str(process.socket)) as client:
        watch = client.watch_token("https://vault.azure.net")
        assert next(watch).resource == "https://vault.azure.net"
        try:
            status = process.stop(timeout=5)
        finally:
            watch.close()
    assert status == 0, process.stderr()
    assert not process.socket.exists()
