#!/usr/bin/env cwl-runner
# Trivial tool used by the WES benchmarks: echo a message to stdout.
cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
inputs:
  message:
    type: string
    default: hello
    inputBinding:
      position: 1
outputs:
  out:
    type: stdout
stdout: out.txt
