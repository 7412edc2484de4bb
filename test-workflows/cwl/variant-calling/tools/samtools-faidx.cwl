cwlVersion: v1.2
class: CommandLineTool
doc: samtools faidx of a reference FASTA; returns the FASTA with its .fai as a secondaryFile.
hints:
  DockerRequirement:
    dockerPull: quay.io/biocontainers/samtools:1.16.1--h6899075_1
  SoftwareRequirement:
    packages:
      samtools: {version: ["1.16.1"]}
requirements:
  InitialWorkDirRequirement:
    listing: [$(inputs.reference)]
baseCommand: [samtools, faidx]
inputs:
  reference:
    type: File
    inputBinding: {position: 1, valueFrom: $(self.basename)}
outputs:
  indexed:
    type: File
    outputBinding: {glob: $(inputs.reference.basename)}
    secondaryFiles: [.fai]
