"""The cost guard: estimate a generation's price before submitting it, and refuse to submit over budget.

The estimate uses the model's catalog entry (``GET /v1/models/{model_id}``: ``base_price_usd`` per
``price_unit``), an endpoint RunComfy's own clients use but do not document. It is an *estimate*: the
price actually billed (reported afterwards by ``/result?include_cost=true``) may differ, e.g. with
resolution or audio. When no estimate can be made (endpoint absent, unknown unit, unknown length),
``on_unknown`` decides: ``"allow"`` (default) submits with a warning in the log, ``"fail"`` refuses.

A submitted request cannot be taken back once it runs: only queued requests can be cancelled, and a
running one is billed in full. That is why the guard runs *before* the submit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from airflow_provider_seedance.catalog import duration_seconds, validate_request_body
from airflow_provider_seedance.exceptions import (
    SeedanceAPIError,
    SeedanceConfigurationError,
    SeedanceCostLimitError,
)
from airflow_provider_seedance.models import ModelInfo

log = logging.getLogger(__name__)

OnUnknownCost = Literal["allow", "fail"]
"""What :func:`check_budget` does when the price cannot be estimated."""

DEFAULT_ON_UNKNOWN: OnUnknownCost = "allow"
"""Submit when the price is unknown (logged as a warning): the pricing endpoint is undocumented."""

PER_SECOND_UNITS = frozenset({"second", "sec", "s", "video_second", "output_second"})
"""``price_unit`` values meaning "USD per second of generated video"."""

PER_OUTPUT_UNITS = frozenset({"output", "video", "image"})
"""``price_unit`` values meaning "USD per generated output (video or image)"."""

OUTPUT_COUNT_FIELDS = ("num_outputs", "num_videos", "num_images", "number_of_outputs", "batch_size")
"""Input fields that, when present, say how many outputs one request makes (else it makes one)."""

USD_DECIMALS = 6
"""Estimates are rounded to a micro-dollar, so float noise (0.07 x 12 = 0.8400000000000001) never shows."""


class CostEstimate(BaseModel):
    """
    The estimated price of one generation request.

    :param usd: the estimate in US dollars, or ``None`` when it cannot be made.
    :param basis: how the estimate was computed, e.g. ``0.05 USD/second x 8 s``.
    :param reason: why there is no estimate (empty when there is one).
    """

    model_config = ConfigDict(frozen=True)

    usd: float | None
    basis: str = ""
    reason: str = ""

    @property
    def known(self) -> bool:
        """Whether an estimate in USD could be made."""
        return self.usd is not None


class _ModelCatalog(Protocol):
    def get_model(self, model_id: str) -> ModelInfo: ...


def _unknown(reason: str, basis: str = "") -> CostEstimate:
    return CostEstimate(usd=None, basis=basis, reason=reason)


def _normalize_unit(unit: str) -> str:
    text = unit.strip().lower().replace("-", "_").replace(" ", "_")
    for prefix in ("per_", "usd_per_", "usd/", "/"):
        text = text.removeprefix(prefix)
    return text[:-1] if text.endswith("s") and len(text) > 1 else text


def _output_count(body: Mapping[str, Any]) -> tuple[int, str]:
    for name in OUTPUT_COUNT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, name
    return 1, ""


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.6f}"


def estimate_cost_usd(
    model_info: ModelInfo, body: Mapping[str, Any] | BaseModel, model_id: str
) -> CostEstimate:
    """
    Estimate the price of submitting ``body`` to ``model_id`` from the model's catalog entry.

    ``price_unit`` ``second``: ``base_price_usd`` x the video's length (the body's ``duration``, else the
    model's documented default). ``output`` (or ``video``/``image``): ``base_price_usd`` x the number of
    outputs (1 unless the body has e.g. ``num_outputs``). Anything else gives an unknown estimate with the
    reason.

    :param model_info: the answer of ``GET /v1/models/{model_id}``.
    :param body: the JSON body that will be submitted (or its input model).
    :param model_id: the RunComfy model id.
    """
    data = validate_request_body(model_id, body) if isinstance(body, BaseModel) else body
    price = model_info.base_price_usd
    raw_unit = model_info.price_unit
    if price is None:
        return _unknown(f"the model catalog gives no base_price_usd for {model_id}")
    if not math.isfinite(price) or price < 0:
        return _unknown(f"the model catalog gives an unusable base_price_usd ({price!r}) for {model_id}")
    if not raw_unit or not raw_unit.strip():
        return _unknown(f"the model catalog gives no price_unit for {model_id}")
    unit = _normalize_unit(raw_unit)
    if unit in PER_SECOND_UNITS:
        seconds = duration_seconds(model_id, data)
        if seconds is None:
            return _unknown(
                f"{model_id} is priced per second, but the video length is unknown: set 'duration' in the "
                f"input to get an estimate",
                basis=f"{_number(price)} USD/second",
            )
        usd = round(price * seconds, USD_DECIMALS)
        from_default = "duration" not in data
        return CostEstimate(
            usd=usd,
            basis=f"{_number(price)} USD/second x {_number(seconds)} s"
            + (" (the model's default duration)" if from_default else ""),
        )
    if unit in PER_OUTPUT_UNITS:
        count, field = _output_count(data)
        usd = round(price * count, USD_DECIMALS)
        source = f" ({field})" if field else ""
        plural = "s" if count != 1 else ""
        return CostEstimate(usd=usd, basis=f"{_number(price)} USD/{unit} x {count} {unit}{plural}{source}")
    return _unknown(
        f"the model catalog prices {model_id} per {raw_unit!r}, a unit this provider cannot estimate "
        f"(known: second, output)",
        basis=f"{_number(price)} USD/{raw_unit}",
    )


def _check_max_cost(max_cost_usd: object) -> float:
    if isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, (int, float, str)):
        raise SeedanceConfigurationError(
            f"max_cost_usd must be a non-negative number of US dollars, got {max_cost_usd!r}"
        )
    try:
        value = float(max_cost_usd)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SeedanceConfigurationError(
            f"max_cost_usd must be a non-negative number of US dollars, got {max_cost_usd!r}"
        )
    return value


def check_budget(
    hook: _ModelCatalog,
    model_id: str,
    body: Mapping[str, Any] | BaseModel,
    max_cost_usd: float | None,
    *,
    on_unknown: OnUnknownCost = DEFAULT_ON_UNKNOWN,
) -> CostEstimate:
    """
    Estimate a generation's price and raise :class:`SeedanceCostLimitError` when it is over budget.

    Call it before submitting: nothing is sent to the generation endpoint here. With ``max_cost_usd=None``
    there is no budget and no HTTP call. The catalog endpoint being absent or failing (404 or any API
    error) makes the estimate unknown; ``on_unknown="allow"`` then logs a warning and lets the caller
    submit, ``"fail"`` raises. An estimate equal to the budget is within it.

    :param hook: a :class:`~airflow_provider_seedance.hooks.seedance.SeedanceHook` (anything with
        ``get_model``).
    :param model_id: the RunComfy model id.
    :param body: the JSON body that will be submitted (or its input model).
    :param max_cost_usd: the most the request may cost, in US dollars; ``None`` disables the guard.
    :param on_unknown: ``"allow"`` (default) or ``"fail"`` when the price cannot be estimated.
    """
    if on_unknown not in ("allow", "fail"):
        raise SeedanceConfigurationError(f"on_unknown must be 'allow' or 'fail', got {on_unknown!r}")
    if max_cost_usd is None:
        return _unknown("no max_cost_usd was set, so the price was not estimated")
    budget = _check_max_cost(max_cost_usd)

    try:
        info = hook.get_model(model_id)
    except SeedanceAPIError as err:
        # The catalog endpoint is undocumented: its absence must not block generations by itself.
        estimate = _unknown(f"the model catalog (GET /v1/models/{model_id}) could not be read: {err}")
    else:
        estimate = estimate_cost_usd(info, body, model_id)

    if estimate.usd is None:
        if on_unknown == "fail":
            raise SeedanceCostLimitError(
                f"Cannot estimate the price of this {model_id} generation ({estimate.reason}), and the cost "
                f"guard is set to fail when the price is unknown (on_unknown='fail', "
                f"max_cost_usd={_number(budget)}). Nothing was submitted."
            )
        log.warning(
            "Cannot estimate the price of this %s generation (%s). Submitting anyway because "
            "on_unknown='allow'; max_cost_usd=%s is NOT enforced for this request, and RunComfy bills "
            "the run at its own price.",
            model_id,
            estimate.reason,
            _number(budget),
        )
        return estimate

    if estimate.usd > budget:
        raise SeedanceCostLimitError(
            f"The estimated price of this {model_id} generation is {_number(estimate.usd)} USD "
            f"({estimate.basis}, from the model catalog), above max_cost_usd={_number(budget)} USD. "
            f"Nothing was submitted. Raise max_cost_usd or ask for less (shorter duration, fewer outputs)."
        )
    log.info(
        "Estimated price of this %s generation: %s USD (%s), within max_cost_usd=%s USD.",
        model_id,
        _number(estimate.usd),
        estimate.basis,
        _number(budget),
    )
    return estimate


__all__ = [
    "DEFAULT_ON_UNKNOWN",
    "OUTPUT_COUNT_FIELDS",
    "PER_OUTPUT_UNITS",
    "PER_SECOND_UNITS",
    "CostEstimate",
    "OnUnknownCost",
    "check_budget",
    "estimate_cost_usd",
]
