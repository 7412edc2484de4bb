"""The node's own TRS 2.0.1 registry (``/ga4gh/trs/v2``), every response checked against the
official TRS document: listing, filters, paging, percent-encoded ids, descriptors (JSON and
PLAIN), relative paths, files and zip, tests, errors, traversal attempts, malformed registries,
packaging of test-workflows, and ELIXIR's third-party client ``trs-cli`` against a real
``wes-bridge serve``.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.trs.registry import Registry, RegistryError, default_registry_dir

from .conftest import REPO, WORKFLOWS, SpecCheckedClient, free_port
from .live_server import Server
from .spec_check import SpecViolation, check_response, check_trs, trs_api

TRS = "/ga4gh/trs/v2"
HELLO = "#workflow/wes-bridge/cwl/hello"
PIPELINE = "#workflow/wes-bridge/cwl/pipeline"
VARIANT = "#workflow/wes-bridge/cwl/variant-calling"
FOLDERS = sorted(p.parent.relative_to(WORKFLOWS).as_posix() for p in WORKFLOWS.rglob("trs.yaml"))
ALL_IDS = sorted(f"#workflow/wes-bridge/{folder}" for folder in FOLDERS)


def enc(value: str) -> str:
    return quote(value, safe="")


def version_path(tool_id: str, version: str = "1.0.0") -> str:
    return f"{TRS}/tools/{enc(tool_id)}/versions/{enc(version)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served_files(folder: Path) -> dict[str, bytes]:
    """What a version at ``folder`` should serve: every regular file but trs.yaml and
    expected.json (the default exclude)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name not in ("trs.yaml", "expected.json")
    }


class TrsChecked:
    """Checks every response under /ga4gh/trs/v2 against the TRS document, with the path as
    it was sent (percent-encoded); errors anywhere under the prefix must be TRS Errors."""

    checked = 0

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = super().request(method, url, *args, **kwargs)  # type: ignore[misc]
        if response.request.url.raw_path.startswith(TRS.encode()) and check_trs(response):
            TrsChecked.checked += 1
        return response


class LiveTrsClient(TrsChecked, SpecCheckedClient):
    """The node served by uvicorn on a real port (raw paths as a real server sees them)."""


class InProcessTrsClient(TrsChecked, TestClient):
    """An app called in-process, for registries built in tmp_path."""


@pytest.fixture(scope="module")
def trs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTrsClient]:
    data = tmp_path_factory.mktemp("trs-node")
    settings = load_settings(
        data_dir=data / "data", port=free_port(), trs={"registry_dir": str(WORKFLOWS)}
    )
    with LiveTrsClient(create_app(settings)) as client:
        yield client


def in_process(
    tmp_path: Path, registry_dir: Path | None, **trs_settings: Any
) -> InProcessTrsClient:
    """The app of a node whose registry is ``registry_dir``, called in-process (no lifespan:
    nothing is started)."""
    if registry_dir is not None:
        trs_settings["registry_dir"] = str(registry_dir)
    data = tmp_path / f"data-{len(list(tmp_path.glob('data-*')))}"
    settings = load_settings(data_dir=data, port=free_port(), trs=trs_settings)
    return InProcessTrsClient(create_app(settings))


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [tool["id"] for tool in response.json()]


# -- service-info, tool classes, listing -----------------------------------------------------
def test_service_info(trs: LiveTrsClient) -> None:
    info = trs.get(f"{TRS}/service-info").json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "trs", "version": "2.0.1"}
    assert info["organization"] == {
        "name": "wes-bridge",
        "url": "https://github.com/wes-bridge/wes-bridge",
    }
    assert info["id"] == "org.wes-bridge.node.trs"


def test_tool_classes(trs: LiveTrsClient) -> None:
    classes = trs.get(f"{TRS}/toolClasses").json()
    assert sorted(c["name"] for c in classes) == ["CommandLineTool", "Workflow"]


def test_every_test_workflow_is_a_tool(trs: LiveTrsClient) -> None:
    # every folder of test-workflows holding a workflow has a trs.yaml
    workflow_folders = sorted(
        {
            p.parent.relative_to(WORKFLOWS).as_posix()
            for pattern in ("*/*/*.cwl", "*/*/Snakefile", "*/*/main.nf", "*/*/*.wdl")
            for p in WORKFLOWS.glob(pattern)
        }
    )
    assert workflow_folders == FOLDERS
    assert len(FOLDERS) == 19
    response = trs.get(f"{TRS}/tools")
    assert ids(response) == ALL_IDS
    hello = next(t for t in response.json() if t["id"] == HELLO)
    base_url = str(trs.base_url).rstrip("/")
    assert hello["url"] == f"{base_url}{TRS}/tools/%23workflow%2Fwes-bridge%2Fcwl%2Fhello"
    assert hello["toolclass"]["name"] == "CommandLineTool"
    assert hello["organization"] == "wes-bridge"
    assert hello["name"] == "hello"
    (version,) = hello["versions"]
    assert version["id"] == "1.0.0"
    assert version["url"] == hello["url"] + "/versions/1.0.0"
    assert version["descriptor_type"] == ["CWL"]
    assert version["descriptor_type_version"] == {"CWL": ["v1.2"]}
    assert version["is_production"] is True
    assert version["containerfile"] is False
    assert "images" not in version  # no nulls, no empty image list
    assert all(v is not None for v in hello.values())
    smk = trs.get(f"{TRS}/tools/{enc('#workflow/wes-bridge/snakemake/hello')}").json()
    assert smk["versions"][0]["descriptor_type_version"] == {"SMK": ["9"]}
    nfl = trs.get(f"{TRS}/tools/{enc('#workflow/wes-bridge/nextflow/hello')}").json()
    assert nfl["versions"][0]["descriptor_type_version"] == {"NFL": ["DSL2"]}
    wdl = trs.get(f"{TRS}/tools/{enc('#workflow/wes-bridge/wdl/hello')}").json()
    assert wdl["versions"][0]["descriptor_type_version"] == {"WDL": ["1.0"]}


def test_images_named_in_descriptors(trs: LiveTrsClient) -> None:
    for tool_id in (
        VARIANT,
        "#workflow/wes-bridge/snakemake/variant-calling",
        "#workflow/wes-bridge/wdl/variant-calling",
    ):
        version = trs.get(version_path(tool_id)).json()
        assert {i["image_name"] for i in version["images"]} == {
            "quay.io/biocontainers/bcftools:1.16--hfe4b78e_1",
            "quay.io/biocontainers/bwa:0.7.17--hed695b0_7",
            "quay.io/biocontainers/samtools:1.16.1--h6899075_1",
        }
        assert {(i["registry_host"], i["image_type"]) for i in version["images"]} == {
            ("quay.io", "Docker")
        }


LANGUAGES = ("cwl", "nextflow", "snakemake", "wdl")
VARIANTS = [f"#workflow/wes-bridge/{k}/variant-calling" for k in LANGUAGES]
HELLOS = [f"#workflow/wes-bridge/{k}/hello" for k in LANGUAGES]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"id": HELLO}, [HELLO]),
        ({"id": "hello"}, []),
        ({"alias": "anything"}, []),
        (
            {"toolClass": "CommandLineTool"},
            [HELLO, "#workflow/wes-bridge/cwl/fail", "#workflow/wes-bridge/cwl/sleep"],
        ),
        ({"toolClass": "Workflow"}, "all but 3"),
        (
            {"descriptorType": "SMK"},
            [
                f"#workflow/wes-bridge/snakemake/{n}"
                for n in ("fail", "fanout", "hello", "variant-calling")
            ],
        ),
        (
            {"descriptorType": "WDL"},
            [
                f"#workflow/wes-bridge/wdl/{n}"
                for n in ("fail", "fanout", "hello", "variant-calling")
            ],
        ),
        ({"registry": "quay.io"}, VARIANTS),
        ({"registry": "docker.io"}, []),
        ({"organization": "wes-bridge"}, ALL_IDS),
        ({"organization": "someone-else"}, []),
        ({"name": "hello"}, HELLOS),
        ({"name": "quay.io/biocontainers/bwa:0.7.17--hed695b0_7"}, VARIANTS),
        ({"toolname": "hello"}, HELLOS),
        ({"toolname": "quay.io/biocontainers/bwa:0.7.17--hed695b0_7"}, []),
        ({"description": "VARIANT CALLING"}, VARIANTS),
        ({"author": "wes-bridge developers"}, ALL_IDS),
        ({"author": "nobody"}, []),
        ({"checker": "true"}, []),
        ({"checker": "false"}, ALL_IDS),
        ({"descriptorType": "CWL", "toolname": "hello"}, [HELLO]),
        ({"toolClass": "CommandLineTool", "descriptorType": "NFL"}, []),
    ],
)
def test_filters(trs: LiveTrsClient, query: dict[str, str], expected: Any) -> None:
    found = ids(trs.get(f"{TRS}/tools", params=query))
    if expected == "all but 3":
        assert len(found) == len(ALL_IDS) - 3
        assert HELLO not in found
    else:
        assert found == sorted(expected)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "x"},
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": str(2**31)},
        {"offset": "-1"},
        {"offset": "x"},
        {"checker": "maybe"},
        {"descriptorType": "PLAIN_CWL"},
    ],
)
def test_bad_query_parameters(trs: LiveTrsClient, query: dict[str, str]) -> None:
    response = trs.get(f"{TRS}/tools", params=query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert set(body) == {"code", "message"}


def test_paging_follows_next_page_to_the_end(trs: LiveTrsClient) -> None:
    url: str | None = f"{TRS}/tools?limit=4&organization=wes-bridge"
    seen: list[str] = []
    pages = 0
    last_page = None
    while url is not None:
        response = trs.get(url)
        assert response.status_code == 200
        headers = response.headers
        offset = pages * 4
        assert headers["current_offset"] == str(offset)
        assert headers["current_limit"] == "4"
        assert parse_qs(urlsplit(headers["self_link"]).query) == {
            "organization": ["wes-bridge"],
            "offset": [str(offset)],
            "limit": ["4"],
        }
        last_page = last_page or headers["last_page"]
        assert headers["last_page"] == last_page
        links = headers["link"]
        assert f'<{headers["last_page"]}>; rel="last"' in links
        page = ids(response)
        assert 1 <= len(page) <= 4
        seen += page
        pages += 1
        url = headers.get("next_page")
        if url is not None:
            assert f'<{url}>; rel="next"' in links
            assert parse_qs(urlsplit(url).query)["organization"] == ["wes-bridge"]
        else:
            assert 'rel="next"' not in links
    assert seen == ALL_IDS
    assert pages == 5  # 19 tools, 4 a page
    assert parse_qs(urlsplit(last_page or "").query)["offset"] == ["16"]
    last = trs.get(last_page or "")
    assert ids(last) == ALL_IDS[16:]


def test_offset_past_the_end_is_an_empty_page(trs: LiveTrsClient) -> None:
    response = trs.get(f"{TRS}/tools", params={"offset": "100", "limit": "5"})
    assert response.status_code == 200
    assert response.json() == []
    assert "next_page" not in response.headers
    assert response.headers["current_offset"] == "100"
    empty = trs.get(f"{TRS}/tools", params={"organization": "nobody"})
    assert empty.json() == []
    assert parse_qs(urlsplit(empty.headers["last_page"]).query)["offset"] == ["0"]


# -- ids in paths ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "id_in_path",
    [
        "%23workflow%2Fwes-bridge%2Fcwl%2Fhello",  # encoded, as a client should send it
        "%23workflow%2fwes-bridge%2fcwl%2fhello",  # lowercase hex
        "%23workflow/wes-bridge/cwl/hello",  # slashes unencoded (unambiguous here)
        "%23workflow%2Fwes-bridge/cwl%2Fhello",  # mixed
    ],
)
def test_tool_id_encodings(trs: LiveTrsClient, id_in_path: str) -> None:
    expected = trs.get(f"{TRS}/tools/{enc(HELLO)}").json()
    assert trs.get(f"{TRS}/tools/{id_in_path}").json() == expected
    versions = trs.get(f"{TRS}/tools/{id_in_path}/versions").json()
    assert versions == expected["versions"]
    version = trs.get(f"{TRS}/tools/{id_in_path}/versions/1.0.0").json()
    assert version == expected["versions"][0]
    primary = trs.get(f"{TRS}/tools/{id_in_path}/versions/1.0.0/PLAIN_CWL/descriptor")
    assert primary.content == (WORKFLOWS / "cwl/hello/hello.cwl").read_bytes()


def test_urls_in_documents_lead_back(trs: LiveTrsClient) -> None:
    for tool in trs.get(f"{TRS}/tools").json():
        assert trs.get(tool["url"]).json() == tool
        for version in tool["versions"]:
            assert trs.get(version["url"]).json() == version


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/tools/nope", "no tool 'nope'"),
        ("/tools/%23workflow%2Fwes-bridge%2Fcwl%2Fnope", "no tool"),
        ("/tools/%23workflow/wes-bridge/cwl/nope", "no tool"),
        ("/tools/", "no tool id"),
        (f"/tools/{enc(HELLO)}/versions/9.9.9", "has no version '9.9.9'"),
        (f"/tools/{enc(HELLO)}/versions/9.9.9/CWL/descriptor", "has no version"),
        (f"/tools/{enc(HELLO)}/nope", "no such endpoint"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/nope", "no such endpoint"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/CWL/nope", "no such endpoint"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/SMK/descriptor", "has no SMK descriptor"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/PLAIN_NFL/descriptor", "has no NFL descriptor"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/FOO/descriptor", "unknown descriptor type"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/cwl/descriptor", "unknown descriptor type"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/SMK/tests", "has no SMK descriptor"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/SMK/files", "has no SMK descriptor"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/PLAIN_CWL/files", "not PLAIN_CWL"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/containerfile", "no container specification"),
        (f"/tools/{enc(HELLO)}/versions/1.0.0/CWL/descriptor/nope.cwl", "has no file 'nope.cwl'"),
        ("/nope", "no such endpoint"),
        ("/tools/x/y/z", "no tool"),
    ],
)
def test_not_found(trs: LiveTrsClient, path: str, message: str) -> None:
    response = trs.get(TRS + path)
    assert response.status_code == 404, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == 404
    assert message in body["message"]


def test_other_methods(trs: LiveTrsClient) -> None:
    for method, path in [
        ("HEAD", f"/tools/{enc(HELLO)}"),
        ("POST", "/tools"),
        ("DELETE", f"/tools/{enc(HELLO)}/versions/1.0.0"),
        ("PUT", "/toolClasses"),
    ]:
        response = trs.request(method, TRS + path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == "GET"
        if method != "HEAD":
            assert response.json()["code"] == 405


def test_wes_and_tes_errors_keep_their_shape(trs: LiveTrsClient) -> None:
    wes = trs.get("/ga4gh/wes/v1/runs/nope")
    assert wes.json() == {"msg": "run nope not found", "status_code": 404}
    tes = trs.get("/ga4gh/tes/v1/tasks/nope")
    assert set(tes.json()) == {"msg", "status_code"}
    assert set(trs.get("/ga4gh/wes/v1/nope").json()) == {"msg", "status_code"}


# -- descriptors, relative paths, tests, files -----------------------------------------------
def test_descriptor_json_and_plain(trs: LiveTrsClient) -> None:
    data = (WORKFLOWS / "cwl/hello/hello.cwl").read_bytes()
    wrapper = trs.get(f"{version_path(HELLO)}/CWL/descriptor").json()
    assert wrapper["content"] == data.decode()
    assert wrapper["checksum"] == [{"checksum": sha256(data), "type": "sha-256"}]
    assert wrapper["image_type"] == "CWL"
    plain = trs.get(wrapper["url"])
    assert plain.headers["content-type"] == "text/plain; charset=utf-8"
    assert plain.content == data
    assert trs.get(f"{version_path(HELLO)}/PLAIN_CWL/descriptor").content == data
    for kind, folder, primary in [
        ("SMK", "snakemake/hello", "Snakefile"),
        ("NFL", "nextflow/hello", "main.nf"),
    ]:
        tool = f"#workflow/wes-bridge/{folder}"
        data = (WORKFLOWS / folder / primary).read_bytes()
        assert trs.get(f"{version_path(tool)}/{kind}/descriptor").json()["content"] == data.decode()
        assert trs.get(f"{version_path(tool)}/PLAIN_{kind}/descriptor").content == data


@pytest.mark.parametrize(
    "tool_file", sorted((WORKFLOWS / "cwl/variant-calling/tools").glob("*.cwl"))
)
def test_nested_relative_paths(trs: LiveTrsClient, tool_file: Path) -> None:
    data = tool_file.read_bytes()
    relative = f"tools/{tool_file.name}"
    base = version_path(VARIANT)
    for path in (relative, enc(relative)):
        assert trs.get(f"{base}/PLAIN_CWL/descriptor/{path}").content == data
        wrapper = trs.get(f"{base}/CWL/descriptor/{path}").json()
        assert wrapper["content"] == data.decode()
        assert wrapper["checksum"][0]["checksum"] == sha256(data)
        assert trs.get(wrapper["url"]).content == data


def test_relative_paths_to_tests_and_data(trs: LiveTrsClient) -> None:
    base = version_path(VARIANT)
    for relative in ("inputs.json", "data/ref.fa", "workflow.cwl"):
        data = (WORKFLOWS / "cwl/variant-calling" / relative).read_bytes()
        assert trs.get(f"{base}/PLAIN_CWL/descriptor/{relative}").content == data
    # excluded and registry files are not part of the version
    for relative in ("expected.json", "trs.yaml"):
        assert trs.get(f"{base}/PLAIN_CWL/descriptor/{relative}").status_code == 404


@pytest.mark.parametrize(
    "relative",
    [
        "%2e%2e/hello/hello.cwl",
        "%2E%2E%2Fhello%2Fhello.cwl",
        "..%2F..%2Fhello%2Fhello.cwl",
        "tools/%2e%2e/workflow.cwl",
        "tools%2F%2E%2E%2Fworkflow.cwl",
        "%2e/workflow.cwl",
        "%2Fetc%2Fpasswd",
        "%2F" + enc(str(WORKFLOWS / "cwl/hello/hello.cwl")),
        "tools//bwa-mem.cwl",
        "tools%5Cbwa-mem.cwl",
        "workflow.cwl%00",
        "workflow.cwl%00.txt",
        "data",
        "tools/",
    ],
)
def test_traversal_attempts(trs: LiveTrsClient, relative: str) -> None:
    for kind in ("CWL", "PLAIN_CWL"):
        response = trs.get(f"{version_path(VARIANT)}/{kind}/descriptor/{relative}")
        assert response.status_code == 404, (relative, response.text[:200])
        assert response.json()["code"] == 404


def test_tests_endpoint(trs: LiveTrsClient) -> None:
    data = (WORKFLOWS / "cwl/hello/hello.json").read_bytes()
    (test,) = trs.get(f"{version_path(HELLO)}/CWL/tests").json()
    assert test["content"] == data.decode()
    assert test["checksum"] == [{"checksum": sha256(data), "type": "sha-256"}]
    plain = trs.get(f"{version_path(HELLO)}/PLAIN_CWL/tests")
    assert plain.headers["content-type"].startswith("text/plain")
    assert json.loads(plain.text) == [test]
    smk = trs.get(f"{version_path('#workflow/wes-bridge/snakemake/hello')}/SMK/tests").json()
    assert [t["content"] for t in smk] == [(WORKFLOWS / "snakemake/hello/config.yaml").read_text()]
    assert trs.get(f"{version_path(PIPELINE)}/CWL/tests").json() == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_files_and_zip_equal_the_folder(trs: LiveTrsClient, folder: str) -> None:
    spec = yaml.safe_load((WORKFLOWS / folder / "trs.yaml").read_text())
    kind = spec["descriptor_type"]
    base = version_path(f"#workflow/wes-bridge/{folder}")
    expected = served_files(WORKFLOWS / folder)
    listed = trs.get(f"{base}/{kind}/files").json()
    assert sorted(f["path"] for f in listed) == sorted(expected)
    assert listed[0] == {
        "path": spec["primary_descriptor"],
        "file_type": "PRIMARY_DESCRIPTOR",
        "checksum": {
            "checksum": sha256(expected[spec["primary_descriptor"]]),
            "type": "sha-256",
        },
    }
    for item in listed:
        assert item["checksum"] == {"checksum": sha256(expected[item["path"]]), "type": "sha-256"}
        if item["path"] in spec["tests"]:
            assert item["file_type"] == "TEST_FILE"
    response = trs.get(f"{base}/{kind}/files", params={"format": "zip"})
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == sorted(expected)
        for name, data in expected.items():
            assert archive.read(name) == data
    # every listed file is served at its relative path
    for item in listed:
        plain = trs.get(f"{base}/PLAIN_{kind}/descriptor/{item['path']}")
        assert plain.content == expected[item["path"]]


def test_file_types(trs: LiveTrsClient) -> None:
    def types(tool_id: str, kind: str) -> dict[str, str]:
        listed = trs.get(f"{version_path(tool_id)}/{kind}/files").json()
        return {f["path"]: f["file_type"] for f in listed}

    assert types(PIPELINE, "CWL") == {
        "workflow.cwl": "PRIMARY_DESCRIPTOR",
        "tools/count.cwl": "SECONDARY_DESCRIPTOR",
        "tools/report.cwl": "SECONDARY_DESCRIPTOR",
        "data.txt": "OTHER",
    }
    assert types("#workflow/wes-bridge/snakemake/variant-calling", "SMK") == {
        "Snakefile": "PRIMARY_DESCRIPTOR",
        "config.yaml": "TEST_FILE",
        "data/known_snps.tsv": "OTHER",
        "data/reads_1.fq": "OTHER",
        "data/reads_2.fq": "OTHER",
        "data/ref.fa": "OTHER",
    }
    assert types("#workflow/wes-bridge/nextflow/hello", "NFL") == {
        "main.nf": "PRIMARY_DESCRIPTOR",
        "params.json": "TEST_FILE",
    }


def test_bad_files_format(trs: LiveTrsClient) -> None:
    response = trs.get(f"{version_path(HELLO)}/CWL/files", params={"format": "tar"})
    assert response.status_code == 400
    assert response.json()["code"] == 400


def test_every_trs_response_was_checked(trs: LiveTrsClient) -> None:
    assert TrsChecked.checked > 100


# -- registries built here -------------------------------------------------------------------
def write_tool(folder: Path, files: dict[str, str | bytes], **spec: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    document = {
        "name": folder.name,
        "organization": "tests",
        "toolclass": "Workflow",
        "descriptor_type": "CWL",
        "descriptor_type_version": "v1.2",
        "primary_descriptor": "main.cwl",
        "versions": [{"id": "1"}],
        **spec,
    }
    (folder / "trs.yaml").write_text(yaml.safe_dump(document))
    return folder


CWL = "cwlVersion: v1.2\nclass: Workflow\n"


def test_symlinks_are_never_served(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients\n")
    tool = write_tool(registry / "linked", {"main.cwl": CWL, "inside.txt": "inside\n"})
    (tool / "outside.txt").symlink_to(secret)
    (tool / "again.txt").symlink_to(tool / "inside.txt")
    (tool / "folder-link").symlink_to(tmp_path, target_is_directory=True)
    client = in_process(tmp_path, registry)
    base = version_path("#workflow/wes-bridge/linked", "1")
    listed = [f["path"] for f in client.get(f"{base}/CWL/files").json()]
    assert listed == ["main.cwl", "inside.txt"]
    for relative in ("outside.txt", "again.txt", "folder-link/secret.txt"):
        assert client.get(f"{base}/PLAIN_CWL/descriptor/{relative}").status_code == 404
    with zipfile.ZipFile(
        io.BytesIO(client.get(f"{base}/CWL/files", params={"format": "zip"}).content)
    ) as archive:
        assert sorted(archive.namelist()) == ["inside.txt", "main.cwl"]


def test_versions_containerfiles_exclusions_and_binary_files(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    tool = registry / "multi"
    write_tool(tool / "v1", {"main.cwl": CWL, "job.yml": "a: 1\n", "notes.md": "x\n"})
    write_tool(
        tool / "v2",
        {
            "main.cwl": CWL + "doc: two\n",
            "job.yml": "a: 2\n",
            "Dockerfile": "FROM debian:12\n",
            "Singularity": "Bootstrap: docker\n",
            "blob.bin": b"\xff\xfe\x00binary",
            "scratch/tmp.log": "log\n",
            "expected.json": "{}",
        },
    )
    # the version folders hold trs.yaml files of their own: remove them, one tool above them
    for version in ("v1", "v2"):
        (tool / version / "trs.yaml").unlink()
    write_tool(
        tool,
        {},
        id="multi",
        aliases=["multi-alias"],
        tests=["job.yml"],
        exclude=["scratch/*", "*.md"],
        versions=[{"id": "1.0", "path": "v1"}, {"id": "2.0", "path": "v2", "is_production": True}],
    )
    client = in_process(tmp_path, registry)
    tool_json = client.get(f"{TRS}/tools/multi").json()
    assert [v["id"] for v in tool_json["versions"]] == ["1.0", "2.0"]
    assert tool_json["aliases"] == ["multi-alias"]
    assert ids(client.get(f"{TRS}/tools", params={"alias": "multi-alias"})) == ["multi"]
    v1, v2 = tool_json["versions"]
    assert v1["containerfile"] is False
    assert v2["containerfile"] is True
    files = {
        f["path"]: f["file_type"]
        for f in client.get(f"{TRS}/tools/multi/versions/2.0/CWL/files").json()
    }
    assert files == {
        "main.cwl": "PRIMARY_DESCRIPTOR",
        "Dockerfile": "CONTAINERFILE",
        "Singularity": "CONTAINERFILE",
        "blob.bin": "OTHER",
        "expected.json": "OTHER",  # `exclude` replaces the default ["expected.json"]
        "job.yml": "TEST_FILE",
    }
    v1_files = client.get(f"{TRS}/tools/multi/versions/1.0/CWL/files").json()
    assert [f["path"] for f in v1_files] == ["main.cwl", "job.yml"]  # notes.md excluded
    containers = client.get(f"{TRS}/tools/multi/versions/2.0/containerfile").json()
    assert [(c["content"], c["image_type"]) for c in containers] == [
        ("FROM debian:12\n", "Docker"),
        ("Bootstrap: docker\n", "Singularity"),
    ]
    assert client.get(f"{TRS}/tools/multi/versions/1.0/containerfile").status_code == 404
    # a file that is not UTF-8: its FileWrapper has no content, only the URL of its bytes
    wrapper = client.get(f"{TRS}/tools/multi/versions/2.0/CWL/descriptor/blob.bin").json()
    assert "content" not in wrapper
    assert wrapper["checksum"][0]["checksum"] == sha256(b"\xff\xfe\x00binary")
    assert client.get(wrapper["url"]).content == b"\xff\xfe\x00binary"
    assert client.get(f"{TRS}/tools/multi/versions/1.0/PLAIN_CWL/descriptor").text == CWL


def test_a_file_changed_after_loading_is_not_served(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    tool = write_tool(registry / "changing", {"main.cwl": CWL})
    client = in_process(tmp_path, registry)
    base = version_path("#workflow/wes-bridge/changing", "1")
    assert client.get(f"{base}/PLAIN_CWL/descriptor").text == CWL
    (tool / "main.cwl").write_text(CWL + "doc: edited\n")
    response = client.get(f"{base}/PLAIN_CWL/descriptor")
    assert response.status_code == 500
    assert "changed since the registry was loaded" in response.json()["message"]


def test_encoded_ids_are_never_ambiguous(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_tool(registry / "a", {"main.cwl": CWL}, id="a")
    write_tool(registry / "b", {"main.cwl": CWL + "doc: b\n"}, id="a/versions/1")
    client = in_process(tmp_path, registry)
    # encoded: always one meaning
    assert client.get(f"{TRS}/tools/a%2Fversions%2F1").json()["id"] == "a/versions/1"
    assert client.get(f"{TRS}/tools/a/versions/1").json()["id"] == "1"  # a's version 1
    plain = client.get(f"{TRS}/tools/a%2Fversions%2F1/versions/1/PLAIN_CWL/descriptor")
    assert plain.text == CWL + "doc: b\n"


def test_empty_and_disabled_registries(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    client = in_process(tmp_path, empty)
    assert client.get(f"{TRS}/tools").json() == []
    assert client.get(f"{TRS}/toolClasses").status_code == 200
    off = in_process(tmp_path, None, serve=False)
    assert off.get(f"{TRS}/tools").status_code == 404
    tes_only = create_app(load_settings(data_dir=tmp_path / "tes"), wes=False)
    assert TestClient(tes_only).get(f"{TRS}/tools").status_code == 404


def test_default_registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert default_registry_dir() == WORKFLOWS
    installed = tmp_path / "share" / "wes-bridge" / "test-workflows"
    installed.mkdir(parents=True)
    assert default_registry_dir() == installed
    settings = load_settings(data_dir=tmp_path / "data")
    assert Registry.from_settings(settings).root == installed


# -- malformed registries --------------------------------------------------------------------
def _broken(registry: Path, case: str) -> tuple[Path, str]:
    """A registry with one kind of malformed trs.yaml; (the file to name, a phrase)."""
    good = {"main.cwl": CWL, "job.json": "{}"}
    folder = registry / "broken"
    if case == "missing field":
        write_tool(folder, good)
        data = yaml.safe_load((folder / "trs.yaml").read_text())
        del data["descriptor_type"]
        (folder / "trs.yaml").write_text(yaml.safe_dump(data))
        return folder / "trs.yaml", "descriptor_type: Field required"
    if case == "no versions":
        write_tool(folder, good, versions=[])
        return folder / "trs.yaml", "versions"
    if case == "unknown key":
        write_tool(folder, good, colour="blue")
        return folder / "trs.yaml", "colour: Extra inputs are not permitted"
    if case == "unknown key in a version":
        write_tool(folder, good, versions=[{"id": "1", "tag": "x"}])
        return folder / "trs.yaml", "tag: Extra inputs are not permitted"
    if case == "bad descriptor type":
        write_tool(folder, good, descriptor_type="PLAIN_CWL")
        return folder / "trs.yaml", "descriptor_type"
    if case == "bad toolclass":
        write_tool(folder, good, toolclass="Service")
        return folder / "trs.yaml", "toolclass"
    if case == "primary descriptor missing":
        write_tool(folder, good, primary_descriptor="other.cwl")
        return folder / "trs.yaml", "primary descriptor 'other.cwl' is not a regular file"
    if case == "primary descriptor in a subfolder":
        write_tool(folder, {"sub/main.cwl": CWL}, primary_descriptor="sub/main.cwl")
        return folder / "trs.yaml", "must name a file at the top"
    if case == "primary descriptor is a symlink":
        write_tool(folder, {"real.cwl": CWL})
        (folder / "main.cwl").symlink_to(folder / "real.cwl")
        return folder / "trs.yaml", "primary descriptor 'main.cwl' is not a regular file"
    if case == "primary descriptor excluded":
        write_tool(folder, good, exclude=["*.cwl"])
        return folder / "trs.yaml", "or is excluded"
    if case == "test file missing":
        write_tool(folder, good, tests=["nope.json"])
        return folder / "trs.yaml", "'nope.json' are not regular files"
    if case == "test file outside":
        write_tool(folder, good, tests=["../job.json"])
        return folder / "trs.yaml", "test file '../job.json'"
    if case == "version folder outside the registry":
        write_tool(folder, good, versions=[{"id": "1", "path": "../.."}])
        return folder / "trs.yaml", "is outside the registry folder"
    if case == "version folder absolute":
        write_tool(folder, good, versions=[{"id": "1", "path": str(folder)}])
        return folder / "trs.yaml", "must be relative"
    if case == "version folder missing":
        write_tool(folder, good, versions=[{"id": "1", "path": "nope"}])
        return folder / "trs.yaml", "does not exist"
    if case == "version folder through a link":
        outside = registry.parent / "elsewhere"
        write_tool(outside, good)
        folder.mkdir(parents=True)
        (folder / "link").symlink_to(outside, target_is_directory=True)
        write_tool(folder, good, versions=[{"id": "1", "path": "link"}])
        return folder / "trs.yaml", "is outside the registry folder"
    if case == "duplicate version ids":
        write_tool(folder, good, versions=[{"id": "1"}, {"id": "1"}])
        return folder / "trs.yaml", "version id '1' appears twice"
    if case == "duplicate tool ids":
        write_tool(registry / "a-first", good, id="same")
        write_tool(folder, good, id="same")
        first = registry / "a-first" / "trs.yaml"
        return folder / "trs.yaml", f"already the id of the tool in {first}"
    if case == "invalid YAML":
        folder.mkdir(parents=True)
        (folder / "trs.yaml").write_text("name: [unclosed\n")
        return folder / "trs.yaml", "cannot be read"
    if case == "not a mapping":
        folder.mkdir(parents=True)
        (folder / "trs.yaml").write_text("- a list\n")
        return folder / "trs.yaml", "must be a YAML mapping"
    if case == "float version id":
        write_tool(folder, good, versions=[{"id": 1.1}])
        return folder / "trs.yaml", "id: Input should be a valid string"
    raise AssertionError(case)


BROKEN = [
    "missing field",
    "no versions",
    "unknown key",
    "unknown key in a version",
    "bad descriptor type",
    "bad toolclass",
    "primary descriptor missing",
    "primary descriptor in a subfolder",
    "primary descriptor is a symlink",
    "primary descriptor excluded",
    "test file missing",
    "test file outside",
    "version folder outside the registry",
    "version folder absolute",
    "version folder missing",
    "version folder through a link",
    "duplicate version ids",
    "duplicate tool ids",
    "invalid YAML",
    "not a mapping",
    "float version id",
]


@pytest.mark.parametrize("case", BROKEN)
def test_a_malformed_registry_refuses_to_start(tmp_path: Path, case: str) -> None:
    registry = tmp_path / "registry"
    write_tool(registry / "fine", {"main.cwl": CWL})
    source, phrase = _broken(registry, case)
    settings = load_settings(data_dir=tmp_path / "data", trs={"registry_dir": str(registry)})
    with pytest.raises(RegistryError) as raised:
        create_app(settings)
    message = str(raised.value)
    assert message.startswith(f"{source}: "), message
    assert phrase in message, message
    assert not (tmp_path / "data").exists()  # nothing was started


def test_a_missing_registry_dir_refuses_to_start(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", trs={"registry_dir": str(tmp_path / "x")})
    with pytest.raises(RegistryError, match="is not a folder"):
        create_app(settings)
    # without trs.serve, the registry is not read
    off = load_settings(
        data_dir=tmp_path / "data", trs={"registry_dir": str(tmp_path / "x"), "serve": False}
    )
    create_app(off)


def test_int_descriptor_type_version_is_a_string(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_tool(
        registry / "smk",
        {"Snakefile": "rule all:\n    input: []\n"},
        descriptor_type="SMK",
        descriptor_type_version=9,
        primary_descriptor="Snakefile",
    )
    tool = Registry.load(registry).tools["#workflow/wes-bridge/smk"]
    assert tool.descriptor_type_version == "9"


@pytest.mark.integration
def test_serve_refuses_to_start_with_a_malformed_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    source, phrase = _broken(registry, "primary descriptor missing")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wes_bridge",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env={**os.environ, "WES_BRIDGE_TRS__REGISTRY_DIR": str(registry)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # One line naming the file and the problem, no traceback.
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "TRS registry cannot be served" in result.stderr, result.stderr[-2000:]
    assert f"{source}: " in result.stderr, result.stderr[-2000:]
    assert phrase in result.stderr


# -- packaging -------------------------------------------------------------------------------
def test_data_files_ship_every_test_workflow() -> None:
    """Every folder of test-workflows that has files is one data-files entry installing
    exactly its files under share/wes-bridge (a new workflow folder cannot be forgotten)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    data_files: dict[str, list[str]] = pyproject["tool"]["setuptools"]["data-files"]
    expected: dict[str, set[str]] = {}
    for top, _dirs, files in os.walk(WORKFLOWS):
        if files:
            folder = Path(top).relative_to(REPO).as_posix()
            expected[f"share/wes-bridge/{folder}"] = {f"{folder}/{name}" for name in files}
    assert sorted(data_files) == sorted(expected)
    for target, patterns in data_files.items():
        matched = {
            Path(p).relative_to(REPO).as_posix()
            for pattern in patterns
            for p in glob.glob(str(REPO / pattern))
        }
        assert matched == expected[target], target
        assert all((REPO / m).is_file() for m in matched), target  # no folder in a glob


# -- trs-cli, a third-party client, against a real `wes-bridge serve` -------------------------
TRS_CLI_DRIVER = r"""
import json, sys, zipfile
import trs_cli.client
from trs_cli.client import TRSClient
from trs_cli.models import Error, Service, ToolClass

port, out_dir = int(sys.argv[1]), sys.argv[2]
client = TRSClient(uri="http://127.0.0.1", port=port, use_http=True)
result = {"uri": client.uri}


def attempt(name, call):
    try:
        value = call()
    except Exception as exc:
        cause = exc.__cause__
        result[name] = {"raised": type(exc).__name__, "message": str(exc),
                        "cause": str(cause) if cause else None}
        return None
    result[name] = {"type": type(value).__name__}
    return value


info = attempt("service_info", client.get_service_info)
if isinstance(info, Service):
    result["service_info"]["value"] = {"id": info.id, "type": info.type.artifact}
classes = attempt("tool_classes", client.get_tool_classes)
if isinstance(classes, list):
    result["tool_classes"]["value"] = sorted(c.name for c in classes if isinstance(c, ToolClass))
attempt("tools_validated", client.get_tools)
attempt("files_validated", lambda: client.get_files(type="CWL", id="pipeline", version_id="1.0.0"))
attempt("descriptor_validated",
        lambda: client.get_descriptor(type="CWL", id="hello", version_id="1.0.0"))
attempt("dockstore_id", lambda: client.get_tool(id="#workflow/wes-bridge/variant-calling"))
encoded = attempt("dockstore_id_encoded",
                  lambda: client.get_tool(id="%23workflow%2Fwes-bridge%2Fvariant-calling"))
if isinstance(encoded, Error):
    result["dockstore_id_encoded"]["value"] = {"code": encoded.code, "message": encoded.message}
descriptor = attempt("descriptor_plain", lambda: client.get_descriptor(
    type="PLAIN_CWL", id="hello", version_id="1.0.0", accept="text/plain"))
result["descriptor_plain"]["value"] = descriptor
nested = attempt("descriptor_by_path", lambda: client.get_descriptor_by_path(
    type="PLAIN_CWL", path="tools/count.cwl", id="pipeline", version_id="1.0.0",
    accept="text/plain"))
result["descriptor_by_path"]["value"] = nested
nested_encoded = attempt("descriptor_by_path_encoded", lambda: client.get_descriptor_by_path(
    type="PLAIN_CWL", path="tools/count.cwl", id="trs://127.0.0.1/pipeline/1.0.0",
    encode_path=True, accept="text/plain"))
result["descriptor_by_path_encoded"]["value"] = nested_encoded
archive = attempt("files_zip", lambda: client.get_files(
    type="CWL", id="pipeline", version_id="1.0.0", format="zip",
    outfile=out_dir + "/pipeline.zip"))
if archive:
    with zipfile.ZipFile(archive) as z:
        result["files_zip"]["value"] = {n: z.read(n).decode() for n in z.namelist()}
containerfile = attempt("containerfile", lambda: client.get_containerfiles(
    id="hello", version_id="1.0.0"))
if isinstance(containerfile, Error):
    result["containerfile"]["value"] = containerfile.code

TRSClient.config(no_validate=True)  # trs-cli's own switch: raw responses, no model validation
tools = attempt("tools_unvalidated", client.get_tools)
result["tools_unvalidated"]["value"] = [t["id"] for t in tools.json()]
files = attempt("files_unvalidated",
                lambda: client.get_files(type="CWL", id="pipeline", version_id="1.0.0"))
result["files_unvalidated"]["value"] = files.json()
print(json.dumps(result))
"""


def _trs_cli_python() -> Path:
    venv = os.environ.get("WES_BRIDGE_TRS_CLI_VENV")
    if not venv:
        message = "WES_BRIDGE_TRS_CLI_VENV is not set (tox sets it; see scripts/install-trs-cli)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    python = Path(venv) / "bin" / "python"
    assert python.exists(), f"{python} missing: run scripts/install-trs-cli {venv}"
    return python


@pytest.mark.integration
def test_trs_cli_against_a_real_node(tmp_path: Path) -> None:
    python = _trs_cli_python()
    # trs-cli accepts only tool ids matching [a-z0-9-_~.%#]+ (no "/"): two tools get such ids;
    # one keeps its Dockstore-style default id, to show what trs-cli does with it.
    registry = tmp_path / "registry"
    for folder, tool_id in (
        ("hello", "hello"),
        ("pipeline", "pipeline"),
        ("variant-calling", None),
    ):
        shutil.copytree(WORKFLOWS / "cwl" / folder, registry / folder)
        if tool_id:
            spec = yaml.safe_load((registry / folder / "trs.yaml").read_text())
            (registry / folder / "trs.yaml").write_text(yaml.safe_dump({"id": tool_id, **spec}))
    port = free_port()
    server = Server(tmp_path / "data", port, env={"WES_BRIDGE_TRS__REGISTRY_DIR": str(registry)})
    server.start()
    try:
        driver = tmp_path / "driver.py"
        driver.write_text(TRS_CLI_DRIVER)
        run = subprocess.run(
            [str(python), str(driver), str(port), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        _raw_traversal_attempts(port)
    finally:
        server.stop()

    # What trs-cli 0.7.0 does with a spec-compliant TRS 2.0.1 server:
    # it reads service-info and tool classes ...
    assert result["service_info"]["value"] == {"id": "org.wes-bridge.node.trs", "type": "trs"}
    assert result["tool_classes"]["value"] == ["CommandLineTool", "Workflow"]
    # ... fetches PLAIN descriptors, by relative path too (plain or percent-encoded) ...
    pipeline = WORKFLOWS / "cwl/pipeline"
    assert result["descriptor_plain"]["value"] == (WORKFLOWS / "cwl/hello/hello.cwl").read_text()
    assert result["descriptor_by_path"]["value"] == (pipeline / "tools/count.cwl").read_text()
    assert (
        result["descriptor_by_path_encoded"]["value"] == (pipeline / "tools/count.cwl").read_text()
    )
    # ... downloads every file as a zip ...
    assert result["files_zip"]["value"] == {
        name: data.decode() for name, data in served_files(pipeline).items()
    }
    # ... reads a TRS Error ...
    assert result["containerfile"]["value"] == 404
    # ... and lists tools and files with its own no_validate switch.
    assert result["tools_unvalidated"]["value"] == [
        "#workflow/wes-bridge/variant-calling",
        "hello",
        "pipeline",
    ]
    assert {f["path"] for f in result["files_unvalidated"]["value"]} == set(served_files(pipeline))
    # Its models are TRS 2.0.0's with extra="forbid": every TRS 2.0.1 field fails validation.
    for name, model, extra in [
        ("tools_validated", "Tool", "descriptor_type_version"),
        ("files_validated", "ToolFile", "checksum"),
        ("descriptor_validated", "FileWrapper", "image_type"),
    ]:
        assert result[name]["raised"] == "InvalidResponseError", result[name]
        assert model in result[name]["cause"]
        assert extra in result[name]["cause"]
        assert "extra fields not permitted" in result[name]["cause"]
    # Its id pattern has no "/": a Dockstore-style id is refused before any request, and an
    # id given percent-encoded is encoded again (%2523...), so it names no tool.
    assert result["dockstore_id"]["raised"] == "InvalidResourceIdentifier"
    assert result["dockstore_id_encoded"]["value"]["code"] == 404
    assert "%23workflow%2F" in result["dockstore_id_encoded"]["value"]["message"]


def _raw_traversal_attempts(port: int) -> None:
    """Literal ``..`` and other paths no HTTP library sends as written, on a real server."""
    base = f"{TRS}/tools/{enc(VARIANT.replace('/cwl/', '/'))}/versions/1.0.0"
    for target in [
        f"{base}/PLAIN_CWL/descriptor/../../../../../../etc/passwd",
        f"{base}/PLAIN_CWL/descriptor/tools/../workflow.cwl",
        f"{base}/PLAIN_CWL/descriptor/./workflow.cwl",
        f"{base}/PLAIN_CWL/descriptor//etc/passwd",
        f"{base}/CWL/descriptor/../../hello/versions/1.0.0/CWL/descriptor",
        f"{TRS}/tools/../../wes/v1/service-info",
    ]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 404, (target, body[:200])
        assert json.loads(body)["code"] == 404, target


def test_the_checker_rejects_what_the_document_does_not_allow() -> None:
    """The TRS checks of spec_check are not vacuous."""
    tool = f"{TRS}/tools/{enc(HELLO)}"

    def check(path: str, status: int, body: Any, ctype: str = "application/json") -> bool:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return check_response(trs_api(), "GET", path, status, raw, ctype)

    good_version = {"id": "1", "url": "http://x/v/1"}
    assert check(f"{tool}/versions/1", 200, good_version)
    assert check(f"{TRS}/tools/%23workflow/wes-bridge/cwl/hello/versions/1", 200, good_version)
    assert check(f"{tool}/versions/1/CWL/descriptor/tools/a.cwl", 200, {"content": "x"})
    assert check(f"{tool}/versions/1/PLAIN_CWL/descriptor/a.cwl", 200, b"x", "text/plain")
    assert not check(f"{TRS}/elsewhere", 200, {})
    for path, status, body, ctype in [
        (f"{tool}/versions/1", 200, {"id": "1"}, "application/json"),  # no url
        (f"{tool}/versions/1", 200, good_version, "text/plain"),  # not declared
        (f"{TRS}/tools", 200, [{"id": "x"}], "application/json"),  # not a Tool
        (f"{tool}/versions/1/CWL/files", 200, b"not a zip", "application/zip"),
        (f"{tool}/versions/1/CWL/tests", 200, b"[{", "text/plain"),
        (f"{tool}", 404, {"msg": "x", "status_code": 404}, "application/json"),  # WES shape
        (f"{TRS}/elsewhere", 404, {"code": 400, "message": "x"}, "application/json"),
        (f"{tool}", 404, {"code": 404, "message": ""}, "application/json"),
        (f"{tool}", 418, {"code": 418, "message": "teapot"}, "application/json"),
    ]:
        with pytest.raises(SpecViolation):
            check(path, status, body, ctype)
    headers = {"current_limit": "ten"}
    with pytest.raises(SpecViolation, match="current_limit"):
        check_response(trs_api(), "GET", f"{TRS}/tools", 200, b"[]", "application/json", headers)
