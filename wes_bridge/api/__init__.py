"""The HTTP layer: the WES router and the mapping of errors to the spec's ErrorResponse."""

from .errors import install_error_handlers
from .wes import router as wes_router

__all__ = ["install_error_handlers", "wes_router"]
