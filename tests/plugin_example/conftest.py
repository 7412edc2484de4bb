"""How wes-bridge's own suite runs the example's tests: the example is installed (pip, into a
directory of this module's) before they run, and forgotten after. An adapter's own suite runs
where the adapter is installed (``pip install -e .[test]``) and needs none of this."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wheels import pip_install

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = pip_install([HERE], tmp_path_factory.mktemp("example") / "site")
    before = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *([before] if before else [])])
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("wes_bridge_example_shell", None)
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The example's tests run a real node: wes-bridge's suite counts them as integration
    tests (the example's own file stays as an author would write it)."""
    for item in items:
        if Path(str(item.path)).is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
