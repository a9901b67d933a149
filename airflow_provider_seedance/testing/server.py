"""Run the emulator in-process: uvicorn in a background thread, started and stopped around a test.

Example::

    with SeedanceEmulator(token="test-token") as emulator:
        emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=429, retry_after=1))
        os.environ["AIRFLOW_CONN_SEEDANCE_DEFAULT"] = emulator.connection_json()
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import uvicorn

from airflow_provider_seedance.testing.app import create_app
from airflow_provider_seedance.testing.state import (
    DEFAULT_TOKEN,
    EmulatorState,
    Fault,
    JobPlan,
    RecordedRequest,
)

CONNECTION_ENV_VAR = "AIRFLOW_CONN_SEEDANCE_DEFAULT"
"""The environment variable that defines the ``seedance_default`` connection."""

DEFAULT_BACKLOG = 4096
"""Listen backlog: benchmarks open thousands of connections at once."""

DEFAULT_KEEP_ALIVE_SECONDS = 75
"""
Idle keep-alive timeout: polling clients reuse their connections between polls several seconds apart.
nginx's default, and longer than the provider's client-side expiry (``KEEPALIVE_EXPIRY_SECONDS``, 45 s), so
the client closes idle connections first, as it does behind a real load balancer.
"""

GRACEFUL_SHUTDOWN_SECONDS = 2
"""How long stop() lets in-flight answers finish before uvicorn cancels them."""

START_TIMEOUT_SECONDS = 15.0
"""start() gives up when the server is not serving after this long."""

STOP_TIMEOUT_SECONDS = 10.0
"""stop() forces the server down when it has not stopped after this long."""

_POLL_SECONDS = 0.005


class SeedanceEmulator:
    """
    A RunComfy Model API emulator on a local port, served by uvicorn from a background thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. With ``port=0`` a free port is
    picked; :attr:`base_url` is known as soon as :meth:`start` returns, which is when the server accepts
    connections.

    :param token: the accepted bearer token.
    :param host: the address to listen on (keep it on loopback).
    :param port: the port; 0 picks a free one.
    :param plan: the default :class:`JobPlan` (fast timings when ``None``).
    :param state: an existing state to serve (``token`` is added to its tokens and ``plan``, when given,
        becomes its default plan).
    :param log_level: uvicorn's log level.
    :param backlog: the listen backlog.
    :param timeout_keep_alive: seconds an idle keep-alive connection stays open.
    :param ssl_certfile: serve HTTPS with this certificate (PEM); see
        :func:`~airflow_provider_seedance.testing.tls.make_local_certificates`.
    :param ssl_keyfile: the certificate's private key (PEM), with ``ssl_certfile``.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        plan: JobPlan | None = None,
        state: EmulatorState | None = None,
        log_level: str = "warning",
        backlog: int = DEFAULT_BACKLOG,
        timeout_keep_alive: int = DEFAULT_KEEP_ALIVE_SECONDS,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
    ) -> None:
        if (ssl_certfile is None) != (ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both or neither")
        if state is None:
            state = EmulatorState(token, plan=plan)
        else:
            state.add_token(token)
            if plan is not None:
                state.set_plan(plan)
        self.token = token
        self.host = host
        self.state = state
        self._requested_port = port
        self._log_level = log_level
        self._backlog = backlog
        self._timeout_keep_alive = timeout_keep_alive
        self._ssl_certfile = None if ssl_certfile is None else os.fspath(ssl_certfile)
        self._ssl_keyfile = None if ssl_keyfile is None else os.fspath(ssl_keyfile)
        self._closing = threading.Event()
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> SeedanceEmulator:
        """Bind the port, start serving in a background thread and return once connections are served."""
        if self._thread is not None:
            raise RuntimeError("this emulator is already running")
        self._closing.clear()
        self._error = None
        sock = _listening_socket(self.host, self._requested_port, self._backlog)
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(self.state, closing=self._closing),
            log_level=self._log_level,
            # The host application owns logging: uvicorn must not reconfigure it.
            log_config=None,
            access_log=False,
            lifespan="off",
            backlog=self._backlog,
            timeout_keep_alive=self._timeout_keep_alive,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            server_header=False,
            ssl_certfile=self._ssl_certfile,
            ssl_keyfile=self._ssl_keyfile,
        )
        server = uvicorn.Server(config)
        self._server = server
        thread = threading.Thread(
            target=self._serve, args=(server, sock), name=f"seedance-emulator-{self._port}", daemon=True
        )
        self._thread = thread
        thread.start()
        if (
            not _wait(lambda: server.started or not thread.is_alive(), START_TIMEOUT_SECONDS)
            or not server.started
        ):
            self.stop()
            reason = f": {self._error!r}" if self._error else ""
            raise RuntimeError(f"the Seedance emulator did not start on {self.host}:{self._port}{reason}")
        return self

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as err:  # a thread has no caller to raise to: keep it for start()
            self._error = err

    def stop(self) -> None:
        """Stop serving, close the port and join the server thread (a no-op when not running)."""
        thread, server, sock = self._thread, self._server, self._socket
        self._thread = self._server = self._socket = None
        self._closing.set()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(STOP_TIMEOUT_SECONDS)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(STOP_TIMEOUT_SECONDS)
        if sock is not None:
            sock.close()

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SeedanceEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"<SeedanceEmulator {where}{' running' if self.running else ''}>"

    # -- addresses ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port served (known once :meth:`start` has run)."""
        if self._port is None:
            raise RuntimeError("the emulator has no port yet: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:54321`` (``https://`` when serving TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl_certfile else 'http'}://{host}:{self.port}"

    def url(self, path: str) -> str:
        """
        Return the absolute URL of ``path`` on the emulator.

        :param path: a path such as ``/v1/requests/abc/status``.
        """
        return f"{self.base_url}/{path.lstrip('/')}"

    def connection_json(self, **extra: Any) -> str:
        """
        Return the JSON form of a ``seedance`` connection to this emulator, for ``AIRFLOW_CONN_...``.

        :param extra: connection extras such as ``timeout`` or ``max_retries``.
        """
        fields: dict[str, Any] = {"conn_type": "seedance", "host": self.base_url, "password": self.token}
        if extra:
            fields["extra"] = extra
        return json.dumps(fields)

    def connection_uri(self, **extra: Any) -> str:
        """
        Return the URI form of a ``seedance`` connection to this emulator (the base URL quoted in the host).

        :param extra: connection extras, sent as query parameters.
        """
        uri = f"seedance://:{quote(self.token, safe='')}@{quote(self.base_url, safe='')}"
        return f"{uri}?{urlencode(extra)}" if extra else uri

    def environ(self, conn_id: str = "seedance_default", **extra: Any) -> dict[str, str]:
        """
        Return the environment variable defining a connection ``conn_id`` to this emulator.

        :param conn_id: the connection id.
        :param extra: connection extras.
        """
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json(**extra)}

    # -- shortcuts to the state --------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> int:
        """
        Inject a fault (see :meth:`EmulatorState.add_fault`); return its id.

        :param fault: the fault.
        """
        return self.state.add_fault(fault)

    def clear_faults(self) -> int:
        """Remove every fault; return how many there were."""
        return self.state.clear_faults()

    def set_plan(self, plan: JobPlan) -> None:
        """
        Replace the default plan of new jobs.

        :param plan: the plan.
        """
        self.state.set_plan(plan)

    def plan_next(self, plan: JobPlan, count: int = 1) -> None:
        """
        Use ``plan`` for the next ``count`` submits.

        :param plan: the plan.
        :param count: how many submits.
        """
        self.state.plan_next(plan, count)

    def set_model_plan(self, model_id: str, plan: JobPlan | None) -> None:
        """
        Use ``plan`` for every submit to ``model_id`` (``None`` removes it).

        :param model_id: the model id.
        :param plan: the plan.
        """
        self.state.set_model_plan(model_id, plan)

    def reset(self) -> None:
        """Forget every job, fault, plan and logged request."""
        self.state.reset()

    def submits(self) -> list[RecordedRequest]:
        """Return the logged submit requests."""
        return self.state.submits()

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """
        Return the logged requests.

        :param endpoint: only this endpoint's requests.
        """
        return self.state.requests(endpoint)


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted emulator take its port back while old connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


__all__ = ["CONNECTION_ENV_VAR", "SeedanceEmulator"]
