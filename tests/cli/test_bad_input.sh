#!/usr/bin/env bash
# Bad input to `heaptrail report` and `heaptrail dump`: a missing file, a directory, an empty
# file, a file that is not a trace, a trace of a newer format version, a cut-off file header,
# a trace cut off mid-chunk and at a chunk boundary, a flipped byte, and the damaged traces of
# the reader's fuzz corpus (fuzz/corpus/reader: cut-* made by the recorder's damage cases).
# Each must give exit 1 and exactly one line on stderr naming the problem and the offset, and
# never crash; a damaged trace still gets a report of what was readable, which says so at its
# top, and dump prints the readable events before failing.
set -u
. "$HT_SOURCE_DIR/tests/cli/lib.sh"

gen=$HT_BUILD_DIR/cli_gen_golden
[ -x "$gen" ] || fail "no generator at $gen"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-test.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
"$gen" "$tmp/t.htrace" "$tmp/ev.jsonl" >/dev/null || fail "gen_golden failed"
size=$(stat -c %s "$tmp/t.htrace")
full_events=$("$HEAPTRAIL" dump "$tmp/t.htrace" | wc -l)

# expect_fail NAME FILE PATTERN: both commands exit 1 with one stderr line matching PATTERN.
expect_fail()
{
    local name=$1 file=$2 pattern=$3 cmd
    for cmd in report dump; do
        "$HEAPTRAIL" $cmd "$file" >"$tmp/out" 2>"$tmp/err"
        local rc=$?
        check "$cmd $name: exit 1 (got $rc)" test $rc = 1
        check "$cmd $name: one line on stderr" test "$(wc -l <"$tmp/err")" = 1
        if ! grep -Eq "$pattern" "$tmp/err"; then
            check "$cmd $name: stderr matches /$pattern/: $(cat "$tmp/err")" false
        fi
    done
}

expect_fail "missing file" "$tmp/nope.htrace" "nope.htrace: cannot open: No such file"
expect_fail "directory" "$tmp" "is a directory"
: >"$tmp/empty"
expect_fail "empty file" "$tmp/empty" "not a heaptrail trace.*offset 0|cut off.*offset 0"
printf 'hello, this is not a trace at all, just some text\n' >"$tmp/text"
expect_fail "non-trace file" "$tmp/text" "not a heaptrail trace.*offset 0"
cp "$tmp/t.htrace" "$tmp/v2.htrace"
printf '\x02\x00' | dd of="$tmp/v2.htrace" bs=1 seek=8 conv=notrunc status=none
expect_fail "newer version" "$tmp/v2.htrace" "format version 2 at offset 8.*newer"
head -c 20 "$tmp/t.htrace" >"$tmp/hdr.htrace"
expect_fail "cut-off header" "$tmp/hdr.htrace" "cut off inside the file header at offset 20"
cp "$tmp/t.htrace" "$tmp/hcrc.htrace"
b=$(od -An -tu1 -j 30 -N1 "$tmp/hcrc.htrace" | tr -d ' ')
printf "\\x$(printf %02x $((b ^ 0xff)))" | dd of="$tmp/hcrc.htrace" bs=1 seek=30 conv=notrunc status=none
expect_fail "damaged header" "$tmp/hcrc.htrace" "damaged file header at offset 0"

# Damage after the header: the report covers what was readable and says so at its top.
damaged()
{
    local name=$1 file=$2 pattern=$3
    "$HEAPTRAIL" report "$file" >"$tmp/out" 2>"$tmp/err"
    check "report $name: exit 1" test $? = 1
    check "report $name: one line on stderr" test "$(wc -l <"$tmp/err")" = 1
    grep -Eq "damaged trace: .*offset [0-9]+" "$tmp/err"
    check "report $name: stderr names the damage and offset: $(cat "$tmp/err")" test $? = 0
    grep -Eq "$pattern" "$tmp/err"
    check "report $name: stderr matches /$pattern/" test $? = 0
    sed -n 2p "$tmp/out" | grep -q '^WARNING: damaged trace'
    check "report $name: the report says so at its top" test $? = 0
    grep -q '^== Leaks' "$tmp/out"
    check "report $name: the report is there" test $? = 0
    "$HEAPTRAIL" report --format json "$file" 2>/dev/null |
        python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["damage"] and r["damage"]["offset"] >= 0 else 1)'
    check "report $name: JSON names the damage" test $? = 0
    "$HEAPTRAIL" dump "$file" >"$tmp/out" 2>"$tmp/err"
    check "dump $name: exit 1" test $? = 1
    check "dump $name: one line on stderr" test "$(wc -l <"$tmp/err")" = 1
    local n
    n=$(wc -l <"$tmp/out")
    check "dump $name: printed the readable events ($n of $full_events)" test "$n" -le "$full_events"
    "$HEAPTRAIL" dump "$tmp/t.htrace" >"$tmp/full"
    python3 - "$tmp/out" "$tmp/full" <<'EOF'
import sys
part, full = (open(f).read().splitlines() for f in sys.argv[1:3])
it = iter(full)
sys.exit(0 if all(line in it for line in part) else 1)
EOF
    check "dump $name: they are events of the whole trace, in its order" test $? = 0
}

head -c $((size - 7)) "$tmp/t.htrace" >"$tmp/cut.htrace"
damaged "cut mid-chunk" "$tmp/cut.htrace" "truncated|cut off"
# At a chunk boundary: the last chunk (the end summary) removed, found by walking chunk headers.
boundary=$(python3 - "$tmp/t.htrace" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
off = 48 + struct.unpack_from("<I", d, 20)[0]
last = off
while off + 72 <= len(d):
    last = off
    off += 72 + struct.unpack_from("<I", d, off + 56)[0]
print(last)
EOF
)
head -c "$boundary" "$tmp/t.htrace" >"$tmp/cut2.htrace"
damaged "cut at a chunk boundary" "$tmp/cut2.htrace" "truncated"
cp "$tmp/t.htrace" "$tmp/flip.htrace"
mid=$((size / 2))
b=$(od -An -tu1 -j $mid -N1 "$tmp/flip.htrace" | tr -d ' ')
printf "\\x$(printf %02x $((b ^ 0x10)))" | dd of="$tmp/flip.htrace" bs=1 seek=$mid conv=notrunc status=none
damaged "flipped byte" "$tmp/flip.htrace" "checksum|chunk|record"

# The reader's damage corpus: never a crash (exit 0 or 1 only, one line on stderr for 1).
for f in "$HT_SOURCE_DIR"/fuzz/corpus/reader/* "$HT_SOURCE_DIR"/fuzz/corpus/report/*; do
    [ -f "$f" ] || continue
    for cmd in "report" "report --format json" "dump --format csv"; do
        # shellcheck disable=SC2086
        "$HEAPTRAIL" $cmd "$f" >/dev/null 2>"$tmp/err"
        rc=$?
        check "$cmd $(basename "$f"): exit 0 or 1 (got $rc)" test $rc -le 1
        if [ $rc = 1 ]; then
            check "$cmd $(basename "$f"): one line on stderr" test "$(wc -l <"$tmp/err")" = 1
        fi
    done
done
finish
