cwlVersion: v1.2
class: CommandLineTool
doc: Counts lines read from stdin.
baseCommand: [wc, -l]
inputs:
  infile: File
stdin: $(inputs.infile.path)
stdout: count.txt
outputs:
  count: {type: stdout}
