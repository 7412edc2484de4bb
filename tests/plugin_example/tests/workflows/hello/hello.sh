# One step: the greeting into hello.txt.
printf '%s\n' "$MESSAGE" > hello.txt
