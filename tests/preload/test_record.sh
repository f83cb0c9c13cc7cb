#!/usr/bin/env bash
# `heaptrail record` and the preload library's configuration: usage errors (exit 2), a
# missing program, an unwritable or existing output (exit 1), the default file name, exit
# status and signal pass-through, SIGKILL of a traced program (trace readable), exec (the new
# image's NAME.1), LD_PRELOAD kept, HEAPTRAIL_OUTPUT patterns, an existing file never
# overwritten by the preload library (one line on stderr, program runs untraced).
set -u
. "$HT_SOURCE_DIR/tests/preload/lib.sh"
SIG=${PROG}signal

# -- usage --
out=$("$HEAPTRAIL" record --help); rc=$?
check "--help exits 0" test "$rc" = 0
check "--help has the synopsis" grep -q '^usage: heaptrail record \[-o FILE\] \[--stacks\[=DEPTH\]\] \[--no-follow-fork\] -- CMD' <<<"$out"
check "--help lists HEAPTRAIL_OUTPUT" grep -q 'HEAPTRAIL_OUTPUT' <<<"$out"
for args in "" "--" "--bogus -- true" "--stacks=0 -- true" "--stacks=x -- true" "--stacks=257 -- true" "-o" "-o '' -- true" \
    "--stack-events=bogus -- true" "--stack-events= -- true" "--stack-events=alloc, -- true" "--stack-events -- true"; do
    eval "\"\$HEAPTRAIL\" record $args" >/dev/null 2>"$T/usage.err"; rc=$?
    check "record $args: exit 2 ($rc)" test "$rc" = 2
    check "record $args: one line on stderr" test "$(wc -l <"$T/usage.err")" = 1
done

# -- failures before the program runs (exit 1) --
cd "$T"
"$HEAPTRAIL" record -- no-such-program-here 2>"$T/e"; rc=$?
check "missing program: exit 1 ($rc)" test "$rc" = 1
check "missing program: says so" grep -q 'no-such-program-here: command not found' "$T/e"
"$HEAPTRAIL" record --stacks 8 -- true 2>"$T/e"; rc=$?
check "--stacks 8 (not =8): exit 1 with a hint ($rc)" test "$rc" = 1
check "--stacks 8: the hint" grep -q '8: command not found (a depth is given as --stacks=8)' "$T/e"
"$HEAPTRAIL" record -o "$T/no/such/dir/t.htr" -- true 2>"$T/e"; rc=$?
check "output in a missing directory: exit 1 ($rc)" test "$rc" = 1
check "output in a missing directory: says why" grep -q 'cannot create .*No such file or directory' "$T/e"
echo 'not a program' >"$T/noexec" && chmod 644 "$T/noexec"
"$HEAPTRAIL" record -o "$T/noexec.htr" -- "$T/noexec" 2>"$T/e"; rc=$?
check "program that cannot run: exit 1 ($rc)" test "$rc" = 1
check "program that cannot run: says why" grep -q "cannot run $T/noexec: Permission denied" "$T/e"
check "program that cannot run: no trace left" test ! -e "$T/noexec.htr"
(cd /proc && "$HEAPTRAIL" record -- true 2>"$T/e"); rc=$?
check "default name in an unwritable directory: exit 1 ($rc)" test "$rc" = 1
check "default name in an unwritable directory: says so" grep -q 'cannot create the trace file in the current directory' "$T/e"
touch "$T/plainfile"
"$HEAPTRAIL" record -o "$T/plainfile/t.htr" -- true 2>"$T/e"; rc=$?
check "output under a regular file: exit 1 ($rc)" test "$rc" = 1
check "output under a regular file: says why" grep -q 'Not a directory' "$T/e"
echo precious >"$T/exists.htr"
"$HEAPTRAIL" record -o "$T/exists.htr" -- "$SIG" exit 0 2>"$T/e"; rc=$?
check "existing output: exit 1 ($rc)" test "$rc" = 1
check "existing output: says so" grep -q 'exists; traces are never overwritten' "$T/e"
check "existing output: left as it was" test "$(cat "$T/exists.htr")" = precious
ln -s "$T/exists.htr" "$T/link.htr"
"$HEAPTRAIL" record -o "$T/link.htr" -- "$SIG" exit 0 2>"$T/e"; rc=$?
check "symlink as output: exit 1 ($rc)" test "$rc" = 1
check "symlink target untouched" test "$(cat "$T/exists.htr")" = precious
HEAPTRAIL_PRELOAD_LIB=$T/nope.so "$HEAPTRAIL" record -- true 2>"$T/e"; rc=$?
check "preload library override is used" test "$rc" != 0 -o -n "$(cat "$T/e")"

# -- default name, exit status --
mkdir "$T/d" && cd "$T/d"
"$HEAPTRAIL" record -- "$SIG" exit 7 2>"$T/e"; rc=$?
check "exit status passed through (7 = $rc)" test "$rc" = 7
f=$(ls "$T/d")
check "default name heaptrail.<prog>.<pid>.htr ($f)" grep -qx 'heaptrail\.preload_prog_signal\.[0-9]*\.htr' <<<"$f"
check "record says where the trace went" grep -qx "heaptrail record: trace written to $T/d/$f" "$T/e"
check "default-name trace consistent" check_traces "$T/d/$f"
check "the pid in the name is the traced process's" test "$(field pid "$ROOT_LAST")" = "$(sed 's/.*\.\([0-9]*\)\.htr/\1/' <<<"$f")"
cd "$T"
"$HEAPTRAIL" record -o "$T/ok.htr" -- "$SIG" exit 0 2>/dev/null
check "exit status 0 passed through" test $? = 0

# -- signals: record dies of the same signal, without a core of its own --
for sig in 6 11 15; do
    (cd "$T" && ulimit -c 0 && perl -e 'system(@ARGV); print(($? & 127) . " " . ($? >> 8) . "\n")' \
        "$HEAPTRAIL" record -o "$T/sig$sig.htr" -- "$SIG" signal $sig >"$T/sig.out" 2>"$T/sig.err")
    check "signal $sig passed through: $(cat "$T/sig.out")" test "$(cat "$T/sig.out")" = "$sig 0"
done
check "SIGABRT: the trace was flushed by the crash path" check_traces "$T/sig6.htr"
check "SIGSEGV: the trace was flushed by the crash path" check_traces "$T/sig11.htr"
check "SIGTERM: the trace is readable (no end summary)" "$CHECK" --allow-incomplete "$T/sig15.htr"

# -- SIGKILL of a traced program mid-run: the trace reads back up to its last whole chunk --
coproc REC { exec "$HEAPTRAIL" record -o "$T/killed.htr" -- "${PROG}churn" 300000 2>"$T/killed.err"; }
recpid=$REC_PID
read -r -t 60 line <&"${REC[0]}"
check "SIGKILL: program ran ($line)" test "$line" = ready
# The program now waits with its last packet unsealed; the writer has the full ones.
for i in $(seq 100); do
    n=$(field events "$("$CHECK" --allow-incomplete "$T/killed.htr")")
    [ "${n:-0}" -gt 100000 ] && break
    sleep 0.1
done
child=$(pgrep -P "$recpid" | head -1)
check "SIGKILL: found the traced process" test -n "$child"
[ -n "$child" ] && kill -KILL "$child"
wait "$recpid" 2>/dev/null; rc=$?
check "SIGKILL: record passes the signal on (rc $rc)" test "$rc" = 137
out=$("$CHECK" --allow-incomplete "$T/killed.htr"); rc=$?
check "SIGKILL: trace consistent up to where it stops" test "$rc" = 0
check "SIGKILL: trace has no end summary" test "$(field complete "$out")" = 0
check "SIGKILL: trace holds events ($(field events "$out"))" test "$(field events "$out")" -gt 100000
check "SIGKILL: record reports the trace incomplete" grep -q 'incomplete' "$T/killed.err"

# -- exec: the new program's trace is NAME.1 of the same process --
"$HEAPTRAIL" record -o "$T/exec.htr" -- bash -c "exec '$SIG' exit 3" 2>"$T/exec.err"; rc=$?
check "exec: status of the exec'd program (3 = $rc)" test "$rc" = 3
check "exec: the first image's trace" test -e "$T/exec.htr"
check "exec: the exec'd image's trace" test -s "$T/exec.htr.1"
check "exec: traces consistent" check_traces "$T/exec.htr"
check "exec: the .1 trace is the exec'd program's" test "$(field file "$ROOT_LAST")" = "$T/exec.htr.1"
check "exec: record names it" grep -q "and to $T/exec.htr.1 (preload_prog_signal" "$T/exec.err"

# -- LD_PRELOAD already set is kept, after heaptrail's --
echo 'int dummy_symbol;' >"$T/dummy.c" && gcc -shared -fPIC -o "$T/libdummy.so" "$T/dummy.c"
out=$(TMPDIR=$T/tmpdir-missing "$HEAPTRAIL" record -o "$T/tmpdir.htr" -- true 2>&1); rc=$?
check "TMPDIR that does not exist: exit 1 ($rc)" test "$rc" = 1 -a ! -e "$T/tmpdir.htr"
out=$(LD_PRELOAD=$T/libdummy.so "$HEAPTRAIL" record -o "$T/pre.htr" -- sh -c 'echo "$LD_PRELOAD"' 2>/dev/null)
check "LD_PRELOAD prepended ($out)" test "$out" = "$HT_PRELOAD_LIB:$T/libdummy.so"

# -- the preload library on its own: patterns, existing files, bad options --
mkdir "$T/p" && cd "$T/p"
LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT='x.%e.%p.%%.htr' "$SIG" exit 0 & pid=$!
wait $pid
check "HEAPTRAIL_OUTPUT %e %p %%" test -s "$T/p/x.preload_prog_signal.$pid.%.htr"
check "trace file mode 0600" test "$(stat -c %a "$T/p/x.preload_prog_signal.$pid.%.htr")" = 600
echo keep >"$T/p/taken.htr"
out=$(LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT=taken.htr "$SIG" exit 5 2>"$T/p.err"); rc=$?
check "existing HEAPTRAIL_OUTPUT: program runs (rc $rc)" test "$rc" = 5
check "existing HEAPTRAIL_OUTPUT: file untouched" test "$(cat "$T/p/taken.htr")" = keep
check "existing HEAPTRAIL_OUTPUT: one line on stderr" test "$(wc -l <"$T/p.err")" = 1
check "existing HEAPTRAIL_OUTPUT: says why" grep -q '^heaptrail: cannot trace to taken.htr: the file exists' "$T/p.err"
# One fixed name for every process: a program started by a traced ancestor (here with
# posix_spawn/vfork, so its own process made no trace before exec) takes NAME.<pid>.
LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT=$T/p/fixed.htr /usr/bin/python3 -c \
    "import subprocess, sys; sys.exit(subprocess.run(['$SIG', 'exit', '4']).returncode)"; rc=$?
check "fixed name: child's status through python ($rc)" test "$rc" = 4
spawned=$(cd "$T/p" && ls fixed.htr.* 2>/dev/null)
check "fixed name: the parent's trace" test -s "$T/p/fixed.htr"
check "fixed name: the spawned program's trace is NAME.<pid> ($spawned)" grep -qx 'fixed\.htr\.[0-9]*' <<<"$spawned"
out=$("$CHECK" "$T/p/$spawned")
check "fixed name: it is that program's trace" test "$(field pid "$out")" = "${spawned##*.}" -a "$(field ok "$out")" = 1
LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT=bad.htr HEAPTRAIL_STACKS=lots "$SIG" exit 0 2>"$T/p.err"; rc=$?
check "bad HEAPTRAIL_STACKS: program runs" test "$rc" = 0
check "bad HEAPTRAIL_STACKS: said, untraced" \
    test "$(cat "$T/p.err")" = "heaptrail: HEAPTRAIL_STACKS=lots: must be a number of frames, 0..256; running untraced" -a ! -e "$T/p/bad.htr"
LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT=bf.htr HEAPTRAIL_BUFFERS=1 "$SIG" exit 0 2>"$T/p.err"
check "bad HEAPTRAIL_BUFFERS: said, untraced" grep -q 'HEAPTRAIL_BUFFERS=1: must be 0 or 2..4096' "$T/p.err"
check "bad HEAPTRAIL_BUFFERS: no trace" test ! -e "$T/p/bf.htr"
LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT=blk.htr HEAPTRAIL_LOSS=block HEAPTRAIL_BUFFERS=2 "${PROG}threads" 5000 >/dev/null
out=$("$CHECK" "$T/p/blk.htr")
check "HEAPTRAIL_LOSS=block: nothing lost" test "$(field lost "$out")" = 0 -a "$(field ok "$out")" = 1
LD_PRELOAD=$HT_PRELOAD_LIB HEAPTRAIL_OUTPUT=se.htr HEAPTRAIL_STACKS=8 HEAPTRAIL_STACK_EVENTS=alloc,frees "$SIG" exit 0 2>"$T/p.err"; rc=$?
check "bad HEAPTRAIL_STACK_EVENTS: program runs" test "$rc" = 0
check "bad HEAPTRAIL_STACK_EVENTS: said, untraced" grep -q 'HEAPTRAIL_STACK_EVENTS=alloc,frees: must be a list of create, alloc' "$T/p.err"
check "bad HEAPTRAIL_STACK_EVENTS: no trace" test ! -e "$T/p/se.htr"

# -- --stack-events: stacks on allocations only (implies --stacks) --
"$HEAPTRAIL" record -o "$T/se.htr" --stack-events=alloc+realloc -- "${PROG}threads" 2000 >/dev/null 2>"$T/e"; rc=$?
check "--stack-events=alloc+realloc: runs ($rc)" test "$rc" = 0
"$HEAPTRAIL" dump --format csv "$T/se.htr" >"$T/se.csv"; rc=$?
check "--stack-events: dump reads it ($rc)" test "$rc" = 0
# columns: type,ts_ns,tid,sequence,flags,stack_id,HeapHandle,Size,Address,Source,...
counts=$(awk -F, 'NR > 1 && $5 == 0 {
        if ($1 == "alloc" || $1 == "realloc") { n_a++; if ($6 != 0) s_a++ }
        if ($1 == "free" && $10 != 5) { n_f++; if ($6 != 0) s_f++ } }
    END { printf "%d %d %d %d", n_a, s_a, n_f, s_f }' "$T/se.csv")
read -r n_a s_a n_f s_f <<<"$counts"
check "--stack-events: allocations recorded ($n_a)" test "$n_a" -gt 1000
check "--stack-events: every allocation has a stack ($s_a of $n_a)" test "$s_a" = "$n_a"
check "--stack-events: frees recorded ($n_f)" test "$n_f" -gt 1000
check "--stack-events: no valid free has a stack ($s_f)" test "$s_f" = 0
finish
