"""TES 1.1.0 documents, written from ``tes-1.1.0.openapi.yaml``.

Requests are validated strictly where the spec says what a value must be (absolute container
paths, a command for every executor, ``url`` or ``content`` for inputs), and leniently where
clients differ in practice: unknown fields are ignored, as the spec's ``readOnly`` fields are
(``id``, ``state``, ``logs``, ``creation_time`` sent back in a create request).
"""

from __future__ import annotations

import posixpath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..models import STATES

__all__ = [
    "TASK_STATES",
    "TERMINAL_TASK_STATES",
    "TesCreateTaskResponse",
    "TesExecutor",
    "TesExecutorLog",
    "TesInput",
    "TesListTasksResponse",
    "TesOutput",
    "TesOutputFileLog",
    "TesResources",
    "TesTask",
    "TesTaskLog",
    "View",
]

# TES 1.1's tesState has the same eleven states as WES 1.1's State.
TASK_STATES = STATES
TERMINAL_TASK_STATES = frozenset(
    {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
)
View = Literal["MINIMAL", "BASIC", "FULL"]
FileType = Literal["FILE", "DIRECTORY"]

# The spec asks for at least 128 KiB of inline input content.
MAX_INLINE_CONTENT = 1024 * 1024
_WILDCARDS = set("*?[")


def container_path(value: str, what: str) -> str:
    """A normalised absolute container path, or ValueError naming ``what``."""
    if not value:
        raise ValueError(f"{what} is empty")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    if not value.startswith("/"):
        raise ValueError(f"{what} must be an absolute path inside the container, not {value!r}")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"{what} must not contain '..' ({value!r})")
    normalised = posixpath.normpath(value)
    if normalised == "/":
        raise ValueError(f"{what} must not be the container's root directory")
    return normalised


def has_wildcards(path: str) -> bool:
    return bool(_WILDCARDS & set(path))


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TesInput(_Lenient):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: FileType = "FILE"
    content: str | None = None
    streamable: bool | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return container_path(value, "input path")

    @model_validator(mode="after")
    def _source(self) -> TesInput:
        if self.content is not None and self.url:
            raise ValueError(
                f"input {self.path}: give either url or content, not both (the spec says "
                "content wins, which would silently drop the url)"
            )
        if self.content is None and not self.url:
            raise ValueError(f"input {self.path}: url or content is required")
        if self.content is not None:
            if self.type == "DIRECTORY":
                raise ValueError(f"input {self.path}: inline content cannot be a DIRECTORY")
            if len(self.content.encode("utf-8")) > MAX_INLINE_CONTENT:
                raise ValueError(
                    f"input {self.path}: inline content is over {MAX_INLINE_CONTENT} bytes"
                )
        return self


class TesOutput(_Lenient):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: FileType = "FILE"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return container_path(value, "output path")

    @model_validator(mode="after")
    def _prefix(self) -> TesOutput:
        if not self.url:
            raise ValueError(f"output {self.path}: url is required")
        if has_wildcards(self.path):
            if not self.path_prefix:
                raise ValueError(
                    f"output {self.path}: path_prefix is required when the path has wildcards"
                )
            prefix = container_path(self.path_prefix, "output path_prefix")
            if not (self.path + "/").startswith(prefix.rstrip("/") + "/"):
                raise ValueError(
                    f"output {self.path}: path_prefix {self.path_prefix!r} is not a prefix of it"
                )
        return self


class TesResources(_Lenient):
    cpu_cores: int | None = Field(None, ge=1)
    preemptible: bool | None = None
    ram_gb: float | None = Field(None, ge=0)
    disk_gb: float | None = Field(None, ge=0)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class TesExecutor(_Lenient):
    image: str
    command: list[str]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value or not value[0]:
            raise ValueError("command must name a program to run (it is empty)")
        if any("\x00" in arg for arg in value):
            raise ValueError("command arguments must not contain NUL bytes")
        return value

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _paths(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        return container_path(value, f"executor {info.field_name}")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, val in (value or {}).items():
            if not key or "=" in key or "\x00" in key or "\x00" in val:
                raise ValueError(f"invalid environment variable {key!r}")
        return value


class TesExecutorLog(BaseModel):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class TesOutputFileLog(BaseModel):
    url: str
    path: str
    size_bytes: str


class TesTaskLog(BaseModel):
    logs: list[TesExecutorLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[TesOutputFileLog]
    system_logs: list[str] | None = None


class TesTask(_Lenient):
    """A task as submitted (the read-only fields are ignored on input)."""

    name: str | None = None
    description: str | None = None
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor]
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None

    @field_validator("executors")
    @classmethod
    def _executors(cls, value: list[TesExecutor]) -> list[TesExecutor]:
        if not value:
            raise ValueError("a task needs at least one executor")
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [container_path(v, "volume") for v in value]


class TesCreateTaskResponse(BaseModel):
    id: str


class TesListTasksResponse(BaseModel):
    tasks: list[dict[str, Any]]
    next_page_token: str | None = None
