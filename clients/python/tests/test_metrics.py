"""The Prometheus endpoint as an operator's scraper sees it: the real binary
with ``--metrics-listen``, scraped over HTTP and parsed with the official
Python client's OpenMetrics parser (strict: a malformed exposition fails
here); the call counter moves with the calls made through the Python client.
"""

from __future__ import annotations

import socket
import urllib.request

import identity_gateway
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gateway_process import GatewayProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        text = answer.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict, family: str, sample: str, **labels: str) -> float:
    if family not in families:
        return 0.0
    return sum(
        s.value
        for s in families[family].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_parse_and_count_the_calls(tmp_path):
    port = free_port()
    process = GatewayProcess(tmp_path, extra_args=["--metrics-listen", f"127.0.0.1:{port}"]).start()
    try:
        before = scrape(port)
        assert before["identity_gateway_build"].type == "info"
        assert value(before, "identity_gateway_calls", "identity_gateway_calls_total", rpc="GetToken") == 0
        with identity_gateway.connect(str(process.socket), timeout=30) as client:
            for _ in range(3):
                client.get_token("https://vault.azure.net")
        after = scrape(port)
        assert value(after, "identity_gateway_calls", "identity_gateway_calls_total", rpc="GetToken", code="OK") == 3
        assert after["identity_gateway_call_duration_seconds"].type == "histogram"
        assert value(after, "identity_gateway_token_cache_lookups", "identity_gateway_token_cache_lookups_total", result="hit") == 2
        assert value(
            after, "identity_gateway_upstream_requests", "identity_gateway_upstream_requests_total", service="imds", status="200"
        ) == 1
    finally:
        assert process.stop() == 0, process.stderr()
