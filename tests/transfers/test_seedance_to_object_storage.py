"""Tests of SeedanceToObjectStorageOperator on local ``file://`` paths (and a store with object metadata)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceTransferError,
)
from airflow_provider_seedance.transfers import seedance_to_object_storage as module
from airflow_provider_seedance.transfers.seedance_to_object_storage import SeedanceToObjectStorageOperator
from tests.transfers._support import FileServer

MiB = 1024 * 1024
BODY = os.urandom(3 * MiB + 99)
SHA = hashlib.sha256(BODY).hexdigest()


class FakeTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def run(**kwargs: Any) -> tuple[list[str], FakeTI]:
    kwargs.setdefault("task_id", "store")
    kwargs.setdefault("download_retry_backoff", 0.01)
    ti = FakeTI()
    return SeedanceToObjectStorageOperator(**kwargs).execute({"ti": ti}), ti  # type: ignore[arg-type]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_copy_to_a_local_path(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/clip.mp4", BODY)
    uris, ti = run(source_urls=url, dest_path=f"file://{tmp_path}/videos/day/clip.mp4")
    target = tmp_path / "videos/day/clip.mp4"
    assert uris == [f"file://{target}"]
    assert target.read_bytes() == BODY
    sidecar = json.loads((tmp_path / "videos/day/clip.mp4.seedance.json").read_text())
    assert sidecar == {
        "content-type": "video/mp4",
        "sha256": SHA,
        "size": len(BODY),
        "source-url": url,
    }
    assert ti.xcom["objects"][0]["sha256"] == SHA
    assert listing(tmp_path) == ["videos/day/clip.mp4", "videos/day/clip.mp4.seedance.json"]


def test_several_files_need_index(file_server: FileServer, tmp_path: Path) -> None:
    urls = [file_server.add(f"/{n}.mp4", BODY[n:]) for n in range(3)]
    with pytest.raises(SeedanceConfigurationError, match=r"\{index\}"):
        run(source_urls=urls, dest_path=f"file://{tmp_path}/clip.mp4")
    assert file_server.seen == []
    uris, _ = run(source_urls=urls, dest_path=f"file://{tmp_path}/clip-{{index}}.mp4", metadata_sidecar=False)
    assert uris == [f"file://{tmp_path}/clip-{n}.mp4" for n in range(3)]
    for n in range(3):
        assert (tmp_path / f"clip-{n}.mp4").read_bytes() == BODY[n:]
    assert listing(tmp_path) == [f"clip-{n}.mp4" for n in range(3)]


def test_failed_download_leaves_nothing(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/clip.mp4", BODY, ranges=False, drops={n: MiB for n in range(10)})
    with pytest.raises(SeedanceConnectionError):
        run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4", download_max_retries=1)
    assert listing(tmp_path) == []


def test_restart_rewrites_the_staging_file(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/clip.mp4", BODY, ranges=False, drops={0: 2 * MiB})
    run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == BODY
    assert listing(tmp_path) == ["clip.mp4", "clip.mp4.seedance.json"]


def test_rerun_is_idempotent_and_foreign_files_are_kept(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/clip.mp4", BODY)
    dest = f"file://{tmp_path}/clip.mp4"
    run(source_urls=url, dest_path=dest)
    before = (tmp_path / "clip.mp4").stat().st_mtime_ns
    _, ti = run(source_urls=url, dest_path=dest)
    assert ti.xcom["objects"][0]["skipped"] is True
    assert (tmp_path / "clip.mp4").stat().st_mtime_ns == before

    (tmp_path / "other.mp4").write_bytes(b"mine")
    with pytest.raises(SeedanceTransferError, match="already exists"):
        run(source_urls=url, dest_path=f"file://{tmp_path}/other.mp4")
    assert (tmp_path / "other.mp4").read_bytes() == b"mine"

    run(source_urls=url, dest_path=f"file://{tmp_path}/other.mp4", replace=True)
    assert (tmp_path / "other.mp4").read_bytes() == BODY


def test_plain_path_and_folder_errors(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/clip.mp4", BODY)
    uris, _ = run(source_urls=url, dest_path=str(tmp_path / "plain.mp4"))
    assert (tmp_path / "plain.mp4").read_bytes() == BODY
    assert uris[0].endswith("plain.mp4")
    with pytest.raises(SeedanceConfigurationError, match="not a folder"):
        run(source_urls=url, dest_path=f"file://{tmp_path}/folder/")


def test_object_storage_path_is_accepted(file_server: FileServer, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    url = file_server.add("/clip.mp4", BODY)
    run(source_urls=url, dest_path=ObjectStoragePath(f"file://{tmp_path}/osp.mp4"))
    assert (tmp_path / "osp.mp4").read_bytes() == BODY


def test_store_with_object_metadata_gets_xattrs(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem with ``setxattrs``/``getxattr`` (s3fs, gcsfs) gets metadata instead of a sidecar."""
    from fsspec.implementations.local import LocalFileSystem

    store: dict[str, dict[str, str]] = {}

    def setxattrs(self: Any, path: str, **values: str) -> None:
        store[path] = values

    def getxattr(self: Any, path: str, attr: str) -> str:
        return store[path][attr]

    monkeypatch.setattr(LocalFileSystem, "setxattrs", setxattrs, raising=False)
    monkeypatch.setattr(LocalFileSystem, "getxattr", getxattr, raising=False)
    url = file_server.add("/clip.mp4", BODY)
    run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4")
    assert listing(tmp_path) == ["clip.mp4"]
    (recorded,) = store.values()
    assert recorded["sha256"] == SHA
    assert recorded["source-url"] == url
    _, ti = run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4")
    assert ti.xcom["objects"][0]["skipped"] is True


def assert_crash_leaves_nothing(file_server: FileServer, tmp_path: Path, message: str) -> None:
    """
    Copy a file to ``tmp_path`` with a crash patched in: it must raise ``OSError`` and leave no file.

    :param file_server: serves the file.
    :param tmp_path: the destination folder.
    :param message: what the crash's message says.
    """
    url = file_server.add("/clip.mp4", BODY)
    with pytest.raises(OSError, match=message):
        run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4")
    assert listing(tmp_path) == []


def test_failure_after_the_move_removes_the_file(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, result: Any) -> None:
        raise OSError("disk full while writing the sidecar")

    monkeypatch.setattr(module.ObjectStorageWriter, "_write_sidecar", broken)
    assert_crash_leaves_nothing(file_server, tmp_path, "disk full")


# ---------------------------------------------------------------------------------------------------------
# Issue 13, item 13: the file appears complete, the sidecar never half-written
# ---------------------------------------------------------------------------------------------------------


def test_sidecar_is_never_seen_half_written(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash while the sidecar is being put in place: it is written under a hidden name and renamed, so
    # no truncated <name>.seedance.json can ever sit next to the file.
    from fsspec.implementations.local import LocalFileSystem

    real_mv = LocalFileSystem.mv

    def mv(self: Any, path1: str, path2: str, **kwargs: Any) -> None:
        if str(path2).endswith(module.SIDECAR_SUFFIX):
            raise OSError("killed while publishing the sidecar")
        real_mv(self, path1, path2, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", mv)
    assert_crash_leaves_nothing(file_server, tmp_path, "killed")


def test_replacing_removes_the_stale_sidecar_before_the_new_file_appears(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.local import LocalFileSystem

    old = file_server.add("/old.mp4", BODY[::-1])
    new = file_server.add("/new.mp4", BODY)
    dest = tmp_path / "clip.mp4"
    run(source_urls=old, dest_path=f"file://{dest}")
    real_mv = LocalFileSystem.mv
    seen: list[bool] = []

    def mv(self: Any, path1: str, path2: str, **kwargs: Any) -> None:
        if str(path2) == str(dest):
            # Never a moment where the old sidecar describes the new file.
            seen.append((tmp_path / "clip.mp4.seedance.json").exists())
        real_mv(self, path1, path2, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", mv)
    run(source_urls=new, dest_path=f"file://{dest}", replace=True)
    assert seen == [False]
    sidecar = json.loads((tmp_path / "clip.mp4.seedance.json").read_text())
    assert sidecar["sha256"] == SHA
    assert sidecar["source-url"] == new
    assert listing(tmp_path) == ["clip.mp4", "clip.mp4.seedance.json"]


def test_unreadable_sidecar_is_ignored(file_server: FileServer, tmp_path: Path) -> None:
    # Left half-written by a crash of an older version: it proves nothing about the file.
    url = file_server.add("/clip.mp4", BODY)
    (tmp_path / "clip.mp4").write_bytes(BODY)
    (tmp_path / "clip.mp4.seedance.json").write_text('{"sha256": "ab')
    with pytest.raises(SeedanceTransferError, match="no source-url metadata"):
        run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4")
    run(source_urls=url, dest_path=f"file://{tmp_path}/clip.mp4", replace=True)
    assert json.loads((tmp_path / "clip.mp4.seedance.json").read_text())["sha256"] == SHA
