// Publishes with Nextflow's default publishDir mode (symbolic links into the work directory)
// a result file, a results directory, and a link the process made to a file outside the run.
params.outdir = 'results'

process MAKE {
    publishDir params.outdir

    output:
    path 'result.txt'
    path 'bundle'
    path 'escape.txt'

    script:
    """
    echo result > result.txt
    mkdir -p bundle/inner && echo a > bundle/a.txt && echo b > bundle/inner/b.txt
    ln -s /etc/hostname escape.txt
    """
}

workflow {
    MAKE()
}
