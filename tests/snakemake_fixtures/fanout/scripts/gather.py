# A Snakemake script: concatenates the parts and counts their lines.
lines = []
for path in snakemake.input:  # noqa: F821 - provided by Snakemake
    with open(path) as fh:
        lines.extend(fh.read().splitlines())
with open(snakemake.output[0], "w") as out:  # noqa: F821
    out.write("\n".join(lines) + "\n")
    out.write(f"{len(lines)} lines from {len(snakemake.input)} parts\n")  # noqa: F821
