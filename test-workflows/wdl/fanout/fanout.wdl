version 1.0

# Fan-out / fan-in: `n` (20) parallel `part` calls (a scatter), each writing one line with its
# index and the sha1 of the index to part-<index>.txt, then one `gather` call that concatenates
# the parts in index order into fanout.txt.

workflow fanout {
  input {
    Int n = 20
  }

  scatter (i in range(n)) {
    call part { input: index = i + 1 }
  }

  call gather { input: parts = part.line }

  output {
    File combined = gather.combined
    Array[File] parts = part.line
  }
}

task part {
  input {
    Int index
  }

  command <<<
    h=$(printf %s ~{index} | sha1sum | cut -c1-40)
    printf '%s %s\n' ~{index} "$h" > part-~{index}.txt
  >>>

  output {
    File line = "part-~{index}.txt"
  }
}

task gather {
  input {
    Array[File] parts
  }

  command <<<
    cat ~{sep=" " parts} > fanout.txt
  >>>

  output {
    File combined = "fanout.txt"
  }
}
