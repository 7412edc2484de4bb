"""The engine-plugin contract (:mod:`wes_bridge.testing`) on each built-in adapter.

Each class is one real `wes-bridge serve` that runs the engine's hello, failing and slow
workflows side by side; every WES and TES response is checked against the official OpenAPI
documents (tests/spec_check.py) instead of the kit's default, wes-bridge's own models.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from wes_bridge.testing import ContractWorkflow, EngineContract

from .conftest import WORKFLOWS, nextflow_command
from .spec_check import check_response, tes_api, wes_api

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent

HELLO_SHA1 = "sha1$450842b41178b7d26034831df6402dcb3402534f"
FAILURE = "test-workflows: deliberate failure in step 2 (exit 3)"
SLEEP_SECONDS = 600  # far longer than the class: the run must be cancelled, not end


class SpecChecked(EngineContract):
    """Every WES and TES response checked against the official documents."""

    def check_response(
        self, api: str, method: str, path: str, status: int, body: bytes, content_type: str
    ) -> None:
        check_response(
            wes_api() if api == "wes" else tes_api(), method, path, status, body, content_type
        )


CWL_HELLO = ContractWorkflow(
    WORKFLOWS / "cwl/hello",
    "hello.cwl",
    params="hello.json",
    files=("hello.cwl", "hello.json"),
    outputs={"greeting": HELLO_SHA1},
)
CWL_FAILING = ContractWorkflow(
    WORKFLOWS / "cwl/fail-step",
    "workflow.cwl",
    params="inputs.json",
    files=("workflow.cwl", "prepare.cwl", "explode.cwl", "inputs.json"),
    stderr=FAILURE,
)
CWL_SLOW = ContractWorkflow(
    WORKFLOWS / "cwl/sleep", "sleep.cwl", params={"seconds": SLEEP_SECONDS}, files=("sleep.cwl",)
)


class TestCwltoolContract(SpecChecked):
    engine = "cwltool"
    workflow_type = "CWL"
    workflow_type_version = "v1.2"
    workflow_type_versions = ("v1.0", "v1.1", "v1.2")
    hello = CWL_HELLO
    failing = CWL_FAILING
    slow = CWL_SLOW


class TestToilContract(SpecChecked):
    engine = "toil"
    workflow_type = "CWL"
    workflow_type_version = "v1.2"
    workflow_type_versions = ("v1.0", "v1.1", "v1.2")
    hello = CWL_HELLO
    # Toil tries a failed job again by default: once is enough here.
    failing = replace(CWL_FAILING, engine_parameters={"retry_count": "0"})
    slow = CWL_SLOW
    bad_parameters = {"no_such_option": "1", "--jobStore": "file:/elsewhere"}


class TestSnakemakeContract(SpecChecked):
    engine = "snakemake"
    workflow_type = "SMK"
    workflow_type_version = "9"
    hello = ContractWorkflow(
        WORKFLOWS / "snakemake/hello",
        "Snakefile",
        params="config.yaml",
        files=("Snakefile", "config.yaml"),
        outputs={"hello.txt": HELLO_SHA1},
    )
    failing = ContractWorkflow(
        WORKFLOWS / "snakemake/fail",
        "Snakefile",
        params="config.yaml",
        files=("Snakefile", "config.yaml"),
        stderr=FAILURE,
    )
    slow = ContractWorkflow(
        TESTS / "snakemake_fixtures/sleep", "Snakefile", params={"seconds": SLEEP_SECONDS}
    )
    bad_parameters = {"no_such_option": "1", "jobs": "none"}


class TestNextflowContract(SpecChecked):
    engine = "nextflow"
    workflow_type = "NFL"
    workflow_type_version = "DSL2"
    # Without a Nextflow TES executor plugin (none can be had here), Nextflow is one TES task
    # and lists its processes, which run inside it, from their work directories.
    nested_steps = True
    hello = ContractWorkflow(
        WORKFLOWS / "nextflow/hello",
        "main.nf",
        params="params.json",
        files=("main.nf", "params.json"),
        outputs={"hello.txt": HELLO_SHA1},
    )
    failing = ContractWorkflow(
        WORKFLOWS / "nextflow/fail",
        "main.nf",
        params="params.json",
        files=("main.nf", "params.json"),
        stderr=FAILURE,
    )
    slow = ContractWorkflow(
        TESTS / "nextflow_fixtures/sleep", "main.nf", params={"seconds": SLEEP_SECONDS}
    )
    bad_parameters = {"no_such_option": "1", "-bogus": "1"}

    def prerequisites(self) -> None:
        nextflow_command()  # skips without Nextflow, but fails in CI
