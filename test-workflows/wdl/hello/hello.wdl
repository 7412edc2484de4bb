version 1.0

# Writes a greeting, the `message` input, to hello.txt: the same bytes as the CWL, Snakemake and
# Nextflow versions of this workflow.

workflow hello {
  input {
    String message = "Hello, world"
  }

  call greet { input: message = message }

  output {
    File greeting = greet.greeting
  }
}

task greet {
  input {
    String message
  }

  command <<<
    # write_lines() holds the message and a newline, whatever characters the message has.
    cp '~{write_lines([message])}' hello.txt
  >>>

  output {
    File greeting = "hello.txt"
  }
}
