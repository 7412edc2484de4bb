// A tiny germline variant-calling pipeline, the same as test-workflows/cwl/variant-calling:
// index the reference (bwa index, samtools faidx), align paired-end reads (bwa mem), sort and
// index (samtools sort, samtools index), call variants (bcftools mpileup | bcftools call -mv).
//
// Params: reference, reads_1, reads_2 (paths relative to the launch directory, or absolute),
// sample, outdir. Outputs in outdir: calls.vcf (byte-for-byte the CWL and Snakemake
// workflows'), aligned.bam and aligned.bam.bai. The tools come from the host; `container`
// names the same biocontainers images as the other versions, used only where containers are.

params.reference = 'data/ref.fa'
params.reads_1 = 'data/reads_1.fq'
params.reads_2 = 'data/reads_2.fq'
params.sample = 'sample1'
params.outdir = 'results'

process BWA_INDEX {
    container 'quay.io/biocontainers/bwa:0.7.17--hed695b0_7'

    input:
    path ref

    output:
    path "${ref}.*"

    script:
    """
    bwa index ${ref}
    """
}

process FAIDX {
    container 'quay.io/biocontainers/samtools:1.16.1--h6899075_1'

    input:
    path ref

    output:
    path "${ref}.fai"

    script:
    """
    samtools faidx ${ref}
    """
}

process ALIGN {
    container 'quay.io/biocontainers/bwa:0.7.17--hed695b0_7'

    input:
    path ref
    path index
    path reads_1
    path reads_2
    val sample

    output:
    path 'aligned.sam'

    script:
    """
    bwa mem -t 1 -R '@RG\\tID:${sample}\\tSM:${sample}' ${ref} ${reads_1} ${reads_2} > aligned.sam
    """
}

process SORT {
    publishDir params.outdir, mode: 'copy'
    container 'quay.io/biocontainers/samtools:1.16.1--h6899075_1'

    input:
    path sam

    output:
    path 'aligned.bam'

    script:
    """
    samtools sort --no-PG -o aligned.bam ${sam}
    """
}

process INDEX_BAM {
    publishDir params.outdir, mode: 'copy'
    container 'quay.io/biocontainers/samtools:1.16.1--h6899075_1'

    input:
    path bam

    output:
    path "${bam}.bai"

    script:
    """
    samtools index ${bam}
    """
}

process CALL {
    publishDir params.outdir, mode: 'copy'
    container 'quay.io/biocontainers/bcftools:1.16--hfe4b78e_1'

    input:
    path ref
    path fai
    path bam
    path bai

    output:
    path 'calls.vcf'

    script:
    """
    bcftools mpileup --no-version -Ou -f ${ref} ${bam} | bcftools call --no-version -mv -Ov -o calls.vcf
    """
}

workflow {
    ref = file(params.reference, checkIfExists: true)
    index = BWA_INDEX(ref)
    fai = FAIDX(ref)
    sam = ALIGN(
        ref,
        index,
        file(params.reads_1, checkIfExists: true),
        file(params.reads_2, checkIfExists: true),
        params.sample,
    )
    bam = SORT(sam)
    CALL(ref, fai, bam, INDEX_BAM(bam))
}
