cwlVersion: v1.2
class: CommandLineTool
doc: Writes a greeting to a file.
baseCommand: echo
inputs:
  message:
    type: string
    default: Hello, world
    inputBinding: {position: 1}
stdout: hello.txt
outputs:
  greeting:
    type: stdout
