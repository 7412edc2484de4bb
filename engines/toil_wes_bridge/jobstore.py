"""Whether Toil workers on a TES can reach a job store (no Toil import: cheap to call)."""

from __future__ import annotations

import os

from wes_bridge.plugin import TesEndpoint

__all__ = ["is_file_job_store", "job_store_problem"]


def is_file_job_store(locator: str) -> bool:
    """True for a ``file:`` job store (or a bare path), read as Toil's ``parseLocator`` does."""
    return not locator or locator[0] in "/." or ":" not in locator or locator.startswith("file:")


def job_store_problem(locator: str, endpoint: TesEndpoint) -> str | None:
    """Why the TES's workers cannot reach the job store ``locator``, or None when they can.

    A ``file:`` job store needs executors that run on a file system holding it at the same
    path, without a container; any other job store (an object store) is taken to be reachable.
    """
    if not is_file_job_store(locator):
        return None
    if endpoint.shared_filesystem and not endpoint.uses_containers:
        return None
    path = locator.removeprefix("file:")
    why = (
        "runs its executors in containers, which do not see this machine's paths"
        if endpoint.uses_containers
        else "does not share this machine's file system"
    )
    return (
        f"The file job store {os.path.abspath(path)} cannot be reached by Toil workers on "
        f"{endpoint.description or 'the TES at ' + endpoint.url}: that TES {why}. A Toil worker "
        "reads and writes the job store, so either use a job store the workers can reach (an "
        "object store such as aws:REGION:NAME or google:PROJECT:NAME, with an image that has "
        "Toil), or a TES whose executors run on a shared file system that holds the job store "
        "at the same path, without containers (a wes-bridge node's embedded TES with host "
        "execution is one)."
    )
