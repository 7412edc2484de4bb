#!/usr/bin/env python3
"""Write the synthetic data set of the variant-calling test workflows.

Pure standard library, fixed seed: the output is the same byte for byte on every machine and
Python version (only ``random.Random.random()`` is used, whose sequence for a given integer seed
Python guarantees not to change).

What it writes, into each target folder (by default the ``data/`` folder of
``cwl/variant-calling``, ``snakemake/variant-calling`` and ``wdl/variant-calling``, so each
workflow folder is complete on its own and can be sent as WES attachments without ``..``
paths):

- ``ref.fa``: one random contig, ``synth1``, of 8,000 bp (60 bases a line);
- ``reads_1.fq``, ``reads_2.fq``: 480 read pairs (2 x 100 bp, fragments of 250-350 bp, about
  12x coverage) sampled from a copy of the contig that carries the known SNPs, with a 0.2 %
  per-base substitution error rate; both mates of a pair share one name;
- ``known_snps.tsv``: the SNPs put into the sample (chrom, 1-based pos, ref, alt); all are
  homozygous, so a diploid caller reports them as 1/1.

Usage::

    python3 test-workflows/data/make_synthetic.py            # (re)write the files
    python3 test-workflows/data/make_synthetic.py --check    # exit 1 if any file differs
    python3 test-workflows/data/make_synthetic.py --out DIR  # write to DIR instead
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = [
    HERE.parent / "cwl" / "variant-calling" / "data",
    HERE.parent / "snakemake" / "variant-calling" / "data",
    HERE.parent / "wdl" / "variant-calling" / "data",
]

SEED = 20240917
CONTIG = "synth1"
LENGTH = 8000
LINE = 60
# 1-based positions of the SNPs; the alternative base is drawn from the seeded generator.
SNP_POSITIONS = (1203, 2488, 3571, 4602, 5835, 6917)
PAIRS = 480
READ_LENGTH = 100
FRAGMENT_MIN, FRAGMENT_MAX = 250, 350
ERROR_RATE = 0.002
QUALITY = "I"  # Phred 40 everywhere

BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGT", "TGCA")


class Generator:
    """Integers and choices from ``random.random()`` alone (stable across Python versions)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - test data, not cryptography

    def random(self) -> float:
        return self._rng.random()

    def below(self, n: int) -> int:
        return min(int(self._rng.random() * n), n - 1)

    def base(self, other_than: str = "") -> str:
        choices = [b for b in BASES if b != other_than]
        return choices[self.below(len(choices))]


def revcomp(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def build() -> dict[str, str]:
    """All files of the data set, by name."""
    gen = Generator(SEED)
    reference = "".join(gen.base() for _ in range(LENGTH))

    sample = list(reference)
    snps = []
    for pos in SNP_POSITIONS:
        ref = reference[pos - 1]
        alt = gen.base(other_than=ref)
        sample[pos - 1] = alt
        snps.append((CONTIG, pos, ref, alt))
    mutated = "".join(sample)

    def with_errors(seq: str) -> str:
        return "".join(gen.base(other_than=b) if gen.random() < ERROR_RATE else b for b in seq)

    reads_1, reads_2 = [], []
    quality = QUALITY * READ_LENGTH
    for i in range(1, PAIRS + 1):
        fragment_length = FRAGMENT_MIN + gen.below(FRAGMENT_MAX - FRAGMENT_MIN + 1)
        start = gen.below(LENGTH - fragment_length + 1)
        fragment = mutated[start : start + fragment_length]
        if gen.random() < 0.5:  # the fragment comes from the reverse strand
            fragment = revcomp(fragment)
        first = with_errors(fragment[:READ_LENGTH])
        second = with_errors(revcomp(fragment[-READ_LENGTH:]))
        name = f"pair{i:04d}"
        reads_1.append(f"@{name}\n{first}\n+\n{quality}\n")
        reads_2.append(f"@{name}\n{second}\n+\n{quality}\n")

    fasta = [f">{CONTIG}\n"]
    fasta += [reference[i : i + LINE] + "\n" for i in range(0, LENGTH, LINE)]
    truth = ["#chrom\tpos\tref\talt\n"] + [f"{c}\t{p}\t{r}\t{a}\n" for c, p, r, a in snps]
    return {
        "ref.fa": "".join(fasta),
        "reads_1.fq": "".join(reads_1),
        "reads_2.fq": "".join(reads_2),
        "known_snps.tsv": "".join(truth),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, action="append", help="target folder (repeatable)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    files = build()
    stale = []
    for folder in args.out or TARGETS:
        for name, text in files.items():
            path = folder / name
            data = text.encode("ascii")
            if args.check:
                if not path.is_file() or path.read_bytes() != data:
                    stale.append(path)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    for path in stale:
        print(f"differs from the generator: {path}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
