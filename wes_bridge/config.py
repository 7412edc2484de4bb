"""Operator settings.

Sources, strongest first: command-line flags, ``WES_BRIDGE_*`` environment variables, the YAML
file given with ``--config``, then the built-in defaults. Nested values in the environment use
``__`` (``WES_BRIDGE_ENGINES__CWLTOOL__PARALLEL=true``).
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .auth.settings import AuthSettings

__all__ = [
    "AuthSettings",
    "ConfigFileError",
    "Settings",
    "TesSettings",
    "TrsRegistry",
    "TrsSettings",
    "load_settings",
]

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "wes_bridge_config_file", default=None
)


class ConfigFileError(ValueError):
    """The ``--config`` file is missing, unreadable or not a YAML mapping."""


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the ``--config`` YAML file named through a context variable."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _config_file.get()
        self._values: dict[str, Any] = {}
        if path is None:
            return
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc
        if loaded is None:
            return
        if not isinstance(loaded, dict):
            raise ConfigFileError(f"config file {path} must hold a mapping of settings")
        self._values = loaded

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        # Unknown keys are passed on, so `extra="forbid"` reports a typo instead of hiding it.
        return dict(self._values)


class TesSettings(BaseModel):
    """The node's TES: the embedded one (default) or an external one (``url``)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="An external TES (Funnel, TESK, ...) the node sends tasks to. Unset: the "
        "embedded TES at /ga4gh/tes/v1 on this server.",
    )
    token: SecretStr | None = Field(None, description="Bearer token for the external TES.")
    username: str | None = Field(None, description="Basic-auth user for the external TES.")
    password: SecretStr | None = None
    forward_user_token: bool = Field(
        False,
        description="Send each run's tasks to the external TES with the bearer token of the "
        "user who submitted the run (instead of tes.token). The token is kept encrypted in the "
        "database until the run ends.",
    )

    shared_filesystem: bool | None = Field(
        None,
        description="Whether the TES's executors see this node's data dir at the same path "
        "(file:// inputs and outputs into run directories). Default: yes for the embedded "
        "TES, no for an external one (say yes for Funnel on this host or a shared file system).",
    )
    uses_containers: bool = Field(
        True,
        description="Whether the external TES runs executors in their images (the embedded "
        "TES knows from its backend).",
    )
    backend: Literal["host", "host-sandbox", "docker", "podman", "apptainer", "singularity"] = (
        Field(
            "host",
            description="How the embedded TES runs executors: on the host (images recorded, "
            "not used), on the host inside a bubblewrap sandbox per task (host-sandbox: a task "
            "sees no other run's files), or in a container runtime.",
        )
    )
    container_binary: str | None = Field(
        None,
        description="The container runtime's command (default: the backend's name; bwrap "
        "for host-sandbox).",
    )
    sandbox_network: bool = Field(
        True, description="host-sandbox: whether executors keep the host's network."
    )
    sandbox_read_only: list[Path] = Field(
        default_factory=list,
        description="host-sandbox: more host paths executors see read-only (tools installed "
        "outside the system directories, PATH, and the node's Python).",
    )
    cpu_cores: int | None = Field(
        None, ge=1, description="Cores the embedded TES may use (default: all of them)."
    )
    ram_gb: float | None = Field(
        None, gt=0, description="RAM the embedded TES may use, in GB (default: all of it)."
    )
    default_cpu_cores: int = Field(1, ge=1, description="Cores of a task that asks for none.")
    default_ram_gb: float = Field(0.0, ge=0, description="RAM of a task that asks for none.")
    input_roots: list[Path] = Field(
        default_factory=list,
        description="Directories file:// inputs may come from, besides the data dir.",
    )
    output_roots: list[Path] = Field(
        default_factory=list,
        description="Directories file:// outputs may go to, besides the data dir.",
    )
    fetch_max_bytes: int = Field(100 << 30, ge=1, description="Largest http(s) input.")
    fetch_timeout_seconds: float = Field(3600.0, gt=0)
    cancel_grace_seconds: float = Field(10.0, ge=0)
    log_tail_bytes: int = Field(
        10_000, ge=0, description="Executor stdout/stderr kept in task logs (the tail)."
    )

    @field_validator("input_roots", "output_roots", "sandbox_read_only")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]


class TrsRegistry(BaseModel):
    """A TRS registry that ``workflow_url`` may name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Short name, used in messages and logs.")
    url: str = Field(
        ...,
        description="The registry's TRS base URL, up to and including /ga4gh/trs/v2 "
        "(e.g. https://dockstore.org/api/ga4gh/trs/v2).",
    )
    token: SecretStr | None = Field(None, description="Bearer token for a private registry.")
    approved: bool = Field(
        True,
        description="Whether workflows from this registry count as approved (trs.approved_only).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a TRS registry URL must be http(s)")
        return value.rstrip("/")


class TrsSettings(BaseModel):
    """TRS: the registry this node serves, and the registries its runs may come from."""

    model_config = ConfigDict(extra="forbid")

    serve: bool = Field(True, description="Serve this node's TRS registry at /ga4gh/trs/v2.")
    registry_dir: Path | None = Field(
        None,
        description="The folder this node's TRS registry is read from (every folder in it "
        "with a trs.yaml is a tool). Unset: the test-workflows shipped with wes-bridge.",
    )
    registries: list[TrsRegistry] = Field(
        default_factory=list,
        description="Registries a run's workflow_url may name (trs://host/..., and "
        "#workflow/... ids, resolved in this order). This node's own registry is always "
        "known, as 'self'.",
    )
    approved_only: bool = Field(
        False,
        description="Run only workflows from approved registries (this node's own included), "
        "named with an exact version, every file checksum-verified; anything else is refused "
        "with 403.",
    )
    fetch_max_bytes: int = Field(
        50 << 20, ge=1, description="Most bytes fetched from registries for one run."
    )
    fetch_max_files: int = Field(1000, ge=1, description="Most files of one TRS workflow.")
    fetch_timeout_seconds: float = Field(
        30.0, gt=0, description="Time limit for fetching one TRS workflow, all files included."
    )

    @field_validator("registry_dir")
    @classmethod
    def _absolute_registry_dir(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None


class Settings(BaseSettings):
    """Everything an operator can set for one node."""

    model_config = SettingsConfigDict(
        env_prefix="WES_BRIDGE_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = Field("127.0.0.1", description="Address to bind. Loopback unless told otherwise.")
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Field(Path("wes-bridge-data"), description="Database and run directories.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite in the data dir."
    )
    public_url: str | None = Field(
        None,
        description="Base URL clients reach this node at (for log URLs); "
        "default: taken from each request.",
    )

    max_concurrent_runs: int = Field(4, ge=1, description="Runs executing at once.")
    driver_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="Scheduling niceness of engine drivers and their tools, so the API stays "
        "responsive on a busy machine (0: same priority as the server).",
    )
    cancel_grace_seconds: float = Field(
        10.0, ge=0, description="SIGTERM-to-SIGKILL wait when cancelling a run."
    )
    resume_attempts: int = Field(
        1,
        ge=0,
        description="How many times a run whose engine driver was lost (the machine "
        "restarted, the driver was killed) is started again, for engines that can resume "
        "(Nextflow, with -resume); 0: such runs end SYSTEM_ERROR.",
    )
    max_upload_bytes: int = Field(
        1 << 30, ge=1, description="Largest accepted POST /runs body, attachments included."
    )
    max_attachments: int = Field(10_000, ge=1)

    url_fetch_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts workflow_url may name. Empty: any host with a public address.",
    )
    url_fetch_allow_private: bool = Field(
        False,
        description="Allow workflow_url hosts that resolve to loopback, private, "
        "link-local or other non-public addresses.",
    )
    url_fetch_max_bytes: int = Field(10 << 20, ge=1)
    url_fetch_timeout_seconds: float = Field(30.0, gt=0)

    auth_instructions_url: str = Field(
        "https://github.com/wes-bridge/wes-bridge#authentication",
        description="Where clients learn how to get credentials for this node.",
    )
    service_id: str = "org.wes-bridge.node"
    service_name: str = "wes-bridge"
    organization_name: str = "wes-bridge"
    organization_url: str = "https://github.com/wes-bridge/wes-bridge"
    contact_url: str | None = None
    environment: str | None = None

    engines: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-engine operator settings, keyed by engine id."
    )
    disabled_engines: list[str] = Field(default_factory=list, description="Engine ids not to load.")
    default_engines: dict[str, str] = Field(
        default_factory=dict,
        description="Engine that runs a workflow type when the request names none, keyed by "
        "workflow type (e.g. {CWL: toil}); otherwise the first usable engine by name.",
    )
    log_level: str = "info"
    tes: TesSettings = Field(default_factory=TesSettings)  # type: ignore[arg-type]
    trs: TrsSettings = Field(default_factory=TrsSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)  # type: ignore[arg-type]

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'wes-bridge.sqlite'}"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def tes_dir(self) -> Path:
        return self.data_dir / "tes"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, the YAML file, the environment and ``overrides``."""
    token = _config_file.set(config_file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _config_file.reset(token)
