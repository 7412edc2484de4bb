version 1.0

# Outputs of every shape: a File, an Array[File], a Map of Files, a Pair, a struct, a String
# and an input File passed through, each task with a runtime image.
struct Report {
  File summary
  Int lines
}

task make {
  input {
    String name
  }
  command <<<
    printf '%s\n' '~{name}' > '~{name}.txt'
  >>>
  output {
    File out = "~{name}.txt"
  }
  runtime {
    docker: "debian:12-slim"
  }
}

workflow nested {
  input {
    File given
    Array[String] names = ["a", "b"]
  }
  scatter (name in names) {
    call make { input: name = name }
  }
  call make as single { input: name = "single" }
  output {
    File one = single.out
    Array[File] many = make.out
    Map[String, File] by_name = {"x": single.out}
    Pair[File, String] pair = (single.out, "right")
    Report report = object { summary: single.out, lines: 1 }
    String text = "not a file"
    File passed = given
  }
}
