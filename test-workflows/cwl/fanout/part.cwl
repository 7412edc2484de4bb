cwlVersion: v1.2
class: CommandLineTool
doc: Writes "<index> <sha1 of the index>" to part-<index>.txt.
baseCommand: [sh, -c]
arguments:
  - 'h=`printf %s "$0" | sha1sum | cut -c1-40`; printf "%s %s\n" "$0" "$h"'
inputs:
  index:
    type: int
    inputBinding: {position: 1}
stdout: part-$(inputs.index).txt
outputs:
  part: {type: stdout}
