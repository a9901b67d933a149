"""The hook's HTTP clients on real servers on 127.0.0.1: pooled connections kept across polls, a private CA
trusted through ``ca_bundle``, and a proxy whose credentials never show."""

from __future__ import annotations

import asyncio
import base64
import json
import select
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceError,
)
from airflow_provider_seedance.get_provider_info import get_provider_info
from airflow_provider_seedance.hooks._connection import redact_url
from airflow_provider_seedance.hooks.seedance import (
    KEEPALIVE_EXPIRY_SECONDS,
    SeedanceHook,
    aclose_shared_clients,
)
from airflow_provider_seedance.lifecycle import DEFAULT_POLL_INTERVAL_SECONDS
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.server import DEFAULT_KEEP_ALIVE_SECONDS
from airflow_provider_seedance.testing.tls import LocalCertificates, make_local_certificates
from tests._support import TEST_TOKEN, conn_json, free_port
from tests.operators._dag_support import CapturedLogs, logs

__all__ = ["logs"]

MODEL = SEEDANCE_1_5_PRO_I2V_MODEL_ID
PAYLOAD = {"prompt": "A lighthouse at dusk", "first_frame_image_url": "https://example.com/l.png"}
GAP_SECONDS = 6.0
"""Longer than httpx's default keep-alive expiry (5 s), which closed the pooled connection between polls."""

PROXY_USER = "alice"
PROXY_PASSWORD = "pr0xy-UNIQUE-s3cret-9d41"


@pytest.fixture(autouse=True)
async def _close_shared_clients() -> Iterator[None]:
    yield
    await aclose_shared_clients()


def use_connection(monkeypatch: pytest.MonkeyPatch, emulator: SeedanceEmulator, **extra: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator, **extra))


# -- keep-alive -------------------------------------------------------------------------------------------


def test_keep_alive_outlasts_the_poll_interval_and_the_server_outlasts_the_client() -> None:
    assert KEEPALIVE_EXPIRY_SECONDS > DEFAULT_POLL_INTERVAL_SECONDS
    # AWS ALB's default idle timeout: a client keeping a connection longer races the balancer's close.
    assert KEEPALIVE_EXPIRY_SECONDS < 60
    # The emulator, like a load balancer, lets the client close idle connections first.
    assert DEFAULT_KEEP_ALIVE_SECONDS > KEEPALIVE_EXPIRY_SECONDS


async def test_one_pooled_async_connection_serves_polls_further_apart_than_five_seconds(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, emulator)
    emulator.set_plan(JobPlan(queue_seconds=60, run_seconds=60))
    hook = SeedanceHook()
    request_id = (await hook.asubmit(MODEL, PAYLOAD)).request_id
    for _ in range(2):
        await asyncio.sleep(GAP_SECONDS)
        await hook.aget_status(request_id)
    calls = emulator.requests()
    assert [call.endpoint for call in calls] == ["submit", "status", "status"]
    # One TCP connection (one client port, as the server saw it) carried every call.
    assert len({call.client_port for call in calls}) == 1, [call.client_port for call in calls]


def test_one_pooled_sync_connection_serves_polls_further_apart_than_five_seconds(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    use_connection(monkeypatch, emulator)
    emulator.set_plan(JobPlan(queue_seconds=60, run_seconds=60))
    hook = SeedanceHook()
    try:
        request_id = hook.submit(MODEL, PAYLOAD).request_id
        time.sleep(GAP_SECONDS)
        hook.get_status(request_id)
    finally:
        hook.close()
    ports = [call.client_port for call in emulator.requests()]
    assert len(ports) == 2, ports
    assert len(set(ports)) == 1, ports


# -- a poll cancelled mid-request -------------------------------------------------------------------------
#
# Airflow cancels a trigger's task whenever the trigger leaves the triggerer (the task was cleared, marked,
# timed out, or its trigger moved to another triggerer), often while a status GET is in flight. httpcore
# 1.0.x can leave the connection of a request cancelled at the wrong moment marked active for good
# (encode/httpcore#1093): a one-connection client holding it then fails every later call with PoolTimeout,
# and the cancel that on_kill sends next was the first such call.

CANCEL_ROUNDS = 400
"""Mid-request cancellations per run: the unlucky moment (the body read, the connection not yet released)
came once in 40-200 cancellations on this machine."""


async def test_polls_cancelled_at_any_moment_leave_the_pool_serving(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random
    import time

    # No retries and a short pool wait: a client left unusable fails the next call at once, by name.
    use_connection(monkeypatch, emulator, timeout=3, max_retries=0)
    emulator.set_plan(JobPlan(queue_seconds=600, run_seconds=60))
    hook = SeedanceHook()
    request_id = (await hook.asubmit(MODEL, PAYLOAD)).request_id
    started = time.monotonic()
    for _ in range(5):
        await hook.aget_status(request_id)
    one_call = (time.monotonic() - started) / 5
    rng = random.Random(1093)
    for round_ in range(CANCEL_ROUNDS):
        poll = asyncio.ensure_future(hook.aget_status(request_id))
        # Anywhere from before the request is written to after its body is read.
        await asyncio.sleep(rng.uniform(0, 1.3 * one_call))
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        try:
            await hook.aget_status(request_id)
        except SeedanceError as err:
            pytest.fail(f"the call after cancellation {round_ + 1} failed: {err}")
    # The API saw every call that got through; the cancelled ones that never left cost nothing.
    assert emulator.state.count("cancel") == 0


async def test_a_cancelled_poll_never_passes_its_connection_on(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, emulator, max_retries=0)
    emulator.set_plan(JobPlan(queue_seconds=600, run_seconds=60))
    hook = SeedanceHook()
    request_id = (await hook.asubmit(MODEL, PAYLOAD)).request_id
    emulator.add_fault(Fault(kind="slow", endpoint="status", delay_seconds=30))
    poll = asyncio.ensure_future(hook.aget_status(request_id))
    # Cancel once the GET has reached the server and waits for its answer.
    for _ in range(2000):
        if emulator.state.count("status"):
            break
        await asyncio.sleep(0.01)
    poll.cancel()
    await asyncio.gather(poll, return_exceptions=True)

    outcome = await asyncio.wait_for(hook.acancel(request_id), timeout=20)
    assert outcome.cancelled
    submit, status, cancel = emulator.requests()
    assert (submit.endpoint, status.endpoint, cancel.endpoint) == ("submit", "status", "cancel")
    # The interrupted connection was closed and its client replaced: the cancel went over a new one.
    assert cancel.client_port not in (submit.client_port, status.client_port)


# -- a private CA -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> LocalCertificates:
    return make_local_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_emulator(certs: LocalCertificates) -> Iterator[SeedanceEmulator]:
    with SeedanceEmulator(
        token=TEST_TOKEN,
        plan=JobPlan(queue_seconds=0.2, run_seconds=0.3),
        ssl_certfile=certs.cert_path,
        ssl_keyfile=certs.key_path,
    ) as emu:
        yield emu


def two_connections(monkeypatch: pytest.MonkeyPatch, emulator: SeedanceEmulator, **trusted: Any) -> None:
    """``seedance_default`` trusts the emulator's CA through ``trusted``; ``untrusted`` does not."""
    use_connection(monkeypatch, emulator, max_retries=0, **trusted)
    monkeypatch.setenv("AIRFLOW_CONN_UNTRUSTED", conn_json(emulator, max_retries=0))


@pytest.mark.parametrize("key", ["ca_bundle", "verify"])
def test_a_private_ca_is_trusted_through_the_connection(
    tls_emulator: SeedanceEmulator,
    certs: LocalCertificates,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    assert tls_emulator.base_url.startswith("https://")
    two_connections(monkeypatch, tls_emulator, **{key: str(certs.ca_path)})
    # A hook-level override keeps the connection's TLS settings.
    trusted = SeedanceHook(timeout=10)
    untrusted = SeedanceHook("untrusted")
    try:
        request_id = trusted.submit(MODEL, PAYLOAD).request_id
        assert trusted.get_status(request_id).request_id == request_id
        with pytest.raises(SeedanceConnectionError, match="CERTIFICATE_VERIFY_FAILED") as err:
            untrusted.get_status(request_id)
        assert "'ca_bundle'" in str(err.value)
    finally:
        trusted.close()
        untrusted.close()
    # Every call that reached the server came from the trusting hook.
    assert [call.endpoint for call in tls_emulator.requests()] == ["submit", "status"]


async def test_the_async_client_trusts_the_private_ca_and_shares_no_pool_across_tls_settings(
    tls_emulator: SeedanceEmulator, certs: LocalCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_connections(monkeypatch, tls_emulator, ca_bundle=str(certs.ca_path))
    request_id = (await SeedanceHook().asubmit(MODEL, PAYLOAD)).request_id
    assert (await SeedanceHook().aget_status(request_id)).request_id == request_id
    # Same URL, same token, same loop: a client shared regardless of the CA would succeed here.
    with pytest.raises(SeedanceConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await SeedanceHook("untrusted").aget_status(request_id)


def test_verify_false_reaches_a_self_signed_server_and_warns(
    tls_emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, logs: CapturedLogs
) -> None:
    use_connection(monkeypatch, tls_emulator, max_retries=0, verify="false")
    hook = SeedanceHook()
    try:
        assert hook.config.verify is False
        assert hook.test_connection()[0]
    finally:
        hook.close()
    assert "TLS certificate verification is OFF" in logs.text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ca_bundle": "/nonexistent/ca.pem"}, "extra 'ca_bundle' must be the path of a PEM file"),
        ({"verify": "maybe"}, "extra 'verify' must be the path of a PEM file"),
        ({"verify": 3}, "extra 'verify' must be true, false or a CA bundle path"),
        ({"verify": False, "ca_bundle": "{ca}"}, "'ca_bundle' is set but 'verify' is false"),
        ({"verify": "/etc/other.pem", "ca_bundle": "{ca}"}, "name different CA bundles"),
        ({"proxy": "proxy.example.com:3128"}, "extra 'proxy' must be a URL"),
        ({"proxy": 3128}, "extra 'proxy' must be a URL"),
    ],
)
def test_bad_network_extras_fail_before_any_call(
    emulator: SeedanceEmulator,
    certs: LocalCertificates,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, Any],
    message: str,
) -> None:
    extra = {k: v.format(ca=certs.ca_path) if isinstance(v, str) else v for k, v in extra.items()}
    use_connection(monkeypatch, emulator, **extra)
    with pytest.raises(SeedanceConfigurationError, match=message) as err:
        SeedanceHook().get_status("req-1")
    assert "'seedance_default'" in str(err.value)
    assert emulator.requests() == []


def test_a_ca_bundle_that_is_not_pem_fails_clearly_before_any_call(
    emulator: SeedanceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    use_connection(monkeypatch, emulator, ca_bundle=str(garbage))
    with pytest.raises(SeedanceConfigurationError, match="could not be loaded"):
        SeedanceHook().get_status("req-1")
    assert emulator.requests() == []


# -- a proxy ----------------------------------------------------------------------------------------------


class ForwardProxy:
    """
    An HTTP proxy on 127.0.0.1 that demands Basic credentials and records what it carried: plain HTTP
    requests are forwarded (absolute form), HTTPS goes through a ``CONNECT`` tunnel, as with a corporate
    proxy.

    :param user: the accepted user.
    :param password: the accepted password.
    """

    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.forwarded: list[str] = []
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _refused(self) -> bool:
                if self.headers.get("proxy-authorization") == proxy.expected:
                    proxy.forwarded.append(f"{self.command} {self.path}")
                    return False
                proxy.refused += 1
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True

            def do_CONNECT(self) -> None:
                if self._refused():
                    return
                host, port = self.path.rsplit(":", 1)
                self.close_connection = True
                with socket.create_connection((host, int(port)), timeout=10) as upstream:
                    self.send_response(200, "Connection Established")
                    self.end_headers()
                    ends = [self.connection, upstream]
                    while True:
                        ready, _, _ = select.select(ends, [], [], 10)
                        if not ready:
                            return
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(data)

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self._refused():
                    return
                skip = {"proxy-authorization", "proxy-connection", "connection", "host", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                with httpx.Client(trust_env=False) as client:
                    answer = client.request(self.command, self.path, headers=headers, content=body)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, password: str = PROXY_PASSWORD) -> str:
        return f"http://{PROXY_USER}:{password}@127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy(PROXY_USER, PROXY_PASSWORD) as running:
        yield running


async def test_the_proxy_extra_carries_sync_and_async_calls_and_its_password_never_shows(
    emulator: SeedanceEmulator,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    logs: CapturedLogs,
) -> None:
    use_connection(monkeypatch, emulator, proxy=proxy.url())
    hook = SeedanceHook()
    try:
        request_id = await asyncio.to_thread(lambda: hook.submit(MODEL, PAYLOAD).request_id)
    finally:
        hook.close()
    status = await SeedanceHook().aget_status(request_id)
    assert status.request_id == request_id
    assert proxy.forwarded == [
        f"POST {emulator.base_url}/v1/models/{MODEL}",
        f"GET {emulator.base_url}/v1/requests/{request_id}/status",
    ]
    # The proxy's credentials go to the proxy only; the API sees its token and nothing else.
    assert all("proxy-authorization" not in call.headers for call in emulator.requests())
    config = SeedanceHook().config
    assert config.proxy == proxy.url()
    shown = [repr(config), repr(SeedanceHook()), str(config.proxy_display), logs.text()]
    assert f"***@127.0.0.1:{proxy.port}" in logs.text()  # the proxy in use is logged, without credentials
    assert all(PROXY_PASSWORD not in text for text in shown)


def test_a_wrong_proxy_password_or_a_dead_proxy_fails_without_showing_the_password(
    emulator: SeedanceEmulator,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    logs: CapturedLogs,
) -> None:
    errors = []
    for url in (
        proxy.url("wr0ng-UNIQUE-pass"),
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{free_port()}",
    ):
        use_connection(monkeypatch, emulator, proxy=url, max_retries=0)
        hook = SeedanceHook()
        try:
            with pytest.raises(SeedanceError) as err:
                hook.get_status("req-1")
        finally:
            hook.close()
        errors.append(str(err.value))
    assert proxy.refused == 1
    assert "'proxy' extra" in errors[0]
    assert emulator.requests() == []
    for text in (*errors, logs.text()):
        assert PROXY_PASSWORD not in text
        assert "wr0ng-UNIQUE-pass" not in text


async def test_https_through_the_proxy_tunnel_with_a_private_ca(
    tls_emulator: SeedanceEmulator,
    certs: LocalCertificates,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    logs: CapturedLogs,
) -> None:
    # The enterprise case: the API over HTTPS, reached through an authenticating proxy, under a private CA.
    use_connection(monkeypatch, tls_emulator, proxy=proxy.url(), ca_bundle=str(certs.ca_path))
    hook = SeedanceHook()
    try:
        request_id = await asyncio.to_thread(lambda: hook.submit(MODEL, PAYLOAD).request_id)
    finally:
        hook.close()
    assert (await SeedanceHook().aget_status(request_id)).request_id == request_id
    tunnel = f"CONNECT 127.0.0.1:{tls_emulator.port}"
    assert proxy.forwarded == [tunnel, tunnel]  # one tunnel per client: sync, then the shared async one
    assert [call.endpoint for call in tls_emulator.requests()] == ["submit", "status"]
    use_connection(monkeypatch, tls_emulator, proxy=proxy.url("wr0ng-UNIQUE-pass"), max_retries=0)
    with pytest.raises(SeedanceConnectionError, match="'proxy' extra") as err:
        await SeedanceHook().aget_status(request_id)
    for text in (str(err.value), logs.text()):
        assert PROXY_PASSWORD not in text
        assert "wr0ng-UNIQUE-pass" not in text


@pytest.mark.parametrize(
    "bad",
    [
        f"ftp://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example.com",
        f"{PROXY_USER}:{PROXY_PASSWORD}@proxy.example.com:3128",
        f"http://{PROXY_USER}:{PROXY_PASSWORD}/x@proxy.example.com:3128",
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@:3128",
    ],
)
def test_a_malformed_proxy_url_is_rejected_without_showing_its_password(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    use_connection(monkeypatch, emulator, proxy=bad)
    with pytest.raises(SeedanceConfigurationError, match="extra 'proxy'") as err:
        SeedanceHook().get_status("req-1")
    assert PROXY_PASSWORD not in str(err.value)
    assert "***@" in str(err.value)


def connection_test_passes() -> bool:
    """Return whether the default connection's ``test_connection`` succeeds (with a hook of its own)."""
    hook = SeedanceHook()
    try:
        return hook.test_connection()[0]
    finally:
        hook.close()


def test_environment_proxy_variables_apply_unless_the_extra_names_a_proxy(
    emulator: SeedanceEmulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    use_connection(monkeypatch, emulator)
    assert connection_test_passes()
    assert len(proxy.forwarded) == 1
    with ForwardProxy(PROXY_USER, "another-pass") as other:
        use_connection(monkeypatch, emulator, proxy=other.url("another-pass"))
        assert connection_test_passes()
        assert len(other.forwarded) == 1
        assert len(proxy.forwarded) == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@h:1/x", "http://***@h:1/x"),
        ("http://token@h", "http://***@h"),
        ("u:p@h:1", "***@h:1"),
        ("http://u:p/q@h", "http://***@h"),
        ("http://h:3128", "http://h:3128"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_proxy_field_is_masked_in_the_connection_form() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    fields = conn_type["conn-fields"]
    assert fields["proxy"]["schema"]["format"] == "password"
    assert {"ca_bundle", "verify"} <= set(fields)
    json.dumps(fields)
