version 1.0

# Sleeps `seconds`, then writes marker.txt (for cancel tests).
task nap {
  input {
    Int seconds
  }
  command <<<
    sleep ~{seconds}
    echo awake > marker.txt
  >>>
  output {
    File marker = "marker.txt"
  }
}

workflow sleep {
  input {
    Int seconds = 600
  }
  call nap { input: seconds = seconds }
  output {
    File marker = nap.marker
  }
}
