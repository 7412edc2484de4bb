cwlVersion: v1.2
class: CommandLineTool
doc: Writes the message to prepared.txt (succeeds).
baseCommand: echo
inputs:
  message:
    type: string
    inputBinding: {position: 1}
stdout: prepared.txt
outputs:
  prepared: {type: stdout}
