#!/usr/bin/env bash
# Every subcommand in `heaptrail --help` answers --help on stdout with exit 0 and a usage
# line; an unknown command and no command are usage errors (exit 2).
set -u
. "$HT_SOURCE_DIR/tests/cli/lib.sh"

out=$("$HEAPTRAIL" --help) || fail "heaptrail --help exited $?"
cmds=$(printf '%s\n' "$out" | awk '/^commands:/{f=1;next} f && /^  [a-z]/{print $1}')
[ -n "$cmds" ] || fail "heaptrail --help lists no commands"
for c in $cmds; do
    help=$("$HEAPTRAIL" "$c" --help 2>/dev/null)
    check "$c --help exits 0" test $? = 0
    check "$c --help prints its usage" grep -q "usage: heaptrail $c" <<<"$help"
done
"$HEAPTRAIL" no-such-command >/dev/null 2>&1
check "unknown command exits 2" test $? = 2
"$HEAPTRAIL" >/dev/null 2>&1
check "no command exits 2" test $? = 2
finish
