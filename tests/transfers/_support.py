"""Helpers of the transfer tests: a scriptable file server and S3 assertions (fixtures are in conftest.py).

The emulator (``emulator`` fixture) serves the real Seedance outputs; the :class:`FileServer` here serves
bodies with precisely scripted misbehaviour (drop after N bytes on the k-th request, ignore ``Range``, no
``Content-Length``, error statuses) for the unit tests of the streaming core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

BUCKET = "seedance-videos"

# The three ways a file larger than one part lands in S3: one pass (default), staged in S3, spooled locally.
MODES = pytest.mark.parametrize(
    "mode",
    [{}, {"sha256_metadata": True}, {"sha256_metadata": True, "staging": "local"}],
    ids=["one-pass", "staging-s3", "staging-local"],
)


@dataclass
class Route:
    """
    How the file server answers one path.

    :param body: the file.
    :param ranges: honour ``Range`` requests with 206 answers (else always 200, whole body).
    :param drops: per request number (0-based), close the connection after this many body bytes.
    :param statuses: per request number, answer this error status instead of the file.
    :param content_length: send ``Content-Length`` (else a close-delimited body, or a chunked one).
    :param chunked: without ``Content-Length``, send the body chunked (so a drop is detectable).
    :param content_type: the ``Content-Type`` header, or ``None`` for none.
    :param headers: extra response headers.
    :param bad_content_range: answer ranges with a ``Content-Range`` one byte off.
    :param range_cap: answer a range with at most this many bytes (a complete, shorter ``206``).
    :param unknown_total: name the total of a ``Content-Range`` as ``*``.
    :param redirect: answer ``302`` with this ``Location`` instead of the file.
    :param claims_ranges: with ``ranges=False``, still send ``Accept-Ranges: bytes`` (then answer 200).
    """

    body: bytes
    ranges: bool = True
    drops: dict[int, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    content_length: bool = True
    chunked: bool = False
    content_type: str | None = "video/mp4"
    headers: dict[str, str] = field(default_factory=dict)
    bad_content_range: bool = False
    range_cap: int | None = None
    unknown_total: bool = False
    redirect: str | None = None
    claims_ranges: bool = False


@dataclass
class Seen:
    """One request the file server received."""

    path: str
    headers: dict[str, str]
    status: int


class FileServer:
    """An HTTP/1.1 server on 127.0.0.1 whose files misbehave exactly as a test scripts them."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                """Stay quiet."""

            def do_GET(self) -> None:
                server.handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A client hanging up mid-body is part of the tests: no traceback."""

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def add(self, path: str, body: bytes, **options: Any) -> str:
        """Serve ``body`` at ``path`` and return its URL."""
        self.routes[path] = Route(body=body, **options)
        return self.base_url + path

    def requests_for(self, path: str) -> list[Seen]:
        """Return the requests received for ``path``."""
        return [seen for seen in self.seen if seen.path == path]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one request according to its route."""
        path = handler.path.split("?", 1)[0]
        route = self.routes.get(path)
        with self._lock:
            number = len(self.requests_for(path))
            headers = {k.lower(): v for k, v in handler.headers.items()}
            status = 404 if route is None else route.statuses.get(number, 0)
            seen = Seen(path=path, headers=headers, status=status)
            self.seen.append(seen)
        if route is not None and route.redirect is not None and not status:
            seen.status = 302
            handler.send_response(302)
            handler.send_header("Location", route.redirect)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if route is None or status:
            handler.send_response(status or 404)
            handler.send_header("Content-Length", "0")
            if status == 429:
                handler.send_header("Retry-After", "0")
            handler.end_headers()
            return
        start, end = 0, len(route.body)
        wanted = headers.get("range", "")
        if wanted and route.ranges:
            first_text, _, last_text = wanted.split("=", 1)[1].partition("-")
            start = int(first_text)
            if last_text:
                end = min(end, int(last_text) + 1)
            if route.range_cap is not None:
                end = min(end, start + route.range_cap)
            seen.status = 206
            handler.send_response(206)
            first = start + 1 if route.bad_content_range else start
            total = "*" if route.unknown_total else str(len(route.body))
            handler.send_header("Content-Range", f"bytes {first}-{end - 1}/{total}")
        else:
            seen.status = 200
            handler.send_response(200)
            handler.send_header("Accept-Ranges", "bytes" if route.ranges or route.claims_ranges else "none")
        body = memoryview(route.body)[start:end]  # no copy: memory tests trace this process
        chunked = route.chunked and not route.content_length
        if route.content_length:
            handler.send_header("Content-Length", str(len(body)))
        elif chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Connection", "close")
        if route.content_type:
            handler.send_header("Content-Type", route.content_type)
        for name, value in route.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        drop = route.drops.get(number)
        try:
            sent = body[:drop] if drop is not None else body
            if chunked:
                for start in range(0, len(sent), 65536):
                    piece = sent[start : start + 65536]
                    handler.wfile.write(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
                if drop is None:
                    handler.wfile.write(b"0\r\n\r\n")
            else:
                handler.wfile.write(sent)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if drop is not None or not route.content_length:
            handler.close_connection = True

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()


def object_keys(client: Any, bucket: str = BUCKET) -> list[str]:
    """Return every key in ``bucket`` (staging objects included)."""
    return sorted(obj["Key"] for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def unfinished_uploads(client: Any, bucket: str = BUCKET) -> list[str]:
    """Return the keys of the multipart uploads still open in ``bucket``."""
    return [upload["Key"] for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def assert_nothing_left(client: Any, expected_keys: list[str] | None = None, bucket: str = BUCKET) -> None:
    """Assert the bucket holds exactly ``expected_keys`` and no multipart upload is open."""
    keys = object_keys(client, bucket)
    assert keys == sorted(expected_keys or []), f"the bucket holds {keys}"
    uploads = unfinished_uploads(client, bucket)
    assert uploads == [], f"multipart uploads left open: {uploads}"


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A scriptable file server on a free 127.0.0.1 port (the transfer and download tests share it)."""
    server = FileServer()
    try:
        yield server
    finally:
        server.close()


GENERATION_INPUT = {
    "prompt": "A paper boat drifts down a rainy street",
    "first_frame_image_url": "https://example.com/a.png",
}


class FakeTI:
    """The task instance of a direct ``execute()`` call: records what the operator pushes to XCom."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def finished_request(emulator: SeedanceEmulator, **plan: Any) -> str:
    """
    Submit a generation to the emulator and wait until it has ended; return its request id.

    :param emulator: the emulator ``seedance_default`` points at.
    :param plan: :class:`JobPlan` fields (queue and run take no time unless given).
    """
    emulator.set_plan(JobPlan(**{"queue_seconds": 0, "run_seconds": 0, **plan}))
    hook = SeedanceHook()
    try:
        request_id = hook.submit(SEEDANCE_1_5_PRO_I2V_MODEL_ID, GENERATION_INPUT).request_id
        deadline = time.monotonic() + 10
        while hook.get_status(request_id).state.is_active():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return request_id
    finally:
        hook.close()
