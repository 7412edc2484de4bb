"""A miniwdl container backend (``wes_bridge_tes``) that runs every WDL task as a GA4GH TES task.

miniwdl keeps the workflow (the DAG, scatter, call caching off, retries, output collection) and
calls :meth:`TesContainer._run` once per task attempt, in a thread of its own. That submits one
TES task to the node's TES (found in the ``WES_BRIDGE_TES_*`` environment the driver sets,
credentials included; :meth:`wes_bridge.plugin.TesEndpoint.from_env`), waits for it and returns
its exit code.

Paths
    The TES shares the node's file system (the adapter refuses to run otherwise), so a task uses
    its files where they are, as ``cwltool --no-container`` does: miniwdl's in-container path of
    an input is the input's own path, and the task's directory is its "container directory"
    (its command runs in ``work/``, writes ``stdout.txt``/``stderr.txt`` beside it). The TES task
    declares each of them as a ``file://`` input or output at its own path, which tells a
    TES that runs executors on the host to use them in place, a sandboxing one which paths to
    show (inputs read-only), and a containerising one what to mount. Nothing is copied.

The image
    The executor's image is the task's ``runtime.docker`` (or ``container``), else miniwdl's
    default (``[task_runtime] defaults``). Whether the TES runs it or only records it is the
    TES's business and is in its service-info and in each task's ``system_logs``.

Cancel
    When miniwdl is told to stop (the node SIGTERMs the driver's process group on a cancel), the
    running TES tasks are cancelled and waited for before ``_run`` returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from WDL.runtime import config
from WDL.runtime.error import Interrupted
from WDL.runtime.task_container import TaskContainer

from wes_bridge.plugin import TesEndpoint
from wes_bridge.tes.client import TesClient, TesError

from . import TES_TASK_FILE

__all__ = ["BACKEND", "TesContainer"]

BACKEND = "wes_bridge_tes"
"""The backend's name in miniwdl's ``[scheduler] container_backend``."""
CFG_SECTION = "wes_bridge"
"""miniwdl configuration section of this backend (see :class:`TesContainer`)."""

_TERMINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
_GiB = 1 << 30


class TesContainer(TaskContainer):
    """miniwdl ``TaskContainer`` running each task attempt as one TES task.

    Configuration (``[wes_bridge]`` of the miniwdl config, or ``MINIWDL__WES_BRIDGE__*``):
    ``max_cpu``/``max_memory_gb`` cap what one task may ask for (default: this machine's),
    ``poll_max_seconds`` is the longest pause between checks of a running task (default 2).
    """

    _endpoint: ClassVar[TesEndpoint | None] = None
    _client: ClassVar[TesClient | None] = None
    _limits: ClassVar[dict[str, int]] = {}
    _poll_max: ClassVar[float] = 2.0
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def global_init(cls, cfg: config.Loader, logger: logging.Logger) -> None:
        endpoint = TesEndpoint.from_env()
        if endpoint is None:
            raise RuntimeError(
                "the wes_bridge_tes container backend needs the node's TES in the environment "
                "(WES_BRIDGE_TES_URL and the rest, set by the wes-bridge driver)"
            )
        if not endpoint.shared_filesystem:
            raise RuntimeError(
                "the wes_bridge_tes container backend needs a TES that shares this file system"
            )
        cls._endpoint = endpoint
        cls._client = endpoint.client()
        cls._poll_max = _cfg_float(cfg, "poll_max_seconds", 2.0)
        cls._limits = {
            "cpu": int(_cfg_float(cfg, "max_cpu", float(os.cpu_count() or 1))),
            "mem_bytes": int(_cfg_float(cfg, "max_memory_gb", _host_memory() / _GiB) * _GiB),
        }
        logger.info(
            "WDL tasks run as TES tasks on %s (%s)", endpoint.url, endpoint.description or "TES"
        )

    @classmethod
    def detect_resource_limits(cls, cfg: config.Loader, logger: logging.Logger) -> dict[str, int]:
        return dict(cls._limits)

    def __init__(self, cfg: config.Loader, run_id: str, host_dir: str) -> None:
        super().__init__(cfg, run_id, host_dir)
        # The task sees its directory at its own path (see the module documentation).
        self.container_dir = host_dir

    def add_paths(self, host_paths: Iterable[str]) -> None:
        for host_path in host_paths:
            if host_path in self.input_path_map:
                continue
            if not os.path.exists(host_path.rstrip("/")):
                from WDL.Error import InputError

                raise InputError("input path not found: " + host_path)
            self.input_path_map[host_path] = host_path
            self.input_path_map_rev[host_path] = host_path

    def copy_input_files(self, logger: logging.Logger) -> None:
        """Inputs are used in place; ``--copy-input-files`` has nothing to do here."""

    def _run(self, logger: logging.Logger, terminating: Callable[[], bool], command: str) -> int:
        client, endpoint = self._client, self._endpoint
        assert client is not None, "global_init was not called"
        assert endpoint is not None
        script = Path(self.host_dir) / "command"
        script.write_text(command, encoding="utf-8")
        work = self.host_work_dir()
        task = self._tes_task(endpoint, script, work)
        with self.task_running_context():
            task_id = client.create_task(task)
            (Path(self.host_dir) / TES_TASK_FILE).write_text(json.dumps({"id": task_id}))
            logger.info("TES task %s submitted (%s)", task_id, endpoint.url)
            state = self._wait(client, task_id, terminating, logger)
            if state not in _TERMINAL:  # told to stop: cancel, and wait for the end
                with contextlib.suppress(TesError):
                    client.cancel_task(task_id)
                with contextlib.suppress(TesError):
                    state = client.wait(task_id, timeout=60, poll=0.25)["state"]
                logger.info("TES task %s cancelled (%s)", task_id, state)
                return -15
        full = client.get_task(task_id, view="FULL")
        state = full.get("state", "UNKNOWN")
        exit_code = _exit_code(full)
        if state == "COMPLETE":
            return exit_code or 0
        if state == "EXECUTOR_ERROR":
            self._keep_stderr(full)
            logger.error("TES task %s ended EXECUTOR_ERROR (exit code %s)", task_id, exit_code)
            return exit_code if exit_code not in (None, 0) else 1
        reasons = "; ".join(_system_logs(full)) or "no reason given"
        self.failure_info = {"tes_task": task_id, "tes_state": state, "system_logs": reasons}
        logger.error("TES task %s ended %s: %s", task_id, state, reasons)
        raise Interrupted(f"TES task {task_id} ended {state}: {reasons}")

    # -- the TES task --------------------------------------------------------------------------
    def _tes_task(self, endpoint: TesEndpoint, script: Path, work: str) -> dict[str, Any]:
        values = self.runtime_values
        image = str(values.get("docker") or "ubuntu:20.04")
        inputs: list[dict[str, Any]] = [_in_place(str(script), "FILE")]
        for host_path in sorted(self.input_path_map):
            kind = "DIRECTORY" if host_path.endswith("/") else "FILE"
            inputs.append(_in_place(host_path.rstrip("/"), kind))
        stdout, stderr = self.host_stdout_txt(), self.host_stderr_txt()
        resources: dict[str, Any] = {"cpu_cores": int(values.get("cpu", 1))}
        memory = values.get("memory_reservation") or values.get("memory_limit")
        if memory:
            resources["ram_gb"] = round(int(memory) / _GiB, 3)
        if values.get("preemptible"):
            resources["preemptible"] = True
        env = {str(k): str(v) for k, v in (values.get("env") or {}).items()}
        step = self.run_id
        return {
            "name": step,
            "description": f"WDL task {step} ({self.host_dir})",
            "inputs": inputs,
            "outputs": [
                _in_place(work, "DIRECTORY"),
                _in_place(stdout, "FILE"),
                _in_place(stderr, "FILE"),
            ],
            "executors": [
                {
                    "image": image,
                    "command": ["/bin/bash", str(script)],
                    "workdir": work,
                    "stdout": stdout,
                    "stderr": stderr,
                    **({"env": env} if env else {}),
                }
            ],
            "resources": resources,
            "tags": endpoint.task_tags(step, wdl_task=step),
        }

    def _wait(
        self,
        client: TesClient,
        task_id: str,
        terminating: Callable[[], bool],
        logger: logging.Logger,
    ) -> str:
        """The task's state once it ended, or its last state when miniwdl was told to stop."""
        pause, started = 0.1, time.monotonic()
        state = "QUEUED"
        while not terminating():
            try:
                state = client.get_task(task_id)["state"]
            except TesError as exc:
                if exc.status_code is not None and exc.status_code < 500:
                    raise
                logger.warning("TES task %s: %s; asking again", task_id, exc)
            if state in _TERMINAL:
                return state
            # Check often at first (short tasks), then every tenth of the time it has taken.
            pause = min(self._poll_max, max(pause, (time.monotonic() - started) / 10))
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and not terminating():
                time.sleep(0.05)
        return state

    def _keep_stderr(self, task: dict[str, Any]) -> None:
        """The failed executor's stderr for miniwdl's error report, where the TES did not
        write it at its path (a TES that does not share the file system for logs)."""
        path = Path(self.host_stderr_txt())
        if path.exists() and path.stat().st_size:
            return
        for log in reversed(task.get("logs") or []):
            for executor in reversed(log.get("logs") or []):
                text = executor.get("stderr")
                if text:
                    path.write_text(text, encoding="utf-8")
                    return


def _in_place(path: str, kind: str) -> dict[str, Any]:
    return {"url": Path(path).as_uri(), "path": path, "type": kind}


def _exit_code(task: dict[str, Any]) -> int | None:
    for log in reversed(task.get("logs") or []):
        for executor in reversed(log.get("logs") or []):
            code = executor.get("exit_code")
            if code is not None:
                return int(code)
    return None


def _system_logs(task: dict[str, Any]) -> list[str]:
    return [line for log in task.get("logs") or [] for line in log.get("system_logs") or []]


def _cfg_float(cfg: config.Loader, key: str, default: float) -> float:
    if cfg.has_option(CFG_SECTION, key):
        return float(cfg.get(CFG_SECTION, key))
    return default


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * _GiB
