"""The shell adapter's tests: wes-bridge's contract kit is all it needs."""

from pathlib import Path

from wes_bridge.testing import ContractWorkflow, EngineContract

WORKFLOWS = Path(__file__).resolve().parent / "workflows"
HELLO_SHA1 = "sha1$450842b41178b7d26034831df6402dcb3402534f"  # "Hello from wes-bridge\n"


class TestShellAdapter(EngineContract):
    engine = "shell"
    workflow_type = "SHELL"
    workflow_type_version = "1"
    hello = ContractWorkflow(
        WORKFLOWS / "hello", "hello.sh", params="params.json", outputs={"hello.txt": HELLO_SHA1}
    )
    failing = ContractWorkflow(WORKFLOWS / "fail", "fail.sh", stderr="deliberate failure")
    slow = ContractWorkflow(WORKFLOWS / "sleep", "sleep.sh", params={"NAP": "600"})
    bad_parameters = {"no_such_option": "1", "keep_going": "perhaps"}
