#!/usr/bin/env python3
"""Run the CWL conformance suite through a WES server (or cwltool directly) with cwltest.

Two modes:

``--tool toil-wes-cwl-runner`` (default)
    cwltest drives Toil's WES client ``toil-wes-cwl-runner``, which uploads each
    test's workflow + input files to the WES server at ``--wes-url``, polls the
    run and prints the run log's ``outputs`` object.  cwltest then compares that
    object with the expected output; File/Directory ``location``/``path`` values
    must name files that exist on *this* machine (cwltest re-reads them to check
    checksum and size), so the server must run on the same host and return
    ``file://`` locations (or absolute paths) of files it keeps after the run.

``--tool cwltool``
    The direct baseline: cwltest drives ``cwltool --no-container``.

Toil pins an exact cwltool release, so the WES client usually lives in its own
virtualenv.  The script therefore takes the client's path (``--runner``) and by
default uses the ``cwltest`` and ``cwltool`` found next to it, putting that bin
directory first on PATH (``toil-wes-cwl-runner`` shells out to ``cwltool
--print-deps`` to find the files to attach).

The results go to a JUnit XML file; a summary line ``N passed, M failed`` (and
``, K skipped`` when cwltest reports unsupported features) is printed, followed
by the failing tests' short names.  Exit status: 0 when nothing failed (or with
``--allow-failures``), 1 when some test failed, 2 on a usage/setup error.

Optionally ``--server-cmd`` starts the WES server first, e.g.::

    run_conformance.py --runner ~/toilvenv/bin/toil-wes-cwl-runner \\
        --server-cmd 'wes-bridge serve --host 127.0.0.1 --port {port} --data-dir {data_dir}'

Only the standard library is used, so this file can be imported from a pytest
test (see :func:`run_conformance`) without extra dependencies.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

#: toil-wes-cwl-runner (wes_client.util.WESClient) hard-codes this API prefix.
WES_PREFIX = "/ga4gh/wes/v1"
TOIL_RUNNER = "toil-wes-cwl-runner"
CWLTOOL = "cwltool"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SUITE = REPO_ROOT.parent / "shared" / "cwl-v1.2-conformance"


class SetupError(Exception):
    """A problem with the arguments or the environment (not a test failure)."""


@dataclasses.dataclass
class CaseOutcome:
    name: str  # cwltest short name (the test's ``id``)
    number: str  # position in the full suite, e.g. "76"
    doc: str
    status: str  # "passed" | "failed" | "error" | "skipped"
    message: str = ""
    seconds: float = 0.0
    stderr: str = ""  # the runner's stderr, as cwltest recorded it


@dataclasses.dataclass
class ConformanceResult:
    outcomes: list[CaseOutcome]
    junit_xml: Path
    returncode: int  # cwltest's own exit status

    @property
    def passed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "passed"]

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "error")]

    @property
    def skipped(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "skipped"]

    def summary_line(self) -> str:
        line = f"{len(self.passed)} passed, {len(self.failed)} failed"
        if self.skipped:
            line += f", {len(self.skipped)} skipped"
        return line


@dataclasses.dataclass
class Config:
    tool: str = TOIL_RUNNER  # TOIL_RUNNER or CWLTOOL
    wes_url: str | None = None
    suite_dir: Path = DEFAULT_SUITE
    test_file: str = "conformance_tests.yaml"
    tags: str | None = "required"
    exclude_tags: str | None = None
    numbers: str | None = None  # cwltest -n
    names: str | None = None  # cwltest -s
    exclude_names: str | None = None  # cwltest -S
    jobs: int = 2
    timeout: int = 600
    runner: str | None = None  # path to toil-wes-cwl-runner / cwltool
    cwltest: str | None = None
    tool_args: list[str] = dataclasses.field(default_factory=list)
    junit_xml: Path | None = None
    verbose: bool = False
    server_cmd: str | None = None
    server_data_dir: Path | None = None
    server_log: Path | None = None
    server_startup_timeout: float = 60.0


# --------------------------------------------------------------------------- helpers


def find_executable(name_or_path: str | None, default_name: str, near: str | None = None) -> str:
    """Resolve an executable: explicit path, else next to ``near``, else PATH."""
    if name_or_path:
        if os.sep in name_or_path:
            path = Path(name_or_path).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise SetupError(f"not an executable file: {name_or_path}")
            return str(path.absolute())
        found = shutil.which(name_or_path)
        if not found:
            raise SetupError(f"{name_or_path!r} not found on PATH")
        return found
    if near:
        candidate = Path(near).parent / default_name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(default_name)
    if not found:
        raise SetupError(f"{default_name!r} not found (pass its path explicitly)")
    return found


def split_wes_url(wes_url: str) -> str:
    """Return the ``scheme://host:port`` endpoint that toil-wes-cwl-runner expects.

    The client appends ``/ga4gh/wes/v1/...`` itself, so the server must be mounted
    exactly there; a URL with any other path cannot be used with this client.
    """
    parts = urllib.parse.urlsplit(wes_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SetupError(f"WES URL must be http(s)://host:port{WES_PREFIX}, got {wes_url!r}")
    path = parts.path.rstrip("/")
    if path not in ("", WES_PREFIX):
        raise SetupError(
            f"toil-wes-cwl-runner only talks to servers mounted at {WES_PREFIX}; "
            f"got path {parts.path!r}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def service_info_url(wes_url: str) -> str:
    return split_wes_url(wes_url) + WES_PREFIX + "/service-info"


def wait_for_service(wes_url: str, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    """Poll GET /service-info until it answers 200 (or the server process dies)."""
    url = service_info_url(wes_url)
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SetupError(f"WES server exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    json.load(resp)
                    return
                last_error = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise SetupError(f"WES server at {url} not ready after {timeout:.0f}s: {last_error}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def started_server(cfg: Config) -> Iterator[str]:
    """Start ``cfg.server_cmd`` (if any) and yield the WES base URL to test."""
    if not cfg.server_cmd:
        if not cfg.wes_url:
            raise SetupError("--wes-url (or --server-cmd) is required for toil-wes-cwl-runner")
        wait_for_service(cfg.wes_url, 10.0, None)
        yield cfg.wes_url
        return

    with contextlib.ExitStack() as stack:
        if cfg.server_data_dir is not None:
            data_dir = cfg.server_data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        else:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wes-conf-")))
        port = urllib.parse.urlsplit(cfg.wes_url).port if cfg.wes_url else None
        port = port or free_port()
        wes_url = cfg.wes_url or f"http://127.0.0.1:{port}{WES_PREFIX}"
        argv = [a.format(port=port, data_dir=data_dir) for a in shlex.split(cfg.server_cmd)]
        log_path = cfg.server_log or data_dir / "server.log"
        log = stack.enter_context(open(log_path, "wb"))
        print(f"starting WES server: {shlex.join(argv)} (log: {log_path})", file=sys.stderr)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_service(wes_url, cfg.server_startup_timeout, proc)
            yield wes_url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def parse_junit(path: Path) -> list[CaseOutcome]:
    """Read cwltest's JUnit XML (one <testcase> per test; ``file`` = short name)."""
    outcomes: list[CaseOutcome] = []
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            elem = case.find(tag)
            if elem is not None:
                status = "failed" if tag == "failure" else tag
                message = (elem.get("message") or elem.text or "").strip()
                break
        url = case.get("url") or ""
        outcomes.append(
            CaseOutcome(
                name=case.get("file") or case.get("name") or "?",
                number=url.rsplit("#", 1)[-1] if "#" in url else "",
                doc=case.get("name") or "",
                status=status,
                message=message,
                seconds=float(case.get("time") or 0.0),
                stderr=case.findtext("system-err") or "",
            )
        )
    return outcomes


def relabel_junit(path: Path, selection: list[int], listing: list[tuple[str, str]]) -> None:
    """Fix cwltest's labels of a partial run: it names the k-th result after the k-th test."""
    tree = ET.parse(path)
    cases = list(tree.getroot().iter("testcase"))
    if len(cases) != len(selection):
        raise SetupError(f"{len(cases)} results in {path} for {len(selection)} selected tests")
    for case, number in zip(cases, selection, strict=True):
        name, doc = listing[number - 1]
        case.set("file", name)
        case.set("name", doc)
        case.attrib.pop("class", None)  # the tags of another test
        url = case.get("url") or "cwltest:#"
        case.set("url", f"{url.rsplit('#', 1)[0]}#{number}")
    tree.write(path, encoding="utf-8", xml_declaration=True)


# --------------------------------------------------------------------------- main logic


def expand_numbers(spec: str) -> list[int]:
    """cwltest's ``-n`` syntax ("1,3-6") to 1-based numbers, in the given order."""
    result: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        result.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return result


def list_tests(cfg: Config, cwltest_exe: str, suite: Path) -> list[tuple[str, str]]:
    """(short name, doc) of each test under the tag filter, numbered from 1 as by cwltest."""
    argv = [cwltest_exe, "--test", cfg.test_file, "-l"]
    if cfg.tags:
        argv += ["--tags", cfg.tags]
    if cfg.exclude_tags:
        argv += ["--exclude-tags", cfg.exclude_tags]
    out = subprocess.run(argv, cwd=suite, capture_output=True, text=True, check=True).stdout
    tests: list[tuple[str, str]] = []
    for line in out.splitlines():
        match = re.match(r"\[(\d+)\] (?:(\S+): )?(.*)$", line)
        if match:
            tests.append((match.group(2) or match.group(1), match.group(3)))
    return tests


def select_tests(cfg: Config, listing: list[tuple[str, str]]) -> list[int] | None:
    """1-based numbers of the selected tests, or None for all of them.

    Done here rather than with cwltest's own -s/-S because cwltest 2.x labels the
    JUnit test cases of a partial run by position (the k-th result gets the k-th
    test's name), so we pass it explicit numbers and relabel the results ourselves.
    """
    if not (cfg.numbers or cfg.names or cfg.exclude_names):
        return None
    index = {name: i + 1 for i, (name, _) in enumerate(listing)}

    def by_name(spec: str) -> list[int]:
        unknown = [n for n in spec.split(",") if n not in index]
        if unknown:
            raise SetupError(f"unknown test name(s) for these tags: {', '.join(unknown)}")
        return [index[n] for n in spec.split(",")]

    chosen: list[int] = []
    if cfg.numbers:
        chosen += expand_numbers(cfg.numbers)
    if cfg.names:
        chosen += by_name(cfg.names)
    if not (cfg.numbers or cfg.names):
        chosen = list(range(1, len(listing) + 1))
    excluded = set(by_name(cfg.exclude_names)) if cfg.exclude_names else set()
    seen: set[int] = set()
    selection = []
    for n in chosen:
        if not 1 <= n <= len(listing):
            raise SetupError(f"test number {n} out of range 1-{len(listing)}")
        if n not in excluded and n not in seen:
            seen.add(n)
            selection.append(n)
    if not selection:
        raise SetupError("no test selected")
    return selection


def build_cwltest_argv(
    cfg: Config,
    tool_exe: str,
    cwltest_exe: str,
    wes_url: str | None,
    junit: Path,
    selection: list[int] | None,
) -> list[str]:
    argv = [
        cwltest_exe,
        "--test",
        cfg.test_file,
        "--tool",
        tool_exe,
        "-j",
        str(cfg.jobs),
        "--timeout",
        str(cfg.timeout),
        "--junit-xml",
        str(junit),
    ]
    for flag, value in (
        ("--tags", cfg.tags),
        ("--exclude-tags", cfg.exclude_tags),
        ("-n", ",".join(map(str, selection)) if selection else None),
    ):
        if value:
            argv += [flag, value]
    if cfg.verbose:
        argv.append("--verbose")
    tool_args = list(cfg.tool_args)
    if cfg.tool == TOIL_RUNNER:
        assert wes_url is not None
        tool_args.insert(0, f"--wes_endpoint={split_wes_url(wes_url)}")
    elif not tool_args:
        tool_args = ["--no-container"]
    # Everything after "--" is put by cwltest in front of --outdir/--quiet/<tool> <job>.
    return [*argv, "--", *tool_args]


def run_conformance(cfg: Config) -> ConformanceResult:
    """Run cwltest as configured and return the parsed results."""
    if cfg.tool not in (TOIL_RUNNER, CWLTOOL):
        raise SetupError(f"--tool must be {TOIL_RUNNER} or {CWLTOOL}")
    suite = cfg.suite_dir.resolve()
    if not (suite / cfg.test_file).is_file():
        raise SetupError(f"no {cfg.test_file} in {suite}")
    tool_exe = find_executable(cfg.runner, cfg.tool)
    cwltest_exe = find_executable(cfg.cwltest, "cwltest", near=tool_exe)

    env = dict(os.environ)
    # toil-wes-cwl-runner runs "cwltool --print-deps" from PATH: prefer its own venv's.
    env["PATH"] = os.pathsep.join([str(Path(tool_exe).parent), env.get("PATH", "")])
    if cfg.tool == TOIL_RUNNER and not shutil.which(CWLTOOL, path=env["PATH"]):
        raise SetupError("toil-wes-cwl-runner needs 'cwltool' on PATH (install toil[cwl])")

    junit = cfg.junit_xml or Path(tempfile.gettempdir()) / f"cwl-conformance-{cfg.tool}.xml"
    junit = junit.absolute()
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)

    listing = list_tests(cfg, cwltest_exe, suite)
    selection = select_tests(cfg, listing)

    with contextlib.ExitStack() as stack:
        wes_url = stack.enter_context(started_server(cfg)) if cfg.tool == TOIL_RUNNER else None
        argv = build_cwltest_argv(cfg, tool_exe, cwltest_exe, wes_url, junit, selection)
        print(f"running (cwd={suite}): {shlex.join(argv)}", file=sys.stderr)
        proc = subprocess.run(argv, cwd=suite, env=env, check=False)

    if not junit.is_file():
        raise SetupError(f"cwltest exited {proc.returncode} without writing {junit}")
    if selection is not None:
        relabel_junit(junit, selection, listing)
    outcomes = parse_junit(junit)
    return ConformanceResult(outcomes, junit, proc.returncode)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  %(prog)s --wes-url http://127.0.0.1:8080/ga4gh/wes/v1 "
        "--runner /path/to/venv/bin/toil-wes-cwl-runner\n"
        "  %(prog)s --tool cwltool --runner /path/to/venv/bin/cwltool",
    )
    p.add_argument(
        "--tool",
        choices=[TOIL_RUNNER, CWLTOOL],
        default=TOIL_RUNNER,
        help="runner cwltest drives (default: %(default)s)",
    )
    p.add_argument("--wes-url", help=f"WES base URL, e.g. http://127.0.0.1:8080{WES_PREFIX}")
    p.add_argument(
        "--runner",
        help="path to the toil-wes-cwl-runner (or cwltool) executable; default: found on PATH",
    )
    p.add_argument("--cwltest", help="path to cwltest (default: next to --runner, else PATH)")
    p.add_argument(
        "--suite-dir",
        type=Path,
        default=DEFAULT_SUITE,
        help="CWL conformance suite directory (default: %(default)s)",
    )
    p.add_argument(
        "--test-file",
        default="conformance_tests.yaml",
        help="test list inside the suite dir (default: %(default)s)",
    )
    p.add_argument(
        "--tags", default="required", help="cwltest --tags; '' for all tests (default: %(default)s)"
    )
    p.add_argument("--exclude-tags", help="cwltest --exclude-tags")
    p.add_argument(
        "-n",
        dest="numbers",
        help="only these test numbers (as listed by cwltest -l with the same tags), e.g. 1,3-6",
    )
    p.add_argument("-s", dest="names", help="only these test short names, comma separated")
    p.add_argument("-S", dest="exclude_names", help="exclude these short names")
    p.add_argument("-j", "--jobs", type=int, default=2, help="parallel tests (default: 2)")
    p.add_argument("--timeout", type=int, default=600, help="per-test timeout, s (default: 600)")
    p.add_argument(
        "--tool-arg",
        action="append",
        default=[],
        dest="tool_args",
        help="extra argument for the runner, written with '=' (--tool-arg=--no-container); "
        "repeatable. cwltool mode default: --no-container. toil-wes-cwl-runner sends every "
        "argument it does not know to the server as workflow_engine_parameters "
        '(\'--flag\' -> {"--flag": null}, \'--k=v\' -> {"--k": "v"}).',
    )
    p.add_argument(
        "--junit-xml",
        type=Path,
        help="JUnit XML output (default: $TMPDIR/cwl-conformance-<tool>.xml)",
    )
    p.add_argument("--json-summary", type=Path, help="also write a JSON summary here")
    p.add_argument(
        "--server-cmd",
        help="start this WES server first; {port} and {data_dir} "
        "are substituted; stopped afterwards",
    )
    p.add_argument(
        "--server-data-dir",
        type=Path,
        help="{data_dir} for --server-cmd (default: a temporary directory)",
    )
    p.add_argument("--server-log", type=Path, help="server output (default: data_dir/server.log)")
    p.add_argument("--server-startup-timeout", type=float, default=60.0)
    p.add_argument(
        "--show-messages",
        action="store_true",
        help="print each failure's message and the last lines of the runner's stderr",
    )
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even if tests failed")
    p.add_argument("-v", "--verbose", action="store_true", help="pass --verbose to cwltest")
    ns = p.parse_args(argv)
    cfg = Config(
        tool=ns.tool,
        wes_url=ns.wes_url,
        suite_dir=ns.suite_dir,
        test_file=ns.test_file,
        tags=ns.tags or None,
        exclude_tags=ns.exclude_tags,
        numbers=ns.numbers,
        names=ns.names,
        exclude_names=ns.exclude_names,
        jobs=ns.jobs,
        timeout=ns.timeout,
        runner=ns.runner,
        cwltest=ns.cwltest,
        tool_args=ns.tool_args,
        junit_xml=ns.junit_xml,
        verbose=ns.verbose,
        server_cmd=ns.server_cmd,
        server_data_dir=ns.server_data_dir,
        server_log=ns.server_log,
        server_startup_timeout=ns.server_startup_timeout,
    )
    return cfg, ns


def main(argv: Sequence[str] | None = None) -> int:
    cfg, ns = parse_args(argv)
    try:
        result = run_conformance(cfg)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ns.json_summary:
        ns.json_summary.write_text(
            json.dumps(
                {
                    "tool": cfg.tool,
                    "wes_url": cfg.wes_url,
                    "junit_xml": str(result.junit_xml),
                    "passed": [o.name for o in result.passed],
                    "failed": [dataclasses.asdict(o) for o in result.failed],
                    "skipped": [o.name for o in result.skipped],
                },
                indent=2,
            )
        )
    print(f"JUnit XML: {result.junit_xml}")
    for o in result.failed:
        print(f"FAILED [{o.number}] {o.name}: {o.doc}")
        if ns.show_messages and o.message:
            print("    " + o.message[:2000].replace("\n", "\n    "))
            tail = [line for line in o.stderr.splitlines() if line.strip()][-5:]
            for line in tail:
                print(f"    stderr| {line[:500]}")
    for o in result.skipped:
        print(f"SKIPPED [{o.number}] {o.name}")
    print(result.summary_line())
    return 0 if ns.allow_failures or not result.failed else 1


if __name__ == "__main__":
    sys.exit(main())
