"""Hook for the RunComfy Model API (ByteDance Seedance), sync and async, on httpx."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import ssl
import weakref
from collections.abc import AsyncIterator, Mapping
from functools import cached_property
from typing import Any

import httpx
from airflow.providers.common.compat.sdk import BaseHook
from pydantic import BaseModel

from airflow_provider_seedance import __version__
from airflow_provider_seedance._state_log import log_state
from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceError,
    SeedanceInputError,
    SeedanceInvalidIdentifierError,
    SeedanceNotFoundError,
)
from airflow_provider_seedance.get_provider_info import CONN_FIELDS, DEFAULT_BASE_URL, UI_FIELD_BEHAVIOUR
from airflow_provider_seedance.hooks._connection import (
    SeedanceConnectionConfig,
    normalize_base_url,
    token_exposure_warning,
)
from airflow_provider_seedance.hooks._responses import (
    Model,
    interpret_response,
    parse_body,
    parse_submission,
    submission_error,
    transport_error,
)
from airflow_provider_seedance.hooks.retry import async_retrying, retrying
from airflow_provider_seedance.models import (
    MODEL_ID_PATTERN,
    REQUEST_ID_PATTERN,
    CancelResponse,
    ModelInfo,
    ResultResponse,
    SeedanceInputModel,
    StatusResponse,
    SubmitResponse,
)
from airflow_provider_seedance.version_compat import aget_connection, hook_field_behaviour, hook_form_widgets

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONN_ID",
    "SeedanceConnectionConfig",
    "SeedanceHook",
    "aclose_shared_clients",
    "check_model_id",
    "check_request_id",
    "normalize_base_url",
    "payload_to_body",
]

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "seedance_default"

ASYNC_MAX_CONNECTIONS = 20
"""Clients, of one connection each, in the shared async pool: thousands of triggers poll through them."""

SYNC_MAX_CONNECTIONS = 4

KEEPALIVE_EXPIRY_SECONDS = 45.0
"""
Seconds an idle pooled connection stays open (httpx's default, 5 s, equals a 5 s poll interval, so a fan-in
closed its connections just before the next poll and reopened them: a TLS handshake each time).

Longer than the poll intervals a fan-in uses (default 10 s; 5-30 s in practice): N triggers polling every P
seconds send N/P requests per second through at most ``ASYNC_MAX_CONNECTIONS`` connections, so a pooled
connection is idle for far less than one interval and each one is opened once. Shorter than the idle
timeouts of the front ends an API sits behind (HAProxy's classic ``timeout client 50s``, AWS ALB 60 s, nginx
``keepalive_timeout 75s``, Google Cloud load balancers 600 s), so the client drops an idle connection before
the server does: a request written to a connection the server is closing at that moment fails, and a
submit is never retried. A poll interval above this expiry only matters when a handful of triggers share a
pool (a connection then waits longer than 45 s between polls): one handshake per poll, at most one per
45 s, which costs nothing worth keeping a connection past a load balancer's timeout for.
"""

CONNECTION_TEST_REQUEST_ID = "airflow-connection-test"
"""A request id that never exists: 404 (or 400001) for it proves the token was accepted; it starts nothing."""

USER_AGENT = f"airflow-provider-seedance/{__version__}"


def check_request_id(request_id: object) -> str:
    """
    Return ``request_id`` if it has the shape of a RunComfy request id, else raise before any HTTP call.

    :param request_id: the candidate id.
    """
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id):
        raise SeedanceInputError(
            f"request_id: must be 1-128 characters of letters, digits, '_' or '-' (got {request_id!r})"
        )
    return request_id


def check_model_id(model_id: object) -> str:
    """
    Return ``model_id`` if it is a valid slash-separated model id, else raise before any HTTP call.

    :param model_id: the candidate id, e.g. ``bytedance/seedance-v1.5-pro/image-to-video``.
    """
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.match(model_id.strip()):
        raise SeedanceInputError(
            "model_id: must be a RunComfy model id such as 'bytedance/seedance-v1.5-pro/image-to-video' "
            f"(segments of letters, digits, '.', '_' or '-' separated by '/'), got {model_id!r}"
        )
    return model_id.strip()


def payload_to_body(payload: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """
    Turn a submit payload (a mapping or a pydantic model) into the JSON body; refuse what JSON cannot carry.

    :param payload: the model's input fields.
    """
    if isinstance(payload, SeedanceInputModel):
        # Typed inputs decide which fields go on the wire (sparse models leave unset defaults out).
        return payload.to_request_body()
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if not isinstance(payload, Mapping):
        raise SeedanceInputError(
            f"input: must be a mapping of the model's input fields, got {type(payload).__name__}"
        )
    body = dict(payload)
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as err:
        where, rule = _json_problem(body, "input") or ("input", str(err))
        raise SeedanceInputError(
            f"{where}: every value must be JSON-serialisable ({rule})",
            [{"field": where, "rule": f"JSON-serialisable: {rule}"}],
        ) from None
    return body


_JSON_KEYS = (str, int, float, bool, type(None))
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _key_path(path: str, key: object) -> str:
    """Name a mapping entry: ``input.seed`` for a plain key, ``input['a b']`` for any other."""
    return f"{path}.{key}" if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else f"{path}[{key!r}]"


def _json_problem(value: Any, path: str, within: tuple[int, ...] = ()) -> tuple[str, str] | None:
    """
    Return the path of the first value JSON cannot carry (``input.shots[2].seed``) and why, or ``None``.

    :param value: the value to look into.
    :param path: its own path, for the message.
    :param within: the ids of the containers holding it (a container inside itself has no JSON form).
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"{value!r} is not a JSON number")
    if value is None or isinstance(value, (str, int)):
        return None
    if not isinstance(value, (dict, list, tuple)):
        return path, f"a value of type {type(value).__name__} has no JSON form"
    if id(value) in within:
        return path, "it contains itself"
    within = (*within, id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _JSON_KEYS):
                return path, f"a key of type {type(key).__name__} cannot be a JSON object key"
            found = _json_problem(item, _key_path(path, key), within)
            if found is not None:
                return found
        return None
    for index, item in enumerate(value):
        found = _json_problem(item, f"{path}[{index}]", within)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------------------
# Shared async clients: one pool of clients per event loop and per (URL, token, timeout)
# ---------------------------------------------------------------------------------------------------------


def _client_kwargs(config: SeedanceConnectionConfig, max_connections: int) -> dict[str, Any]:
    """
    Return the settings of an API client, sync or async: one place, so both honour the same connection.

    :param config: the resolved connection config.
    :param max_connections: the pool size.
    """
    if config.proxy is not None:
        log.info("Seedance API calls to %s go through the proxy %s", config.base_url, config.proxy_display)
    return {
        "base_url": config.base_url,
        "headers": {
            "Authorization": f"Bearer {config.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        "timeout": httpx.Timeout(config.timeout),
        "limits": httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        "follow_redirects": False,
        "verify": _tls_verify(config),
        # Without a `proxy` extra, httpx reads HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY, and with
        # neither extra SSL_CERT_FILE / SSL_CERT_DIR, from the environment (trust_env): what curl users
        # expect.
        "proxy": config.proxy,
        "trust_env": True,
    }


def _tls_verify(config: SeedanceConnectionConfig) -> ssl.SSLContext | bool:
    """
    Return what the client verifies the API's certificate with: ``True`` (the default store), ``False``,
    or a context trusting only the connection's ``ca_bundle``.

    :param config: the resolved connection config.
    """
    if not config.verify:
        log.warning(
            "TLS certificate verification is OFF for the Seedance API at %s (connection extra verify=false): "
            "anyone on the network path can read the API token. Use 'ca_bundle' for a private CA instead.",
            config.base_url,
        )
        return False
    if config.ca_bundle is None:
        return True
    try:
        if os.path.isdir(config.ca_bundle):
            return ssl.create_default_context(capath=config.ca_bundle)
        return ssl.create_default_context(cafile=config.ca_bundle)
    except (OSError, ssl.SSLError) as err:
        raise SeedanceConfigurationError(
            f"The CA bundle {config.ca_bundle!r} of the seedance connection could not be loaded ({err}); "
            f"it must hold PEM certificates."
        ) from None


class _AsyncClientPool:
    """
    Up to ``size`` async clients of one connection each, lent out one request at a time (FIFO waiters).

    One ``httpx.AsyncClient`` with a pool of 20 connections costs about 5 ms of CPU per request under a
    fan-in: httpcore re-examines every pooled connection (a ``poll()`` and a ``getpeername()`` for each idle
    one, and a quadratic idle count) whenever a request enters or leaves its pool (httpcore 1.0.9's
    ``_assign_requests_to_connections``). One connection per client makes that bookkeeping O(1): 1.3 ms
    per request on the same machine, so a triggerer polling 1,000 requests every 5 s runs at about 40% of
    a core instead of falling behind at 100% (docs/benchmarks.md). Clients are made on demand and reused
    last-in first-out, so a light load keeps one or two warm connections and the others are never opened
    (or expire after :data:`KEEPALIVE_EXPIRY_SECONDS`). Waiting here, in an ``asyncio.Semaphore``, wakes
    the next waiter in O(1); there is deliberately no timeout on the wait: every request holding a client
    has its own connect/read timeouts, so the queue always drains, and under overload a waiting timeout
    only turned queued polls into failures and retries (5,000 concurrent polls: 866 failed and 37% more
    CPU with a 10 s wait timeout, none failed without).

    :param config: the resolved connection config.
    :param size: the most clients, hence TCP connections, at once.
    """

    def __init__(self, config: SeedanceConnectionConfig, size: int = ASYNC_MAX_CONNECTIONS) -> None:
        kwargs = _client_kwargs(config, 1)
        # One SSL context for every client: building one loads the CA store (tens of ms each).
        kwargs["verify"] = httpx.create_ssl_context(verify=kwargs["verify"], trust_env=True)
        self._kwargs = kwargs
        self._slots = asyncio.Semaphore(size)
        self._idle: list[httpx.AsyncClient] = []
        self.clients: list[httpx.AsyncClient] = []
        """Every client made so far (each holds at most one connection)."""
        self.is_closed = False

    def __repr__(self) -> str:
        # The clients' headers hold the token: show only the counts.
        return f"{type(self).__name__}(clients={len(self.clients)}, idle={len(self._idle)})"

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        """
        Wait for a free client and hold it while one request runs (its response read in full).

        A request that ends, with an answer or an ``httpx`` error, gives its client back. One interrupted
        (the task cancelled, as Airflow cancels a trigger leaving the triggerer) closes it instead:
        httpcore 1.0.x can leave the connection of a request cancelled while its response is being
        released marked active for good (encode/httpcore#1093), and a one-connection client holding it
        would fail every later call with ``PoolTimeout``, starting with the cancel ``on_kill`` sends.
        """
        async with self._slots:
            # Last in, first out: the client used most recently has the connection most likely still open.
            client = self._idle.pop() if self._idle else self._new_client()
            try:
                yield client
            except Exception:
                self._idle.append(client)
                raise
            except BaseException:
                await self._discard(client)
                raise
            self._idle.append(client)

    def _new_client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(**self._kwargs)
        self.clients.append(client)
        return client

    async def _discard(self, client: httpx.AsyncClient) -> None:
        self.clients.remove(client)
        # Closing only shuts sockets; a failure to do so must not hide the cancellation being raised.
        with contextlib.suppress(Exception):
            await client.aclose()

    async def aclose(self) -> None:
        """Close every client (a request still running on one fails)."""
        self.is_closed = True
        # A copy: a request cancelled meanwhile takes its client out of the list (see :meth:`lease`).
        for client in list(self.clients):
            await client.aclose()


_ASYNC_POOLS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], _AsyncClientPool]
] = weakref.WeakKeyDictionary()


def _shared_async_pool(config: SeedanceConnectionConfig) -> _AsyncClientPool:
    """
    Return the async client pool shared by every hook with this config in the running event loop.

    :param config: the resolved connection config.
    """
    pools = _ASYNC_POOLS.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(config.client_key)
    if pool is None or pool.is_closed:
        pool = pools[config.client_key] = _AsyncClientPool(config)
    return pool


async def aclose_shared_clients() -> None:
    """Close the shared async clients of the running event loop (tests and benchmarks call this)."""
    pools = _ASYNC_POOLS.pop(asyncio.get_running_loop(), {})
    for pool in pools.values():
        await pool.aclose()


# ---------------------------------------------------------------------------------------------------------
# The hook
# ---------------------------------------------------------------------------------------------------------


class SeedanceHook(BaseHook):
    """
    Call the RunComfy Model API: submit a generation, read its status and result, cancel it.

    GETs and cancel are retried on 408/429/5xx, transport errors and garbled answers, with exponential
    backoff and jitter, honouring ``Retry-After``. Submissions are never retried.

    :param seedance_conn_id: the ``seedance`` connection holding the API token (password) and base URL (host).
    :param timeout: seconds per HTTP call; overrides the connection's ``timeout`` extra.
    :param max_retries: retries of idempotent calls; overrides the connection's ``max_retries`` extra.
    :param deadline: epoch seconds; no retry of a status, result or catalog read waits past it (the last
        error is raised instead), so a caller bounded by a deadline is never held beyond it by backoff or
        ``Retry-After``. ``None``: no deadline. Cancels are not bounded: they run once a deadline has passed.
    """

    conn_name_attr = "seedance_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "seedance"
    hook_name = "Seedance (RunComfy)"

    def __init__(
        self,
        seedance_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.seedance_conn_id = seedance_conn_id
        self.timeout = timeout
        self.max_retries = max_retries
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seedance_conn_id={self.seedance_conn_id!r})"

    # -- UI ---------------------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Describe the connection form's standard fields (read by Airflow < 3.2; see ``version_compat``)."""
        return hook_field_behaviour(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Add the extras to the connection form (read by Airflow < 3.2; needs ``wtforms``)."""
        return hook_form_widgets(CONN_FIELDS)

    # -- configuration -----------------------------------------------------------------------------------

    def _resolve(self, conn: Any) -> SeedanceConnectionConfig:
        """
        Turn a looked-up connection into the config with this hook's overrides (sync and async share it).

        :param conn: the Airflow connection.
        """
        config = SeedanceConnectionConfig.from_connection(conn, self.seedance_conn_id)
        warning = token_exposure_warning(config, self.seedance_conn_id)
        if warning:
            self.log.warning(warning)
        # replace() carries every other field (TLS, proxy) over unchanged.
        return dataclasses.replace(
            config,
            timeout=float(self.timeout) if self.timeout is not None else config.timeout,
            max_retries=int(self.max_retries) if self.max_retries is not None else config.max_retries,
        )

    @cached_property
    def config(self) -> SeedanceConnectionConfig:
        """The resolved connection, looked up once per hook (inside an event loop use :meth:`aget_config`)."""
        return self._resolve(self.get_connection(self.seedance_conn_id))

    async def aget_config(self) -> SeedanceConnectionConfig:
        """Resolve the connection without blocking the event loop, into the one cache :attr:`config` reads."""
        cached: SeedanceConnectionConfig | None = self.__dict__.get("config")
        if cached is None:
            cached = self._resolve(await aget_connection(self, self.seedance_conn_id))
            # The slot the `config` cached_property fills: a sync lookup after this one finds it, and back.
            self.__dict__["config"] = cached
        return cached

    @cached_property
    def client(self) -> httpx.Client:
        """The sync HTTP client (connection pooling across calls of this hook)."""
        return httpx.Client(**_client_kwargs(self.config, SYNC_MAX_CONNECTIONS))

    def get_conn(self) -> httpx.Client:
        """Return the sync HTTP client, as Airflow hooks conventionally do."""
        return self.client

    def close(self) -> None:
        """Close the sync HTTP client, if one was opened."""
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    def detached(self) -> SeedanceHook:
        """
        Return a hook on the same connection with an HTTP client of its own (none opened yet).

        The connection this hook already resolved is carried over, so the copy looks nothing up: safe in a
        signal handler (``on_kill``) that cut into a call on this hook's client. Close it after use.
        """
        twin = SeedanceHook(self.seedance_conn_id, timeout=self.timeout, max_retries=self.max_retries)
        if "config" in self.__dict__:
            twin.__dict__["config"] = self.__dict__["config"]
        return twin

    # -- sync API ------------------------------------------------------------------------------------

    def _get(
        self, call: str, path: str, model: type[Model], request_id: str | None = None, **params: Any
    ) -> Model:
        return self._idempotent(call, "GET", path, model, request_id, params, deadline=self.deadline)

    def _idempotent(
        self,
        call: str,
        method: str,
        path: str,
        model: type[Model],
        request_id: str | None,
        params: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        model_id: str | None = None,
    ) -> Model:
        config = self.config
        for attempt in retrying(call, config.max_retries, config.backoff(), deadline=deadline):
            with attempt:
                failure: Exception | None = None
                try:
                    response = self.client.request(method, path, params=params or None)
                except httpx.HTTPError as exc:
                    failure = transport_error(exc, call=call, request_id=request_id)
                if failure is not None:
                    raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
                return parse_body(
                    model,
                    interpret_response(response, call=call, request_id=request_id),
                    call,
                    request_id,
                    model_id=model_id,
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _submitted(self, response: httpx.Response, model_id: str) -> SubmitResponse:
        """
        Parse a submit answer (sync and async share it) and log the ``submitted`` state.

        :param response: the answer of the submit POST.
        :param model_id: the model submitted to.
        """
        submitted = parse_submission(response, model_id=model_id)
        log_state(
            self.log,
            "submitted",
            submitted.request_id,
            "Submitted a %s generation: request_id=%s",
            model_id,
            submitted.request_id,
        )
        return submitted

    def submit(self, model_id: str, payload: Mapping[str, Any] | BaseModel) -> SubmitResponse:
        """
        Submit one generation (``POST /v1/models/{model_id}``). Never retried: a repeat could bill twice.

        :param model_id: the RunComfy model id, e.g. ``bytedance/seedance-v1.5-pro/image-to-video``.
        :param payload: the model's input fields, as a mapping or a pydantic model.
        """
        model_id = check_model_id(model_id)
        body = payload_to_body(payload)
        failure: Exception | None = None
        try:
            response = self.client.post(f"/v1/models/{model_id}", json=body)
        except httpx.HTTPError as exc:
            failure = submission_error(exc, model_id=model_id)
        if failure is not None:
            raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
        return self._submitted(response, model_id)

    def get_status(self, request_id: str) -> StatusResponse:
        """
        Read a request's status (``GET /v1/requests/{request_id}/status``), retrying transient failures.

        :param request_id: the request id returned by :meth:`submit`.
        """
        request_id = check_request_id(request_id)
        return self._get("status", f"/v1/requests/{request_id}/status", StatusResponse, request_id)

    def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """
        Read a request's result (``GET /v1/requests/{request_id}/result``), retrying transient failures.

        :param request_id: the request id returned by :meth:`submit`.
        :param include_cost: ask for the run's ``cost`` in USD.
        """
        request_id = check_request_id(request_id)
        params = {"include_cost": "true"} if include_cost else {}
        return self._get("result", f"/v1/requests/{request_id}/result", ResultResponse, request_id, **params)

    def cancel(self, request_id: str) -> CancelResponse:
        """
        Ask the API to cancel a request; only queued ones can be (the outcome says which happened).

        :param request_id: the request id returned by :meth:`submit`.
        """
        request_id = check_request_id(request_id)
        outcome = self._idempotent(
            "cancel", "POST", f"/v1/requests/{request_id}/cancel", CancelResponse, request_id
        )
        self._log_cancel(request_id, outcome)
        return outcome

    def get_model(self, model_id: str) -> ModelInfo:
        """
        Read a model's catalog entry and price (``GET /v1/models/{model_id}``; undocumented, RunComfy's CLI).

        :param model_id: the RunComfy model id.
        """
        model_id = check_model_id(model_id)
        return self._idempotent(
            "model",
            "GET",
            f"/v1/models/{model_id}",
            ModelInfo,
            None,
            deadline=self.deadline,
            model_id=model_id,
        )

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the URL and token with one cheap authenticated GET that starts nothing.

        The probe asks for the status of a request id that never exists: "not found" (404/404001) or
        "unknown id" (400001) means the API accepted the token and looked the id up.
        """
        failure: SeedanceError | None = None
        try:
            response = self.client.get(f"/v1/requests/{CONNECTION_TEST_REQUEST_ID}/status")
            interpret_response(response, call="connection test")
        except (SeedanceNotFoundError, SeedanceInvalidIdentifierError) as err:
            if err.http_status not in (401, 403):
                return True, f"Connection to {self.config.base_url} works: the API token was accepted."
            failure = err
        except SeedanceError as err:
            failure = err
        except httpx.HTTPError as exc:
            failure = transport_error(exc, call="connection test")
        if failure is not None:
            return False, str(failure)
        return True, f"Connection to {self.config.base_url} works."

    # -- async API -----------------------------------------------------------------------------------

    async def _aidempotent(
        self,
        call: str,
        method: str,
        path: str,
        model: type[Model],
        request_id: str | None,
        params: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        model_id: str | None = None,
    ) -> Model:
        config = await self.aget_config()
        pool = _shared_async_pool(config)
        async for attempt in async_retrying(call, config.max_retries, config.backoff(), deadline=deadline):
            with attempt:
                failure: Exception | None = None
                try:
                    async with pool.lease() as client:
                        response = await client.request(method, path, params=params or None)
                except httpx.HTTPError as exc:
                    failure = transport_error(exc, call=call, request_id=request_id)
                if failure is not None:
                    raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
                return parse_body(
                    model,
                    interpret_response(response, call=call, request_id=request_id),
                    call,
                    request_id,
                    model_id=model_id,
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def asubmit(self, model_id: str, payload: Mapping[str, Any] | BaseModel) -> SubmitResponse:
        """
        Submit one generation without blocking the event loop. Never retried.

        :param model_id: the RunComfy model id.
        :param payload: the model's input fields, as a mapping or a pydantic model.
        """
        model_id = check_model_id(model_id)
        body = payload_to_body(payload)
        pool = _shared_async_pool(await self.aget_config())
        failure: Exception | None = None
        try:
            async with pool.lease() as client:
                response = await client.post(f"/v1/models/{model_id}", json=body)
        except httpx.HTTPError as exc:
            failure = submission_error(exc, model_id=model_id)
        if failure is not None:
            raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
        return self._submitted(response, model_id)

    async def aget_status(self, request_id: str) -> StatusResponse:
        """
        Read a request's status without blocking the event loop.

        :param request_id: the request id.
        """
        request_id = check_request_id(request_id)
        return await self._aidempotent(
            "status",
            "GET",
            f"/v1/requests/{request_id}/status",
            StatusResponse,
            request_id,
            deadline=self.deadline,
        )

    async def aget_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """
        Read a request's result without blocking the event loop.

        :param request_id: the request id.
        :param include_cost: ask for the run's ``cost`` in USD.
        """
        request_id = check_request_id(request_id)
        params = {"include_cost": "true"} if include_cost else None
        return await self._aidempotent(
            "result",
            "GET",
            f"/v1/requests/{request_id}/result",
            ResultResponse,
            request_id,
            params,
            deadline=self.deadline,
        )

    async def acancel(self, request_id: str) -> CancelResponse:
        """
        Ask the API to cancel a request without blocking the event loop.

        :param request_id: the request id.
        """
        request_id = check_request_id(request_id)
        outcome = await self._aidempotent(
            "cancel", "POST", f"/v1/requests/{request_id}/cancel", CancelResponse, request_id
        )
        self._log_cancel(request_id, outcome)
        return outcome

    async def aget_model(self, model_id: str) -> ModelInfo:
        """
        Read a model's catalog entry and price without blocking the event loop.

        :param model_id: the RunComfy model id.
        """
        model_id = check_model_id(model_id)
        return await self._aidempotent(
            "model",
            "GET",
            f"/v1/models/{model_id}",
            ModelInfo,
            None,
            deadline=self.deadline,
            model_id=model_id,
        )

    def _log_cancel(self, request_id: str, outcome: CancelResponse) -> None:
        if outcome.cancelled:
            self.log.info("Cancelled Seedance request %s", request_id)
        else:
            self.log.info(
                "Seedance request %s was not cancellable (outcome=%s, status=%s): only queued requests can "
                "be cancelled; a running one finishes and is billed.",
                request_id,
                outcome.outcome,
                outcome.status,
            )
