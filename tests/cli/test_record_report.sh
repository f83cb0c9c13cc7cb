#!/usr/bin/env bash
# End to end: `heaptrail record --stacks` runs tests/cli/prog_leaky.c (a plain program, malloc
# through the preload library), then `heaptrail report` names its leak, temporaries and double
# free at the right function and file:line (lines grepped from the SITE: markers), and `dump`
# reads the same trace. Skipped in sanitizer builds (no preload library there).
set -u
. "$HT_SOURCE_DIR/tests/cli/lib.sh"

prog=$HT_BUILD_DIR/cli_prog_leaky
src=$HT_SOURCE_DIR/tests/cli/prog_leaky.c
if [ -n "$HT_SANITIZE" ] || [ -z "${HT_PRELOAD_LIB:-}" ]; then
    echo "skipped: no preload library in this build"
    finish
fi
[ -x "$prog" ] || fail "no $prog"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-test.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT

HEAPTRAIL_PRELOAD_LIB=$HT_PRELOAD_LIB "$HEAPTRAIL" record --stacks -o "$tmp/leaky.htrace" -- "$prog" \
    >"$tmp/out" 2>"$tmp/err"
check "record exits 0" test $? = 0
check "the program ran" grep -q "leaky done" "$tmp/out"
"$HEAPTRAIL" report --format json "$tmp/leaky.htrace" >"$tmp/r.json" 2>"$tmp/r.err"
check "report exits 0" test $? = 0
"$HEAPTRAIL" report "$tmp/leaky.htrace" >"$tmp/r.txt" 2>&1
check "text report exits 0" test $? = 0
"$HEAPTRAIL" dump --format json "$tmp/leaky.htrace" >"$tmp/d.json" 2>&1
check "dump exits 0" test $? = 0

grep -n 'SITE:[a-z_][a-z_]*' "$src" | sed -E 's/^([0-9]+):.*SITE:([a-z_]+).*/\2=\1/' >"$tmp/sites"
python3 - "$tmp" "$(basename "$src")" <<'PY'
import json, sys
tmp, srcname = sys.argv[1], sys.argv[2]
sites = {k: int(v) for k, v in (l.strip().split("=") for l in open(tmp + "/sites"))}
r = json.load(open(tmp + "/r.json"))
fails = 0
def check(name, cond, detail=""):
    global fails
    if not cond:
        fails += 1
        print("FAIL: %s %s" % (name, str(detail)[:1500]), file=sys.stderr)
def frame_at(stack, func):
    return next((f for f in stack if f.get("function") == func), None)
def at(stack, func, site):
    f = frame_at(stack, func)
    check("%s at %s:%d" % (func, srcname, sites[site]),
          f is not None and (f.get("file") or "").endswith(srcname) and f.get("line") == sites[site],
          stack[:4])
leak = [l for l in r["leaks"] if frame_at(l["stack"], "leak_here")]
check("the leak in leak_here", len(leak) == 1 and leak[0]["blocks"] == 7 and leak[0]["bytes"] == 7 * 333,
      r["leaks"][:3])
if leak:
    at(leak[0]["stack"], "leak_here", "leak_here")
    check("leak stack reaches main", frame_at(leak[0]["stack"], "main") is not None)
    check("the site is named by the program's frame, not the preload's malloc",
          leak[0]["name"].startswith("leak_here (") and leak[0]["name"].endswith(" <- main"),
          leak[0]["name"])
churn = [s for s in r["temporary_sites"] if frame_at(s["stack"], "churn_here")]
check("temporaries in churn_here", len(churn) == 1 and churn[0]["temporary_count"] == 50
      and churn[0]["alloc_count"] == 50, r["temporary_sites"][:3])
if churn:
    at(churn[0]["stack"], "churn_here", "churn_here")
# heaptrail's own frames (malloc, the heap, the recorder) are cut at capture: every stack
# starts at the program's call (one site for the 50 temporaries, whichever heap path served
# each one).
def site_with(func):
    for key in ("hot_sites_by_count", "hot_sites_by_bytes"):
        for s in r.get(key, []):
            if frame_at(s.get("stack", []), func):
                return [s]
    return []
# posix_memalign and realloc keep a frame of their own in the preload library: their stacks
# start at the program only when the shim's own functions are registered as entry points.
for func in ("align_here", "grow_here"):
    s = site_with(func)
    check("a site in " + func, len(s) == 1, [x.get("name") for x in r.get("hot_sites_by_count", [])][:8])
    if s:
        check("the %s stack starts at the program's frame" % func,
              s[0]["stack"][0].get("function") == func, [f.get("function") for f in s[0]["stack"]])
for name, s in (("leak", leak), ("churn", churn)):
    if s:
        check("the %s stack starts at the program's frame" % name,
              s[0]["stack"] and s[0]["stack"][0].get("function") in ("leak_here", "churn_here"),
              [f.get("function") for f in s[0]["stack"]])
inv = [op for op in r["invalid"] if frame_at(op["stack"], "free_twice")]
check("the double free", len(inv) == 1 and inv[0]["prior"] == "freed", r["invalid"])
if inv:
    at(inv[0]["stack"], "free_twice", "free_twice")
check("invalid_frees counts it", r["invalid_frees"] >= 1)
n = sum(1 for _ in open(tmp + "/d.json"))
check("dump has every event", n == r["n_events"], "%d vs %d" % (n, r["n_events"]))
print("record+report checks: %d failed" % fails)
sys.exit(1 if fails else 0)
PY
check "report of a recorded program names its sites" test $? = 0
grep -q "leak_here (.*prog_leaky.c:$(sed -n 's/^leak_here=//p' "$tmp/sites"))" "$tmp/r.txt"
check "text names leak_here with file:line" test $? = 0
finish
