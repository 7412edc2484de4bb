"""The CWL v1.2 conformance suite (`required` tests) through Toil's WES client.

cwltest drives Toil's real WES client, `toil-wes-cwl-runner`, against a live `wes-bridge
serve`; the same tests also run through `cwltool --no-container` directly, in the same test.
Every test that cwltool passes directly must also pass through wes-bridge.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from .conformance.run_conformance import (
    CWLTOOL,
    DEFAULT_SUITE,
    TOIL_RUNNER,
    Config,
    run_conformance,
)
from .live_server import Server, free_port

pytestmark = [pytest.mark.conformance, pytest.mark.integration]


def _toil_client() -> Path:
    venv = os.environ.get("WES_BRIDGE_TOIL_CLIENT_VENV")
    if not venv:
        pytest.skip("WES_BRIDGE_TOIL_CLIENT_VENV is not set (tox sets it; see tox.ini)")
    runner = Path(venv) / "bin" / TOIL_RUNNER
    assert runner.exists(), f"{runner} missing: run scripts/install-toil-client {venv}"
    return runner


def test_required_conformance_matches_cwltool(tmp_path: Path) -> None:
    runner = _toil_client()
    suite = Path(os.environ.get("WES_BRIDGE_CWL_CONFORMANCE", DEFAULT_SUITE))
    assert (suite / "conformance_tests.yaml").is_file(), f"no conformance suite at {suite}"
    jobs = int(os.environ.get("WES_BRIDGE_CONFORMANCE_JOBS", "2"))
    server = Server(tmp_path / "data", free_port())
    server.start()
    try:
        through_wes = run_conformance(
            Config(
                tool=TOIL_RUNNER,
                wes_url=server.base,
                runner=str(runner),
                suite_dir=suite,
                jobs=jobs,
                junit_xml=tmp_path / "wes-bridge.xml",
            )
        )
    finally:
        server.stop(signal.SIGTERM)
    cwltool = shutil.which("cwltool", path=str(Path(sys.executable).parent))
    assert cwltool, "cwltool is not installed next to this Python"
    direct = run_conformance(
        Config(
            tool=CWLTOOL,
            runner=cwltool,
            cwltest=str(runner.parent / "cwltest"),
            suite_dir=suite,
            jobs=jobs,
            junit_xml=tmp_path / "cwltool.xml",
        )
    )
    print(f"\nthrough wes-bridge (Toil's WES client): {through_wes.summary_line()}")
    print(f"cwltool --no-container directly:        {direct.summary_line()}")
    for outcome in through_wes.failed:
        print(f"  failed through wes-bridge: {outcome.name}: {outcome.message[:200]}")
    assert len(direct.outcomes) == len(through_wes.outcomes) > 80
    lost = sorted({o.name for o in direct.passed} - {o.name for o in through_wes.passed})
    assert not lost, f"pass with cwltool directly but not through wes-bridge: {lost}"
