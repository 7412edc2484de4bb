cwlVersion: v1.2
class: Workflow
doc: |
  A tiny germline variant-calling pipeline: index the reference (bwa index, samtools faidx),
  align paired-end reads (bwa mem), sort and index (samtools sort, samtools index), and call
  variants (bcftools mpileup | bcftools call -mv). Each tool names a public biocontainers image
  as a hint only, so the workflow runs in containers where there is a runtime and with the
  host's bwa, samtools and bcftools (cwltool --no-container) where there is none.
inputs:
  reference: File
  reads_1: File
  reads_2: File
  sample:
    type: string
    default: sample1
outputs:
  vcf:
    type: File
    outputSource: call/vcf
  bam:
    type: File
    outputSource: index_bam/indexed
steps:
  bwa_index:
    run: tools/bwa-index.cwl
    in: {reference: reference}
    out: [indexed]
  faidx:
    run: tools/samtools-faidx.cwl
    in: {reference: reference}
    out: [indexed]
  align:
    run: tools/bwa-mem.cwl
    in:
      reference: bwa_index/indexed
      reads_1: reads_1
      reads_2: reads_2
      sample: sample
    out: [sam]
  sort:
    run: tools/samtools-sort.cwl
    in: {alignments: align/sam}
    out: [bam]
  index_bam:
    run: tools/samtools-index.cwl
    in: {bam: sort/bam}
    out: [indexed]
  call:
    run: tools/bcftools-call.cwl
    in:
      reference: faidx/indexed
      bam: index_bam/indexed
    out: [vcf]
