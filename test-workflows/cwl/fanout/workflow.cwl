cwlVersion: v1.2
class: Workflow
doc: |
  Fan-out / fan-in: 20 parallel "part" steps (a scatter over `items`), each writing one line
  with its index and the sha1 of the index, then one "gather" step that concatenates the parts
  in scatter order into fanout.txt.
requirements:
  ScatterFeatureRequirement: {}
inputs:
  items:
    type: int[]
    default: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
outputs:
  combined:
    type: File
    outputSource: gather/combined
steps:
  part:
    run: part.cwl
    scatter: index
    in: {index: items}
    out: [part]
  gather:
    run: gather.cwl
    in: {parts: part/part}
    out: [combined]
