"""The ``auth`` settings: who may use the node, and which datasets a run may touch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AuthSettings",
    "BasicSettings",
    "JwksSource",
    "OidcSettings",
    "PassportSettings",
]

# Asymmetric signatures only: a JWKS holds public keys, and an HMAC "signed" with a public key
# (or no signature at all, ``alg: none``) proves nothing.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _asymmetric_only(value: list[str]) -> list[str]:
    refused = [a for a in value if a not in ALLOWED_ALGORITHMS]
    if refused:
        raise ValueError(
            f"algorithms {', '.join(refused)} cannot be verified with public keys; allowed: "
            + ", ".join(sorted(ALLOWED_ALGORITHMS))
        )
    if not value:
        raise ValueError("at least one algorithm is needed")
    return value


class JwksSource(BaseModel):
    """Where the public keys of an issuer are: a JWKS URL or a JWKS file (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    jwks_url: str | None = Field(None, description="The issuer's JWKS (https, or loopback).")
    jwks_file: Path | None = Field(None, description="A JWKS document on this machine.")

    @model_validator(mode="after")
    def _one_source(self) -> JwksSource:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url and jwks_file")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return self

    @field_validator("jwks_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None


class OidcSettings(JwksSource):
    """Bearer tokens (JWTs) of one OpenID Connect issuer."""

    issuer: str = Field(..., min_length=1, description="The tokens' `iss`, exactly.")
    audience: list[str] = Field(
        default_factory=list,
        description="Accepted `aud` values (one of them must be in the token). Empty: the "
        "token's `aud` is not checked (not recommended).",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "PS256", "ES256"],
        description="Signature algorithms accepted (asymmetric only; HS* and none never).",
    )
    leeway_seconds: float = Field(30.0, ge=0, le=300, description="Clock skew for exp/nbf/iat.")
    subject_claim: str = Field("sub", description="The claim naming the user.")
    admin_claim: str | None = Field(
        None, description="A claim (string or list) that makes a user an admin, e.g. `roles`."
    )
    admin_values: list[str] = Field(
        default_factory=lambda: ["wes-admin"],
        description="Values of admin_claim that make a user an admin.",
    )
    userinfo_url: str | None = Field(
        None,
        description="The issuer's userinfo endpoint, asked (with the user's token) for the "
        "ga4gh_passport_v1 claim when the token does not carry it. It may answer JSON or a JWT "
        "signed with the issuer's keys (application/jwt); the answer's sub must be the token's.",
    )
    jwks_cache_seconds: float = Field(300.0, gt=0, description="How long fetched keys are kept.")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        return _asymmetric_only(value)

    @field_validator("audience", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class BasicSettings(BaseModel):
    """HTTP basic auth with bcrypt-hashed passwords (``wes-bridge auth hash-password``)."""

    model_config = ConfigDict(extra="forbid")

    users: dict[str, str] = Field(
        default_factory=dict, description="User name -> bcrypt hash of the password."
    )
    admins: list[str] = Field(default_factory=list, description="Users who see every run.")
    datasets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="User name -> dataset ids the user may use (there are no passports here).",
    )

    @field_validator("users")
    @classmethod
    def _hashed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, hashed in value.items():
            if ":" in name or not name:
                raise ValueError(f"user name {name!r}: must be non-empty and hold no ':'")
            if not hashed.startswith(("$2b$", "$2a$", "$2y$")):
                raise ValueError(
                    f"user {name!r}: the password must be a bcrypt hash "
                    "(wes-bridge auth hash-password), never the password itself"
                )
        return value


class PassportSettings(BaseModel):
    """GA4GH Passports: the visa issuers whose ControlledAccessGrants the node trusts."""

    model_config = ConfigDict(extra="forbid")

    trusted_issuers: dict[str, JwksSource] = Field(
        default_factory=dict, description="Visa issuer (`iss`) -> its JWKS."
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    leeway_seconds: float = Field(30.0, ge=0, le=300)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        return _asymmetric_only(value)


class AuthSettings(BaseModel):
    """Who may use the node's WES, TES and TRS endpoints, and what their runs may read."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "oidc", "basic"] = Field(
        "none",
        description="none: no authentication (loopback only unless allow_insecure_bind); "
        "oidc: JWT bearer tokens of one issuer; basic: users with bcrypt-hashed passwords.",
    )
    allow_insecure_bind: bool = Field(
        False,
        description="Let `wes-bridge serve` listen on a non-loopback address with mode none.",
    )
    oidc: OidcSettings | None = None
    basic: BasicSettings = Field(default_factory=BasicSettings)
    passports: PassportSettings = Field(default_factory=PassportSettings)  # type: ignore[arg-type]
    datasets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Dataset id -> the locations that hold it (path prefixes such as "
        "/data/ega/EGAD0001, or URL prefixes such as s3://bucket/EGAD0001/). A run or TES "
        "task that names such a location needs a valid grant for the dataset.",
    )

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode == "oidc" and self.oidc is None:
            raise ValueError("auth.mode oidc needs auth.oidc (issuer, audience, jwks_url)")
        if self.mode == "basic" and not self.basic.users:
            raise ValueError("auth.mode basic needs auth.basic.users")
        for dataset, locations in self.datasets.items():
            if not locations:
                raise ValueError(f"dataset {dataset!r} names no location")
            for location in locations:
                if not location.strip() or location.strip() in ("/", "file:///"):
                    raise ValueError(f"dataset {dataset!r}: location {location!r} is too broad")
        return self
