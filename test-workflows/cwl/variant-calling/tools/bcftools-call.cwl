cwlVersion: v1.2
class: CommandLineTool
doc: |
  bcftools mpileup | bcftools call -mv: variant sites only, plain VCF, no version or command
  lines in the header. The reference is staged into the working directory and named by its
  basename, so the ##reference header line carries no path.
hints:
  DockerRequirement:
    dockerPull: quay.io/biocontainers/bcftools:1.16--hfe4b78e_1
  SoftwareRequirement:
    packages:
      bcftools: {version: ["1.16"]}
requirements:
  ShellCommandRequirement: {}
  InitialWorkDirRequirement:
    listing: [$(inputs.reference)]
arguments:
  - {valueFrom: bcftools mpileup --no-version -Ou -f, shellQuote: false, position: 0}
  - {valueFrom: $(inputs.reference.basename), position: 1}
  - {valueFrom: "|", shellQuote: false, position: 3}
  - {valueFrom: bcftools call --no-version -mv -Ov -o calls.vcf, shellQuote: false, position: 4}
inputs:
  reference:
    type: File
    secondaryFiles: [.fai]
  bam:
    type: File
    inputBinding: {position: 2}
outputs:
  vcf:
    type: File
    outputBinding: {glob: calls.vcf}
