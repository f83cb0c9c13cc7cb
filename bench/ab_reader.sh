#!/usr/bin/env bash
# ab_reader.sh — before/after of reader throughput: two builds of bench_bench_reader (A, B),
# interleaved rounds, each running every thread count of both (memory mode, the merged
# read only); medians and min–max of M events/s over rounds.
#   bench/ab_reader.sh BIN_A BIN_B     env: ROUNDS (5), EVENTS (10000000), THREADS ("1 2 4 16"),
#                                          PIN (taskset CPU list, default 1), FIELD
#                                          (cpu_events_per_s: the reading thread's CPU time,
#                                          default; events_per_s: wall), MODE_A / MODE_B (the
#                                          bench line to take from each: memory (default:
#                                          ht_reader_next) or memory-batch)
set -euo pipefail
A=${1:?usage: ab_reader.sh BIN_A BIN_B}
B=${2:?usage: ab_reader.sh BIN_A BIN_B}
ROUNDS=${ROUNDS:-5}
EVENTS=${EVENTS:-10000000}
THREADS=${THREADS:-"1 2 4 16"}
PIN=${PIN:-1}
FIELD=${FIELD:-cpu_events_per_s} # or events_per_s (wall)
MODE_A=${MODE_A:-memory}
MODE_B=${MODE_B:-memory}
for r in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=$A mode=$MODE_A
        [ $side = B ] && bin=$B mode=$MODE_B
        for t in $THREADS; do
            v=$(taskset -c "$PIN" "$bin" --threads "$t" --events "$EVENTS" |
                awk -v F="$FIELD" -v M="mode=$mode" '$2 == M {for (i = 1; i <= NF; i++) if ($i ~ "^" F "=") {sub(F "=", "", $i); sub("M", "", $i); print $i}}')
            echo "$side $t $v"
        done
    done
done | awk '
function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                               return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ k = $1 " " $2; n[k]++; v[k, n[k]] = $3; seen[$2] = 1; order[++no] = $2 }
END {
    print "| threads | A M events/s (min–max) | B M events/s (min–max) | B/A |"
    print "|---:|---:|---:|---:|"
    for (i = 1; i <= no; i++) { t = order[i]; if (done[t]++) continue
        for (s = 1; s <= 2; s++) { side = s == 1 ? "A" : "B"; k = side " " t; lo = hi = v[k, 1]
            for (j = 1; j <= n[k]; j++) { x[j] = v[k, j]; lo = x[j] < lo ? x[j] : lo; hi = x[j] > hi ? x[j] : hi }
            m[s] = med(x, n[k]); sp[s] = sprintf("%.1f–%.1f", lo, hi) }
        printf "| %s | %.1f (%s) | %.1f (%s) | %.2f |\n", t, m[1], sp[1], m[2], sp[2], m[2] / m[1] }
}'
