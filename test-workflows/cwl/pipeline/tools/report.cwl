cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sed, "s/^/lines: /"]
inputs:
  count: {type: File, inputBinding: {position: 1}}
stdout: report.txt
outputs:
  out: {type: stdout}
