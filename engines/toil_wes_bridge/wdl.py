"""``toil-wdl-runner`` with the ``wes_bridge_tes`` batch system and WDL task commands on the host.

Run as ``python -m toil_wes_bridge.wdl ARGS...`` with the arguments of ``toil-wdl-runner``, e.g.
``--batchSystem wes_bridge_tes --wdlContainer docker WORKFLOW.wdl INPUTS.json``. Registering the
batch system first matters: Toil's argument parser accepts only the batch systems known when it
is built.

Toil 9 runs a WDL task's command only in Singularity or Docker. The workers this runner's batch
system starts on the host (on a TES without containers) are :mod:`toil_wes_bridge.wdl_worker`,
which run the commands Toil would run in Docker (``--wdlContainer docker``) on the host instead
(:mod:`toil_wes_bridge.host_container`). Workers a TES runs in containers are the image's own
``_toil_worker``, and run task commands as Toil does.
"""

from __future__ import annotations

import sys

from . import register, use_host_worker

__all__ = ["HOST_WORKER", "main"]

HOST_WORKER = "toil_wes_bridge.wdl_worker"


def main(argv: list[str] | None = None) -> int:
    """Run toil-wdl-runner with ``argv`` (default: this process's arguments)."""
    register()
    use_host_worker(HOST_WORKER)
    from toil.wdl.wdltoil import main as wdltoil_main

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        wdltoil_main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
