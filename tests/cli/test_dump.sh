#!/usr/bin/env bash
# `heaptrail dump` round trip: the JSON lines of a trace recorded by tests/cli/gen_golden.c equal,
# field by field, the events its in-process consumer saw while recording (written by the
# program with its own printf, independently of dump.c); text and CSV carry the same fields as
# the JSON; every filter keeps exactly the events it names; bad options are usage errors.
set -u
. "$HT_SOURCE_DIR/tests/cli/lib.sh"

gen=$HT_BUILD_DIR/cli_gen_golden
[ -x "$gen" ] || fail "no generator at $gen"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-test.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
"$gen" "$tmp/t.htrace" "$tmp/ev.jsonl" >"$tmp/expect.txt" || fail "gen_golden failed"

for f in json text csv; do
    "$HEAPTRAIL" dump --format $f "$tmp/t.htrace" >"$tmp/d.$f" 2>"$tmp/d.$f.err"
    check "dump --format $f exits 0" test $? = 0
    check "dump --format $f is quiet on stderr" test ! -s "$tmp/d.$f.err"
done
"$HEAPTRAIL" dump "$tmp/t.htrace" | cmp -s - "$tmp/d.text"
check "text is the default" test $? = 0

python3 - "$tmp" <<'EOF'
import csv, json, sys
tmp = sys.argv[1]
fails = 0
def check(name, cond, detail=""):
    global fails
    if not cond:
        fails += 1
        print("FAIL: %s %s" % (name, detail[:2000]), file=sys.stderr)

dump = [json.loads(l) for l in open(tmp + "/d.json")]
mine = [json.loads(l) for l in open(tmp + "/ev.jsonl")]
check("dump has events", len(dump) > 100, str(len(dump)))
check("same number of events as the consumer saw", len(dump) == len(mine),
      "%d vs %d" % (len(dump), len(mine)))
# The consumer runs in operation order, the dump is in merged (timestamp) order: compare as
# multisets, keyed by (tid, sequence), with every field (the consumer has no stack id).
def key(e): return (e["tid"], e["sequence"])
dmap = {key(e): e for e in dump}
check("(tid, sequence) unique", len(dmap) == len(dump))
for e in mine:
    d = dict(dmap.get(key(e), {}))
    sid = d.pop("stack_id", None)
    check("event %s equal" % (key(e),), d == e, "dump %s\nmine %s" % (d, e))
    check("stack id present", isinstance(sid, int))
# merged order: non-decreasing (ts_ns, sequence)
order = [(e["ts_ns"], e["sequence"]) for e in dump]
check("dump is in timestamp order", all(order[i][0] <= order[i + 1][0] for i in range(len(order) - 1)))
with_stack = sum(1 for e in dump if e["stack_id"] != 0)
rundown = sum(1 for e in dump if e["flags"] & 1)
check("every non-rundown event has a stack", with_stack == len(dump) - rundown,
      "%d %d" % (with_stack, rundown))
check("rundown events are flagged", rundown == 3, str(rundown))
check("addresses are 0x strings", all(e["HeapHandle"].startswith("0x") for e in dump))
types = {e["type"] for e in dump}
check("types", types == {"alloc", "free", "realloc", "create", "destroy", "expand"}, str(types))
for e in dump:
    if e["type"] == "create":
        check("create fields", set(e) >= {"Flags", "ReservedSpace", "CommittedSpace"}, str(e))

# CSV: same values, by column name; empty cells where the type has no such field.
rows = list(csv.DictReader(open(tmp + "/d.csv")))
check("csv rows", len(rows) == len(dump))
def norm(v):
    return str(v)
for d, row in zip(dump, rows):
    filled = {k: v for k, v in row.items() if v != ""}
    want = {k: norm(v) for k, v in d.items()}
    check("csv row equals json", filled == want, "%s\n%s" % (filled, want))
# text: "<ts> tid=.. seq=.. <type> HeapHandle=.. k=v ... stack=.. flags=.. [rundown]"
lines = open(tmp + "/d.text").read().splitlines()
check("text lines", len(lines) == len(dump))
for d, line in zip(dump, lines):
    parts = line.split()
    kv = dict(p.split("=", 1) for p in parts if "=" in p)
    got = {"ts_ns": parts[0], "tid": kv.pop("tid"), "sequence": kv.pop("seq"), "type": parts[3],
           "stack_id": kv.pop("stack"), "flags": kv.pop("flags")}
    got.update(kv)
    want = {k: norm(v) for k, v in d.items()}
    check("text line equals json", got == want, "%s\n%s" % (got, want))
    check("rundown word", ("rundown" in parts) == bool(d["flags"] & 1))

# filters, against the full dump
import subprocess
import os
heaptrail = os.environ["HEAPTRAIL"]
def run(*args):
    out = subprocess.run([heaptrail, "dump", "--format", "json", *args, tmp + "/t.htrace"],
                         capture_output=True, text=True)
    return out.returncode, [json.loads(l) for l in out.stdout.splitlines()]
rc, ev = run("--type", "free")
check("--type free", rc == 0 and ev == [e for e in dump if e["type"] == "free"])
rc, ev = run("--type", "create,0x23")
check("--type create,0x23", rc == 0 and ev == [e for e in dump if e["type"] in ("create", "destroy")])
heap = [e for e in dump if e["type"] == "destroy"][0]["HeapHandle"]
rc, ev = run("--heap", heap)
check("--heap", rc == 0 and len(ev) > 0 and ev == [e for e in dump if e["HeapHandle"] == heap])
rc, ev = run("--source", "5")
check("--source 5", rc == 0 and len(ev) == 1 and ev[0]["Source"] == 5, str(ev))
rc, ev2 = run("--source", "invalid")
check("--source invalid", ev2 == ev)
rc, ev = run("--source", "lookaside,4")
check("--source lookaside,4", rc == 0 and ev == [e for e in dump if e.get("Source") in (1, 4)])
tids = sorted({e["tid"] for e in dump})
for t in tids:
    rc, ev = run("--tid", str(t))
    check("--tid %d" % t, rc == 0 and ev == [e for e in dump if e["tid"] == t])
rc, ev = run("--tid", str(tids[0]), "--type", "alloc")
check("filters combine", ev == [e for e in dump if e["tid"] == tids[0] and e["type"] == "alloc"])
print("dump checks: %d failed" % fails)
sys.exit(1 if fails else 0)
EOF
check "dump round-trips every field and filters exactly" test $? = 0

for bad in "--format xml" "--type bogus" "--source 99x" "--heap zz" "--tid -1" "--nope"; do
    # shellcheck disable=SC2086
    "$HEAPTRAIL" dump $bad "$tmp/t.htrace" >/dev/null 2>"$tmp/u.err"
    check "dump $bad exits 2" test $? = 2
    check "dump $bad says why in one line" test "$(wc -l <"$tmp/u.err")" = 1
done
"$HEAPTRAIL" dump >/dev/null 2>&1
check "dump without a file exits 2" test $? = 2
finish
