# lib.sh — helpers of the preload script tests (on top of tests/cli/lib.sh): a scratch
# directory, running a command plain / preloaded untraced / under `heaptrail record` and
# comparing, and reading every trace of a run back with preload_trace_check.
. "$HT_SOURCE_DIR/tests/cli/lib.sh"
CHECK=$HT_BUILD_DIR/preload_trace_check
PROG=$HT_BUILD_DIR/preload_prog_
[ -x "$CHECK" ] || fail "missing $CHECK (build first)"
[ -r "$HT_PRELOAD_LIB" ] || fail "missing preload library $HT_PRELOAD_LIB"
export HEAPTRAIL_PRELOAD_LIB=$HT_PRELOAD_LIB

# Scratch directory (made here, not in a subshell, so the EXIT trap removes it at the end).
T=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-preload.XXXXXX")
trap 'rm -rf "$T"' EXIT

# field KEY LINE: the value of KEY=... in one trace_check line.
field()
{
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"
}

# check_traces ROOT: reads ROOT and every ROOT.* back with preload_trace_check. Each must be
# consistent (a file without its end summary is accepted: a child that ended by _exit, exec
# or a signal); the last image of the root's process (ROOT, or the ROOT.N of the last program
# it exec'd) must be complete. Sets CHECK_OUT (all lines) and ROOT_LAST (that image's line).
check_traces()
{
    local root=$1 f out rc=0 rootpid
    CHECK_OUT=""
    ROOT_LAST=""
    rootpid=$(field pid "$("$CHECK" --allow-incomplete "$root")")
    [ -n "$rootpid" ] || { echo "check_traces: $root unreadable" >&2; return 1; }
    for f in $(ls -d "$root" "$root".* 2>/dev/null | sort -V); do
        out=$("$CHECK" --allow-incomplete "$f") || { rc=1; echo "$out" >&2; }
        CHECK_OUT+="$out"$'\n'
        [ "$(field pid "$out")" = "$rootpid" ] && ROOT_LAST=$out
    done
    if [ "$(field complete "$ROOT_LAST")" != 1 ]; then
        echo "check_traces: the root's last image has no end summary: $ROOT_LAST" >&2
        rc=1
    fi
    return $rc
}

# same_output NAME DIR CMD...: runs CMD (in DIR, fresh each time) plain, then preloaded with
# tracing off, then under heaptrail record $RECORD_ARGS -o DIR/NAME.htr; stdout and the exit status must be
# the same all three times; then every trace of the recorded run must read back consistent.
# Leaves the record's stderr in $T/NAME.record.err.
same_output()
{
    local name=$1 dir=$2
    shift 2
    local plain pre rec s1 s2 s3
    rm -rf "$dir" && mkdir -p "$dir"
    plain=$(cd "$dir" && "$@" 2>"$T/$name.plain.err"); s1=$?
    rm -rf "$dir" && mkdir -p "$dir"
    pre=$(cd "$dir" && LD_PRELOAD=$HT_PRELOAD_LIB "$@" 2>"$T/$name.pre.err"); s2=$?
    rm -rf "$dir" && mkdir -p "$dir"
    rec=$(cd "$dir" && "$HEAPTRAIL" record ${RECORD_ARGS:-} -o "$T/$name.htr" -- "$@" 2>"$T/$name.record.err"); s3=$?
    check "$name: exit status plain=$s1 untraced=$s2 traced=$s3" test "$s1" = "$s2" -a "$s1" = "$s3"
    check "$name: output untraced = plain" test "$plain" = "$pre"
    check "$name: output traced = plain" test "$plain" = "$rec"
    check "$name: has output" test -n "$plain"
    check "$name: trace written" test -s "$T/$name.htr"
    check "$name: every trace consistent" check_traces "$T/$name.htr"
    local root=$ROOT_LAST events
    events=$(field events "$root")
    check "$name: root trace has events ($events)" test "${events:-0}" -gt 0
    # The record's one-line summary says what the reader finds in the root trace.
    local line
    line=$(grep "^heaptrail record: [0-9]* events, .* lost, peak live bytes" "$T/$name.record.err")
    check "$name: record's summary matches the trace" \
        test "$line" = "heaptrail record: $events events, $(field lost "$root") lost, peak live bytes $(field peak_bytes "$root")"
    rm -f "$T/$name.htr"*
}
