// FIRST writes first.txt at once; SECOND waits until the file params.go exists, then writes
// second.txt (resume tests: the driver is lost while SECOND waits).
params.go = 'go'
params.outdir = 'results'

process FIRST {
    publishDir params.outdir, mode: 'copy'

    output:
    path 'first.txt'

    script:
    """
    echo first > first.txt
    """
}

process SECOND {
    publishDir params.outdir, mode: 'copy'

    input:
    path first

    output:
    path 'second.txt'

    script:
    """
    while [ ! -e '${params.go}' ]; do sleep 0.2; done
    cat ${first} > second.txt
    echo second >> second.txt
    """
}

workflow {
    FIRST() | SECOND
}
