// Fan-out / fan-in: params.n (20) parallel PART tasks, each writing one line with its index and
// the sha1 of the index, then one GATHER task that concatenates the parts in index order.
// Outputs in params.outdir: fanout.txt and parts/part-<i>.txt.

params.n = 20
params.outdir = 'results'

process PART {
    publishDir "${params.outdir}/parts", mode: 'copy'

    input:
    val i

    output:
    path "part-${i}.txt"

    script:
    """
    h=\$(printf %s ${i} | sha1sum | cut -c1-40)
    printf '%s %s\\n' ${i} \$h > part-${i}.txt
    """
}

process GATHER {
    publishDir params.outdir, mode: 'copy'

    input:
    path parts

    output:
    path 'fanout.txt'

    script:
    def ordered = parts.toList().sort { (it.name =~ /\d+/)[0] as int }
    """
    cat ${ordered.join(' ')} > fanout.txt
    """
}

workflow {
    Channel.of(1..(params.n as int)) | PART | collect | GATHER
}
