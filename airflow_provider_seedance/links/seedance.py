"""The extra link of the Seedance tasks: it opens the video a generation made.

Shared by the operators and the sensor, so it lives below both (it imports nothing of this package).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

VIDEO_URL_ATTRIBUTE = "_seedance_video_url"
"""Instance attribute where a running task keeps the URL its extra link shows."""

_UNKNOWN = object()


class SeedanceVideoLink(BaseOperatorLink):
    """Link a Seedance task to the video it generated (``video_url`` of its return value)."""

    name = "Seedance video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """
        Return the generated video's URL, or an empty string while there is none.

        :param operator: the task the link belongs to.
        :param ti_key: the task instance whose return value holds the URL.
        """
        # The task that just ran knows its outcome: no XCom round trip (and no "XCom not found" error in
        # the log of a task that deferred or failed).
        known = operator.__dict__.get(VIDEO_URL_ATTRIBUTE, _UNKNOWN)
        if known is not _UNKNOWN:
            return video_link({"video_url": known})
        from airflow.providers.common.compat.sdk import XCom

        return video_link(XCom.get_value(ti_key=ti_key, key="return_value"))


def remember_video_url(operator: BaseOperator, url: str | None) -> None:
    """
    Record on the running task the video URL its extra link shows (``None``: no video, or not yet).

    :param operator: the running task.
    :param url: the generated video's URL.
    """
    operator.__dict__[VIDEO_URL_ATTRIBUTE] = url


def video_link(value: object) -> str:
    """
    Return the ``video_url`` of a task's return value when it is an http(s) URL, else an empty string.

    The URL comes from the API: anything but http(s) (``javascript:``, ``data:``) is not shown as a link.

    :param value: the task's XCom ``return_value``.
    """
    url = value.get("video_url") if isinstance(value, Mapping) else None
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        return url
    return ""


__all__ = ["SeedanceVideoLink", "remember_video_url", "video_link"]
