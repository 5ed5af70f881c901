"""The metrics endpoint over TLS with client certificates: without one signed by the
configured CA, nothing is served (a sandbox sharing the host network learns nothing)."""

from __future__ import annotations

import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from ebpfguard.outputs.metrics import MetricsAddressError, MetricsServer, MetricsTls


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def signed(directory: Path, name: str, ca: Path, ca_key: Path, subject_alt: str = "") -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    extra = directory / f"{name}.ext"
    extra.write_text(f"subjectAltName={subject_alt}\n" if subject_alt else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "1", "-out", str(cert), "-extfile", str(extra))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
            "-days", "1", "-subj", "/CN=test-ca")
    server_cert, server_key = signed(directory, "server", ca, ca_key, "IP:127.0.0.1")
    client_cert, client_key = signed(directory, "prometheus", ca, ca_key)
    return {"ca": ca, "server_cert": server_cert, "server_key": server_key,
            "client_cert": client_cert, "client_key": client_key}


@pytest.fixture
def server(pki):
    registry = CollectorRegistry()
    Counter("ebpfguard_test_scrapes", "a sample", registry=registry).inc()
    tls = MetricsTls(str(pki["server_cert"]), str(pki["server_key"]), str(pki["ca"]))
    running = MetricsServer("127.0.0.1", 0, registry, tls)
    yield running
    running.close()


def fetch(url: str, context: ssl.SSLContext) -> str:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.read().decode()


def test_a_scraper_with_a_certificate_from_the_ca_reads_the_metrics(server, pki):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    assert server.url.startswith("https://127.0.0.1:")
    assert "ebpfguard_test_scrapes_total 1.0" in fetch(server.url, context)


def test_a_client_without_a_certificate_reads_nothing(server, pki):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        fetch(server.url, context)


def test_plain_http_gets_no_metrics_from_a_tls_endpoint(server):
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)) as failure:
        fetch(server.url.replace("https://", "http://"), ssl.create_default_context())
    assert "ebpfguard_test_scrapes" not in str(failure.value)


def test_tls_settings_must_come_in_pairs():
    assert MetricsTls.from_config({"tls_certfile": "", "tls_keyfile": "", "tls_client_cafile": ""}) is None
    with pytest.raises(MetricsAddressError, match="go together"):
        MetricsTls.from_config({"tls_certfile": "c.pem", "tls_keyfile": "", "tls_client_cafile": ""})


def test_a_tls_file_that_cannot_be_loaded_is_named(tmp_path, pki):
    with pytest.raises(MetricsAddressError, match=r"tls_client_cafile .*nope\.pem: No such file"):
        MetricsServer("127.0.0.1", 0, CollectorRegistry(),
                      MetricsTls(str(pki["server_cert"]), str(pki["server_key"]), str(tmp_path / "nope.pem")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(MetricsAddressError, match=r"tls_certfile .*garbage\.pem"):
        MetricsServer("127.0.0.1", 0, CollectorRegistry(), MetricsTls(str(garbage), str(garbage), None))
