#!/usr/bin/env bash
# ab_trace.sh — before/after of the recorder's cost per event: two builds of
# bench_trace_workload (A, B), interleaved rounds (A B A B ...), each round running every row
# of both; ns/event over the same build's untraced run of the same round; medians and the
# min–max spread over rounds. Wall = the churn loop; CPU = the whole process (writer included);
# CPU without the writer = the process minus the writer thread's CPU (the calling thread's
# own cost, and the least disturbed by other load on the host).
#
#   bench/ab_trace.sh BIN_A BIN_B        env: ROUNDS (5), OPS (2000000), DEPTH (16),
#                                             ROWS ("ht ht-trace ht-fp ht-dwarf"), PIN ("" or a
#                                             taskset CPU list), B_ENV (extra env for B only)
# Prints one table on stdout (markdown). Writes and removes traces under a mktemp directory.
set -euo pipefail
A=${1:?usage: ab_trace.sh BIN_A BIN_B}
B=${2:?usage: ab_trace.sh BIN_A BIN_B}
ROUNDS=${ROUNDS:-5}
OPS=${OPS:-2000000}
DEPTH=${DEPTH:-16}
ROWS=${ROWS:-"ht ht-trace ht-fp ht-dwarf"}
PIN=${PIN:-}
B_ENV=${B_ENV:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

run_row() { # build row -> "loop_ns_per_event self_cpu_ns events"
    local bin=$1 row=$2 extra=()
    case $row in
    ht) ;;
    ht-trace) extra=(--trace "$TMP/t.trace") ;;
    ht-fp) extra=(--trace "$TMP/t.trace" --stacks "$DEPTH" --unwind fp) ;;
    ht-dwarf) extra=(--trace "$TMP/t.trace" --stacks "$DEPTH" --unwind dwarf) ;;
    esac
    rm -f "$TMP/t.trace"
    local pre=()
    [ -n "$PIN" ] && pre=(taskset -c "$PIN")
    local envs=()
    [ "$bin" = "$B" ] && [ -n "$B_ENV" ] && envs=($B_ENV)
    env "${envs[@]}" "${pre[@]}" "$bin" --alloc ht --ops "$OPS" --nest "$DEPTH" "${extra[@]}" |
        awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}}
             END {print v["loop_ns_per_event"], v["self_cpu_ns"], v["events"], v["writer_cpu_ns"] + 0}'
}

for r in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=$A
        [ $side = B ] && bin=$B
        for row in $ROWS; do
            echo "$r $side $row $(run_row "$bin" "$row")"
        done
    done
done >"$TMP/raw"

awk -v rows="$ROWS" '
function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                               return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ w[$1, $2, $3] = $4; c[$1, $2, $3] = $5 / $6; m[$1, $2, $3] = ($5 - $7) / $6; R = $1 > R ? $1 : R }
END {
    nr = split(rows, row, " ")
    print "| row | A wall ns/event over untraced (min–max) | B wall (min–max) | B/A | A CPU ns/event over untraced | B CPU | B/A | A CPU without the writer | B | B/A |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (k = 1; k <= nr; k++) {
        for (s = 1; s <= 2; s++) {
            side = s == 1 ? "A" : "B"
            for (r = 1; r <= R; r++) {
                if (row[k] == "ht") { x[r] = w[r, side, "ht"]; y[r] = c[r, side, "ht"]; z[r] = m[r, side, "ht"] }
                else { x[r] = w[r, side, row[k]] - w[r, side, "ht"]; y[r] = c[r, side, row[k]] - c[r, side, "ht"]; z[r] = m[r, side, row[k]] - m[r, side, "ht"] }
                xs[r] = x[r]; ys[r] = y[r]; zs[r] = z[r]
            }
            lo = x[1]; hi = x[1]; for (r = 2; r <= R; r++) { lo = x[r] < lo ? x[r] : lo; hi = x[r] > hi ? x[r] : hi }
            mw[s] = med(xs, R); mc[s] = med(ys, R); mm[s] = med(zs, R); sp[s] = sprintf("%.1f–%.1f", lo, hi)
        }
        label = row[k] == "ht" ? "untraced (absolute ns/event)" : row[k]
        printf "| %s | %.1f (%s) | %.1f (%s) | %.2f | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |\n", label, mw[1], sp[1], mw[2], sp[2], mw[1] ? mw[2] / mw[1] : 0, mc[1], mc[2], mc[1] ? mc[2] / mc[1] : 0, mm[1], mm[2], mm[1] ? mm[2] / mm[1] : 0
    }
    printf "\n%d interleaved rounds; ns/event = run - untraced run of the same build and round\n", R
}' "$TMP/raw"
