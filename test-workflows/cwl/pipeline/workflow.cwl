cwlVersion: v1.2
class: Workflow
doc: Counts the lines of an input file, then reports the count; tools live in tools/.
inputs:
  infile: File
outputs:
  report:
    type: File
    outputSource: report/out
steps:
  count:
    run: tools/count.cwl
    in: {infile: infile}
    out: [count]
  report:
    run: tools/report.cwl
    in: {count: count/count}
    out: [out]
