"""The emulator's HTTP layer: the RunComfy Model API routes, public output files and control endpoints.

:func:`create_app` wraps an :class:`~airflow_provider_seedance.testing.state.EmulatorState` in a FastAPI
application. All behaviour lives in the state; this module only authenticates, applies faults, shapes JSON
and streams files. Handlers do no blocking work and build no large bodies, so one process can serve
thousands of polling clients and multi-gigabyte downloads.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_seedance.models import (
    MODEL_ID_PATTERN,
    REQUEST_ID_PATTERN,
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    SeedanceImageToVideoInput,
    input_error_from_validation,
)
from airflow_provider_seedance.testing._net import is_loopback
from airflow_provider_seedance.testing.media import (
    MAX_GENERATED_SIZE,
    MIN_GENERATED_SIZE,
    ByteRange,
    RangeNotSatisfiableError,
    VideoBody,
    generated_video,
    parse_range,
    video_for,
)
from airflow_provider_seedance.testing.state import (
    DEFAULT_ERROR_200_CODE,
    EmulatorState,
    Fault,
    ForeignRequestError,
    JobPlan,
    JobSnapshot,
    RecordedRequest,
    UnknownRequestError,
    iso_timestamp,
)

CONTROL_PREFIX = "/_emulator"
"""Path prefix of the control endpoints (no auth, loopback clients only, not recorded in the request log)."""

ERROR_INVALID_IDENTIFIER = 400001
ERROR_INSUFFICIENT_RESOURCES = 400002
ERROR_USER_ACCOUNT = 400004
ERROR_PERMISSION_DENIED = 403001
ERROR_NOT_FOUND = 404001

DEFAULT_MALFORMED_BODY = '{"request_id": "3f2a", "status": "in_progr'
"""What a ``malformed_json`` fault sends by default: JSON cut off mid-value, as a broken proxy would."""

SLOW_POLL_SECONDS = 0.05
"""A ``slow`` answer re-checks this often whether the emulator is stopping, so stop() never waits it out."""

_RECORD_KEY = "seedance_emulator.record"
_REQUEST_PATH = re.compile(r"^/v1/requests/([^/]+)/(status|result|cancel)$")
_FILE_PATH = re.compile(r"^/files/([^/]+)/[^/]+$")
_MODELS_PREFIX = "/v1/models/"
_TRUTHY = frozenset({"1", "true", "yes", "on"})


# ---------------------------------------------------------------------------------------------------------
# Cutting connections on purpose
# ---------------------------------------------------------------------------------------------------------


class ConnectionCutError(Exception):
    """
    Raise inside a response to make the server close the connection before the response is complete.

    Uvicorn answers an exception raised after the response started by closing the transport; the client
    sees a body shorter than its ``Content-Length`` (httpx raises ``RemoteProtocolError``).
    """


class _HidePlannedCuts(logging.Filter):
    """Keep uvicorn from logging a planned connection cut as an application crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not _is_planned_cut(error)


def _is_planned_cut(error: BaseException | None) -> bool:
    if isinstance(error, ConnectionCutError):
        return True
    # Exception groups (anyio task groups wrap errors in them) are recognised by shape: Python 3.10 lacks the
    # type.
    inner = getattr(error, "exceptions", None)
    if isinstance(error, BaseException) and isinstance(inner, tuple) and inner:
        return all(_is_planned_cut(item) for item in inner)
    return False


def install_log_filter() -> None:
    """Attach the filter hiding planned connection cuts to uvicorn's error logger (once)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _HidePlannedCuts) for existing in logger.filters):
        logger.addFilter(_HidePlannedCuts())


# ---------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------


class StreamedResponse(Response):
    """
    A response streamed from an iterator of chunks, which can cut the connection after ``cut_after`` bytes.

    Unlike Starlette's ``StreamingResponse`` it keeps the ``Content-Length`` it is given (a truncated
    download must announce the full size), stops early when the client goes away, and aborts when the
    emulator is stopping so a slow reader cannot hold up shutdown.

    :param status_code: the HTTP status.
    :param headers: the response headers; without ``content-length`` the body is sent chunked.
    :param chunks: the body, chunk by chunk.
    :param cut_after: close the connection after this many body bytes (``None``: send everything).
    :param closing: set when the emulator is stopping.
    :param media_type: the ``Content-Type``.
    :param rate_limit: bytes per second to send the body at (``None``: as fast as the client reads).
    """

    def __init__(
        self,
        *,
        status_code: int,
        headers: Mapping[str, str],
        chunks: Iterable[bytes],
        cut_after: int | None,
        closing: threading.Event,
        media_type: str,
        rate_limit: int | None = None,
    ) -> None:
        super().__init__(status_code=status_code, headers=dict(headers), media_type=media_type)
        if not any(name.lower() == "content-length" for name in headers):
            # Starlette announces an empty body; without the header the server streams it chunked.
            self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._chunks = chunks
        self._cut_after = cut_after
        self._closing = closing
        self._rate_limit = rate_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Send the headers, then the body chunk by chunk (or up to the planned cut).

        :param scope: the ASGI scope.
        :param receive: the ASGI receive channel.
        :param send: the ASGI send channel.
        """
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        sent = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for chunk in self._chunks:
                if gone.done():
                    # The client left: uvicorn already knows, so returning quietly ends the exchange.
                    return
                if self._closing.is_set():
                    raise ConnectionCutError("the emulator is stopping")
                if self._cut_after is not None and sent + len(chunk) >= self._cut_after:
                    piece = chunk[: self._cut_after - sent]
                    if piece:
                        await send({"type": "http.response.body", "body": piece, "more_body": True})
                    raise ConnectionCutError(
                        f"connection cut after {self._cut_after} body bytes (planned fault)"
                    )
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                # Yield to the loop: a send to a departed client returns at once, so without this a large
                # body would be generated to nowhere while every other client (and the watcher) waits.
                # With a rate limit, wait until this connection is back on its schedule.
                ahead = sent / self._rate_limit - (loop.time() - started) if self._rate_limit else 0.0
                await asyncio.sleep(max(0.0, ahead))
            if self._cut_after is not None:
                raise ConnectionCutError("connection cut before the end of the response (planned fault)")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


class ApiError(Exception):
    """
    Raise to answer with a RunComfy error body ``{"error_code", "error_message", "detail"}``.

    :param status_code: the HTTP status (200 for an ``error_200`` fault).
    :param error_code: RunComfy's numeric code; left out of the body when ``None``.
    :param message: the ``error_message``.
    :param detail: the ``detail``.
    :param headers: extra response headers.
    :param body: an exact JSON body to send instead of the standard one.
    """

    def __init__(
        self,
        status_code: int,
        error_code: int | None,
        message: str,
        *,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})
        self.body = body

    def payload(self) -> Any:
        """Return the JSON body of the answer."""
        if self.body is not None:
            return self.body
        payload: dict[str, Any] = {}
        if self.error_code is not None:
            payload["error_code"] = self.error_code
        payload["error_message"] = self.message
        payload["detail"] = self.detail
        return payload


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _retry_after_header(seconds: float) -> str:
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0")


_HTTP_STATUSES = frozenset(status.value for status in http.HTTPStatus)


def _fault_error(fault: Fault) -> ApiError:
    if fault.kind == "error_200":
        code = fault.error_code if fault.error_code is not None else DEFAULT_ERROR_200_CODE
        message = fault.error_message or "The request failed (HTTP 200 with an error body, injected fault)"
        return ApiError(200, code, message, body=fault.body)
    phrase = http.HTTPStatus(fault.status_code).phrase if fault.status_code in _HTTP_STATUSES else "Error"
    message = fault.error_message or f"{phrase} (injected fault)"
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = _retry_after_header(fault.retry_after)
    return ApiError(fault.status_code, fault.error_code, message, headers=headers, body=fault.body)


def _added_error(fault: Fault) -> dict[str, Any]:
    """Return the keys a ``payload_with_error`` fault adds to an answer it keeps."""
    if isinstance(fault.body, dict):
        return dict(fault.body)
    code = fault.error_code if fault.error_code is not None else DEFAULT_ERROR_200_CODE
    message = fault.error_message or "The request failed (an error beside a normal answer, injected fault)"
    return {"error_code": code, "error_message": message}


def _cut_point(fault: Fault | None, length: int) -> int | None:
    if fault is None:
        return None
    if fault.kind == "drop":
        return 0
    if fault.kind == "truncated":
        wanted = fault.truncate_at_bytes
        if wanted is None:
            wanted = int(length * fault.truncate_fraction)
        # A cut at or past the end would deliver the whole body: it must land strictly inside it.
        return max(0, min(wanted, length - 1))
    return None


# ---------------------------------------------------------------------------------------------------------
# One call: who is calling, about what, and which fault hits it
# ---------------------------------------------------------------------------------------------------------


def _base_url(scope: Scope) -> str:
    # Built straight from the scope: Starlette's Request.base_url parses a whole URL on every poll.
    scheme = scope.get("scheme", "http")
    root = scope.get("root_path", "").rstrip("/")
    for name, value in scope["headers"]:
        if name == b"host":
            return f"{scheme}://{value.decode('latin-1')}{root}"
    host, port = scope["server"]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{root}"


@dataclass
class _Call:
    """One authenticated (or public) call being answered, and the fault that hit it, if any."""

    request: Request
    endpoint: str
    token: str
    fault: Fault | None
    closing: threading.Event

    @property
    def base_url(self) -> str:
        """The root URL the client used, for the absolute URLs in answers."""
        return _base_url(self.request.scope)

    def answer(
        self, payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Render ``payload`` as JSON, damaged as the fault says (unknown status, error, garbled, cut)."""
        fault = self.fault
        if (
            fault is not None
            and fault.kind == "unknown_status"
            and isinstance(payload, dict)
            and "status" in payload
        ):
            payload = {**payload, "status": fault.status_value}
        if (
            fault is not None
            and fault.kind == "payload_with_error"
            and isinstance(payload, dict)
            and 200 <= status_code < 300
        ):
            payload = {**payload, **_added_error(fault)}
            if "status_code" in fault.model_fields_set:
                status_code = fault.status_code
        if fault is not None and fault.kind == "malformed_json":
            text = fault.body if isinstance(fault.body, str) else DEFAULT_MALFORMED_BODY
            return Response(text.encode("utf-8"), status_code=200, media_type="application/json")
        body = _json_bytes(payload)
        cut = _cut_point(fault, len(body))
        if cut is None:
            return Response(
                body, status_code=status_code, headers=dict(headers or {}), media_type="application/json"
            )
        return StreamedResponse(
            status_code=status_code,
            headers={**(headers or {}), "content-length": str(len(body))},
            chunks=[body],
            cut_after=cut,
            closing=self.closing,
            media_type="application/json",
        )

    def error(self, error: ApiError) -> Response:
        """Answer with an API error body (still subject to the call's response-damaging fault)."""
        return self.answer(error.payload(), error.status_code, error.headers)


# ---------------------------------------------------------------------------------------------------------
# The request log middleware
# ---------------------------------------------------------------------------------------------------------


def _classify(scope: Scope) -> RecordedRequest:
    method: str = scope["method"]
    path: str = scope["path"]
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    entry = RecordedRequest(
        method=method,
        path=path,
        endpoint="other",
        headers=headers,
        query=scope["query_string"].decode("latin-1"),
        client_port=scope["client"][1] if scope.get("client") else None,
    )
    if path.startswith(_MODELS_PREFIX):
        entry.model_id = path[len(_MODELS_PREFIX) :]
        entry.endpoint = "submit" if method == "POST" else "model"
    elif match := _REQUEST_PATH.match(path):
        entry.request_id = match.group(1)
        entry.endpoint = match.group(2)  # type: ignore[assignment]
    elif match := _FILE_PATH.match(path):
        entry.endpoint = "download"
        entry.request_id = None if match.group(1) == "generated" else match.group(1)
    return entry


class RequestLogMiddleware:
    """
    Record every non-control request in the state's log when it arrives, and its status when it is answered.

    Recording on arrival keeps counts exact while a ``slow`` answer is still pending; the status is noted
    before the answer leaves, so a client that got its answer always finds it in the log.

    :param app: the wrapped ASGI application.
    :param state: the emulator state.
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Record the request, then run the application.

        :param scope: the ASGI scope.
        :param receive: the ASGI receive channel.
        :param send: the ASGI send channel.
        """
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        record = self.state.record(_classify(scope))
        scope[_RECORD_KEY] = record

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            if record.status_code is None:
                record.status_code = 500
            raise


# ---------------------------------------------------------------------------------------------------------
# Control endpoint bodies
# ---------------------------------------------------------------------------------------------------------


class ModelEntry(BaseModel):
    """
    Body of ``POST /_emulator/models``: a model to add to the catalog.

    :param model_id: the model id.
    :param base_price_usd: price per ``price_unit`` (``None``: no price in the catalog answer).
    :param price_unit: ``second`` or ``output`` (any other string is served as is).
    :param display_name: the human name.
    """

    model_config = ConfigDict(extra="forbid")

    model_id: str
    base_price_usd: float | None = Field(0.05, ge=0)
    price_unit: str = "second"
    display_name: str | None = None


class Settings(BaseModel):
    """
    Body of ``PATCH /_emulator/settings``: the switches to change (unset ones stay).

    :param pricing_enabled: ``False`` makes ``GET /v1/models/{id}`` answer 404 for every model.
    :param ranges_enabled: ``False`` makes downloads ignore ``Range`` and always answer 200.
    :param time_scale: multiply the planned durations of new jobs by this.
    :param download_rate_limit: bytes per second each download connection is served at; 0 removes the limit.
    """

    model_config = ConfigDict(extra="forbid")

    pricing_enabled: bool | None = None
    ranges_enabled: bool | None = None
    download_rate_limit: int | None = Field(None, ge=0)
    time_scale: float | None = Field(None, gt=0, allow_inf_nan=False)


class TokenEntry(BaseModel):
    """
    Body of ``POST /_emulator/tokens``: another accepted token (another account).

    :param token: the token.
    """

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1)


def _settings(state: EmulatorState) -> dict[str, Any]:
    return {
        "pricing_enabled": state.pricing_enabled,
        "ranges_enabled": state.ranges_enabled,
        "time_scale": state.time_scale,
        "download_rate_limit": state.download_rate_limit,
    }


# ---------------------------------------------------------------------------------------------------------
# API payloads
# ---------------------------------------------------------------------------------------------------------


def _request_urls(base_url: str, request_id: str) -> dict[str, str]:
    prefix = f"{base_url}/v1/requests/{request_id}"
    return {"status_url": f"{prefix}/status", "result_url": f"{prefix}/result"}


def _output(base_url: str, job: JobSnapshot) -> dict[str, Any]:
    urls = [f"{base_url}/files/{job.request_id}/{index}.mp4" for index in range(job.plan.num_videos)]
    if not urls:
        return {}
    style = job.plan.output_style
    if style == "auto":
        style = "video" if len(urls) == 1 else "both"
    output: dict[str, Any] = {}
    if style in ("video", "both"):
        output["video"] = urls[0]
    if style in ("videos", "both"):
        output["videos"] = urls
    return output


def _status_payload(base_url: str, job: JobSnapshot) -> dict[str, Any]:
    payload: dict[str, Any] = {"request_id": job.request_id, "status": job.status}
    if job.phase == "in_queue":
        payload["queue_position"] = job.queue_position
    payload.update(_request_urls(base_url, job.request_id))
    return payload


def _result_payload(base_url: str, job: JobSnapshot, include_cost: bool) -> dict[str, Any]:
    status = job.plan.succeeded_status_on_result_endpoint if job.phase == "succeeded" else job.phase
    payload: dict[str, Any] = {"request_id": job.request_id, "status": status}
    if job.phase == "succeeded":
        payload["output"] = _output(base_url, job)
    payload["created_at"] = iso_timestamp(job.created_at)
    payload["finished_at"] = iso_timestamp(job.finished_at)
    if job.phase == "failed":
        payload["error"] = job.plan.error
    if include_cost:
        payload["cost"] = job.cost_usd
    return payload


def _invalid_input(model_id: str, err: ValidationError) -> ApiError:
    problem = input_error_from_validation(SeedanceImageToVideoInput, err)
    lines = [
        f"{item['field']}: {item['rule']}"
        + (f" (got {item['value']})" if item.get("value") is not None else "")
        for item in problem.errors
    ]
    return ApiError(422, None, f"Invalid input for {model_id}: " + "; ".join(lines), detail=problem.errors)


# ---------------------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------------------


class _Gate:
    """
    What every API and file route does first: authenticate, apply the call's fault, look up the job.

    :param state: the emulator state.
    :param closing: set when the server stops, so slow answers end at once.
    """

    def __init__(self, state: EmulatorState, closing: threading.Event) -> None:
        self.state = state
        self.closing = closing

    def authenticate(self, request: Request) -> str:
        """Return the call's bearer token, or raise the API's 401 when it is missing or unknown."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                ERROR_USER_ACCOUNT,
                "Missing API token: send the header 'Authorization: Bearer <token>'",
                headers={"www-authenticate": "Bearer"},
            )
        if self.state.account_for(token) is None:
            raise ApiError(
                401,
                ERROR_USER_ACCOUNT,
                "The API token is invalid, expired or revoked",
                headers={"www-authenticate": 'Bearer error="invalid_token"'},
            )
        return token

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the server stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.closing.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, SLOW_POLL_SECONDS))

    async def begin(
        self,
        request: Request,
        endpoint: str,
        *,
        request_id: str | None = None,
        model_id: str | None = None,
        authenticate_call: bool = True,
    ) -> _Call:
        """Authenticate a call (unless public), check its request id and apply the fault aimed at it."""
        # Output files are public CDN links: they are served to anyone, so they carry no account.
        token = self.authenticate(request) if authenticate_call else ""
        record: RecordedRequest | None = request.scope.get(_RECORD_KEY)
        if request_id is not None:
            if not REQUEST_ID_PATTERN.match(request_id):
                if not authenticate_call:
                    raise ApiError(404, ERROR_NOT_FOUND, "No such file")
                raise ApiError(400, ERROR_INVALID_IDENTIFIER, f"Malformed request id: {request_id[:64]!r}")
            model_id = self.state.model_of(request_id)
            if record is not None:
                record.model_id = model_id
        fault = self.state.take_fault(endpoint, model_id, request_id)
        if fault is not None:
            if record is not None:
                record.fault = fault.kind
            if fault.kind in ("http_error", "error_200"):
                raise _fault_error(fault)
            if fault.kind == "redirect" and fault.location and authenticate_call:
                # An API call is sent elsewhere before it is handled (a submit creates no job), the way a
                # gateway moving the API would; 307 keeps the method, so a client that follows it re-POSTs.
                raise ApiError(307, None, "Moved (injected fault)", headers={"location": fault.location})
            if fault.kind == "slow":
                await self.pause(fault.delay_seconds)
        return _Call(request, endpoint, token, fault, self.closing)

    def job_for(self, call: _Call, request_id: str) -> JobSnapshot:
        """Return the caller's job ``request_id``, or raise the API's 404 or 403."""
        try:
            job = self.state.get_job(request_id, call.token)
            if job.hidden:  # the plan's read-after-write lag: not visible yet
                raise UnknownRequestError(request_id)
            return job
        except UnknownRequestError:
            raise ApiError(
                404, ERROR_NOT_FOUND, f"Request {request_id} was not found (unknown, deleted or expired)"
            ) from None
        except ForeignRequestError:
            raise ApiError(
                403, ERROR_PERMISSION_DENIED, f"Request {request_id} belongs to another account"
            ) from None


def _add_error_handlers(app: FastAPI) -> None:
    """Answer errors in the API's JSON error shape (FastAPI's own 404/405 included)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse(exc.payload(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = ERROR_NOT_FOUND if exc.status_code == 404 else None
        error = ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers)
        return JSONResponse(error.payload(), status_code=exc.status_code, headers=error.headers)


# Plain Starlette routes (``add_route``): FastAPI's parameter resolution would double the cost of every poll,
# and these handlers read their path parameters themselves.


def _api_router(gate: _Gate) -> APIRouter:
    """Route the RunComfy Model API: submit, model info, status, result, cancel."""
    state = gate.state

    async def submit(request: Request) -> Response:
        model_id: str = request.path_params["model_id"]
        call = await gate.begin(request, "submit", model_id=model_id)
        try:
            if not MODEL_ID_PATTERN.match(model_id) or state.model_info(model_id) is None:
                raise ApiError(
                    400,
                    ERROR_INVALID_IDENTIFIER,
                    f"Unknown model id {model_id!r}: no such model in the catalog",
                )
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError as err:
                raise ApiError(400, None, f"The request body is not valid JSON: {err}") from None
            record: RecordedRequest | None = request.scope.get(_RECORD_KEY)
            if record is not None:
                record.body = body
            if not isinstance(body, dict):
                raise ApiError(
                    422, None, "The request body must be a JSON object of the model's input fields"
                )
            if model_id == SEEDANCE_1_5_PRO_I2V_MODEL_ID:
                try:
                    SeedanceImageToVideoInput.model_validate(body)
                except ValidationError as err:
                    raise _invalid_input(model_id, err) from None
            job = state.submit(model_id, body, call.token)
        except ApiError as error:
            return call.error(error)
        urls = _request_urls(call.base_url, job.request_id)
        return call.answer(
            {
                "request_id": job.request_id,
                **urls,
                "cancel_url": f"{call.base_url}/v1/requests/{job.request_id}/cancel",
            }
        )

    async def model_info(request: Request) -> Response:
        model_id: str = request.path_params["model_id"]
        call = await gate.begin(request, "model", model_id=model_id)
        info = state.model_info(model_id) if state.pricing_enabled else None
        if info is None:
            return call.error(ApiError(404, ERROR_NOT_FOUND, f"Model {model_id!r} was not found"))
        return call.answer(info)

    async def read(
        request: Request, endpoint: str, render: Callable[[_Call, JobSnapshot], dict[str, Any]]
    ) -> Response:
        request_id: str = request.path_params["request_id"]
        call = await gate.begin(request, endpoint, request_id=request_id)
        try:
            job = gate.job_for(call, request_id)
        except ApiError as error:
            return call.error(error)
        return call.answer(render(call, job))

    async def status(request: Request) -> Response:
        return await read(request, "status", lambda call, job: _status_payload(call.base_url, job))

    async def result(request: Request) -> Response:
        include_cost = request.query_params.get("include_cost", "").strip().lower() in _TRUTHY
        return await read(
            request, "result", lambda call, job: _result_payload(call.base_url, job, include_cost)
        )

    async def cancel(request: Request) -> Response:
        request_id: str = request.path_params["request_id"]
        call = await gate.begin(request, "cancel", request_id=request_id)
        try:
            gate.job_for(call, request_id)
            job, cancelled = state.cancel(request_id, call.token)
        except ApiError as error:
            return call.error(error)
        outcome = "cancelled" if cancelled else "not_cancellable"
        return call.answer({"request_id": request_id, "status": job.status, "outcome": outcome}, 202)

    router = APIRouter()
    # The polled routes come first: fewer matches per poll.
    for path, endpoint, method in (
        ("/v1/requests/{request_id}/status", status, "GET"),
        ("/v1/requests/{request_id}/result", result, "GET"),
        ("/v1/requests/{request_id}/cancel", cancel, "POST"),
        ("/v1/models/{model_id:path}", submit, "POST"),
        ("/v1/models/{model_id:path}", model_info, "GET"),
    ):
        router.add_route(path, endpoint, methods=[method], include_in_schema=False)
    return router


DEAD_LINK_PAGE = (
    "<!DOCTYPE html><html><head><title>Link expired</title></head><body>This link has expired.</body></html>"
)
"""The page an ``error_page`` fault serves when it names no ``body``."""


def _dead_link_answer(fault: Fault, closing: threading.Event) -> Response:
    """Answer a download as a CDN does for a link it no longer serves: ``200`` with a page, or nothing."""
    if fault.kind == "error_page":
        page = fault.body if isinstance(fault.body, str) else DEAD_LINK_PAGE
        return Response(page.encode("utf-8"), status_code=200, media_type="text/html; charset=utf-8")
    if fault.hide_length:
        return StreamedResponse(
            status_code=200, headers={}, chunks=[], cut_after=None, closing=closing, media_type="video/mp4"
        )
    return Response(b"", status_code=200, media_type="video/mp4")


def _files_router(gate: _Gate) -> APIRouter:
    """Route the public output files: a request's videos, and generated files of any size."""
    state, closing = gate.state, gate.closing

    def serve_file(call: _Call, body: VideoBody) -> Response:
        fault = call.fault
        if fault is not None and fault.kind == "redirect" and fault.location:
            return Response(status_code=302, headers={"location": fault.location})
        if fault is not None and fault.kind in ("error_page", "empty_body"):
            return _dead_link_answer(fault, closing)
        headers = {"etag": body.etag, "cache-control": "public, max-age=86400"}
        span = None
        if state.ranges_enabled:
            headers["accept-ranges"] = "bytes"
            if_range = call.request.headers.get("if-range")
            if if_range is None or if_range == body.etag:
                try:
                    span = parse_range(call.request.headers.get("range"), body.size)
                except RangeNotSatisfiableError as err:
                    return call.error(
                        ApiError(416, None, str(err), headers={"content-range": f"bytes */{body.size}"})
                    )
        else:
            headers["accept-ranges"] = "none"
        start, end = (span.start, span.end + 1) if span is not None else (0, body.size)
        if span is not None and fault is not None and fault.kind == "capped_range":
            # A valid answer, only shorter than asked: the client must ask again from where it ends.
            span = ByteRange(start, min(end, start + fault.cap_bytes) - 1)
            end = span.end + 1
        if span is not None:
            headers["content-range"] = span.content_range(body.size)
        if fault is None or not fault.hide_length:
            headers["content-length"] = str(end - start)
        return StreamedResponse(
            status_code=206 if span is not None else 200,
            headers=headers,
            chunks=body.iter_range(start, end),
            cut_after=_cut_point(call.fault, end - start),
            closing=closing,
            media_type="video/mp4",
            rate_limit=state.download_rate_limit,
        )

    async def generated_file(request: Request) -> Response:
        size_bytes: int = request.path_params["size_bytes"]
        call = await gate.begin(request, "download", authenticate_call=False)
        if not MIN_GENERATED_SIZE <= size_bytes <= MAX_GENERATED_SIZE:
            return call.error(
                ApiError(
                    404,
                    ERROR_NOT_FOUND,
                    f"Generated files are {MIN_GENERATED_SIZE} to {MAX_GENERATED_SIZE} bytes, not "
                    f"{size_bytes}",
                )
            )
        return serve_file(call, generated_video(size_bytes))

    async def output_file(request: Request) -> Response:
        request_id: str = request.path_params["request_id"]
        index: int = request.path_params["index"]
        call = await gate.begin(request, "download", request_id=request_id, authenticate_call=False)
        try:
            job = state.get_job(request_id)
        except UnknownRequestError:
            job = None
        if job is None or job.phase != "succeeded" or index >= job.plan.num_videos:
            return call.error(ApiError(404, ERROR_NOT_FOUND, "No such file"))
        return serve_file(call, video_for(job.plan.video_size_bytes))

    router = APIRouter()
    # The generated-file routes come before the output-file route they would otherwise fall into. The named
    # one serves the same bytes under any file name (spaces, non-ASCII), as CDNs serve uploads.
    for path, endpoint in (
        ("/files/generated/{size_bytes:int}.mp4", generated_file),
        ("/files/generated/{size_bytes:int}/{name:path}", generated_file),
        ("/files/{request_id}/{index:int}.mp4", output_file),
    ):
        router.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
    return router


def create_app(state: EmulatorState, *, closing: threading.Event | None = None) -> FastAPI:
    """
    Build the emulator's FastAPI application around ``state``.

    :param state: the emulator state the routes read and change.
    :param closing: set by the server when it is stopping, so slow answers and long downloads end at once.
    """
    closing = closing or threading.Event()
    install_log_filter()
    app = FastAPI(
        title="Seedance emulator (RunComfy Model API stand-in)",
        docs_url=f"{CONTROL_PREFIX}/docs",
        redoc_url=None,
        openapi_url=f"{CONTROL_PREFIX}/openapi.json",
    )
    app.state.emulator = state
    app.add_middleware(RequestLogMiddleware, state=state)
    _add_error_handlers(app)
    gate = _Gate(state, closing)
    app.include_router(_api_router(gate))
    app.include_router(_files_router(gate))
    app.include_router(_control_router(state))
    return app


def _control_router(state: EmulatorState) -> APIRouter:
    def loopback_only(request: Request) -> None:
        if not is_loopback(request.client.host if request.client else None):
            raise ApiError(403, ERROR_PERMISSION_DENIED, "The control endpoints answer loopback clients only")

    router = APIRouter(prefix=CONTROL_PREFIX, dependencies=[Depends(loopback_only)], tags=["control"])

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "jobs": state.job_count(), "requests": state.count()}

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return {"status": "reset"}

    @router.get("/requests")
    async def requests(
        endpoint: str | None = None, limit: int | None = Query(None, ge=1), redact: bool = True
    ) -> dict[str, Any]:
        entries = state.requests(endpoint)
        if limit is not None:
            entries = entries[-limit:]
        return {
            "count": state.count(endpoint),
            "requests": [entry.to_dict(redact=redact) for entry in entries],
        }

    @router.get("/faults")
    async def faults() -> dict[str, Any]:
        return {
            "faults": [
                {"id": fault_id, **fault.model_dump(mode="json")}
                for fault_id, fault in state.faults().items()
            ]
        }

    @router.post("/faults", status_code=201)
    async def add_fault(fault: Fault) -> dict[str, Any]:
        return {"id": state.add_fault(fault), "fault": fault.model_dump(mode="json")}

    @router.delete("/faults")
    async def clear_faults() -> dict[str, Any]:
        return {"cleared": state.clear_faults()}

    @router.delete("/faults/{fault_id}")
    async def remove_fault(fault_id: int) -> dict[str, Any]:
        if not state.remove_fault(fault_id):
            raise ApiError(404, ERROR_NOT_FOUND, f"No active fault with id {fault_id}")
        return {"removed": fault_id}

    @router.get("/plan")
    async def get_plan() -> dict[str, Any]:
        return {
            "default": state.default_plan.model_dump(mode="json"),
            "models": {
                model_id: plan.model_dump(mode="json") for model_id, plan in state.model_plans().items()
            },
            "next": [plan.model_dump(mode="json") for plan in state.pending_plans()],
        }

    @router.put("/plan")
    async def set_plan(plan: JobPlan) -> dict[str, Any]:
        state.set_plan(plan)
        return {"default": plan.model_dump(mode="json")}

    @router.post("/plan/next")
    async def plan_next(plan: JobPlan, count: int = Query(1, ge=1)) -> dict[str, Any]:
        state.plan_next(plan, count)
        return {"queued": count, "pending": len(state.pending_plans())}

    @router.put("/models/{model_id:path}/plan")
    async def set_model_plan(model_id: str, plan: JobPlan) -> dict[str, Any]:
        state.set_model_plan(model_id, plan)
        return {"model_id": model_id, "plan": plan.model_dump(mode="json")}

    @router.delete("/models/{model_id:path}/plan")
    async def clear_model_plan(model_id: str) -> dict[str, Any]:
        state.set_model_plan(model_id, None)
        return {"model_id": model_id, "plan": None}

    @router.post("/models", status_code=201)
    async def register_model(entry: ModelEntry) -> dict[str, Any]:
        try:
            state.register_model(
                entry.model_id,
                base_price_usd=entry.base_price_usd,
                price_unit=entry.price_unit,
                display_name=entry.display_name,
            )
        except ValueError as err:
            raise ApiError(400, ERROR_INVALID_IDENTIFIER, str(err)) from None
        return state.model_info(entry.model_id) or {}

    @router.get("/jobs")
    async def jobs() -> dict[str, Any]:
        return {"jobs": [job.to_dict() for job in state.jobs()]}

    @router.get("/settings")
    async def get_settings() -> dict[str, Any]:
        return _settings(state)

    @router.patch("/settings")
    async def change_settings(settings: Settings) -> dict[str, Any]:
        if settings.pricing_enabled is not None:
            state.pricing_enabled = settings.pricing_enabled
        if settings.ranges_enabled is not None:
            state.ranges_enabled = settings.ranges_enabled
        if settings.time_scale is not None:
            state.time_scale = settings.time_scale
        if settings.download_rate_limit is not None:
            state.download_rate_limit = settings.download_rate_limit or None
        return _settings(state)

    @router.post("/tokens", status_code=201)
    async def add_token(entry: TokenEntry) -> dict[str, Any]:
        state.add_token(entry.token)
        return {"accounts": len(state.tokens)}

    return router


__all__ = [
    "CONTROL_PREFIX",
    "ApiError",
    "ConnectionCutError",
    "RequestLogMiddleware",
    "StreamedResponse",
    "create_app",
    "install_log_filter",
]
