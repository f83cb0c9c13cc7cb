#!/usr/bin/env bash
# heaptrail ctl: a preloaded program started untraced is switched on (the trace's rundown holds
# the blocks already live), off (the file is complete), on again (NAME.1); status says which;
# errors for no such process, a process without heaptrail, bad arguments; the channel answers
# only its own user; the socket is private and goes away at exit.
set -u
. "$HT_SOURCE_DIR/tests/preload/lib.sh"

TARGET=${PROG}ctl_target
SIZE=1000 # a size nothing else in the target allocates
export XDG_RUNTIME_DIR=$T/run
mkdir -m 0700 "$XDG_RUNTIME_DIR"

# start_target [PREFIX...]: runs PREFIX env LD_PRELOAD=... TARGET (preloaded, untraced,
# HEAPTRAIL_CONTROL=${CONTROL:-1}) as a coprocess; sets TPID (the target's pid: PREFIX and env
# exec) and CPID.
start_target()
{
    coproc TGT { "$@" env LD_PRELOAD="$HT_PRELOAD_LIB" HEAPTRAIL_ENABLED=0 HEAPTRAIL_CONTROL="${CONTROL:-1}" \
        HEAPTRAIL_OUTPUT="$T/ctl.%p.htr" "$TARGET"; }
    local line
    CPID=$TGT_PID
    read -r line <&"${TGT[0]}"
    TPID=${line#ready }
}
# say CMD: one command to the target, waits for its answer (in $ANSWER).
say()
{
    echo "$1" >&"${TGT[1]}"
    read -r ANSWER <&"${TGT[0]}"
}

start_target
check "target started" test -n "$TPID"
check "socket is in a private directory" test "$(stat -c %a "$XDG_RUNTIME_DIR/heaptrail")" = 700
check "socket exists" test -S "$XDG_RUNTIME_DIR/heaptrail/$TPID.sock"
say "alloc 100 $SIZE"
check "100 blocks live" test "$ANSWER" = "ok 100"

out=$("$HEAPTRAIL" ctl "$TPID" status)
check "status exits 0 while off" test $? = 0
check "status says off" grep -q "pid=$TPID tracing=off" <<<"$out"
out=$("$HEAPTRAIL" ctl "$TPID" on)
check "on exits 0" test $? = 0
trace=$T/ctl.$TPID.htr
check "on names the trace file" grep -q "file=$trace" <<<"$out"
check "the trace file exists" test -f "$trace"
check "status says on" grep -q "tracing=on" <<<"$("$HEAPTRAIL" ctl "$TPID" status)"
"$HEAPTRAIL" ctl "$TPID" on >/dev/null 2>&1
check "on while on fails" test $? = 1
say "alloc 50 $SIZE"
out=$("$HEAPTRAIL" ctl "$TPID" off)
check "off exits 0" test $? = 0
"$HEAPTRAIL" ctl "$TPID" off >/dev/null 2>&1
check "off while off fails" test $? = 1

res=$("$CHECK" --size "$SIZE" "$trace")
check "first trace is consistent: $res" test "$(field ok "$res")" = 1
check "first trace is complete" test "$(field complete "$res")" = 1
# The rundown lists the 100 blocks live before 'on'; the 50 after it are ordinary events.
check "rundown + events hold the 150 blocks of $SIZE bytes" test "$(field size_count "$res")" = 150
check "rundown is there" test "$(field rundown "$res")" -ge 100
check "nothing lost" test "$(field lost "$res")" = 0

# A second session of the same process: NAME.1, with the 150 blocks in its rundown.
out=$("$HEAPTRAIL" ctl "$TPID" on)
check "second on exits 0" test $? = 0
check "second session goes to NAME.1" grep -q "file=$trace.1" <<<"$out"
say "free"
say "exit"
wait "$CPID" 2>/dev/null
check "target exited 0" test $? = 0
res=$("$CHECK" --size "$SIZE" "$trace.1")
check "second trace is consistent and complete (stopped at exit): $res" \
    test "$(field ok "$res")" = 1 -a "$(field complete "$res")" = 1
check "second trace: 150 rundown blocks of $SIZE bytes" test "$(field size_count "$res")" = 150
check "second trace: the frees of all 150 are matched" test "$(field unmatched "$res")" = 0
check "socket removed at exit" test ! -e "$XDG_RUNTIME_DIR/heaptrail/$TPID.sock"

# heaptrail record --off: traced processes serve ctl; the first 'on' writes -o FILE.
coproc TGT { "$HEAPTRAIL" record --off -o "$T/rec.htr" -- "$TARGET" 2>"$T/rec.err"; }
CPID=$TGT_PID
read -r line <&"${TGT[0]}"
RPID=${line#ready }
say "alloc 20 $SIZE"
check "record --off: no trace yet" test ! -e "$T/rec.htr"
out=$("$HEAPTRAIL" ctl "$RPID" on)
check "record --off: ctl on exits 0" test $? = 0
check "record --off: ctl on writes the -o file" grep -q "file=$T/rec.htr" <<<"$out"
say "alloc 5 $SIZE"
say "exit"
wait "$CPID"
check "record --off: record exits 0" test $? = 0
check "record --off: record said how to switch it on" grep -q "heaptrail ctl $RPID on" "$T/rec.err"
res=$("$CHECK" --size "$SIZE" "$T/rec.htr")
check "record --off: the trace holds the 25 blocks (rundown + events): $res" \
    test "$(field size_count "$res")" = 25 -a "$(field ok "$res")" = 1
check "record --off: the summary names the trace" grep -q "$T/rec.htr" "$T/rec.err"
"$HEAPTRAIL" record --off --no-control -- true 2>/dev/null
check "record --off --no-control is a usage error" test $? = 2

# Errors.
"$HEAPTRAIL" ctl "$TPID" status 2>"$T/err"
check "exited process: exit 1" test $? = 1
check "exited process: says no process" grep -q "no process $TPID" "$T/err"
sleep 30 &
spid=$!
"$HEAPTRAIL" ctl "$spid" on 2>"$T/err"
check "process without heaptrail: exit 1" test $? = 1
check "process without heaptrail: explained" grep -q "no heaptrail control socket" "$T/err"
kill "$spid"
for bad in "" "abc on" "0 on" "1 jump" "1" "--timeout x 1 on"; do
    # shellcheck disable=SC2086
    "$HEAPTRAIL" ctl $bad >/dev/null 2>&1
    check "usage error for '$bad'" test $? = 2
done

# No channel with HEAPTRAIL_CONTROL=0 (the preload library's default outside record).
CONTROL=0 start_target
check "HEAPTRAIL_CONTROL=0: no socket" test ! -e "$XDG_RUNTIME_DIR/heaptrail/$TPID.sock"
say "exit"
wait "$CPID" 2>/dev/null

# Another user's process is not answered: a target running as nobody, queried by root (who
# can enter any directory, so only the process's own peer check stands in the way). setpriv
# itself runs without the preload library: it drops capabilities per thread, and glibc aborts
# a credential change that succeeds in one thread (the control thread) and fails in another.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 &&
    setpriv --reuid=65534 --regid=65534 --clear-groups test -r "$HT_PRELOAD_LIB" -a -x "$TARGET"; then
    nobody_run=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-nobody.XXXXXX") # $T is root's alone
    chown 65534:65534 "$nobody_run" && chmod 0700 "$nobody_run"
    trap 'rm -rf "$T" "$nobody_run"' EXIT
    start_target env XDG_RUNTIME_DIR="$nobody_run" setpriv --reuid=65534 --regid=65534 --clear-groups
    check "nobody's socket exists" test -S "$nobody_run/heaptrail/$TPID.sock"
    ans=$(python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"on"); s.shutdown(socket.SHUT_WR)
except OSError:
    pass  # the process may answer and close before it reads
print(s.recv(200).decode().strip())' "$nobody_run/heaptrail/$TPID.sock")
    check "another user is refused (got: $ans)" test "$ans" = "error refused"
    XDG_RUNTIME_DIR=$nobody_run "$HEAPTRAIL" ctl "$TPID" on >/dev/null 2>&1
    check "ctl refuses a control directory that is not this user's" test $? = 1
    say "exit"
    wait "$CPID" 2>/dev/null
else
    echo "note: not root or no setpriv: the other-user check is skipped"
fi
finish
