cwlVersion: v1.2
class: CommandLineTool
doc: A step that fails with exit code 3 after writing to stderr.
baseCommand: [sh, -c]
arguments: ["echo 'about to fail' >&2; exit 3"]
inputs: []
outputs: []
