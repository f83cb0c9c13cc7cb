#!/usr/bin/env bash
# bench/run_programs.sh — real programs (python3, sqlite3, gcc) and the churn benchmark under
# every allocator and tracer: glibc, jemalloc, mimalloc, tcmalloc, heaptrail untraced, heaptrail
# traced (no stacks, DWARF stacks), heaptrack, and LTTng-UST's libc wrapper. One table from one
# run: wall time, CPU time (user+sys of the whole process tree) and peak RSS, as medians over
# interleaved rounds, with ratios to glibc taken per round (shared/BENCHMARKING.md).
# The report (markdown) goes to stdout, progress to stderr.
#
# Environment (all optional):
#   BENCH_ROUNDS     interleaved rounds (default 3)
#   BENCH_PROGRAMS   from: python sqlite gcc churn (default: all four)
#   BENCH_MODES      from: glibc jemalloc mimalloc tcmalloc ht ht-trace ht-stacks heaptrack lttng
#                    (default: all)
#   BENCH_STACKS     stack depth of ht-stacks (default 16)
#   BENCH_SCALE      multiplies each program's work (default 1)
#   BENCH_PRELOAD    libheaptrail-preload.so (default: build/release/libheaptrail-preload.so)
#   BENCH_LIBDIR     where the peer allocators live (default /usr/lib/x86_64-linux-gnu)
#   BENCH_TIMEOUT    seconds before one run is killed (default 600)
# Exit status: 0 when every attempted run succeeded (a missing peer is skipped with a note),
# 1 when a run failed, 2 on bad setup.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${BENCH_ROUNDS:-3}
programs=${BENCH_PROGRAMS:-python sqlite gcc churn}
modes=${BENCH_MODES:-glibc jemalloc mimalloc tcmalloc ht ht-trace ht-stacks heaptrack lttng}
depth=${BENCH_STACKS:-16}
scale=${BENCH_SCALE:-1}
preload_lib=${BENCH_PRELOAD:-$root/build/release/libheaptrail-preload.so}
libdir=${BENCH_LIBDIR:-/usr/lib/x86_64-linux-gnu}
timeout_s=${BENCH_TIMEOUT:-600}
churn_bin=$root/build/release/bench_churn

die() {
    echo "bench/run_programs.sh: $*" >&2
    exit 2
}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $scale =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE must be a positive integer"
[[ $depth =~ ^[1-9][0-9]*$ ]] || die "BENCH_STACKS must be a positive integer"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (make bench-deps installs 'time')"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ht-bench-prog.XXXXXX") || die "mktemp failed"
sessiond_pid=""
cleanup() {
    [[ -n $sessiond_pid ]] && kill "$sessiond_pid" 2>/dev/null && wait "$sessiond_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- the workloads ----------------------------------------------------------------------------
cat >"$tmp/work.py" <<EOF
# dict/list/str heavy, like a typical script: build, index, sort, join, discard
import collections
def run(n):
    total = 0
    for r in range(n):
        d = {}
        for i in range(20000):
            k = "key%d" % (i * 7 + r)
            d[k] = [i, str(i), (i, r)]
        words = collections.Counter(k[:5] for k in d)
        s = sorted(d.items(), key=lambda kv: kv[1][0] % 97)
        total += len(s) + len(words) + len(",".join(k for k, _ in s[:500]))
    return total
print(run(40 * $scale))
EOF
cat >"$tmp/batch.sql" <<EOF
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, payload BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $((400000 * scale)))
INSERT INTO t SELECT x, 'name' || x, x % 1000, randomblob(40 + x % 200) FROM c;
CREATE INDEX t_name ON t(name);
CREATE INDEX t_grp ON t(grp);
SELECT grp, count(*), sum(length(payload)) FROM t GROUP BY grp ORDER BY 3 DESC LIMIT 3;
UPDATE t SET name = name || '-x' WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), max(name) FROM t;
EOF
gcc_src=$root/src/trace/writer.c

# prog_cmd NAME: sets cmd to the command line (an array) of one workload.
prog_cmd() {
    case $1 in
    python) cmd=(python3 "$tmp/work.py") ;;
    sqlite) cmd=(sqlite3 -batch -bail :memory: ".read $tmp/batch.sql") ;;
    gcc) cmd=(gcc -O2 -D_GNU_SOURCE "-I$root/include" "-I$root/src" -c -o /dev/null "$gcc_src") ;;
    churn) cmd=("$churn_bin" --threads 2 --ops $((4000000 * scale)) --seed 1 --alloc malloc) ;;
    esac
}

# ---- the modes --------------------------------------------------------------------------------
declare -A label
notes=()
rows=()
for m in $modes; do
    case $m in
    glibc) label[$m]="glibc" ;;
    jemalloc) label[$m]="jemalloc" lib=$libdir/libjemalloc.so.2 ;;
    mimalloc) label[$m]="mimalloc" lib=$libdir/libmimalloc.so.2 ;;
    tcmalloc) label[$m]="tcmalloc" lib=$libdir/libtcmalloc_minimal.so.4 ;;
    ht) label[$m]="heaptrail, untraced" lib=$preload_lib ;;
    ht-trace) label[$m]="heaptrail, traced, no stacks" lib=$preload_lib ;;
    ht-stacks) label[$m]="heaptrail, traced, stacks $depth" lib=$preload_lib ;;
    heaptrack) label[$m]="heaptrack (stacks)" lib=/usr/bin/heaptrack ;;
    lttng) label[$m]="LTTng libc wrapper (no stacks)" lib=$libdir/liblttng-ust-libc-wrapper.so.1 ;;
    *) die "BENCH_MODES: unknown mode '$m'" ;;
    esac
    if [[ $m != glibc && ! -e $lib ]]; then
        notes+=("${label[$m]}: skipped, $lib is missing (make bench-deps; make build)")
        continue
    fi
    rows+=("$m")
done
[[ ${#rows[@]} -gt 0 ]] || die "nothing to run"
for p in $programs; do
    case $p in
    python) command -v python3 >/dev/null || die "python3 is missing" ;;
    sqlite) command -v sqlite3 >/dev/null || die "sqlite3 is missing" ;;
    gcc) command -v gcc >/dev/null || die "gcc is missing" ;;
    churn) [[ -x $churn_bin ]] || die "no $churn_bin (make build)" ;;
    *) die "BENCH_PROGRAMS: unknown program '$p'" ;;
    esac
done

lttng_on=0
for m in "${rows[@]}"; do [[ $m == lttng ]] && lttng_on=1; done
if ((lttng_on)); then
    export LTTNG_HOME=$tmp/lttng-home
    mkdir -p "$LTTNG_HOME"
    lttng-sessiond --no-kernel >"$tmp/sessiond.log" 2>&1 &
    sessiond_pid=$!
    for _ in $(seq 50); do lttng list >/dev/null 2>&1 && break; sleep 0.1; done
fi

results=$tmp/results # program mode round wall_s cpu_s maxrss_kib
: >"$results"
failed=0
declare -A broken

# one_run PROGRAM MODE ROUND
one_run() {
    local p=$1 m=$2 r=$3 out=$tmp/out err=$tmp/err tf=$tmp/time rc t0 t1
    local -a cmd
    prog_cmd "$p"
    local -a env_=() pre=()
    rm -rf "$tmp/trace" && mkdir -p "$tmp/trace"
    case $m in
    jemalloc) env_=(LD_PRELOAD=$libdir/libjemalloc.so.2) ;;
    mimalloc) env_=(LD_PRELOAD=$libdir/libmimalloc.so.2) ;;
    tcmalloc) env_=(LD_PRELOAD=$libdir/libtcmalloc_minimal.so.4) ;;
    ht) env_=(LD_PRELOAD=$preload_lib HEAPTRAIL_ENABLED=0) ;;
    ht-trace) env_=(LD_PRELOAD=$preload_lib HEAPTRAIL_ENABLED=1
        "HEAPTRAIL_OUTPUT=$tmp/trace/t.%p.htr" HEAPTRAIL_STACKS=0) ;;
    ht-stacks) env_=(LD_PRELOAD=$preload_lib HEAPTRAIL_ENABLED=1
        "HEAPTRAIL_OUTPUT=$tmp/trace/t.%p.htr" HEAPTRAIL_STACKS=$depth) ;;
    heaptrack) pre=(heaptrack -o "$tmp/trace/ht") ;;
    lttng)
        lttng create s --output="$tmp/trace/lt" >/dev/null &&
            lttng enable-channel -u ch0 -s s >/dev/null &&
            lttng enable-event -u -c ch0 'lttng_ust_libc:*' -s s >/dev/null &&
            lttng add-context -u -t vtid -c ch0 -s s >/dev/null &&
            lttng start s >/dev/null || {
            notes+=("LTTng: session setup failed, not run")
            broken[$m]=1
            return 0
        }
        env_=(LD_PRELOAD=$libdir/liblttng-ust-libc-wrapper.so.1)
        ;;
    esac
    t0=$(date +%s%N)
    env "${env_[@]}" timeout "$timeout_s" /usr/bin/time -f '%e %U %S %M' -o "$tf" \
        "${pre[@]}" "${cmd[@]}" >"$out" 2>"$err"
    rc=$?
    t1=$(date +%s%N)
    if [[ $m == lttng ]]; then
        lttng stop s >/dev/null 2>&1
        lttng destroy s >/dev/null 2>&1
    fi
    if [[ $rc -ne 0 ]]; then
        echo "bench/run_programs.sh: FAILED: $p under ${label[$m]}, round $r: exit $rc" >&2
        sed 's/^/  | /' "$err" | head -n 10 >&2
        notes+=("$p under ${label[$m]}: FAILED in round $r (exit $rc), not run again")
        broken[$p.$m]=1
        failed=1
        return 0
    fi
    # Correctness: the output must equal glibc's (heaptrack prints its own lines to stdout).
    if [[ $m == heaptrack ]]; then
        :
    elif [[ $m == glibc ]]; then
        cp "$out" "$tmp/expect.$p"
    elif [[ -f $tmp/expect.$p ]] && ! cmp -s "$out" "$tmp/expect.$p"; then
        notes+=("$p under ${label[$m]}: output differs from glibc's (round $r)")
        failed=1
    fi
    awk -v p="$p" -v m="$m" -v r="$r" -v w="$(((t1 - t0) / 1000000))" \
        '{ printf "%s %s %s %.3f %.2f %d\n", p, m, r, w / 1000, $2 + $3, $4 }' "$tf" >>"$results"
    printf '  %-7s %-34s round %s: %s\n' "$p" "${label[$m]}" "$r" \
        "$(tail -n 1 "$results" | awk '{printf "%6.2f s wall %6.2f s cpu %8d KiB", $4, $5, $6}')" >&2
}

start=$(date +%s)
echo "bench/run_programs.sh: programs {$programs} x ${#rows[@]} modes x $rounds rounds" >&2
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    for p in $programs; do
        for m in "${rows[@]}"; do
            [[ -n ${broken[$m]:-} || -n ${broken[$p.$m]:-} ]] && continue
            one_run "$p" "$m" "$r"
        done
    done
done
elapsed=$(($(date +%s) - start))

rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
echo "## Real programs under each allocator and tracer"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; $(uname -sr); heaptrail commit $rev"
echo "- command: \`BENCH_ROUNDS=$rounds BENCH_SCALE=$scale bash bench/run_programs.sh\`"
echo "- programs: python3 (dict/list script), sqlite3 (SQL batch, in-memory db), gcc -O2 -c of" \
    "src/trace/writer.c (gcc runs cc1 and as: exec is followed), bench_churn --alloc malloc at 2 threads"
echo "- medians of $rounds interleaved rounds; ratios are medians of per-round ratios to glibc" \
    "(< 1: faster / smaller); CPU = user+sys of the whole process tree; $elapsed s in all"
echo
echo "| program | mode | wall s | wall vs glibc | CPU s | CPU vs glibc | peak RSS MiB | RSS vs glibc |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for p in $programs; do
    for m in "${rows[@]}"; do
        awk -v p="$p" -v m="$m" -v lab="${label[$m]}" '
        function median(arr, n,    i, j, x) {
            for (i = 2; i <= n; i++) { x = arr[i]; for (j = i - 1; j >= 1 && arr[j] > x; j--) arr[j + 1] = arr[j]; arr[j + 1] = x }
            return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
        }
        $1 == p && $2 == "glibc" { gw[$3] = $4; gc[$3] = $5; gr[$3] = $6 }
        $1 == p && $2 == m { n++; rd[n] = $3; w[n] = $4; c[n] = $5; s[n] = $6 }
        END {
            if (n == 0) { printf "| %s | %s | failed | | | | | |\n", p, lab; exit }
            for (i = 1; i <= n; i++) if (rd[i] in gw && gw[rd[i]] > 0) {
                k++; rw[k] = w[i] / gw[rd[i]]; rc[k] = (gc[rd[i]] > 0 ? c[i] / gc[rd[i]] : 0); rr[k] = s[i] / gr[rd[i]]
            }
            printf "| %s | %s | %.2f | %s | %.2f | %s | %.1f | %s |\n", p, lab, median(w, n),
                   k ? sprintf("%.2fx", median(rw, k)) : "–", median(c, n),
                   k ? sprintf("%.2fx", median(rc, k)) : "–", median(s, n) / 1024,
                   k ? sprintf("%.2fx", median(rr, k)) : "–"
        }' "$results"
    done
done
if [[ ${#notes[@]} -gt 0 ]]; then
    echo
    for n in "${notes[@]}"; do echo "- note: $n"; done
fi
exit $failed
