"""Every workflow in test-workflows/, run directly by its engine (no WES), against its
expected.json: cwltool --no-container --parallel for CWL, snakemake --cores 2 for Snakemake,
nextflow run (local executor) for Nextflow.

WDL is the exception: Toil's WDL runner runs task commands only in containers, except in a
node's Toil workers on a host-execution TES, so the WDL folders run through a node
(tests/test_toil_wdl.py). Their expected outputs are checked here against the other languages'.

Each workflow folder is copied first, so a run sees only what a WES client would attach.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import WORKFLOWS, nextflow_command

CASES = sorted(p.parent.relative_to(WORKFLOWS).as_posix() for p in WORKFLOWS.rglob("expected.json"))
DIRECT_CASES = [case for case in CASES if not case.startswith("wdl/")]
TOOLS = ("bwa", "samtools", "bcftools")


def _engine(name: str) -> str:
    """The engine's console script next to this Python (not `python -m cwltool`: that form
    exits 0 even when the workflow fails)."""
    script = Path(sys.executable).parent / name
    return str(script) if script.is_file() else name


def _sha1(data: bytes) -> str:
    return "sha1$" + hashlib.sha1(data).hexdigest()


def _expected(case: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / case / "expected.json").read_text())


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _check_file(path: Path, want: dict[str, Any]) -> None:
    assert path.is_file(), f"missing output {path.name}"
    if "checksum" in want:
        data = path.read_bytes()
        assert (_sha1(data), len(data)) == (want["checksum"], want["size"]), path.name
    if "records_sha1" in want:
        records = subprocess.run(["samtools", "view", str(path)], capture_output=True, check=True)
        assert _sha1(records.stdout) == want["records_sha1"], path.name


def _check_variants(vcf: Path, truth: Path) -> None:
    """Every known SNP is called homozygous ALT; every confident call is a known SNP."""
    known = {
        tuple(line.split("\t"))
        for line in truth.read_text().splitlines()
        if line and not line.startswith("#")
    }
    called = {}
    for line in vcf.read_text().splitlines():
        if line.startswith("#"):
            continue
        chrom, pos, _id, ref, alt, qual, _filter, _info, _fmt, sample = line.split("\t")
        called[(chrom, pos, ref, alt)] = (float(qual), sample.split(":")[0])
    assert len(known) >= 5
    for snp in sorted(known):
        assert snp in called, f"known SNP {snp} not called"
        qual, genotype = called[snp]
        assert qual >= 100
        assert genotype == "1/1"
    assert {snp for snp, (qual, _gt) in called.items() if qual >= 20} == known


def _run_cwltool(wf: Path, expected: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cmd = [_engine("cwltool"), "--no-container", "--parallel"]
    cmd += ["--outdir", str(out), "--tmpdir-prefix", f"{scratch}/", "--tmp-outdir-prefix"]
    cmd += [f"{scratch}/", expected["workflow"], expected["params"]]
    proc = _run(cmd, wf)
    assert proc.returncode == expected["exit_code"], proc.stderr[-3000:]
    if "failed_step" in expected:
        step = expected["failed_step"]
        assert step["stderr"] in proc.stderr
        assert f"[job {step['name']}] exited with status: {step['exit_code']}" in proc.stderr
        assert "Final process status is permanentFail" in proc.stderr
    else:
        assert "Final process status is success" in proc.stderr
    if "parallel_steps" in expected:
        jobs = re.findall(r"\[job (part(?:_\d+)?)\] completed success", proc.stderr)
        assert len(set(jobs)) == expected["parallel_steps"]
    outputs = json.loads(proc.stdout)
    assert sorted(outputs) == sorted(expected["outputs"])
    for output_id, want in expected["outputs"].items():
        got = outputs[output_id]
        assert got["basename"] == want["basename"]
        if "checksum" in want:
            assert (got["checksum"], got["size"]) == (want["checksum"], want["size"]), output_id
        _check_file(Path(got["path"]), want)
        secondary = sorted(f["basename"] for f in got.get("secondaryFiles", []))
        assert secondary == want.get("secondary_files", [])
        for name in secondary:
            assert (Path(got["path"]).parent / name).is_file()
    if "known_snps" in expected:
        _check_variants(Path(outputs["vcf"]["path"]), wf / expected["known_snps"])


def _run_snakemake(wf: Path, expected: dict[str, Any]) -> None:
    cmd = [_engine("snakemake"), "--cores", "2", "--snakefile"]
    cmd += [expected["workflow"], "--configfile", expected["params"], "--directory", str(wf)]
    proc = _run(cmd, wf)
    assert proc.returncode == expected["exit_code"], proc.stderr[-3000:]
    if "failed_step" in expected:
        step = expected["failed_step"]
        assert step["stderr"] in proc.stderr
        assert f"Error in rule {step['name']}:" in proc.stderr
        assert f"returned non-zero exit status {step['exit_code']}." in proc.stderr
    else:
        assert "steps (100%) done" in proc.stderr
    if "parallel_steps" in expected:
        jobs = re.findall(r"^(?:local)?rule part:$", proc.stderr, re.MULTILINE)
        assert len(jobs) == expected["parallel_steps"]
    for rel, want in expected["outputs"].items():
        _check_file(wf / rel, want)
    if "known_snps" in expected:
        _check_variants(wf / "calls.vcf", wf / expected["known_snps"])


def _run_nextflow(wf: Path, expected: dict[str, Any], tmp_path: Path) -> None:
    outdir = tmp_path / "results"
    cmd = [nextflow_command(), "-log", str(tmp_path / "nextflow.log"), "run"]
    cmd += [expected["workflow"], "-params-file", expected["params"], "--outdir", str(outdir)]
    cmd += ["-ansi-log", "false", "-work-dir", str(tmp_path / "work")]
    env = {**os.environ, "NXF_HOME": str(tmp_path / "nxf-home"), "NXF_OFFLINE": "true"}
    proc = subprocess.run(cmd, cwd=wf, capture_output=True, text=True, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == expected["exit_code"], log[-3000:]
    if "failed_step" in expected:
        step = expected["failed_step"]
        assert step["stderr"] in log
        status = f"terminated with an error exit status ({step['exit_code']})"
        assert f"Process `{step['name']}` {status}" in log
    if "parallel_steps" in expected:
        jobs = re.findall(r"Submitted process > PART \((\d+)\)", log)
        assert len(set(jobs)) == expected["parallel_steps"]
    published = sorted(p.relative_to(outdir).as_posix() for p in outdir.rglob("*") if p.is_file())
    assert published == sorted(expected["outputs"])
    for rel, want in expected["outputs"].items():
        _check_file(outdir / rel, want)
    if "known_snps" in expected:
        _check_variants(outdir / "calls.vcf", wf / expected["known_snps"])


@pytest.mark.integration
@pytest.mark.parametrize("case", DIRECT_CASES)
def test_workflow_runs_directly_with_expected_outputs(case: str, tmp_path: Path) -> None:
    expected = _expected(case)
    if "known_snps" in expected:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"not on PATH: {', '.join(missing)} (apt-get install {' '.join(TOOLS)})")
    wf = tmp_path / "wf"
    shutil.copytree(WORKFLOWS / case, wf)
    if expected["engine"] == "cwltool":
        _run_cwltool(wf, expected, tmp_path)
    elif expected["engine"] == "nextflow":
        _run_nextflow(wf, expected, tmp_path)
    else:
        assert expected["engine"] == "snakemake"
        _run_snakemake(wf, expected)


def test_every_workflow_folder_has_expected_json() -> None:
    for engine in ("cwl", "snakemake", "nextflow", "wdl"):
        for name in ("hello", "fanout", "fail-step" if engine == "cwl" else "fail"):
            assert f"{engine}/{name}" in CASES
        assert f"{engine}/variant-calling" in CASES
    for case in CASES:
        expected = _expected(case)
        for name in (expected["workflow"], expected["params"]):
            assert (WORKFLOWS / case / name).is_file(), f"{case}: {name}"


def test_cwl_snakemake_and_nextflow_versions_give_the_same_bytes() -> None:
    def checksum(case: str, output: str) -> str:
        return str(_expected(case)["outputs"][output]["checksum"])

    pairs = [
        ("cwl/hello", "greeting", "hello", "hello.txt"),
        ("cwl/fanout", "combined", "fanout", "fanout.txt"),
        ("cwl/fail-step", "prepared", "fail", "prepared.txt"),
        ("cwl/variant-calling", "vcf", "variant-calling", "calls.vcf"),
    ]
    for cwl, cwl_output, name, output in pairs:
        for language in ("snakemake", "nextflow"):
            assert checksum(cwl, cwl_output) == checksum(f"{language}/{name}", output), cwl
    bam = _expected("cwl/variant-calling")["outputs"]["bam"]["records_sha1"]
    for language in ("snakemake", "nextflow"):
        outputs = _expected(f"{language}/variant-calling")["outputs"]
        assert bam == outputs["aligned.bam"]["records_sha1"]


def test_wdl_versions_give_the_same_bytes_as_the_others() -> None:
    """The WDL outputs (``<workflow>.<output>``, a File object or a list of them) have the
    names and bytes of the other languages' files."""

    def same(wdl: dict[str, Any], case: str, output: str) -> None:
        other = _expected(case)["outputs"][output]
        assert (wdl["checksum"], wdl["size"]) == (other["checksum"], other["size"]), case
        assert wdl["basename"] == output.rsplit("/", 1)[-1]

    hello = _expected("wdl/hello")["outputs"]
    assert set(hello) == {"hello.greeting"}
    same(hello["hello.greeting"], "nextflow/hello", "hello.txt")
    assert (
        hello["hello.greeting"]["checksum"]
        == _expected("cwl/hello")["outputs"]["greeting"]["checksum"]
    )
    fanout = _expected("wdl/fanout")["outputs"]
    assert set(fanout) == {"fanout.combined", "fanout.parts"}
    same(fanout["fanout.combined"], "nextflow/fanout", "fanout.txt")
    parts = fanout["fanout.parts"]
    assert len(parts) == _expected("wdl/fanout")["parallel_steps"] == 20
    for i, part in enumerate(parts, start=1):
        same(part, "nextflow/fanout", f"parts/part-{i}.txt")
    calls = _expected("wdl/variant-calling")["outputs"]
    assert set(calls) == {"variant_calling.vcf", "variant_calling.bam", "variant_calling.bai"}
    for language in ("snakemake", "nextflow"):
        same(calls["variant_calling.vcf"], f"{language}/variant-calling", "calls.vcf")
        records = _expected(f"{language}/variant-calling")["outputs"]["aligned.bam"]
        assert calls["variant_calling.bam"]["records_sha1"] == records["records_sha1"]
    assert calls["variant_calling.bam"]["basename"] == "aligned.bam"
    assert calls["variant_calling.bai"]["basename"] == "aligned.bam.bai"
    # A failed WDL workflow has no outputs (the engines report none); its step is described.
    fail = _expected("wdl/fail")
    assert fail["outputs"] == {}
    assert fail["failed_step"] == _expected("snakemake/fail")["failed_step"]


def test_synthetic_data_matches_its_generator() -> None:
    generator = WORKFLOWS / "data" / "make_synthetic.py"
    proc = subprocess.run(
        [sys.executable, str(generator), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for language in ("cwl", "snakemake", "nextflow", "wdl"):
        case = f"{language}/variant-calling"
        data = WORKFLOWS / case / "data"
        assert sorted(p.name for p in data.iterdir()) == [
            "known_snps.tsv",
            "reads_1.fq",
            "reads_2.fq",
            "ref.fa",
        ]
