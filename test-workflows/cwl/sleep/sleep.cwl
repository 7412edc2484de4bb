cwlVersion: v1.2
class: CommandLineTool
doc: Sleeps, then writes a marker; used for cancel and restart tests.
baseCommand: [sh, -c]
arguments: ["sleep $(inputs.seconds) && echo done > marker.txt"]
requirements:
  InlineJavascriptRequirement: {}
inputs:
  seconds: {type: int, default: 5}
outputs:
  marker:
    type: File
    outputBinding: {glob: marker.txt}
