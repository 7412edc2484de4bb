"""The TRS 2.0.1 data model (``components/schemas`` of the official OpenAPI document).

Every field the document declares is here, with its name; fields a document leaves out are
``None`` and are not serialized (:func:`dump`). Unknown fields are ignored when reading, so a
registry that sends more than TRS 2.0.1 still reads.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Checksum",
    "DescriptorType",
    "DescriptorTypeWithPlain",
    "Error",
    "FileType",
    "FileWrapper",
    "ImageData",
    "ImageType",
    "Tool",
    "ToolClass",
    "ToolFile",
    "ToolVersion",
    "dump",
]


class DescriptorType(StrEnum):
    CWL = "CWL"
    WDL = "WDL"
    NFL = "NFL"
    GALAXY = "GALAXY"
    SMK = "SMK"


class DescriptorTypeWithPlain(StrEnum):
    CWL = "CWL"
    WDL = "WDL"
    NFL = "NFL"
    GALAXY = "GALAXY"
    SMK = "SMK"
    PLAIN_CWL = "PLAIN_CWL"
    PLAIN_WDL = "PLAIN_WDL"
    PLAIN_NFL = "PLAIN_NFL"
    PLAIN_GALAXY = "PLAIN_GALAXY"
    PLAIN_SMK = "PLAIN_SMK"

    @property
    def plain(self) -> bool:
        return self.value.startswith("PLAIN_")

    @property
    def descriptor_type(self) -> DescriptorType:
        return DescriptorType(self.value.removeprefix("PLAIN_"))


class ImageType(StrEnum):
    DOCKER = "Docker"
    SINGULARITY = "Singularity"
    CONDA = "Conda"


class FileType(StrEnum):
    TEST_FILE = "TEST_FILE"
    PRIMARY_DESCRIPTOR = "PRIMARY_DESCRIPTOR"
    SECONDARY_DESCRIPTOR = "SECONDARY_DESCRIPTOR"
    CONTAINERFILE = "CONTAINERFILE"
    OTHER = "OTHER"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Checksum(_Model):
    checksum: str = Field(..., description="The hex-string encoded checksum for the data.")
    type: str = Field(..., description="The digest method, e.g. sha-256.")


class ToolFile(_Model):
    path: str | None = None
    file_type: FileType | None = None
    checksum: Checksum | None = None


class ToolClass(_Model):
    id: str | None = None
    name: str | None = None
    description: str | None = None


class ImageData(_Model):
    registry_host: str | None = None
    image_name: str | None = None
    size: int | None = None
    updated: str | None = None
    checksum: list[Checksum] | None = None
    image_type: ImageType | None = None


class ToolVersion(_Model):
    author: list[str] | None = None
    name: str | None = None
    url: str
    id: str
    is_production: bool | None = None
    images: list[ImageData] | None = None
    descriptor_type: list[DescriptorType] | None = None
    descriptor_type_version: dict[str, list[str]] | None = None
    containerfile: bool | None = None
    meta_version: str | None = None
    verified: bool | None = None
    verified_source: list[str] | None = None
    signed: bool | None = None
    included_apps: list[str] | None = None


class Tool(_Model):
    url: str
    id: str
    aliases: list[str] | None = None
    organization: str
    name: str | None = None
    toolclass: ToolClass
    description: str | None = None
    meta_version: str | None = None
    has_checker: bool | None = None
    checker_url: str | None = None
    versions: list[ToolVersion]


class FileWrapper(_Model):
    content: str | None = None
    checksum: list[Checksum] | None = None
    image_type: ImageType | DescriptorType | None = None
    url: str | None = None


class Error(_Model):
    code: int
    message: str | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON document of a TRS object: no nulls (TRS has no nullable fields)."""
    return model.model_dump(mode="json", exclude_none=True)
