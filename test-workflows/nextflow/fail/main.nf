// A good task (PREPARE writes prepared.txt), then a task (EXPLODE) that checks it, prints a
// known message on stderr and exits with code 3. The run must fail; its log must carry the
// task's exit code and the tail of its stderr.

params.message = 'prepared by step 1'
params.outdir = 'results'

def shellQuote(value) {
    "'" + value.toString().replace("'", "'\\''") + "'"
}

process PREPARE {
    publishDir params.outdir, mode: 'copy'

    input:
    val message

    output:
    path 'prepared.txt'

    script:
    """
    printf '%s\\n' ${shellQuote(message)} > prepared.txt
    """
}

process EXPLODE {
    input:
    path prepared

    output:
    path 'result.txt'

    script:
    """
    test -s ${prepared} && echo 'test-workflows: deliberate failure in step 2 (exit 3)' >&2 && exit 3
    """
}

workflow {
    PREPARE(params.message) | EXPLODE
}
