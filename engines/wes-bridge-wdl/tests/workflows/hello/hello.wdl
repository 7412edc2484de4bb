version 1.0

# The greeting of `message` into hello.txt (the contract kit's hello world).
task say {
  input {
    String message
  }
  command <<<
    echo '~{message}'
  >>>
  output {
    File greeting = stdout()
  }
}

workflow hello {
  input {
    String message = "Hello, world"
  }
  call say { input: message = message }
  output {
    File greeting = say.greeting
  }
}
