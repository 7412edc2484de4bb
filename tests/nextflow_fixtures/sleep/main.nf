// One process that sleeps params.seconds, then writes done.txt (cancel tests).
params.seconds = 300
params.outdir = 'results'

process SLEEP {
    publishDir params.outdir, mode: 'copy'

    output:
    path 'done.txt'

    script:
    """
    sleep ${params.seconds as int}
    echo done > done.txt
    """
}

workflow {
    SLEEP()
}
