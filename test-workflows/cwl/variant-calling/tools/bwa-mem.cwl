cwlVersion: v1.2
class: CommandLineTool
doc: |
  bwa mem of paired-end reads against an indexed reference, one thread (so the output does not
  depend on the machine), with a read group naming the sample; writes aligned.sam.
hints:
  DockerRequirement:
    dockerPull: quay.io/biocontainers/bwa:0.7.17--hed695b0_7
  SoftwareRequirement:
    packages:
      bwa: {version: ["0.7.17"]}
baseCommand: [bwa, mem]
arguments:
  - {prefix: -t, valueFrom: "1", position: 0}
  - {prefix: -R, valueFrom: '@RG\tID:$(inputs.sample)\tSM:$(inputs.sample)', position: 0}
inputs:
  reference:
    type: File
    secondaryFiles: [.amb, .ann, .bwt, .pac, .sa]
    inputBinding: {position: 1}
  reads_1:
    type: File
    inputBinding: {position: 2}
  reads_2:
    type: File
    inputBinding: {position: 3}
  sample: string
stdout: aligned.sam
outputs:
  sam: {type: stdout}
