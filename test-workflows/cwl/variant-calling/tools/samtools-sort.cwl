cwlVersion: v1.2
class: CommandLineTool
doc: samtools sort (by coordinate) to aligned.bam, without adding a @PG line.
hints:
  DockerRequirement:
    dockerPull: quay.io/biocontainers/samtools:1.16.1--h6899075_1
  SoftwareRequirement:
    packages:
      samtools: {version: ["1.16.1"]}
baseCommand: [samtools, sort, --no-PG, -o, aligned.bam]
inputs:
  alignments:
    type: File
    inputBinding: {position: 1}
outputs:
  bam:
    type: File
    outputBinding: {glob: aligned.bam}
