cwlVersion: v1.2
class: CommandLineTool
doc: Concatenates the parts, in the order given, into fanout.txt.
baseCommand: cat
inputs:
  parts:
    type: File[]
    inputBinding: {position: 1}
stdout: fanout.txt
outputs:
  combined: {type: stdout}
