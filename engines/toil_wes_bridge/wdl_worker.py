"""Toil's worker (``_toil_worker``) with WDL task commands on the host.

Run as ``python -m toil_wes_bridge.wdl_worker JOBNAME JOBSTORE JOBID [--context ...]``, the
arguments of ``_toil_worker``; the ``wes_bridge_tes`` batch system starts it on the host for
runs of :mod:`toil_wes_bridge.wdl`. Before the job runs, :func:`toil_wes_bridge.host_container.
install` makes Toil's WDL runner run the commands it would run in Docker on this machine; when
the installed Toil does not allow it, the worker exits with the reason before running the job.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

# toil.worker's exit code for a job it could not run (the leader then retries or fails it).
_FAILED = 1


def main(argv: list[str] | None = None) -> int:
    """Install the host task container, then run Toil's worker with ``argv`` (default: this
    process's arguments)."""
    from .host_container import ToilInternalsChanged, install

    try:
        install()
    except ToilInternalsChanged as exc:
        print(f"toil_wes_bridge.wdl_worker: {exc}", file=sys.stderr, flush=True)
        return _FAILED
    from toil.worker import main as worker_main

    try:
        worker_main([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else _FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
