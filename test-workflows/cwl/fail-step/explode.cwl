cwlVersion: v1.2
class: CommandLineTool
doc: Checks its input is not empty, then fails with exit code 3 and a known message on stderr.
baseCommand: [sh, -c]
arguments:
  - 'test -s "$0" && echo "test-workflows: deliberate failure in step 2 (exit 3)" >&2 && exit 3'
inputs:
  prepared:
    type: File
    inputBinding: {position: 1}
outputs: []
