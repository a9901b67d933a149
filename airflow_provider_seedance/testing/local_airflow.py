"""Run a real, isolated Airflow 3 on this machine: api-server, scheduler, dag-processor and triggerer.

:class:`LocalAirflow` is what the system tests, the demo and the benchmarks use to run DAGs the way a
deployment does (deferral through the triggerer, tasks through the LocalExecutor and the Execution API),
instead of ``dag.test()``'s single process::

    with LocalAirflow("example_dags", env={"AIRFLOW_CONN_SEEDANCE_DEFAULT": conn}) as airflow:
        airflow.wait_ready()
        airflow.wait_for_dags("example_seedance_to_s3")
        airflow.unpause("example_seedance_to_s3")
        run_id = airflow.trigger("example_seedance_to_s3")
        assert airflow.wait_for_run("example_seedance_to_s3", run_id, timeout=120) == "success"

How it is isolated:

* a fresh ``AIRFLOW_HOME`` (a temp dir unless given) holding the SQLite metadata DB, ``airflow.cfg`` and
  every log; the components are configured through ``AIRFLOW__*`` environment variables only, and no
  ``AIRFLOW_*`` variable of the calling process leaks into them (a test's own AIRFLOW_HOME or connections);
* free 127.0.0.1 ports for the API server; the log servers are not started (logs are read from files);
* every component is a subprocess in its own session (process group), logging to ``<home>/processes/``.
  :meth:`stop` terminates the groups (SIGTERM, then SIGKILL after a grace period) and then sweeps every
  process still carrying this instance's marker environment variable, which catches the task and trigger
  runner processes Airflow moves into process groups of their own.

Importing this module imports neither Airflow nor httpx: the components are separate processes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from airflow_provider_seedance.testing._net import free_port

if TYPE_CHECKING:
    import httpx

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""The long-running Airflow 3 processes, in start order."""

DEFAULT_STARTUP_TIMEOUT = 240.0
"""Seconds :meth:`LocalAirflow.wait_ready` waits for every component (imports are slow on 2 cores)."""

MIGRATE_TIMEOUT = 300.0
"""Seconds ``airflow db migrate`` may take."""

STOP_GRACE_SECONDS = 15.0
"""Seconds between SIGTERM and SIGKILL when stopping: the scheduler waits for its executor's workers."""

SWEEP_GRACE_SECONDS = 5.0
"""Seconds left to stray processes (task and trigger runners) between SIGTERM and SIGKILL."""

POLL_SECONDS = 0.5
"""Interval of every wait loop (health, DAG parsing, run state)."""

HTTP_TIMEOUT_SECONDS = 30.0
"""Timeout of one REST call to the API server (SQLite writers can hold it up for seconds)."""

SQLITE_BUSY_TIMEOUT_SECONDS = 60
"""How long a component waits for SQLite's write lock before failing with "database is locked"."""

LOG_EXCERPT_LINES = 40
"""Lines of each process log quoted when a component fails."""

MARKER_ENV = "SEEDANCE_LOCAL_AIRFLOW_ID"
"""Environment variable carrying an instance id into every process it starts, so none escapes stop()."""

DEFERRED_LOG_MARKER = "Pausing task as DEFERRED"
"""What the Airflow 3 task runner logs when a task defers (a try's log keeps it after it resumes)."""

ADMIN_USER = "admin"
"""The UI and REST API user (role admin); its password is :attr:`LocalAirflow.admin_password`."""

API_SERVER_GRACE_SECONDS = 3.0
"""The API server holds no work: after this long, it is killed rather than left to tear down its heap."""

FAST_CONFIG: dict[str, str] = {
    # A scheduler loop, heartbeat and triggerer loop every second: a run takes seconds, not minutes.
    "scheduler.scheduler_heartbeat_sec": "1",
    "scheduler.job_heartbeat_sec": "1",
    "scheduler.scheduler_idle_sleep_time": "0.5",
    "scheduler.trigger_timeout_check_interval": "5",
    "scheduler.enable_health_check": "False",
    "triggerer.job_heartbeat_sec": "1",
    # A task supervisor notices its task process exited up to this long after the fact. Airflow 3.3's
    # scheduler fails a resumed task when the "success" of its pre-deferral workload is drained after the
    # resumed try started (apache/airflow#71580, #72716): a 5 s lag loses that race whenever a trigger
    # fires within seconds, as it does against the emulator.
    "workers.min_heartbeat_interval": "1",
    # New DAG files are listed every few seconds; a file is re-parsed at most every 30 s (parsing is the
    # heaviest load on 2 cores, and tests write their DAG files before starting).
    "dag_processor.refresh_interval": "5",
    "dag_processor.min_file_process_interval": "30",
    "dag_processor.parsing_processes": "1",
    "dag_processor.print_stats_interval": "300",
    "dag_processor.stale_dag_threshold": "120",
    "dag_processor.dag_file_processor_timeout": "120",
    "core.dagbag_import_timeout": "120",
    "core.dags_are_paused_at_creation": "True",
    "core.load_examples": "False",
    "core.executor": "LocalExecutor",
    # One admin user whose password LocalAirflow writes (see admin_password): REST calls log in like a real
    # client would. ("All admins" mode would add a second bearer token to every request, which the
    # Execution API then tries and fails to reissue, logging a traceback per call.)
    "core.auth_manager": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "core.simple_auth_manager_all_admins": "False",
    "core.simple_auth_manager_users": f"{ADMIN_USER}:admin",
    "api.workers": "1",
    # Airflow 3.0 refuses ``xcom(...)``'s deserialize=True unless this is on (3.1 dropped the option).
    "api.enable_xcom_deserialize_support": "True",
    "logging.colored_console_log": "False",
    "logging.logging_level": "INFO",
    "database.check_migrations": "False",
}
"""``section.option`` settings applied to every component (overridable with ``config=``)."""

_SQLITE_SETTINGS_MODULE = "seedance_local_airflow_db"
"""Module written to ``<home>/config`` (on Airflow's sys.path) holding the SQLite connect arguments."""


class LocalAirflowError(RuntimeError):
    """A component of :class:`LocalAirflow` failed to start, died, or a run did not finish in time."""


@dataclass(frozen=True)
class TaskInstanceInfo:
    """
    What happened to one task instance of a run.

    :param task_id: the task.
    :param map_index: the map index (-1 for an unmapped task).
    :param state: the state (``success``, ``failed``, ``deferred``...), or ``None``.
    :param try_number: the try number.
    :param start_date: ISO start time, or ``None``.
    :param end_date: ISO end time, or ``None``.
    :param duration: seconds from start to end as Airflow counts them, or ``None``.
    :param deferred: the task deferred at least once in this try (its log says so, or a trigger log exists).
    :param log_files: this try's task log files (the worker's, then the triggerer's).
    """

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    start_date: str | None
    end_date: str | None
    duration: float | None
    deferred: bool
    log_files: tuple[Path, ...] = field(default=())

    @property
    def trigger_log_files(self) -> tuple[Path, ...]:
        """The log files the triggerer wrote for this try (one per triggerer that ran its trigger)."""
        return tuple(p for p in self.log_files if ".trigger." in p.name)


@dataclass
class _Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    killed: bool = False


def cache_dir() -> Path | None:
    """
    Return a writable folder for what LocalAirflow caches across runs, or ``None`` when there is none.

    ``<sys.prefix>/.cache/seedance-local-airflow`` (inside the virtualenv: it lives and dies with the
    installed Airflow it was built from), else a per-user temp dir.
    """
    user = getattr(os, "getuid", lambda: 0)()
    for candidate in (
        Path(sys.prefix) / ".cache" / "seedance-local-airflow",
        Path(tempfile.gettempdir()) / f"seedance-local-airflow-{user}",
    ):
        with contextlib.suppress(OSError):
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
    return None


def default_pycache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """
    Return where the components should cache bytecode, or ``None`` when Python already does it normally.

    With ``PYTHONDONTWRITEBYTECODE`` set (and no ``PYTHONPYCACHEPREFIX``), every Airflow process would
    compile Airflow from source each time it starts: seconds of CPU per process. The cache then goes to
    ``pycache/`` in :func:`cache_dir`.

    :param environ: the environment the processes will get (default: this process's).
    """
    environ = os.environ if environ is None else environ
    if not environ.get("PYTHONDONTWRITEBYTECODE") or environ.get("PYTHONPYCACHEPREFIX"):
        return None
    root = cache_dir()
    return None if root is None else root / "pycache"


def _config_env_name(key: str) -> str:
    section, _, option = key.partition(".")
    if not section or not option:
        raise ValueError(f"config keys are 'section.option', got {key!r}")
    return f"AIRFLOW__{section.upper()}__{option.upper()}"


def _random_secret(size: int = 32) -> str:
    return base64.urlsafe_b64encode(os.urandom(size)).decode("ascii")


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy a SQLite database consistently (the backup API also folds in its write-ahead log)."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM this child when its parent dies (a SIGKILLed test runner leaves no cluster)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalAirflow:
    """
    Start a real, isolated Airflow 3 (api-server, scheduler, dag-processor, triggerer) as subprocesses.

    Use it as a context manager (or call :meth:`start` and :meth:`stop` in ``try``/``finally``): every
    process it started is gone when the block exits, also on an exception or Ctrl-C.

    :param dags_folder: the DAGs folder the dag-processor parses.
    :param env: extra environment for every component, e.g. ``AIRFLOW_CONN_*`` connections and
        ``AIRFLOW_VAR_*`` variables; a ``None`` value removes a variable the caller's environment has.
    :param config: ``section.option`` -> value settings applied on top of :data:`FAST_CONFIG`.
    :param home: the ``AIRFLOW_HOME`` to use (created if missing); default: a new temp dir.
    :param keep_home: keep the home (logs, DB) after :meth:`stop`; a temp home is deleted otherwise.
    :param triggerers: how many triggerer processes to run (two or more for high-availability tests).
    :param parallelism: task slots of the LocalExecutor.
    :param python: the interpreter that runs ``python -m airflow`` (default: this one).
    :param pycache_dir: where the components cache compiled bytecode (``PYTHONPYCACHEPREFIX``), even if
        ``PYTHONDONTWRITEBYTECODE`` is set: importing Airflow from source costs seconds per process.
        ``None`` (default): :func:`default_pycache_dir`; ``False``: leave the environment as it is.
    :param inherit_airflow_env: pass the caller's ``AIRFLOW*`` variables through (default: strip them).
    :param reuse_migrated_db: start from a cached copy of a freshly migrated DB (made by the first run
        with this Airflow version) instead of running ``airflow db migrate`` each time.
    """

    def __init__(
        self,
        dags_folder: str | os.PathLike[str],
        *,
        env: Mapping[str, str | None] | None = None,
        config: Mapping[str, str] | None = None,
        home: str | os.PathLike[str] | None = None,
        keep_home: bool = False,
        triggerers: int = 1,
        parallelism: int = 4,
        python: str | None = None,
        pycache_dir: str | os.PathLike[str] | Literal[False] | None = None,
        inherit_airflow_env: bool = False,
        reuse_migrated_db: bool = True,
    ) -> None:
        if triggerers < 0:
            raise ValueError(f"triggerers must be >= 0, got {triggerers}")
        if parallelism < 1:
            raise ValueError(f"parallelism must be >= 1, got {parallelism}")
        self.dags_folder = Path(dags_folder).resolve()
        if not self.dags_folder.is_dir():
            raise ValueError(f"dags_folder {self.dags_folder} is not a directory")
        self.extra_env = dict(env or {})
        self.config = {**FAST_CONFIG, **dict(config or {})}
        self._given_home = Path(home).resolve() if home is not None else None
        self.keep_home = keep_home
        self.triggerers = triggerers
        self.parallelism = parallelism
        self.python = python or sys.executable
        if pycache_dir is None:
            self.pycache_dir = default_pycache_dir()
        else:
            self.pycache_dir = Path(pycache_dir).resolve() if pycache_dir is not False else None
        self.inherit_airflow_env = inherit_airflow_env
        self.reuse_migrated_db = reuse_migrated_db
        self.instance_id = uuid.uuid4().hex
        self.home = (
            self._given_home or Path(tempfile.gettempdir()) / f"seedance-airflow-{self.instance_id[:12]}"
        )
        self.api_port = 0
        self._components: list[_Component] = []
        self._client: httpx.Client | None = None
        self.stop_report: dict[str, str] = {}
        """How the last :meth:`stop` went, per component (for diagnosing slow or stuck shutdowns)."""
        self._started = False

    # -- paths and URLs -----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """Base URL of the API server (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def db_path(self) -> Path:
        """The SQLite metadata database."""
        return self.home / "airflow.db"

    @property
    def passwords_file(self) -> Path:
        """SimpleAuthManager's passwords file (written by :meth:`start`)."""
        return self.home / "simple_auth_manager_passwords.json"

    @property
    def admin_password(self) -> str:
        """The password of :data:`ADMIN_USER`, for the UI at :attr:`api_url` and the REST API."""
        return self._secrets["_ADMIN_PASSWORD"]

    @property
    def logs_dir(self) -> Path:
        """Airflow's ``base_log_folder`` (task and trigger logs)."""
        return self.home / "logs"

    @property
    def process_logs_dir(self) -> Path:
        """Where each component's stdout and stderr go (``<name>.log``)."""
        return self.home / "processes"

    def process_log(self, name: str) -> Path:
        """
        Return the log file of a component.

        :param name: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` (``triggerer-2``...).
        """
        return self.process_logs_dir / f"{name}.log"

    # -- environment --------------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """Return the environment every component runs with (also usable for ``airflow`` CLI calls)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if self.inherit_airflow_env or not k.upper().startswith(("AIRFLOW", "_AIRFLOW"))
        }
        settings = dict(self.config)
        settings.update(
            {
                "core.dags_folder": str(self.dags_folder),
                "core.parallelism": str(self.parallelism),
                "core.execution_api_server_url": f"{self.api_url}/execution/",
                "api.host": "127.0.0.1",
                "api.port": str(self.api_port),
                "api.base_url": self.api_url,
                "database.sql_alchemy_conn": f"sqlite:///{self.db_path}",
                "database.sql_alchemy_connect_args": f"{_SQLITE_SETTINGS_MODULE}.CONNECT_ARGS",
                "database.sql_alchemy_connect_args_async": f"{_SQLITE_SETTINGS_MODULE}.CONNECT_ARGS",
                "logging.base_log_folder": str(self.logs_dir),
                "core.simple_auth_manager_passwords_file": str(self.passwords_file),
            }
        )
        env.update({_config_env_name(k): v for k, v in settings.items()})
        env.update({k: v for k, v in self._secrets.items() if not k.startswith("_")})
        env["AIRFLOW_HOME"] = str(self.home)
        env[MARKER_ENV] = self.instance_id
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.pycache_dir is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache_dir)
        for name, value in self.extra_env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    @property
    def _secrets(self) -> dict[str, str]:
        # Every component must share these: the scheduler signs the tasks' Execution API tokens with the
        # JWT secret the API server checks, and connections are encrypted with one Fernet key.
        if not hasattr(self, "_secret_env"):
            self._secret_env = {
                "AIRFLOW__CORE__FERNET_KEY": _random_secret(),
                "AIRFLOW__API__SECRET_KEY": _random_secret(),
                "AIRFLOW__API_AUTH__JWT_SECRET": _random_secret(),
                "_ADMIN_PASSWORD": _random_secret(12),
            }
        return self._secret_env

    # -- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalAirflow:
        """Create the home, migrate the metadata DB and start every component (does not wait for them)."""
        if self._started:
            return self
        self._started = True
        try:
            self._prepare_home()
            self.api_port = free_port()
            self.migrate()
            for name, args in self._component_commands():
                self._spawn(name, [self.python, "-m", "airflow", *args])
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.process_logs_dir.mkdir(exist_ok=True)
        config_dir = self.home / "config"
        config_dir.mkdir(exist_ok=True)
        # Airflow puts <home>/config on sys.path; the connect args module lets SQLite writers wait for the
        # lock longer than pysqlite's 5 s default (four processes share one file).
        self.passwords_file.write_text(json.dumps({ADMIN_USER: self.admin_password}))
        (config_dir / f"{_SQLITE_SETTINGS_MODULE}.py").write_text(
            f'"""SQLite connect arguments of a LocalAirflow instance."""\n\n'
            f"CONNECT_ARGS = {{'timeout': {SQLITE_BUSY_TIMEOUT_SECONDS}}}\n"
        )

    def _component_commands(self) -> list[tuple[str, list[str]]]:
        commands: list[tuple[str, list[str]]] = [
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)]),
            ("scheduler", ["scheduler", "--skip-serve-logs"]),
            ("dag-processor", ["dag-processor"]),
        ]
        for index in range(self.triggerers):
            name = "triggerer" if index == 0 else f"triggerer-{index + 1}"
            commands.append((name, ["triggerer", "--skip-serve-logs"]))
        return commands

    def airflow_cli(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        """
        Run one ``airflow`` CLI command against this instance; return its output.

        :param args: the command, e.g. ``("variables", "set", "k", "v")``.
        :param timeout: seconds before the command is killed.
        :param check: raise :class:`LocalAirflowError` (with the output) when it exits non-zero.
        """
        proc = subprocess.run(
            [self.python, "-m", "airflow", *args],
            env=self.environment(),
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
        output = proc.stdout.decode("utf-8", errors="replace")
        if check and proc.returncode != 0:
            tail = "\n".join(output.splitlines()[-LOG_EXCERPT_LINES:])
            raise LocalAirflowError(f"`airflow {' '.join(args)}` exited {proc.returncode}:\n{tail}")
        return output

    def migrate(self) -> None:
        """
        Create the metadata database: a copy of a cached freshly migrated one, else ``airflow db migrate``.

        A migration costs several seconds of CPU and gives the same empty schema every time for one
        Airflow version, so the first result is kept (``reuse_migrated_db``) and copied afterwards.
        """
        template = self._migrated_db_template()
        if template is not None and template.is_file() and not self.db_path.exists():
            try:
                _sqlite_copy(template, self.db_path)
            except sqlite3.Error:
                self.db_path.unlink(missing_ok=True)
            else:
                (self.process_logs_dir / "db-migrate.log").write_text(f"copied from {template}\n")
                return
        output = self.airflow_cli("db", "migrate", timeout=MIGRATE_TIMEOUT)
        (self.process_logs_dir / "db-migrate.log").write_text(output)
        if template is not None:
            partial = template.with_name(f"{template.name}.{self.instance_id}.tmp")
            with contextlib.suppress(OSError, sqlite3.Error):
                _sqlite_copy(self.db_path, partial)
                os.replace(partial, template)
            partial.unlink(missing_ok=True)

    def _migrated_db_template(self) -> Path | None:
        if not self.reuse_migrated_db:
            return None
        root = cache_dir()
        if root is None:
            return None
        try:
            version = importlib.metadata.version("apache-airflow")
        except importlib.metadata.PackageNotFoundError:
            return None
        # The schema depends on the Airflow version only; the interpreter names the installation.
        key = hashlib.sha256(f"{self.python}\0{version}".encode()).hexdigest()[:16]
        return root / f"migrated-airflow-{version}-{key}.db"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.process_log(name)
        env = self.environment()
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in the terminal reaches only the caller, which then stops the
                # components in order; and one killpg reaches a component's helper processes.
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        self._components.append(_Component(name, argv, env, log_path, popen))

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """
        Stop every process this instance started: SIGTERM each group, SIGKILL what is left after ``grace``.

        Safe to call more than once and from ``finally`` blocks; never raises for a process already gone.

        :param grace: seconds the components get to shut down cleanly.
        """
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        live = [c for c in self._components if c.popen is not None and c.popen.poll() is None]
        known = self._descendants()
        # The triggerer and scheduler first: they hand work back cleanly while the API server still answers.
        for component in sorted(live, key=lambda c: c.name == "api-server"):
            self._signal_group(component, signal.SIGTERM)
        # Task processes and the trigger runner live in process groups of their own: terminate them now
        # too, or the triggerer spends 10 s escalating from SIGINT before it exits.
        for proc in known:
            with contextlib.suppress(Exception):
                proc.terminate()
        started = time.monotonic()
        pending = list(live)
        while pending:
            for component in list(pending):
                assert component.popen is not None
                waited = time.monotonic() - started
                limit = min(grace, API_SERVER_GRACE_SECONDS) if component.name == "api-server" else grace
                if component.popen.poll() is None and waited < limit:
                    continue
                if component.popen.poll() is None:
                    self._signal_group(component, signal.SIGKILL)
                    self.stop_report[component.name] = f"killed after {waited:.1f} s"
                else:
                    self.stop_report[component.name] = f"exited after {waited:.1f} s"
                pending.remove(component)
            time.sleep(0.05)
        for component in self._components:
            # Helpers a component left in its group (e.g. LocalExecutor workers of a killed scheduler).
            self._signal_group(component, signal.SIGKILL)
            if component.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.popen.wait(timeout=5)
        swept = self._sweep(known)
        if swept:
            self.stop_report["stray processes"] = f"{swept} terminated"
        self.stop_report["total"] = f"{time.monotonic() - started:.1f} s"
        if self._given_home is None and not self.keep_home and self.home.exists():
            shutil.rmtree(self.home, ignore_errors=True)

    @staticmethod
    def _signal_group(component: _Component, sig: signal.Signals) -> None:
        if component.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.popen.pid, sig)

    def _descendants(self) -> list[Any]:
        import psutil

        found: list[Any] = []
        for component in self._components:
            if component.popen is None:
                continue
            with contextlib.suppress(psutil.Error):
                found.extend(psutil.Process(component.popen.pid).children(recursive=True))
        return found

    def _sweep(self, known: list[Any]) -> int:
        """Kill what survived the process groups (task and trigger runners live in groups of their own)."""
        import psutil

        strays = {p.pid: p for p in known}
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER_ENV) == self.instance_id:
                    strays[proc.pid] = proc
        alive = []
        for proc in strays.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.terminate()
                    alive.append(proc)
        _, still = psutil.wait_procs(alive, timeout=SWEEP_GRACE_SECONDS)
        for proc in still:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(still, timeout=5)
        return len(alive)

    def kill(self, name: str) -> int:
        """
        SIGKILL one component, its process group and every descendant, as a crash would; return its pid.

        :meth:`check_alive` then ignores that component (for high-availability tests: kill ``triggerer-2``
        and check that the other triggerer takes its triggers over).

        :param name: the component, e.g. ``triggerer`` or ``triggerer-2``.
        """
        import psutil

        component = next((c for c in self._components if c.name == name), None)
        if component is None or component.popen is None:
            raise LocalAirflowError(f"no component {name!r} was started")
        component.killed = True
        children: list[Any] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(component.popen.pid).children(recursive=True)
        self._signal_group(component, signal.SIGKILL)
        for proc in children:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        component.popen.wait(timeout=10)
        return component.popen.pid

    def running_processes(self) -> list[int]:
        """Return the pids of every live process this instance started (components and their children)."""
        import psutil

        pids = []
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if (
                    proc.environ().get(MARKER_ENV) == self.instance_id
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    pids.append(proc.pid)
        return pids

    # -- health -------------------------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise :class:`LocalAirflowError` with the log's tail when a component has exited."""
        for component in self._components:
            if component.popen is not None and not component.killed and component.popen.poll() is not None:
                raise LocalAirflowError(
                    f"Airflow {component.name} exited with code {component.popen.returncode}. "
                    f"Last lines of {component.log_path}:\n{_tail(component.log_path, LOG_EXCERPT_LINES)}"
                )

    def log_excerpt(self, lines: int = LOG_EXCERPT_LINES) -> str:
        """
        Return the last lines of every component's log, for failure messages.

        :param lines: lines per component.
        """
        parts = []
        for component in self._components:
            parts.append(
                f"--- {component.name} ({component.log_path}) ---\n{_tail(component.log_path, lines)}"
            )
        return "\n".join(parts)

    def health(self) -> dict[str, Any]:
        """Return the API server's ``/api/v2/monitor/health`` answer (a public endpoint: no login)."""
        import httpx

        answer = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=HTTP_TIMEOUT_SECONDS)
        answer.raise_for_status()
        return dict(answer.json())

    def wait_ready(self, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        """
        Wait until the API server answers and reports the metadatabase and every component healthy.

        :param timeout: seconds to wait before raising :class:`LocalAirflowError` (with the logs' tails).
        """
        import httpx

        deadline = time.monotonic() + timeout
        last: object = "no answer yet"
        warm_up: threading.Thread | None = None
        while True:
            self.check_alive()
            try:
                health = self.health()
            except (httpx.HTTPError, LocalAirflowError) as exc:
                last = exc
            else:
                last = health
                if warm_up is None:
                    # The API server answers: let it build its Execution API while the others start.
                    warm_up = threading.Thread(
                        target=self._warm_up_execution_api, args=(deadline,), name="warm-up", daemon=True
                    )
                    warm_up.start()
                wanted = ["metadatabase", "scheduler", "dag_processor"]
                if self.triggerers:
                    wanted.append("triggerer")
                healthy = all((health.get(name) or {}).get("status") == "healthy" for name in wanted)
                # /health reports only the latest triggerer; count the others' live jobs in the DB.
                if healthy and (
                    self.triggerers <= 1 or self._running_jobs("TriggererJob") >= self.triggerers
                ):
                    if warm_up is not None:
                        warm_up.join(timeout=max(0.0, deadline - time.monotonic()))
                    return
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    f"Airflow was not ready after {timeout:.0f} s (last health: "
                    f"{last}).\n{self.log_excerpt()}"
                )
            time.sleep(POLL_SECONDS)

    def _warm_up_execution_api(self, deadline: float) -> None:
        """
        Make the API server build its Execution API app now rather than on the first task's first call.

        That build takes seconds (10+ on 2 busy cores); paid by a task, it exceeds the task client's 5 s
        timeout, and the start of the task is retried and delayed by as much.
        """
        import httpx

        with contextlib.suppress(httpx.HTTPError):
            httpx.get(
                f"{self.api_url}/execution/health",
                timeout=max(HTTP_TIMEOUT_SECONDS, deadline - time.monotonic()),
            )

    def _running_jobs(self, job_type: str) -> int:
        rows = self.query(
            "SELECT COUNT(*) FROM job WHERE job_type = ? AND state = 'running'"
            " AND latest_heartbeat > datetime('now', '-30 seconds')",
            (job_type,),
        )
        return int(rows[0][0]) if rows else 0

    # -- REST API -----------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        import httpx

        if self._client is None:
            client = httpx.Client(base_url=self.api_url, timeout=HTTP_TIMEOUT_SECONDS)
            answer = client.post(
                "/auth/token", json={"username": ADMIN_USER, "password": self.admin_password}
            )
            if answer.status_code >= 400:
                client.close()
                raise LocalAirflowError(f"Logging in to the API server failed: HTTP {answer.status_code}")
            client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            self._client = client
        return self._client

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http().request(method, path, **kwargs)
        if response.status_code >= 400:
            raise LocalAirflowError(
                f"{method} {path} answered {response.status_code}: {response.text[:2000]}"
            )
        return response

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """
        Call the REST API (``/api/v2/...``) as an admin and return the decoded JSON.

        :param method: the HTTP method.
        :param path: the path, e.g. ``/api/v2/dags``.
        :param kwargs: passed to ``httpx.Client.request`` (``json=``, ``params=``).
        """
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def import_errors(self) -> list[dict[str, Any]]:
        """Return the DAG files that failed to import, with their tracebacks."""
        return list(self.api("GET", "/api/v2/importErrors", params={"limit": 100})["import_errors"])

    def wait_for_dags(self, *dag_ids: str, timeout: float = 120.0) -> None:
        """
        Wait until the dag-processor has parsed and stored the given DAGs.

        :param dag_ids: the DAGs to wait for.
        :param timeout: seconds before raising :class:`LocalAirflowError` (listing any import errors).
        """
        import httpx

        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while True:
            self.check_alive()
            still = []
            for dag_id in missing:
                try:
                    self.api("GET", f"/api/v2/dags/{quote(dag_id, safe='')}")
                except (LocalAirflowError, httpx.HTTPError):
                    still.append(dag_id)
            missing = still
            if not missing:
                return
            if time.monotonic() > deadline:
                errors = "; ".join(
                    f"{e.get('filename')}: {(e.get('stack_trace') or '').strip()[-800:]}"
                    for e in self._safe_import_errors()
                )
                raise LocalAirflowError(
                    f"DAG(s) {missing} not parsed after {timeout:.0f} s. Import errors: {errors or 'none'}.\n"
                    f"{_tail(self.process_log('dag-processor'), LOG_EXCERPT_LINES)}"
                )
            time.sleep(POLL_SECONDS)

    def _safe_import_errors(self) -> list[dict[str, Any]]:
        try:
            return self.import_errors()
        except Exception:
            return []

    def unpause(self, dag_id: str) -> None:
        """
        Unpause a DAG.

        :param dag_id: the DAG.
        """
        self.api("PATCH", f"/api/v2/dags/{quote(dag_id, safe='')}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """
        Create a manual run of a DAG now; return its run id.

        :param dag_id: the DAG.
        :param conf: the run's ``conf`` (overrides ``params``).
        :param run_id: the run id (default: Airflow's ``manual__<time>``).
        """
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        answer = self.api("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        return str(answer["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        """
        Return the state of a DAG run (``queued``, ``running``, ``success``, ``failed``).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        answer = self.api("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")
        return str(answer["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> str:
        """
        Wait until a DAG run ends; return its final state (``success`` or ``failed``).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param timeout: seconds before raising :class:`LocalAirflowError` (with the logs' tails).
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    f"Run {run_id} of {dag_id} still {state!r} after {timeout:.0f} s; task instances: "
                    f"{[(t.task_id, t.state) for t in self.task_instances(dag_id, run_id)]}\n"
                    f"{self.log_excerpt()}"
                )
            time.sleep(POLL_SECONDS)

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstanceInfo]:
        """
        Return the task instances of a run, with whether each deferred in its current try.

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        answer = self.api(
            "GET",
            f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances",
            params={"limit": 100},
        )
        infos = []
        for ti in answer["task_instances"]:
            files = self.task_log_files(dag_id, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
            infos.append(
                TaskInstanceInfo(
                    task_id=ti["task_id"],
                    map_index=int(ti["map_index"]),
                    state=ti["state"],
                    try_number=int(ti["try_number"]),
                    start_date=ti["start_date"],
                    end_date=ti["end_date"],
                    duration=ti["duration"],
                    deferred=ti["state"] == "deferred" or _shows_deferral(files),
                    log_files=tuple(files),
                )
            )
        return infos

    def task_log_files(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> list[Path]:
        """
        Return a try's log files: the worker's ``attempt=N.log``, then any ``attempt=N.log.trigger.*``.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the map index (-1 when not mapped).
        """
        folder = self.logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        if not folder.is_dir():
            return []
        name = f"attempt={try_number}.log"
        return sorted(
            (p for p in folder.iterdir() if p.name == name or p.name.startswith(name + ".")),
            key=lambda p: (p.name != name, p.name),
        )

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """
        Return a try's log records (worker and triggerer), decoded from Airflow 3's JSON-lines task logs.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the map index (-1 when not mapped).
        """
        records: list[dict[str, Any]] = []
        for path in self.task_log_files(dag_id, run_id, task_id, try_number, map_index):
            records.extend(read_log_records(path))
        return records

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """
        Return the deserialised value of one XCom.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task that pushed it.
        :param key: the XCom key.
        :param map_index: the map index (-1 when not mapped).
        """
        answer = self.api(
            "GET",
            f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
            f"{quote(task_id, safe='')}/xcomEntries/{quote(key, safe='')}",
            params={"map_index": map_index, "deserialize": True, "stringify": False},
        )
        return answer["value"]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """
        Run a read-only SQL query on the metadata DB (e.g. ``SELECT ... FROM trigger``).

        :param sql: the query.
        :param params: its parameters.
        """
        uri = f"file:{self.db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)) as db:
            return list(db.execute(sql, tuple(params)).fetchall())


def read_log_records(path: Path) -> Iterator[dict[str, Any]]:
    """
    Yield the records of an Airflow 3 task or trigger log (JSON lines; other lines become ``{"event": ...}``).

    :param path: the log file.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = {"event": line}
        if not isinstance(record, dict):
            record = {"event": line}
        yield record


def _shows_deferral(files: Sequence[Path]) -> bool:
    for path in files:
        if ".trigger." in path.name:
            return True
        with contextlib.suppress(OSError):
            if DEFERRED_LOG_MARKER in path.read_text(encoding="utf-8", errors="replace"):
                return True
    return False


__all__ = [
    "ADMIN_USER",
    "COMPONENTS",
    "FAST_CONFIG",
    "LocalAirflow",
    "LocalAirflowError",
    "TaskInstanceInfo",
    "cache_dir",
    "default_pycache_dir",
    "free_port",
    "read_log_records",
]
