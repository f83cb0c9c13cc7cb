# lib.sh — the shell side of tests/harness.h: check NAME CMD... runs CMD and counts it as
# passed or failed; finish prints the plain "N passed, N failed" line and sets the exit code.
# Sourced by tests/cli/test_*.sh and tests/preload/test_*.sh.
ht_passed=0
ht_failed=0
check()
{
    local name=$1
    shift
    if "$@"; then
        ht_passed=$((ht_passed + 1))
    else
        ht_failed=$((ht_failed + 1))
        echo "FAIL: $name" >&2
    fi
}
fail()
{
    echo "FAIL: $*" >&2
    ht_failed=$((ht_failed + 1))
    finish
}
finish()
{
    echo "$ht_passed passed, $ht_failed failed"
    [ "$ht_failed" = 0 ]
    exit
}
# ht_tmpdir: makes a fresh temporary directory, sets T to it, and removes it at exit. Call it
# as a command, not as $(ht_tmpdir): the EXIT trap must belong to the test's own shell.
ht_tmpdir()
{
    T=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-test.XXXXXX") || fail "mktemp failed"
    trap 'rm -rf "$T"' EXIT
}
