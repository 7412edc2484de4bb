"""Nextflow adapter for wes-bridge: DSL2 pipelines (``workflow_type`` NFL) on the node's TES.

Registered through the ``wes_bridge.engines`` entry point ``nextflow`` and written only against
:mod:`wes_bridge.plugin`.

Two ways to the TES
    *Per process*: when the node has a Nextflow TES executor plugin (``nf-ga4gh``, pre-seeded
    in ``engines.nextflow.plugins_dir``, Nextflow's ``NXF_PLUGINS_DIR``), Nextflow runs in the
    driver with ``process.executor = 'tes'`` pointed at the node's TES, so every process task is
    a TES task; the run's TES credentials reach Nextflow in its environment, never in the
    configuration file the node writes into the run directory. *One task*: without that
    plugin (it is not on Maven Central, and an offline node cannot download it), the driver
    submits Nextflow itself as one TES task on the node's TES, and the processes run inside it
    with Nextflow's local executor (at most ``driver_cpus`` at a time). The run log says
    which. Either way Nextflow's home (``HOME``, ``NXF_HOME``) is the run's own, so a TES that
    sandboxes its tasks (``host-sandbox``) shows the one-task Nextflow nothing of the node
    user's home but the Nextflow installation.

Progress
    Nextflow posts ``-with-weblog`` events to a listener of the driver (a secret path on
    ``weblog_host``); every process task is listed in ``GET /runs/{id}/tasks`` as it starts and
    ends, with its ``.command.out``/``.command.err`` as its logs. Nextflow's console output is
    the run's stderr, as it goes; its trace, report and timeline are kept in the run directory
    (``logs/``), and its own log is ``logs/nextflow.log``.

Files
    Nextflow works in ``work/nextflow``, a mirror of the attachments (hard links), so relative
    paths in ``workflow_params`` and the pipeline see the attached files; its task work
    directories are ``work/nextflow-work``. ``params.outdir`` is the run's outputs directory
    (any ``outdir`` a client sends is replaced, and the run log says so); what the pipeline
    publishes there is the run's ``outputs`` (files published as links are replaced by the
    files, links leading out of the run are dropped), with sha1 checksums.

Failures and cancel
    A failed process makes the run EXECUTOR_ERROR with that process's exit code and the tail
    of its stderr. Cancelling the run cancels the Nextflow task (and with it the processes).
    Nextflow always runs with ``-resume`` in the run's own directory: a driver started again
    for the same run picks up the tasks that had completed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import Field, model_validator

from wes_bridge.plugin import (
    Availability,
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    EngineParameters,
    EngineSettings,
    FinalState,
    RunSpec,
    TesEndpoint,
    flag_value,
    from_command_line,
)

__all__ = [
    "NextflowAdapter",
    "NextflowParameters",
    "NextflowSettings",
    "find_nextflow",
    "installation",
    "node_config",
    "plugin_id",
]

INSTALL_HINT = "scripts/install-nextflow (from the wes-bridge source) installs one"
DEFAULT_HOME = Path.home() / ".local" / "share" / "wes-bridge" / "nextflow"
TES_PLUGIN = "nf-ga4gh"
WEBLOG_PLUGIN = "nf-weblog"
_TERMINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
_POLL = 0.5
_MAX_REPORTED_FAILURES = 5
# Nextflow's own command-line options the node decides; a client may send them, they are
# ignored (the run log says so).
_NODE_DECIDES = frozenset(
    {
        "c",
        "config",
        "params-file",
        "w",
        "work-dir",
        "resume",
        "with-weblog",
        "with-trace",
        "with-report",
        "with-timeline",
        "with-dag",
        "ansi-log",
        "log",
        "bg",
        "q",
        "quiet",
        "o",
        "output-dir",
    }
)
_FLAG_FIELDS = {"profile": "profile", "entry": "entry", "stub-run": "stub_run", "stub": "stub_run"}


def _nextflow_option(option: str, value: Any) -> dict[str, Any] | None:
    if option in _NODE_DECIDES:
        return {}
    if option not in _FLAG_FIELDS:
        return None  # refused, under its own name
    name = _FLAG_FIELDS[option]
    return {name: flag_value(value) if name == "stub_run" else value}


def find_nextflow(configured: str | None = None) -> str | None:
    """The ``nextflow`` command to run: the configured one, else one on PATH, else the one
    ``scripts/install-nextflow`` made (``$WES_BRIDGE_NEXTFLOW_HOME``, else its default)."""
    if configured:
        return shutil.which(configured)
    found = shutil.which("nextflow")
    if found:
        return found
    home = os.environ.get("WES_BRIDGE_NEXTFLOW_HOME")
    for prefix in ([Path(home)] if home else []) + [DEFAULT_HOME]:
        candidate = prefix / "bin" / "nextflow"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def installation(command: str | None) -> Path | None:
    """The directory ``scripts/install-nextflow`` made (``bin/nextflow``, ``lib/``,
    ``VERSION``) if ``command`` is its launcher, else None. A TES that sandboxes its tasks shows
    it read-only, so Nextflow can run as a task (see :mod:`wes_bridge.tes.backends`)."""
    if command is None:
        return None
    home = Path(command).resolve().parent.parent
    if (home / "VERSION").is_file() and (home / "lib").is_dir() and (home / "bin").is_dir():
        return home
    return None


class NextflowSettings(EngineSettings):
    """Operator settings (``engines.nextflow`` in the config file)."""

    command: str | None = None
    """The ``nextflow`` command (default: on PATH, else where scripts/install-nextflow put it)."""
    plugins_dir: Path | None = None
    """Nextflow's ``NXF_PLUGINS_DIR``, pre-seeded for an offline node. With an ``nf-ga4gh-*``
    plugin in it, every process is a TES task."""
    offline: bool = True
    """``NXF_OFFLINE``: Nextflow downloads no plugins or pipelines at run time."""
    weblog_host: str = "127.0.0.1"
    """Where the driver listens for Nextflow's weblog; the Nextflow task must reach it."""
    driver_cpus: int = Field(2, ge=1)
    """Cores of the one-task Nextflow (its local executor runs this many processes at once)."""
    driver_ram_gb: float = Field(2.0, gt=0)
    """Memory of the one-task Nextflow, for the TES (the JVM and its processes)."""
    image: str = "docker.io/nextflow/nextflow:24.10.0"
    """Image of the one-task Nextflow where the TES runs containers."""
    java_home: Path | None = None
    """``JAVA_HOME`` for Nextflow (default: the node's own, if set)."""


class NextflowParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters`` accepted for Nextflow runs.

    Keys may also be given as Nextflow's own options (``{"-profile": "test"}``,
    ``{"-stub-run": null}``). The options the node decides (``-c``, ``-params-file``,
    ``-work-dir``, ``-resume``, ``-with-weblog``, ``-with-trace``, ``-with-report``,
    ``-with-timeline``, ``-ansi-log``, ``-output-dir``, ...) are accepted and ignored; any other
    option is refused like any unknown key.
    """

    @model_validator(mode="before")
    @classmethod
    def _from_command_line_options(cls, data: Any) -> Any:
        return from_command_line(data, "-", _nextflow_option)

    profile: str | None = Field(None, pattern=r"^[A-Za-z0-9_.,-]+$")
    """Configuration profiles of the pipeline's own config (nextflow -profile)."""
    entry: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The workflow to run, if not the pipeline's main one (nextflow -entry)."""
    stub_run: bool = False
    """Run the processes' ``stub:`` blocks instead of their scripts (nextflow -stub-run)."""


def plugin_id(plugins_dir: Path | None, name: str) -> str | None:
    """``<name>@<version>`` if the plugins directory holds that plugin (its newest version),
    else None. Offline, Nextflow loads only plugins named with their version."""
    if plugins_dir is None or not plugins_dir.is_dir():
        return None
    versions = sorted(
        p.name[len(name) + 1 :]
        for p in plugins_dir.iterdir()
        if p.is_dir() and p.name.startswith(name + "-") and p.name[len(name) + 1 :][:1].isdigit()
    )
    return f"{name}@{versions[-1]}" if versions else None


def _groovy(value: str) -> str:
    """A Groovy single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


# The variables TesEndpoint.credential_env gives, which the node's configuration has Nextflow
# read (System.getenv works with both of Nextflow's configuration parsers; env() is not there
# in 24.10).
_CREDENTIALS = {
    "token": "WES_BRIDGE_TES_TOKEN",
    "username": "WES_BRIDGE_TES_USERNAME",
    "password": "WES_BRIDGE_TES_PASSWORD",
}


def node_config(
    *,
    outputs_dir: Path,
    logs_dir: Path,
    plugin: str | None,
    tes: TesEndpoint,
    cpus: int,
    weblog_plugin: str | None = None,
) -> str:
    """The configuration the node adds over the pipeline's own (``-c``). It holds no
    credential: with the TES executor plugin, Nextflow reads them from the environment
    (:meth:`TesEndpoint.credential_env <wes_bridge.plugin.TesEndpoint.credential_env>`)."""
    plugins = [p for p in (plugin, weblog_plugin) if p]
    lines = [
        "// Written by wes-bridge for this run; it overrides the pipeline's own configuration.",
        f"params.outdir = {_groovy(str(outputs_dir))}",
    ]
    for scope, name in (
        ("trace", "trace.txt"),
        ("report", "report.html"),
        ("timeline", "timeline.html"),
    ):
        where = _groovy(str(logs_dir / name))
        lines.append(f"{scope} {{ enabled = true; overwrite = true; file = {where} }}")
    if plugins:
        lines.append("plugins { " + "; ".join(f"id {_groovy(p)}" for p in plugins) + " }")
    if plugin is not None:
        endpoint = tes.url.removesuffix("/").removesuffix("/ga4gh/tes/v1")
        lines += [
            "process.executor = 'tes'",
            f"tes.endpoint = {_groovy(endpoint)}",
        ]
        # The credentials stay in Nextflow's environment, never in this file: the run's
        # directory, where it lies, is open to the run's own tasks.
        if tes.username and tes.password:
            lines += [
                f"tes.basicUsername = System.getenv({_groovy(_CREDENTIALS['username'])})",
                f"tes.basicPassword = System.getenv({_groovy(_CREDENTIALS['password'])})",
            ]
        if tes.token:
            lines.append(f"tes.oauthToken = System.getenv({_groovy(_CREDENTIALS['token'])})")
    else:
        lines += ["process.executor = 'local'", f"executor {{ name = 'local'; cpus = {cpus} }}"]
    return "\n".join(lines) + "\n"


@contextmanager
def _sigterm_flag() -> Iterator[list[bool]]:
    """A flag set when the driver is asked to stop (SIGTERM, SIGINT), instead of dying."""
    flag = [False]

    def stop(signum: int, frame: FrameType | None) -> None:
        flag[0] = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class NextflowAdapter(EngineAdapter):
    engine = "nextflow"
    workflow_type = "NFL"
    workflow_type_versions = ("DSL2",)
    """DSL2 pipelines (Nextflow 22.12 and later run nothing else)."""
    settings_model = NextflowSettings
    parameters_model = NextflowParameters
    supports_resume = True

    settings: NextflowSettings

    def _command(self) -> str | None:
        return find_nextflow(self.settings.command)

    def engine_version(self) -> str:
        command = self._command()
        if command is None:
            return "not installed"
        home = installation(command)
        if home is not None:
            return (home / "VERSION").read_text().strip()
        try:
            done = subprocess.run(
                [command, "-version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        for line in done.stdout.splitlines():
            words = line.split()
            if words[:1] == ["version"] and len(words) > 1:
                return words[1]
        return "unknown"

    def availability(self) -> Availability:
        if self._command() is None:
            return Availability(False, f"no nextflow command found; {INSTALL_HINT}")
        java = self.settings.java_home or os.environ.get("JAVA_HOME")
        if shutil.which("java") is None and not java:
            return Availability(False, "Java is not on PATH (Nextflow needs Java 17 or later)")
        return Availability(True)

    def sandbox_read_only(self) -> tuple[Path, ...]:
        """Java and the Nextflow that scripts/install-nextflow made (that directory only,
        never the home it lies in), for the one-task mode in the host sandbox."""
        paths: list[Path] = []
        java = self.settings.java_home or os.environ.get("JAVA_HOME")
        if java:
            paths.append(Path(java))
        home = installation(self._command())
        if home is not None:
            paths.append(home)
        return tuple(paths)

    def execution_description(self) -> str:
        if plugin_id(self.settings.plugins_dir, TES_PLUGIN):
            return "every Nextflow process task is a task on the node's TES (nf-ga4gh)"
        return (
            "Nextflow runs as one task on the node's TES, its processes inside it (no Nextflow "
            "TES executor plugin on this node)"
        )

    def validate(self, run: RunSpec) -> list[str]:
        problems = run.workflow_file_problems("the pipeline")
        if not isinstance(run.params, dict):
            problems.append("workflow_params must be a JSON object (the pipeline's params)")
        return problems

    # -- the run ------------------------------------------------------------------------------
    def drive(self, ctx: DriverContext) -> DriverOutcome:
        from wes_bridge.results import describe_outputs, materialise_links, mirror

        from .progress import ProcessTasks, WeblogListener, WorkDirWatcher

        run = ctx.run
        params: NextflowParameters = run.engine_parameters  # type: ignore[assignment]
        command = self._command()
        if command is None:
            return DriverOutcome("SYSTEM_ERROR", system_logs=[f"Nextflow: {INSTALL_HINT}"])
        if ctx.tes is None:
            return DriverOutcome(
                "SYSTEM_ERROR", system_logs=["Nextflow runs on a TES; this node has none"]
            )
        plugin = plugin_id(self.settings.plugins_dir, TES_PLUGIN)
        weblog_plugin = plugin_id(self.settings.plugins_dir, WEBLOG_PLUGIN)
        if plugin is None and not (ctx.tes.shared_filesystem and not ctx.tes.uses_containers):
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    "without a Nextflow TES executor plugin (nf-ga4gh in engines.nextflow."
                    "plugins_dir), Nextflow runs as one task on the TES, which must run it on "
                    "a file system shared with this node and without a container (the embedded "
                    "TES; an external one with tes.shared_filesystem: true and "
                    "tes.uses_containers: false)"
                ],
            )
        launch = ctx.work_dir / "nextflow"
        logs = ctx.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if not (ctx.resumed and launch.is_dir()):
            mirror(run.workflow_dir, launch)  # a resumed run keeps the lost driver's
        notes: list[str] = []
        pipeline_params = dict(run.params)
        if "outdir" in pipeline_params:
            notes.append(
                f"params.outdir {pipeline_params['outdir']!r} was replaced by the run's "
                "outputs directory"
            )
        pipeline_params["outdir"] = str(ctx.outputs_dir)
        params_file = ctx.run_dir / "nextflow-params.json"
        params_file.write_text(json.dumps(pipeline_params), encoding="utf-8")
        config = ctx.run_dir / "wes-bridge.config"
        config.write_text(
            node_config(
                outputs_dir=ctx.outputs_dir,
                logs_dir=logs,
                plugin=plugin,
                tes=ctx.tes,
                cpus=self.settings.driver_cpus,
                weblog_plugin=weblog_plugin,
            ),
            encoding="utf-8",
        )
        config.chmod(0o600)
        script = launch / run.workflow_path.relative_to(run.workflow_dir)
        tes_url = ctx.tes.url
        reporter = ProcessTasks(
            ctx.tasks, tes_uri=(lambda native: f"{tes_url}/tasks/{native}") if plugin else None
        )
        work = ctx.work_dir / "nextflow-work"
        argv = [
            command,
            "-log",
            str(logs / "nextflow.log"),
            "run",
            str(script),
            "-params-file",
            str(params_file),
            "-c",
            str(config),
            "-work-dir",
            str(work),
            "-ansi-log",
            "false",
        ]
        if ctx.resumed and (launch / ".nextflow" / "history").is_file():
            argv.append("-resume")  # a driver started again: keep what had completed
            notes.append(
                f"resumed (start {ctx.resumed + 1}) after the run's earlier engine driver was "
                "lost: the tasks that had completed were not run again"
            )
        if params.profile:
            argv += ["-profile", params.profile]
        if params.entry:
            argv += ["-entry", params.entry]
        if params.stub_run:
            argv.append("-stub-run")
        how = (
            f"every process task is a task on {ctx.tes.description or 'the TES'} "
            f"({ctx.tes.url}) through {plugin}"
            if plugin
            else f"Nextflow runs as one task on {ctx.tes.description or 'the TES'} "
            f"({ctx.tes.url}), its processes inside it with the local executor (at most "
            f"{self.settings.driver_cpus} at once): this node has no Nextflow TES executor "
            "plugin"
        )
        notes.insert(0, how)
        version = self.engine_version()
        print(f"wes-bridge: Nextflow {version}; {how}", file=sys.stderr, flush=True)
        env = self._environment(ctx)
        with ExitStack() as stack:
            if weblog_plugin:
                weblog = stack.enter_context(
                    WeblogListener(reporter.handle, host=self.settings.weblog_host)
                )
                argv += ["-with-weblog", weblog.url]
                shown = [a if a != weblog.url else "<the driver's weblog listener>" for a in argv]
            else:
                work.mkdir(parents=True, exist_ok=True)
                watcher = WorkDirWatcher(work, reporter)
                if ctx.resumed:
                    watcher.close_previous()
                stack.enter_context(watcher)
                shown = list(argv)
            shown[0] = "nextflow"
            if plugin:
                # The credentials only for Nextflow in the driver: the one-task way's
                # environment is the TES task's, kept in its record.
                here = {**env, **ctx.tes.credential_env()}
                state, exit_code, detail = self._run_here(argv, launch, here)
            else:
                state, exit_code, detail = self._run_as_task(ctx, ctx.tes, argv, launch, env, logs)
        notes += detail
        notes.append("Nextflow's trace, report, timeline and log are kept in the run's logs/")
        dropped = materialise_links(ctx.outputs_dir, ctx.run_dir)
        if dropped:
            notes.append(
                "links out of the run left out of the outputs: " + ", ".join(sorted(dropped))
            )
        outputs = describe_outputs(ctx.outputs_dir)
        if state == "COMPLETE":
            return DriverOutcome(state, outputs=outputs, exit_code=0, cmd=shown, system_logs=notes)
        if state == "EXECUTOR_ERROR" and reporter.failures:
            failures = reporter.failures
            shown_failures = failures[-_MAX_REPORTED_FAILURES:]
            if len(failures) > len(shown_failures):
                earlier = len(failures) - len(shown_failures)
                notes.append(f"{earlier} earlier failed tasks not shown")
            notes += [f.describe() for f in shown_failures]
            codes = [f.exit_code for f in failures if f.exit_code is not None]
            if codes:
                exit_code = codes[0]  # the failing process's own, as the run's
        return DriverOutcome(
            state, outputs=outputs, exit_code=exit_code, cmd=shown, system_logs=notes
        )

    def _environment(self, ctx: DriverContext) -> dict[str, str]:
        """Nextflow's environment: none of the node's own configuration or credentials. Its
        home (``HOME`` and ``NXF_HOME``: Nextflow's config, secrets, assets and plugins, and
        what its processes keep in ``~``) is the run's own, not the node user's."""
        home = str(ctx.work_dir / "nextflow-home")
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": home,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "NXF_HOME": home,
            "NXF_TEMP": str(ctx.work_dir / "tmp"),
            "TMPDIR": str(ctx.work_dir / "tmp"),
            "NXF_ANSI_LOG": "false",
            "NXF_DISABLE_CHECK_LATEST": "true",
        }
        for made in (ctx.work_dir / "tmp", Path(home)):
            made.mkdir(parents=True, exist_ok=True)
        if self.settings.offline:
            env["NXF_OFFLINE"] = "true"
        if self.settings.plugins_dir is not None:
            env["NXF_PLUGINS_DIR"] = str(self.settings.plugins_dir)
        java_home = self.settings.java_home or os.environ.get("JAVA_HOME")
        if java_home:
            env["JAVA_HOME"] = str(java_home)
        return env

    @staticmethod
    def _run_here(
        argv: list[str], launch: Path, env: dict[str, str]
    ) -> tuple[FinalState, int | None, list[str]]:
        """Nextflow in the driver (its processes are TES tasks); its console is the run's."""
        with _sigterm_flag() as stop:
            proc = subprocess.Popen(argv, cwd=launch, env=env, stdin=subprocess.DEVNULL)
            signalled = False
            while proc.poll() is None:
                if stop[0] and not signalled:
                    proc.send_signal(signal.SIGTERM)  # Nextflow cancels its tasks
                    signalled = True
                time.sleep(_POLL)
        if stop[0]:
            return "CANCELED", proc.returncode, ["cancelled: Nextflow was stopped"]
        if proc.returncode == 0:
            return "COMPLETE", 0, []
        return "EXECUTOR_ERROR", proc.returncode, [f"Nextflow exited with code {proc.returncode}"]

    def _run_as_task(
        self,
        ctx: DriverContext,
        tes: TesEndpoint,
        argv: list[str],
        launch: Path,
        env: dict[str, str],
        logs: Path,
    ) -> tuple[FinalState, int | None, list[str]]:
        """Nextflow as one TES task; its console, followed here, is the run's stderr."""
        from wes_bridge.tes.client import TesError, task_exit_code

        console = logs / "nextflow-console.txt"
        console.touch()
        shell = (
            f"cd {shlex.quote(str(launch))} && "
            f"exec {shlex.join(argv)} >>{shlex.quote(str(console))} 2>&1"
        )
        task = {
            "name": f"nextflow {ctx.run.workflow_url}",
            "description": "Nextflow for a wes-bridge run; its processes run inside this task",
            "executors": [
                {
                    "image": self.settings.image,
                    "command": ["/bin/sh", "-c", shell],
                    "env": env,
                }
            ],
            "resources": {
                "cpu_cores": self.settings.driver_cpus,
                "ram_gb": self.settings.driver_ram_gb,
            },
            "tags": tes.task_tags("nextflow", wes_engine="nextflow"),
        }
        client = tes.client(timeout=60.0, retries=8)
        try:
            task_id = client.create_task(task)
        except TesError as exc:
            return "SYSTEM_ERROR", None, [f"the TES refused the Nextflow task: {exc}"]
        notes = [f"Nextflow is TES task {task_id}"]
        state = "QUEUED"
        final: dict[str, Any] = {}
        with _sigterm_flag() as stop, open(console, "rb") as follow:
            cancelled = False
            while True:
                self._copy_new(follow)
                if stop[0] and not cancelled:
                    cancelled = True
                    try:
                        client.cancel_task(task_id)
                    except TesError as exc:
                        notes.append(f"could not cancel TES task {task_id}: {exc}")
                try:
                    final = client.get_task(task_id, "BASIC")
                    state = str(final.get("state") or state)
                except TesError as exc:
                    notes.append(f"could not read TES task {task_id}: {exc}")
                    if not stop[0]:
                        time.sleep(5)
                        continue
                if state in _TERMINAL:
                    break
                time.sleep(_POLL)
            self._copy_new(follow)
        client.close()
        code = task_exit_code(final)
        if cancelled or state in ("CANCELED", "CANCELING"):
            return "CANCELED", code, [*notes, "cancelled: the Nextflow task was cancelled"]
        if state == "COMPLETE":
            return "COMPLETE", 0, notes
        if state == "EXECUTOR_ERROR":
            return "EXECUTOR_ERROR", code, [*notes, f"Nextflow exited with code {code}"]
        system = [str(s) for log in final.get("logs") or [] for s in log.get("system_logs") or []]
        return "SYSTEM_ERROR", code, [*notes, f"the Nextflow task ended {state}", *system[-3:]]

    @staticmethod
    def _copy_new(follow: Any) -> None:
        chunk = follow.read()
        if chunk:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
