"""``toil-cwl-runner`` with the ``wes_bridge_tes`` batch system registered.

Run as ``python -m toil_wes_bridge.cwl ARGS...`` with the arguments of ``toil-cwl-runner``, e.g.
``--batchSystem wes_bridge_tes --tesUrl URL``. Registering first matters: Toil's argument
parser accepts only the batch systems known when it is built.
"""

from __future__ import annotations

import sys

from . import register

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run toil-cwl-runner with ``argv`` (default: this process's arguments)."""
    register()
    from toil.cwl.cwltoil import main as cwltoil_main

    return int(cwltoil_main(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
