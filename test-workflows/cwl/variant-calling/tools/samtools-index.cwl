cwlVersion: v1.2
class: CommandLineTool
doc: samtools index of a sorted BAM; returns the BAM with its .bai as a secondaryFile.
hints:
  DockerRequirement:
    dockerPull: quay.io/biocontainers/samtools:1.16.1--h6899075_1
  SoftwareRequirement:
    packages:
      samtools: {version: ["1.16.1"]}
requirements:
  InitialWorkDirRequirement:
    listing: [$(inputs.bam)]
baseCommand: [samtools, index]
inputs:
  bam:
    type: File
    inputBinding: {position: 1, valueFrom: $(self.basename)}
outputs:
  indexed:
    type: File
    outputBinding: {glob: $(inputs.bam.basename)}
    secondaryFiles: [.bai]
