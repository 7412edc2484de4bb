cwlVersion: v1.2
class: CommandLineTool
doc: bwa index of a reference FASTA; returns the FASTA with the index files as secondaryFiles.
hints:
  DockerRequirement:
    dockerPull: quay.io/biocontainers/bwa:0.7.17--hed695b0_7
  SoftwareRequirement:
    packages:
      bwa: {version: ["0.7.17"]}
requirements:
  InitialWorkDirRequirement:
    listing: [$(inputs.reference)]
baseCommand: [bwa, index]
inputs:
  reference:
    type: File
    inputBinding: {position: 1, valueFrom: $(self.basename)}
outputs:
  indexed:
    type: File
    outputBinding: {glob: $(inputs.reference.basename)}
    secondaryFiles: [.amb, .ann, .bwt, .pac, .sa]
