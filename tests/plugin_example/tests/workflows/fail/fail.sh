# A good step, then one that fails.
echo prepared > prepared.txt
echo 'deliberate failure in line 3' >&2; exit 3
