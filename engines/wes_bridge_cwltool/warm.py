"""Imported once in the warm driver process: cwltool and its CWL schemas, pre-loaded."""

from __future__ import annotations

import cwltool.main  # noqa: F401
from cwltool.process import get_schema

from . import jobs  # noqa: F401

for _version in ("v1.0", "v1.1", "v1.2"):
    get_schema(_version)
