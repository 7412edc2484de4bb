version 1.0

# A tiny germline variant-calling pipeline, the same as test-workflows/cwl/variant-calling: index
# the reference (bwa index, samtools faidx), align paired-end reads (bwa mem), sort and index
# (samtools sort, samtools index), call variants (bcftools mpileup | bcftools call -mv).
#
# Outputs: vcf (calls.vcf, byte for byte the CWL, Snakemake and Nextflow workflows'), bam
# (aligned.bam) and bai (aligned.bam.bai). Every call links its inputs into its working directory
# under fixed names, so the index files sit next to what they index and nothing in the VCF names
# a path: bcftools records the reference as plain "ref.fa". The tools come from the host where
# tasks run without containers; `docker` names the same biocontainers images as the other
# versions, used where the engine runs tasks in containers.

workflow variant_calling {
  input {
    File reference
    File reads_1
    File reads_2
    String sample = "sample1"
  }

  call bwa_index { input: reference = reference }
  call faidx { input: reference = reference }
  call align {
    input:
      reference = bwa_index.fasta,
      index = bwa_index.index,
      reads_1 = reads_1,
      reads_2 = reads_2,
      sample = sample
  }
  call sort { input: sam = align.sam }
  call index_bam { input: bam = sort.bam }
  call call_variants {
    input:
      reference = faidx.fasta,
      fai = faidx.fai,
      bam = sort.bam,
      bai = index_bam.bai
  }

  output {
    File vcf = call_variants.vcf
    File bam = sort.bam
    File bai = index_bam.bai
  }
}

task bwa_index {
  input {
    File reference
  }

  command <<<
    set -e
    cp '~{reference}' ref.fa
    bwa index ref.fa
  >>>

  output {
    File fasta = "ref.fa"
    Array[File] index = ["ref.fa.amb", "ref.fa.ann", "ref.fa.bwt", "ref.fa.pac", "ref.fa.sa"]
  }

  runtime {
    docker: "quay.io/biocontainers/bwa:0.7.17--hed695b0_7"
  }
}

task faidx {
  input {
    File reference
  }

  command <<<
    set -e
    cp '~{reference}' ref.fa
    samtools faidx ref.fa
  >>>

  output {
    File fasta = "ref.fa"
    File fai = "ref.fa.fai"
  }

  runtime {
    docker: "quay.io/biocontainers/samtools:1.16.1--h6899075_1"
  }
}

task align {
  input {
    File reference
    Array[File] index
    File reads_1
    File reads_2
    String sample
  }

  command <<<
    set -e
    ln -s '~{reference}' ref.fa
    for f in ~{sep=" " index}; do ln -s "$f" "ref.fa.${f##*.}"; done
    # One thread, so that the alignments do not depend on the machine.
    bwa mem -t 1 -R '@RG\tID:~{sample}\tSM:~{sample}' ref.fa '~{reads_1}' '~{reads_2}' > aligned.sam
  >>>

  output {
    File sam = "aligned.sam"
  }

  runtime {
    docker: "quay.io/biocontainers/bwa:0.7.17--hed695b0_7"
  }
}

task sort {
  input {
    File sam
  }

  command <<<
    samtools sort --no-PG -o aligned.bam '~{sam}'
  >>>

  output {
    File bam = "aligned.bam"
  }

  runtime {
    docker: "quay.io/biocontainers/samtools:1.16.1--h6899075_1"
  }
}

task index_bam {
  input {
    File bam
  }

  command <<<
    set -e
    ln -s '~{bam}' aligned.bam
    samtools index aligned.bam
  >>>

  output {
    File bai = "aligned.bam.bai"
  }

  runtime {
    docker: "quay.io/biocontainers/samtools:1.16.1--h6899075_1"
  }
}

task call_variants {
  input {
    File reference
    File fai
    File bam
    File bai
  }

  command <<<
    set -e
    ln -s '~{reference}' ref.fa
    ln -s '~{fai}' ref.fa.fai
    ln -s '~{bam}' aligned.bam
    ln -s '~{bai}' aligned.bam.bai
    bcftools mpileup --no-version -Ou -f ref.fa aligned.bam \
      | bcftools call --no-version -mv -Ov -o calls.vcf
  >>>

  output {
    File vcf = "calls.vcf"
  }

  runtime {
    docker: "quay.io/biocontainers/bcftools:1.16--hfe4b78e_1"
  }
}
