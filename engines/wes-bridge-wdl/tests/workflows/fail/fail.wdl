version 1.0

# A good task, then a task that writes to stderr and exits 3.
task good {
  command <<<
    echo fine > good.txt
  >>>
  output {
    File out = "good.txt"
  }
}

task bad {
  input {
    File previous
  }
  command <<<
    cat '~{previous}'
    echo 'about to fail' >&2
    exit 3
  >>>
  output {
    File out = stdout()
  }
}

workflow fail {
  call good
  call bad { input: previous = good.out }
}
