"""Authentication and access: OIDC bearer tokens or basic auth, GA4GH Passports, per-user
isolation of runs and tasks, and the operator's dataset access policy (``auth`` settings)."""

from .core import ANONYMOUS, Authenticator, Principal, run_credential
from .policy import DatasetPolicy, strings_in
from .settings import AuthSettings

__all__ = [
    "ANONYMOUS",
    "AuthSettings",
    "Authenticator",
    "DatasetPolicy",
    "Principal",
    "run_credential",
    "strings_in",
]
