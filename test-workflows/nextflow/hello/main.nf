// Writes a greeting, taken from params.message, to hello.txt in params.outdir.

params.message = 'Hello, world'
params.outdir = 'results'

// The value in single quotes for the shell, whatever it holds.
def shellQuote(value) {
    "'" + value.toString().replace("'", "'\\''") + "'"
}

process HELLO {
    publishDir params.outdir, mode: 'copy'

    input:
    val message

    output:
    path 'hello.txt'

    script:
    """
    printf '%s\\n' ${shellQuote(message)} > hello.txt
    """
}

workflow {
    HELLO(params.message)
}
