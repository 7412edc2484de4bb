version 1.0

# A good first call (`prepare` writes prepared.txt), then a second call (`explode`) that checks
# it, prints a known message on stderr and exits with code 3. The run must fail; its log must
# carry the call's exit code and the tail of its stderr.

workflow fail {
  input {
    String message = "prepared by step 1"
  }

  call prepare { input: message = message }
  call explode { input: prepared = prepare.prepared }

  output {
    File prepared = prepare.prepared
  }
}

task prepare {
  input {
    String message
  }

  command <<<
    cp '~{write_lines([message])}' prepared.txt
  >>>

  output {
    File prepared = "prepared.txt"
  }
}

task explode {
  input {
    File prepared
  }

  command <<<
    test -s '~{prepared}' && echo 'test-workflows: deliberate failure in step 2 (exit 3)' >&2 && exit 3
  >>>
}
