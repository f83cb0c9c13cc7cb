#!/usr/bin/env bash
# bench/run.sh — the allocator churn table: glibc, jemalloc, mimalloc, tcmalloc (LD_PRELOAD)
# and heaptrail (process heap, private heap, NO_SERIALIZE heap per thread), at 1 and 2 threads,
# on bench_churn (bench/churn.c).
#
# Runs are interleaved (A B C … A B C …) for BENCH_ROUNDS rounds; the table shows medians, and
# each ratio is the median over rounds of (this run / the glibc run of the same round and
# thread count), as shared/BENCHMARKING.md asks for on these noisy 2-core machines.
# The report goes to stdout, progress to stderr.
#
# Environment (all optional):
#   BENCH_BIN      the benchmark binary        (default: build/release/bench_churn)
#   BENCH_OPS      operations per run, total over the threads   (default: 30000000)
#   BENCH_ROUNDS   interleaved rounds           (default: 3)
#   BENCH_THREADS  thread counts                (default: "1 2")
#   BENCH_SEED     PRNG seed                    (default: 1)
#   BENCH_SLOTS    live-set slots per thread    (default: bench_churn's, 8192)
#   BENCH_ALLOCS   rows, from: glibc jemalloc mimalloc tcmalloc ht-process ht-private ht-nolock
#                  (default: all seven; ht-nolock = one HT_HEAP_NO_SERIALIZE heap per thread)
#   BENCH_PIN      1: pin 1-thread runs to CPU 0 with taskset (default: 1; the two vCPUs of
#                  these VMs often differ in speed, which would add noise between runs)
#   BENCH_TIMEOUT  seconds before one run is killed (default: 300)
#   BENCH_LIBDIR   where the peer allocators live (default: /usr/lib/x86_64-linux-gnu)
#   BENCH_BIN_BEFORE  a second bench_churn (e.g. built from an earlier commit): every heaptrail
#                  row is also run with it, interleaved in the same rounds, as "… (before)"
# Exit status: 0 when every run that was attempted succeeded (a peer allocator that is not
# installed is skipped with a note), 1 when a run failed or crashed, 2 on bad setup.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

bin=${BENCH_BIN:-$root/build/release/bench_churn}
ops=${BENCH_OPS:-30000000}
rounds=${BENCH_ROUNDS:-3}
threads_list=${BENCH_THREADS:-1 2}
seed=${BENCH_SEED:-1}
slots=${BENCH_SLOTS:-}
allocs=${BENCH_ALLOCS:-glibc jemalloc mimalloc tcmalloc ht-process ht-private ht-nolock}
pin=${BENCH_PIN:-1}
timeout_s=${BENCH_TIMEOUT:-300}
libdir=${BENCH_LIBDIR:-/usr/lib/x86_64-linux-gnu}
bin_before=${BENCH_BIN_BEFORE:-}

die() {
    echo "bench/run.sh: $*" >&2
    exit 2
}

[[ -x $bin ]] || die "no benchmark binary at $bin (build first: make build, or set BENCH_BIN)"
[[ -z $bin_before || -x $bin_before ]] || die "BENCH_BIN_BEFORE: no binary at $bin_before"
[[ $ops =~ ^[0-9]+$ && $ops -gt 0 ]] || die "BENCH_OPS must be a positive integer"
[[ $rounds =~ ^[0-9]+$ && $rounds -gt 0 ]] || die "BENCH_ROUNDS must be a positive integer"
[[ -z $slots || $slots =~ ^[0-9]+$ ]] || die "BENCH_SLOTS must be an integer"
for t in $threads_list; do
    [[ $t =~ ^[0-9]+$ && $t -gt 0 ]] || die "BENCH_THREADS: bad thread count '$t'"
done

# ---- the rows: label, --alloc mode, library to preload -------------------------------------
declare -A mode preload label
notes=()
rows=()
for a in $allocs; do
    case $a in
    glibc) label[$a]="glibc malloc" mode[$a]=malloc preload[$a]="" ;;
    jemalloc) label[$a]="jemalloc" mode[$a]=malloc preload[$a]="$libdir/libjemalloc.so.2" ;;
    mimalloc) label[$a]="mimalloc" mode[$a]=malloc preload[$a]="$libdir/libmimalloc.so.2" ;;
    tcmalloc) label[$a]="tcmalloc" mode[$a]=malloc preload[$a]="$libdir/libtcmalloc_minimal.so.4" ;;
    ht-process) label[$a]="heaptrail process heap" mode[$a]=ht-process preload[$a]="" ;;
    ht-private) label[$a]="heaptrail private heap" mode[$a]=ht-private preload[$a]="" ;;
    ht-nolock) label[$a]="heaptrail NO_SERIALIZE heap per thread" mode[$a]=ht-private-nolock preload[$a]="" ;;
    *) die "BENCH_ALLOCS: unknown allocator '$a'" ;;
    esac
    if [[ -n ${preload[$a]} && ! -f ${preload[$a]} ]]; then
        notes+=("${label[$a]}: skipped, ${preload[$a]} is not installed (make bench-deps)")
        continue
    fi
    rows+=("$a")
    if [[ -n $bin_before && $a == ht-* ]]; then
        label[$a-before]="${label[$a]} (before)" mode[$a-before]=${mode[$a]} preload[$a-before]=""
        rows+=("$a-before")
    fi
done
[[ ${#rows[@]} -gt 0 ]] || die "nothing to run"
have_glibc=0
for a in "${rows[@]}"; do [[ $a == glibc ]] && have_glibc=1; done

pin_cmd=()
if [[ $pin == 1 ]] && command -v taskset >/dev/null 2>&1 && [[ $(nproc) -ge 2 ]]; then
    pin_cmd=(taskset -c 0)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ht-bench.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
# Run a private copy of the binary, so that a rebuild during the run cannot mix two builds.
cp "$bin" "$tmp/bench_churn" || die "cannot copy $bin"
if [[ -n $bin_before ]]; then
    cp "$bin_before" "$tmp/bench_churn_before" || die "cannot copy $bin_before"
fi
results=$tmp/results # label-key threads round ops_per_s maxrss_kib minflt cpu_s wall_s
: >"$results"
failed=0
declare -A broken # a row + thread count that failed once is not run again

slots_arg=()
[[ -n $slots ]] && slots_arg=(--slots "$slots")

# one_run ROW THREADS ROUND: runs bench_churn once and appends its numbers to $results.
one_run() {
    local a=$1 t=$2 r=$3 out err rc line
    local exe=$tmp/bench_churn
    [[ $a == *-before ]] && exe=$tmp/bench_churn_before
    local -a cmd=("$exe" --threads "$t" --ops "$ops" --seed "$seed" --alloc "${mode[$a]}"
        "${slots_arg[@]}")
    [[ $t == 1 ]] && cmd=("${pin_cmd[@]}" "${cmd[@]}")
    out=$tmp/out err=$tmp/err
    if [[ -n ${preload[$a]} ]]; then
        LD_PRELOAD=${preload[$a]} timeout "$timeout_s" "${cmd[@]}" >"$out" 2>"$err"
    else
        timeout "$timeout_s" "${cmd[@]}" >"$out" 2>"$err"
    fi
    rc=$?
    if [[ -n ${preload[$a]} ]] && grep -q "cannot be preloaded" "$err"; then
        notes+=("${label[$a]}: skipped, the dynamic loader could not preload ${preload[$a]}")
        broken[$a]=skip
        return 0
    fi
    line=$(grep '^churn ' "$out" | tail -n 1)
    if [[ $rc -ne 0 || -z $line ]]; then
        local why="exit status $rc"
        ((rc == 124)) && why="timed out after ${timeout_s}s"
        ((rc > 128 && rc != 124)) && why="killed by signal $((rc - 128))"
        echo "bench/run.sh: FAILED: ${label[$a]}, $t thread(s), round $r: $why" >&2
        sed 's/^/  | /' "$err" "$out" | head -n 20 >&2
        local note="${label[$a]}, $t thread(s): FAILED in round $r ($why), not run again"
        [[ -s $err ]] && note+="; stderr: $(head -c 300 "$err" | tr '\n' ' ')"
        notes+=("$note")
        broken[$a.$t]=1
        failed=1
        return 0
    fi
    # key=value fields -> one results line
    awk -v a="$a" -v t="$t" -v r="$r" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        print a, t, r, f["ops_per_s"], f["maxrss_kib"], f["minflt"], f["cpu_s"], f["wall_s"],
              f["xfer_recv"]
    }' <<<"$line" >>"$results"
    printf '  %-40s %s thr  round %s: %12s ops/s  %6s s wall  %6s s cpu  %7s KiB rss  %8s minflt\n' \
        "${label[$a]}" "$t" "$r" \
        "$(awk '{print $4}' <<<"$(tail -n 1 "$results")")" \
        "$(awk '{print $8}' <<<"$(tail -n 1 "$results")")" \
        "$(awk '{print $7}' <<<"$(tail -n 1 "$results")")" \
        "$(awk '{print $5}' <<<"$(tail -n 1 "$results")")" \
        "$(awk '{print $6}' <<<"$(tail -n 1 "$results")")" >&2
}

# ---- run ------------------------------------------------------------------------------------
start=$(date +%s)
cmdline="bash bench/run.sh"
envline="BENCH_OPS=$ops BENCH_ROUNDS=$rounds BENCH_THREADS=\"$threads_list\" BENCH_SEED=$seed"
[[ -n $slots ]] && envline+=" BENCH_SLOTS=$slots"
envline+=" BENCH_PIN=$pin"
[[ -n $bin_before ]] && envline+=" BENCH_BIN_BEFORE=$bin_before"
echo "bench/run.sh: ${#rows[@]} allocators x threads {$threads_list} x $rounds rounds, $ops ops per run" >&2
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    for t in $threads_list; do
        for a in "${rows[@]}"; do
            [[ -n ${broken[$a]:-} || -n ${broken[$a.$t]:-} ]] && continue
            one_run "$a" "$t" "$r"
        done
    done
done
elapsed=$(($(date +%s) - start))

# ---- report ---------------------------------------------------------------------------------
model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)
glibc_ver=$(ldd --version 2>/dev/null | head -n 1 | awk '{print $NF}')
pkgs=""
if command -v dpkg-query >/dev/null 2>&1; then
    pkgs=$(dpkg-query -W -f='${Package} ${Version}, ' libjemalloc2 libmimalloc2.0 \
        libtcmalloc-minimal4 2>/dev/null | sed 's/, $//')
fi
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")

echo "## Allocator churn benchmark"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, ${model:-unknown CPU}, $(uname -srm), glibc ${glibc_ver:-?}"
[[ -n $pkgs ]] && echo "- peers: $pkgs"
echo "- heaptrail: commit $rev (working tree as built), binary $bin ($(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC'))"
[[ -n $bin_before ]] && echo "- rows \"(before)\": binary $bin_before ($(date -u -r "$bin_before" '+%Y-%m-%d %H:%M UTC'))"
echo "- command: \`$envline $cmdline\`"
echo "- per run: \`$(basename "$bin") --threads T --ops $ops --seed $seed --alloc MODE${slots:+ --slots $slots}\`" \
    "(peers via LD_PRELOAD=$libdir/lib….so)${pin_cmd[*]:+; 1-thread runs under \`${pin_cmd[*]}\`}"
echo "- $rounds interleaved rounds; medians; ratios are medians of per-round ratios to glibc" \
    "(ops/s ratio > 1: faster than glibc; RSS ratio < 1: smaller); wall ${elapsed}s in all"
echo
echo "| allocator | threads | ops/s (median) | ops/s vs glibc | peak RSS MiB | RSS vs glibc | minor faults | CPU s | runs |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in $threads_list; do
    for a in "${rows[@]}"; do
        [[ ${broken[$a]:-} == skip ]] && continue
        awk -v a="$a" -v t="$t" -v lab="${label[$a]}" -v hg="$have_glibc" '
        function median(arr, n,    i, j, x) {
            for (i = 2; i <= n; i++) { x = arr[i]; for (j = i - 1; j >= 1 && arr[j] > x; j--) arr[j + 1] = arr[j]; arr[j + 1] = x }
            return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
        }
        $2 == t && $1 == "glibc" { gops[$3] = $4; grss[$3] = $5 }
        $2 == t && $1 == a { n++; rnd[n] = $3; ops[n] = $4; rss[n] = $5; flt[n] = $6; cpu[n] = $7 }
        END {
            if (n == 0) { printf "| %s | %s | failed | | | | | | 0 |\n", lab, t; exit }
            for (i = 1; i <= n; i++) {
                o[i] = ops[i]; s[i] = rss[i]; f[i] = flt[i]; c[i] = cpu[i]
                if ((rnd[i] in gops) && gops[rnd[i]] > 0) { m++; ro[m] = ops[i] / gops[rnd[i]]; rr[m] = rss[i] / grss[rnd[i]] }
            }
            mo = median(o, n); ms = median(s, n); mf = median(f, n); mc = median(c, n)
            ratio_o = (hg && m) ? sprintf("%.2fx", median(ro, m)) : "–"
            ratio_r = (hg && m) ? sprintf("%.2fx", median(rr, m)) : "–"
            printf "| %s | %s | %.2fM | %s | %.1f | %s | %.0f | %.2f | %d |\n", lab, t, mo / 1e6,
                   ratio_o, ms / 1024, ratio_r, mf, mc, n
        }' "$results"
    done
done
if [[ ${#notes[@]} -gt 0 ]]; then
    echo
    for n in "${notes[@]}"; do echo "- note: $n"; done
fi
echo >&2
echo "bench/run.sh: done in ${elapsed}s" >&2
exit $failed
