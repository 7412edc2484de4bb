cwlVersion: v1.2
class: Workflow
doc: |
  A good first step ("prepare" writes prepared.txt), then a second step ("explode") that checks
  it, prints a known message on stderr and exits with code 3. The run must fail; its log must
  carry the step's exit code and the tail of its stderr.
inputs:
  message:
    type: string
    default: prepared by step 1
outputs:
  prepared:
    type: File
    outputSource: prepare/prepared
steps:
  prepare:
    run: prepare.cwl
    in: {message: message}
    out: [prepared]
  explode:
    run: explode.cwl
    in: {prepared: prepare/prepared}
    out: []
