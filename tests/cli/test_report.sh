#!/usr/bin/env bash
# Golden test of `heaptrail report` on the deterministic program tests/cli/gen_golden.c: the
# exact counts and bytes (leaks, peak, temporaries, destroyed-heap blocks, cross-thread frees,
# invalid frees) against the program's own model of what it did, the Sources against the
# heap's own statistics, the function names and file:line of each known site against the
# SITE: markers in the program's source (lines are grepped, never written here), the JSON
# against the text output, the --from/--to window against the peak, and --top / usage errors.
set -u
. "$HT_SOURCE_DIR/tests/cli/lib.sh"

gen=$HT_BUILD_DIR/cli_gen_golden
src=$HT_SOURCE_DIR/tests/cli/gen_golden.c
[ -x "$gen" ] || fail "no generator at $gen"
# (not tmp=$(ht_tmpdir): its EXIT trap would fire when the $(...) subshell exits)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/heaptrail-test.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
"$gen" "$tmp/t.htrace" "$tmp/ev.jsonl" >"$tmp/expect.txt" || fail "gen_golden failed"

"$HEAPTRAIL" report "$tmp/t.htrace" >"$tmp/report.txt" 2>"$tmp/report.err"
check "report exits 0" test $? = 0
check "report writes nothing on stderr (not a terminal)" test ! -s "$tmp/report.err"
"$HEAPTRAIL" report --format json "$tmp/t.htrace" >"$tmp/report.json" 2>"$tmp/json.err"
check "report --format json exits 0" test $? = 0

# Every SITE:<name> marker's line number, as name=line.
grep -n 'SITE:[a-z_0-9][a-z_0-9]*' "$src" | sed -E 's/^([0-9]+):.*SITE:([a-z_0-9]+).*/\2=\1/' >"$tmp/sites.txt"
check "the source has its SITE markers" test "$(wc -l <"$tmp/sites.txt")" -ge 10

python3 - "$tmp" <<'EOF'
import json, re, sys
tmp = sys.argv[1]
fails = 0
def check(name, cond, detail=""):
    global fails
    if not cond:
        fails += 1
        print("FAIL: %s %s" % (name, detail), file=sys.stderr)

exp = {}
stats = {}
for line in open(tmp + "/expect.txt"):
    k, _, v = line.strip().partition("=")
    if k.startswith("expect."):
        exp[k[7:]] = v
    elif k.startswith("stats."):
        _, heap, src = k.split(".")
        stats[(heap, int(src))] = [int(x) for x in v.split()]
sites = dict(l.strip().split("=") for l in open(tmp + "/sites.txt"))
sites = {k: int(v) for k, v in sites.items()}
r = json.load(open(tmp + "/report.json"))
text = open(tmp + "/report.txt").read()

def num(k):
    return int(exp[k])

# --- exact figures against the program's model
for key in ("leaked_blocks", "leaked_bytes", "peak_live_bytes", "peak_live_blocks",
            "destroyed_blocks", "destroyed_bytes"):
    check(key, r[key] == num(key), "%s vs %s" % (r[key], exp[key]))
check("temporary count", r["temporary"]["count"] == num("temporary_count"),
      str(r["temporary"]))
check("temporary bytes", r["temporary"]["bytes"] == num("temporary_bytes"))
check("invalid_frees", r["invalid_frees"] == 1, str(r["invalid_frees"]))
check("lost_events", r["lost_events"] == 0)
check("rundown leaks", r["leaked_rundown_blocks"] == 2, str(r["leaked_rundown_blocks"]))
check("damage none", r["damage"] is None)
allocs = r["events"]["alloc"] - r["rundown_events"] + r["events"]["realloc"]
# rundown: 3 heaps' CREATE are not rundown here (created after start) except the process heap
n_rundown_allocs = r["rundown_events"] - 1
check("allocations", r["events"]["alloc"] - n_rundown_allocs + r["events"]["realloc"]
      == num("allocs"), "%d" % allocs)
cross = [c for c in r["cross_thread"]
         if c["alloc_tid"] == num("cross_alloc_tid") and c["free_tid"] == num("cross_free_tid")]
check("cross-thread cell", len(cross) == 1 and cross[0]["blocks"] == num("cross_blocks")
      and cross[0]["bytes"] == num("cross_bytes"), str(r["cross_thread"]))
check("only one cross-thread cell", len(r["cross_thread"]) == 1)
check("threads", r["n_threads"] == 3)
check("program", r["trace"]["argv"][1:] == [tmp + "/t.htrace", tmp + "/ev.jsonl"] and
      r["trace"]["argv"][0].endswith("cli_gen_golden") and r["trace"]["complete"] is True,
      str(r["trace"]))

# --- Sources against the heap's own statistics (alloc count and bytes exactly; frees: the
# heap counts a moved realloc's free of the old block, which the event does not carry)
heaps = {"process": exp["process_heap"], "a": exp["heap_a"], "b": exp["heap_b"]}
byhandle = {h["handle"]: h for h in r["heaps"]}
moved = r["realloc_moved"]
free_diff = 0
for name, handle in heaps.items():
    h = byhandle.get(handle)
    check("heap %s in report" % name, h is not None)
    if h is None:
        continue
    for s in range(1, 6):
        st = stats[(name, s)]
        js = h["sources"][str(s)]
        check("heap %s Source %d allocs" % (name, s),
              [js["alloc_count"], js["alloc_bytes"]] == st[:2], "%s vs %s" % (js, st))
        free_diff += st[2] - js["free_count"]
check("frees match up to the moved reallocs", free_diff == moved, "%d vs %d" % (free_diff, moved))
for s in range(1, 6):
    tot = sum(stats[(n, s)][0] for n in heaps)
    check("overall Source %d" % s, r["sources"][str(s)]["alloc_count"] == tot)

# --- functions and file:line
def top(stack):
    return stack[0] if stack else {}
def at(frame, func, site):
    ok = (frame.get("function") == func and (frame.get("file") or "").endswith("gen_golden.c")
          and frame.get("line") == sites[site])
    check("frame %s at %s:%d" % (func, "gen_golden.c", sites[site]), ok, str(frame))
leaks = r["leaks"]
check("three leak groups", len(leaks) == 3, str(len(leaks)))
if len(leaks) == 3:
    at(top(leaks[0]["stack"]), "leak_big", "leak_big")
    check("leak_big 3 blocks 3000 bytes", (leaks[0]["blocks"], leaks[0]["bytes"]) == (3, 3000))
    at(top(leaks[1]["stack"]), "leak_small", "leak_small")
    check("leak_small 5 blocks 240 bytes", (leaks[1]["blocks"], leaks[1]["bytes"]) == (5, 240))
    check("rundown group has no stack", leaks[2]["stack"] == [] and leaks[2]["blocks"] == 2)
    check("leak stack reaches main", any(f["function"] == "main" for f in leaks[0]["stack"]))
d = r["destroyed_sites"]
check("destroyed site", len(d) == 1 and d[0]["destroyed_blocks"] == num("destroyed_blocks"))
if d:
    at(top(d[0]["stack"]), "doomed_alloc", "doomed")
    check("destroyed blocks are not leaks", d[0]["leaked_blocks"] == 0)
hc = r["hot_sites_by_count"]
if hc:
    at(top(hc[0]["stack"]), "make_temporaries", "temp")
    check("hot site count", hc[0]["alloc_count"] == 100 and hc[0]["temporary_count"] == 100)
hb = r["hot_sites_by_bytes"]
if hb:
    at(top(hb[0]["stack"]), "slow_path_block", "slow")
sp = r["slowpath_sites"]
check("one slow-path site", len(sp) == 1)
if sp:
    at(top(sp[0]["stack"]), "slow_path_block", "slow")
    check("slow-path site Source 4", sp[0]["sources"]["4"]["alloc_count"] == 1)
pk = r["peak_sites"]
if pk:
    at(top(pk[0]["stack"]), "slow_path_block", "slow")
    check("peak sites sum to the peak", sum(p["peak_live_bytes"] for p in pk)
          == r["peak_live_bytes"])
inv = r["invalid"]
check("one invalid op", len(inv) == 1)
if inv:
    op = inv[0]
    at(top(op["stack"]), "double_free_second", "df_free2")
    check("prior freed", op["prior"] == "freed", str(op["prior"]))
    at(top(op.get("prior_free_stack", [])), "double_free_first", "df_free1")
    at(top(op.get("prior_alloc_stack", [])), "double_free_alloc", "df_alloc")
    check("invalid op type", op["type"] == "free" and op["heap"] == exp["process_heap"])
ts = [s for s in r["temporary_sites"]]
check("temporary sites sum", sum(s["temporary_count"] for s in ts) == num("temporary_count"))

# --- the text says the same as the JSON
def grab(pattern):
    m = re.search(pattern, text, re.M)
    check("text has /%s/" % pattern, m is not None)
    return [int(x) for x in m.groups()] if m else None
v = grab(r"^  peak live +(\d+) bytes .* in (\d+) blocks$")
check("text peak", v == [r["peak_live_bytes"], r["peak_live_blocks"]], str(v))
v = grab(r"^  leaked +(\d+) bytes in (\d+) blocks$")
check("text leaked", v == [r["leaked_bytes"], r["leaked_blocks"]], str(v))
v = grab(r"^  lost events +(\d+)")
check("text lost", v == [r["lost_events"]])
v = grab(r"^  (\d+) bytes in (\d+) blocks were live when their heap was destroyed")
check("text destroyed", v == [r["destroyed_bytes"], r["destroyed_blocks"]])
v = grab(r"^  (\d+) temporary of (\d+) allocations")
check("text temporaries", v and v[0] == r["temporary"]["count"])
v = grab(r"^  invalid ops +(\d+) \(free (\d+),")
check("text invalid", v == [r["invalid_operations"], r["invalid_frees"]])
for s in range(1, 6):
    js = r["sources"][str(s)]
    v = grab(r"^  %d [a-z]+ +(\d+) +(\d+) +(\d+) +(\d+)$" % s)
    check("text Source %d" % s, v == [js["alloc_count"], js["alloc_bytes"], js["free_count"],
                                      js["free_bytes"]], str(v))
for i, lk in enumerate(leaks):
    v = grab(r"^  #%d (\d+) bytes in (\d+) blocks" % (i + 1))
    check("text leak #%d" % (i + 1), v == [lk["bytes"], lk["blocks"]])
m = re.search(r"^  (\d+) +(\d+) +(\d+) +(\d+)$", text.split("allocated on one thread, freed on another")[1], re.M)
check("text cross-thread row", m is not None and [int(x) for x in m.groups()] ==
      [cross[0]["alloc_tid"], cross[0]["free_tid"], cross[0]["blocks"], cross[0]["bytes"]]
      if cross else False)
for name, line in (("leak_big", sites["leak_big"]), ("double_free_second", sites["df_free2"]),
                   ("doomed_alloc", sites["doomed"])):
    check("text names %s (gen_golden.c:%d)" % (name, line),
          re.search(r"%s \(.*gen_golden\.c:%d\)" % (name, line), text) is not None)
for w in ("== Summary", "== Sources", "== Peak", "== Leaks", "== Hot sites",
          "== Temporary allocations", "== Lifetimes", "== Sizes", "== Threads",
          "== Invalid operations"):
    check("section " + w, w in text)
for t, n in r["events"].items():
    check("text events %s" % t, re.search(r"\b%s %d\b" % (t, n), text) is not None)
# sizes add up
check("pow2 sizes add up", sum(b["count"] for b in r["sizes"]["pow2"]) == num("allocs"))
check("lfh sizes add up", sum(b["count"] for b in r["sizes"]["lfh"])
      + r["sizes"]["above_lfh"]["count"] == num("allocs"))
check("lifetimes add up", sum(b["count"] for b in r["lifetimes"])
      == num("allocs") + 2 - r["leaked_blocks"] - r["destroyed_blocks"])
open(tmp + "/peak_ns", "w").write(str(r["peak_ns"]))
open(tmp + "/peak", "w").write("%d %d %d" % (r["peak_live_blocks"], r["peak_live_bytes"],
                                             r["leaked_blocks"]))
print("report checks: %d failed" % fails)
sys.exit(1 if fails else 0)
EOF
check "report JSON and text match the program" test $? = 0

# The window: [peak, peak] holds exactly the blocks live at the peak (the block allocated at
# that instant is AIFO, all others AOFO); [0, end] has only AIFI and AIFO, AIFO = the leaks.
pns=$(cat "$tmp/peak_ns")
"$HEAPTRAIL" report --format json --from "${pns}ns" --to "${pns}ns" "$tmp/t.htrace" >"$tmp/w1.json"
check "window report exits 0" test $? = 0
"$HEAPTRAIL" report --format json --from 0 --to 1000s "$tmp/t.htrace" >"$tmp/w2.json"
python3 - "$tmp" <<'EOF'
import json, sys
tmp = sys.argv[1]
blocks, nbytes, leaked = map(int, open(tmp + "/peak").read().split())
w = json.load(open(tmp + "/w1.json"))["window"]
ok = (w["AIFO"]["count"] + w["AOFO"]["count"] == blocks and
      w["AIFO"]["bytes"] + w["AOFO"]["bytes"] == nbytes and w["AIFO"]["count"] == 1 and
      w["AIFI"]["count"] == 0 and w["AOFI"]["count"] == 0 and
      w["impacting_bytes"] == w["AIFO"]["bytes"])
w2 = json.load(open(tmp + "/w2.json"))["window"]
ok2 = (w2["AOFI"]["count"] == 0 and w2["AOFO"]["count"] == 0 and w2["AIFO"]["count"] == leaked)
if not ok: print("window at peak:", w, file=sys.stderr)
if not ok2: print("window all:", w2, file=sys.stderr)
sys.exit(0 if ok and ok2 else 1)
EOF
check "window classes at the peak and over the whole trace" test $? = 0
"$HEAPTRAIL" report --from 1.5s --to 2 "$tmp/t.htrace" | grep -q '^== Window 1.500000 s .. 2.000000 s'
check "window times with units" test $? = 0

# Without stacks: the same figures, one site, and the report says stacks are missing.
GEN_GOLDEN_NO_STACKS=1 "$gen" "$tmp/ns.htrace" "$tmp/ns.jsonl" >"$tmp/ns.expect" || fail "gen_golden (no stacks)"
"$HEAPTRAIL" report "$tmp/ns.htrace" >"$tmp/ns.txt"
check "no-stack report exits 0" test $? = 0
grep -q '^  stacks         none recorded' "$tmp/ns.txt"
check "no-stack report says so" test $? = 0
"$HEAPTRAIL" report --format json "$tmp/ns.htrace" | python3 -c '
import json, sys
r = json.load(sys.stdin)
exp = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if l.startswith("expect."))
ok = (r["events_with_stack"] == 0 and len(r["leaks"]) == 1 and r["leaks"][0]["stack"] == [] and
      r["leaked_bytes"] == int(exp["expect.leaked_bytes"]) and
      r["peak_live_bytes"] == int(exp["expect.peak_live_bytes"]) and
      r["temporary"]["count"] == int(exp["expect.temporary_count"]))
sys.exit(0 if ok else 1)' "$tmp/ns.expect"
check "no-stack report: one site, same figures" test $? = 0

"$HEAPTRAIL" report --top 1 --format json "$tmp/t.htrace" | python3 -c '
import json, sys
r = json.load(sys.stdin)
sys.exit(0 if len(r["leaks"]) == 1 and len(r["hot_sites_by_count"]) == 1 else 1)'
check "--top 1 keeps one row" test $? = 0

# Progress: on stderr when it is a terminal (script(1) gives it a pty), never otherwise.
work=$HT_BUILD_DIR/bench_trace_workload
if [ -x "$work" ] && command -v script >/dev/null; then
    "$work" --alloc ht --ops 600000 --trace "$tmp/big.htrace" >/dev/null || fail "bench_trace_workload"
    "$HEAPTRAIL" report "$tmp/big.htrace" >/dev/null 2>"$tmp/noprog.err"
    check "no progress when stderr is not a terminal" test ! -s "$tmp/noprog.err"
    script -qec "'$HEAPTRAIL' report '$tmp/big.htrace' >/dev/null" "$tmp/typescript" >/dev/null 2>&1
    grep -q 'report: \[#*\.*\] *[0-9]*%' "$tmp/typescript"
    check "progress bar on a terminal" test $? = 0
else
    echo "skipped: progress test (no bench_trace_workload or script)"
fi

for bad in "--top 0" "--top x" "--format xml" "--from 1h" "--from 2s --to 1s" "--bogus"; do
    # shellcheck disable=SC2086
    "$HEAPTRAIL" report $bad "$tmp/t.htrace" >/dev/null 2>"$tmp/u.err"
    check "report $bad exits 2" test $? = 2
    check "report $bad says why in one line" test "$(wc -l <"$tmp/u.err")" = 1
done
"$HEAPTRAIL" report >/dev/null 2>&1
check "report without a file exits 2" test $? = 2
"$HEAPTRAIL" report "$tmp/t.htrace" "$tmp/t.htrace" >/dev/null 2>&1
check "report with two files exits 2" test $? = 2
finish
