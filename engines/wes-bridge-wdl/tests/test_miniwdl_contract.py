"""The wes-bridge engine contract (``wes_bridge.testing``), for the miniwdl adapter."""

from __future__ import annotations

from pathlib import Path

from wes_bridge.testing import ContractWorkflow, EngineContract

WORKFLOWS = Path(__file__).parent / "workflows"


class TestMiniwdlContract(EngineContract):
    engine = "miniwdl"
    workflow_type = "WDL"
    workflow_type_version = "1.0"
    hello = ContractWorkflow(
        WORKFLOWS / "hello",
        "hello.wdl",
        params="inputs.json",
        outputs={"hello.greeting": "sha1$450842b41178b7d26034831df6402dcb3402534f"},
    )
    failing = ContractWorkflow(WORKFLOWS / "fail", "fail.wdl", stderr="about to fail")
    slow = ContractWorkflow(WORKFLOWS / "sleep", "sleep.wdl", params={"sleep.seconds": 600})
    bad_parameters = {"no_such_option": "1"}
    min_steps = 1
