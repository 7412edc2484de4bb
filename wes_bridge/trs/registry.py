"""This node's TRS registry, read from a folder of workflows.

Every folder under the registry folder that holds a ``trs.yaml`` is one tool (the format is
described in ``test-workflows/README.md``). The registry is read once, when the node starts:
every file of every version is listed, classified and checksummed then, and a malformed
``trs.yaml`` is a :class:`RegistryError` naming the file, so that the node refuses to start
instead of serving less than it was given.

A version's files are the regular files under its folder (``trs.yaml`` and the excluded ones
left out). Symbolic links are never followed nor served, and a file is served only if its bytes
still have the checksum computed at load time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import wes_bridge

from ..config import Settings
from ..errors import WesError
from ..registry import describe_validation_error
from .models import (
    Checksum,
    DescriptorType,
    FileType,
    FileWrapper,
    ImageData,
    ImageType,
    Tool,
    ToolClass,
    ToolFile,
    ToolVersion,
)

__all__ = [
    "CHECKSUM_TYPE",
    "TOOL_CLASSES",
    "TRS_YAML",
    "Registry",
    "RegistryError",
    "RegistryFile",
    "RegistryFileChanged",
    "RegistryTool",
    "RegistryVersion",
    "default_registry_dir",
    "file_type_of",
    "is_safe_relative_path",
]

log = logging.getLogger(__name__)

TRS_YAML = "trs.yaml"
CHECKSUM_TYPE = "sha-256"
DEFAULT_EXCLUDE = ("expected.json",)
ID_PREFIX = "#workflow/wes-bridge/"

TOOL_CLASSES: dict[str, ToolClass] = {
    "CommandLineTool": ToolClass(
        id="CommandLineTool",
        name="CommandLineTool",
        description="A single command-line tool (a CWL CommandLineTool).",
    ),
    "Workflow": ToolClass(
        id="Workflow",
        name="Workflow",
        description="A workflow of steps (CWL Workflow, Snakemake, Nextflow, WDL, Galaxy).",
    ),
}


class RegistryError(ValueError):
    """A ``trs.yaml`` (or the registry folder) is malformed; the message names the file."""


class RegistryFileChanged(WesError):
    """A file's bytes no longer have the checksum the registry computed when it was loaded."""

    status_code = 500


# -- trs.yaml -------------------------------------------------------------------------------
def _int_to_str(value: Any) -> Any:
    # `9` (Snakemake 9) is a YAML int; a float such as `1.10` would already have lost digits.
    if isinstance(value, bool):
        return value
    return str(value) if isinstance(value, int) else value


class _VersionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1)
    name: str | None = None
    path: str = "."
    is_production: bool = False

    _int_id = field_validator("id", mode="before")(_int_to_str)


class _ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, min_length=1)
    name: str = Field(..., min_length=1)
    organization: str = Field(..., min_length=1)
    description: str | None = None
    toolclass: Literal["Workflow", "CommandLineTool"]
    author: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    descriptor_type: DescriptorType
    descriptor_type_version: str = Field(..., min_length=1)
    primary_descriptor: str = Field(..., min_length=1)
    tests: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    versions: list[_VersionSpec] = Field(..., min_length=1)

    _int_version = field_validator("descriptor_type_version", mode="before")(_int_to_str)


# -- files ----------------------------------------------------------------------------------
def is_safe_relative_path(path: str) -> bool:
    """A relative POSIX path with no ``..``, ``.``, empty segment, backslash or NUL."""
    if not path or "\0" in path or "\\" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


_SECONDARY: dict[DescriptorType, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # (file names, suffixes) of a language's other descriptor files
    DescriptorType.CWL: ((), (".cwl", ".yml", ".yaml")),
    DescriptorType.SMK: (("Snakefile",), (".smk", ".py")),
    DescriptorType.NFL: (("nextflow.config",), (".nf",)),
    DescriptorType.WDL: ((), (".wdl",)),
    DescriptorType.GALAXY: ((), (".ga", ".gxwf.yml", ".gxwf.yaml")),
}


def _containerfile_type(name: str) -> ImageType | None:
    lower = name.lower()
    if lower == "dockerfile" or lower.startswith("dockerfile.") or lower.endswith(".dockerfile"):
        return ImageType.DOCKER
    if lower == "singularity" or lower.startswith("singularity."):
        return ImageType.SINGULARITY
    return None


def file_type_of(
    path: str, descriptor_type: DescriptorType, primary: str, tests: frozenset[str]
) -> FileType:
    """How a file of a version is listed (the order of the checks is the order of precedence)."""
    name = PurePosixPath(path).name
    if path == primary:
        return FileType.PRIMARY_DESCRIPTOR
    if path in tests:
        return FileType.TEST_FILE
    names, suffixes = _SECONDARY[descriptor_type]
    if name in names or name.endswith(suffixes):
        return FileType.SECONDARY_DESCRIPTOR
    if _containerfile_type(name) is not None:
        return FileType.CONTAINERFILE
    return FileType.OTHER


@dataclass(frozen=True)
class RegistryFile:
    path: str  # relative to the version's folder, with "/"
    file_type: FileType
    location: Path
    size: int
    sha256: str

    @property
    def checksum(self) -> Checksum:
        return Checksum(checksum=self.sha256, type=CHECKSUM_TYPE)

    def read(self) -> bytes:
        """The file's bytes, if they are still those that were checksummed (never through a
        symbolic link)."""
        try:
            fd = os.open(self.location, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(self.size + 1)
        except OSError as exc:
            raise RegistryFileChanged(
                f"{self.path} can no longer be read ({exc.strerror}); restart the node to "
                "reload its registry"
            ) from exc
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise RegistryFileChanged(
                f"{self.path} changed since the registry was loaded (its checksum differs); "
                "restart the node to reload its registry"
            )
        return data


def _sha256(location: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(location, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, location) of every regular file under ``folder``; symbolic links, to
    files or to folders, are skipped."""
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            location = Path(top) / name
            mode = os.lstat(location).st_mode
            relative = location.relative_to(folder).as_posix()
            if stat.S_ISLNK(mode):
                log.info("TRS registry: not serving the symbolic link %s", location)
                continue
            if stat.S_ISREG(mode):
                yield relative, location


# Container images named in descriptors (the first group).
_IMAGE_PATTERNS: dict[DescriptorType, re.Pattern[str]] = {
    DescriptorType.CWL: re.compile(r"""^\s*dockerPull:\s*["']?([^\s"'#]+)""", re.M),
    DescriptorType.SMK: re.compile(r"""\bcontainer:\s*["']([^"']+)["']"""),
    DescriptorType.NFL: re.compile(r"""^\s*container\s+["']([^"'$]+)["']""", re.M),
    DescriptorType.WDL: re.compile(r"""^\s*docker:\s*["']([^"'~$]+)["']""", re.M),
}


def _image_data(reference: str) -> ImageData:
    image_type = ImageType.DOCKER
    for scheme, kind in (("docker://", ImageType.DOCKER), ("library://", ImageType.SINGULARITY)):
        if reference.startswith(scheme):
            reference, image_type = reference[len(scheme) :], kind
    first = reference.split("/", 1)[0]
    host = (
        first
        if "/" in reference and ("." in first or ":" in first or first == "localhost")
        else "docker.io"
    )
    return ImageData(registry_host=host, image_name=reference, image_type=image_type)


# -- the registry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryVersion:
    id: str
    name: str
    folder: Path
    is_production: bool
    files: dict[str, RegistryFile]  # the primary descriptor first, then by path
    images: tuple[ImageData, ...] = ()

    @property
    def primary(self) -> RegistryFile:
        return next(iter(self.files.values()))

    def of_type(self, file_type: FileType) -> list[RegistryFile]:
        return [f for f in self.files.values() if f.file_type == file_type]


@dataclass(frozen=True)
class RegistryTool:
    id: str
    name: str
    organization: str
    description: str | None
    toolclass: ToolClass
    author: tuple[str, ...]
    aliases: tuple[str, ...]
    descriptor_type: DescriptorType
    descriptor_type_version: str
    source: Path  # its trs.yaml
    versions: dict[str, RegistryVersion] = field(default_factory=dict)

    def url(self, base: str) -> str:
        return f"{base}/tools/{quote(self.id, safe='')}"

    def version_url(self, base: str, version: RegistryVersion) -> str:
        return f"{self.url(base)}/versions/{quote(version.id, safe='')}"

    def file_url(self, base: str, version: RegistryVersion, path: str, plain: bool) -> str:
        kind = ("PLAIN_" if plain else "") + self.descriptor_type.value
        return f"{self.version_url(base, version)}/{kind}/descriptor/{quote(path, safe='/')}"

    def version_model(self, base: str, version: RegistryVersion) -> ToolVersion:
        return ToolVersion(
            author=list(self.author) or None,
            name=version.name,
            url=self.version_url(base, version),
            id=version.id,
            is_production=version.is_production,
            images=list(version.images) or None,
            descriptor_type=[self.descriptor_type],
            descriptor_type_version={self.descriptor_type.value: [self.descriptor_type_version]},
            containerfile=bool(version.of_type(FileType.CONTAINERFILE)),
            verified=False,
            signed=False,
        )

    def model(self, base: str) -> Tool:
        return Tool(
            url=self.url(base),
            id=self.id,
            aliases=list(self.aliases) or None,
            organization=self.organization,
            name=self.name,
            toolclass=self.toolclass,
            description=self.description,
            has_checker=False,
            versions=[self.version_model(base, v) for v in self.versions.values()],
        )

    def file_model(self, file: RegistryFile) -> ToolFile:
        return ToolFile(path=file.path, file_type=file.file_type, checksum=file.checksum)

    def file_wrapper(self, base: str, version: RegistryVersion, file: RegistryFile) -> FileWrapper:
        """The FileWrapper of one file: its content (when it is UTF-8 text; otherwise only the
        ``url`` of its raw bytes), its checksum and its type."""
        data = file.read()
        try:
            content: str | None = data.decode("utf-8")
        except UnicodeDecodeError:
            content = None
        image_type: ImageType | DescriptorType | None = self.descriptor_type
        if file.file_type == FileType.CONTAINERFILE:
            image_type = _containerfile_type(PurePosixPath(file.path).name)
        return FileWrapper(
            content=content,
            checksum=[file.checksum],
            image_type=image_type,
            url=self.file_url(base, version, file.path, plain=True),
        )


def default_registry_dir() -> Path | None:
    """The test-workflows shipped with wes-bridge: installed under ``<prefix>/share``, else in
    the source checkout beside the package; None when there are neither."""
    installed = Path(sys.prefix) / "share" / "wes-bridge" / "test-workflows"
    if installed.is_dir():
        return installed
    checkout = Path(wes_bridge.__file__).resolve().parents[1] / "test-workflows"
    if checkout.is_dir():
        return checkout
    return None


class Registry:
    """The tools of one registry folder, by id (sorted)."""

    def __init__(self, root: Path | None, tools: dict[str, RegistryTool]) -> None:
        self.root = root
        self.tools = dict(sorted(tools.items()))

    def get(self, tool_id: str) -> RegistryTool | None:
        return self.tools.get(tool_id)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        root = settings.trs.registry_dir
        if root is None:
            root = default_registry_dir()
            if root is None:
                log.warning("TRS registry: no test-workflows found; the registry is empty")
        elif not root.is_dir():
            raise RegistryError(f"trs.registry_dir {root} is not a folder")
        return cls.load(root)

    @classmethod
    def load(cls, root: Path | None) -> Registry:
        """Read every ``trs.yaml`` under ``root``; raises :class:`RegistryError`."""
        if root is None:
            return cls(None, {})
        root = root.resolve()
        tools: dict[str, RegistryTool] = {}
        for top, dirs, files in os.walk(root, followlinks=False):
            dirs.sort()
            if TRS_YAML not in files:
                continue
            source = Path(top) / TRS_YAML
            if not stat.S_ISREG(os.lstat(source).st_mode):
                raise RegistryError(f"{source}: a trs.yaml must be a regular file, not a link")
            tool = _load_tool(root, source)
            other = tools.get(tool.id)
            if other is not None:
                raise RegistryError(
                    f"{source}: tool id {tool.id!r} is already the id of the tool in "
                    f"{other.source}; give one of them another `id`"
                )
            tools[tool.id] = tool
        log.info("TRS registry: %d tools from %s", len(tools), root)
        return cls(root, tools)


def _load_tool(root: Path, source: Path) -> RegistryTool:
    def fail(problem: str) -> RegistryError:
        return RegistryError(f"{source}: {problem}")

    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise fail(f"cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise fail("must be a YAML mapping (name, organization, toolclass, descriptor_type, ...)")
    try:
        spec = _ToolSpec.model_validate(data)
    except ValidationError as exc:
        raise fail(describe_validation_error(exc)) from exc
    folder = source.parent
    relative_folder = folder.relative_to(root).as_posix()
    tool_id = spec.id or ID_PREFIX + (relative_folder if relative_folder != "." else root.name)
    if "/" in spec.primary_descriptor or not is_safe_relative_path(spec.primary_descriptor):
        raise fail(
            f"primary_descriptor {spec.primary_descriptor!r} must name a file at the top of "
            "the version's folder"
        )
    for test in spec.tests:
        if not is_safe_relative_path(test):
            raise fail(f"test file {test!r} must be a relative path inside the version's folder")
    seen: set[str] = set()
    versions: dict[str, RegistryVersion] = {}
    for version_spec in spec.versions:
        if version_spec.id in seen:
            raise fail(f"version id {version_spec.id!r} appears twice")
        seen.add(version_spec.id)
        versions[version_spec.id] = _load_version(root, folder, spec, version_spec, fail)
    return RegistryTool(
        id=tool_id,
        name=spec.name,
        organization=spec.organization,
        description=spec.description,
        toolclass=TOOL_CLASSES[spec.toolclass],
        author=tuple(spec.author),
        aliases=tuple(spec.aliases),
        descriptor_type=spec.descriptor_type,
        descriptor_type_version=spec.descriptor_type_version,
        source=source,
        versions=versions,
    )


def _load_version(
    root: Path, folder: Path, spec: _ToolSpec, version: _VersionSpec, fail: Any
) -> RegistryVersion:
    where = f"version {version.id!r}"
    if Path(version.path).is_absolute() or "\0" in version.path:
        raise fail(f"{where}: path {version.path!r} must be relative to the trs.yaml")
    version_folder = (folder / version.path).resolve()
    if not version_folder.is_relative_to(root):
        raise fail(
            f"{where}: folder {version.path!r} is outside the registry folder {root}; "
            "a registry serves only its own files"
        )
    if not version_folder.is_dir():
        raise fail(f"{where}: folder {version.path!r} does not exist")
    tests = frozenset(spec.tests)
    found: dict[str, RegistryFile] = {}
    for relative, location in _walk(version_folder):
        pure = PurePosixPath(relative)
        if pure.name == TRS_YAML or any(pure.match(p) for p in spec.exclude):
            continue
        try:
            size, sha = _sha256(location)
        except OSError as exc:
            raise fail(f"{where}: cannot read {relative}: {exc.strerror}") from exc
        kind = file_type_of(relative, spec.descriptor_type, spec.primary_descriptor, tests)
        found[relative] = RegistryFile(relative, kind, location, size, sha)
    primary = found.pop(spec.primary_descriptor, None)
    if primary is None:
        raise fail(
            f"{where}: the primary descriptor {spec.primary_descriptor!r} is not a regular "
            f"file in {version.path!r} (or is excluded)"
        )
    missing = [t for t in spec.tests if t not in found]
    if missing:
        raise fail(
            f"{where}: test file(s) {', '.join(map(repr, missing))} are not regular files in "
            f"{version.path!r} (or are excluded)"
        )
    files = {primary.path: primary, **found}
    return RegistryVersion(
        id=version.id,
        name=version.name or version.id,
        folder=version_folder,
        is_production=version.is_production,
        files=files,
        images=_images(spec.descriptor_type, files),
    )


def _images(
    descriptor_type: DescriptorType, files: dict[str, RegistryFile]
) -> tuple[ImageData, ...]:
    """The container images the version's descriptors name literally."""
    pattern = _IMAGE_PATTERNS.get(descriptor_type)
    if pattern is None:
        return ()
    names: set[str] = set()
    for file in files.values():
        if file.file_type not in (FileType.PRIMARY_DESCRIPTOR, FileType.SECONDARY_DESCRIPTOR):
            continue
        try:
            text = file.read().decode("utf-8")
        except (UnicodeDecodeError, RegistryFileChanged):
            continue
        names.update(pattern.findall(text))
    return tuple(_image_data(name) for name in sorted(names))
