#!/usr/bin/env bash
# bench/run_report.sh — how fast `heaptrail report` and `heaptrail dump` read a big trace, and
# how much memory they need, next to heaptrack_print on a heaptrack trace of the same workload
# (issue 5). The workload is bench_trace_workload (bench/trace_workload.c: a churn of
# free + alloc pairs over 4096 slots, 16 frames deep): through ht_heap_* recorded by heaptrail
# (frame-pointer stacks, depth 16), and through malloc/free under `heaptrack -o`. Each reader
# runs once per size under /usr/bin/time -v (wall time, CPU time, peak RSS); events/s is the
# trace's event count over the wall time and over the CPU time (user + sys: on a shared
# machine the steadier figure). Two sizes (REPORT_EVENTS and a tenth of it) show
# whether memory follows the trace length (it should not: the live set is 4096 blocks).
# The report goes to stdout, progress to stderr; all files live in one mktemp directory,
# removed at exit. Installs nothing (make bench-deps does).
#
# Environment (all optional):
#   REPORT_EVENTS   events in the big trace (default 100000000; e.g. 2000000 for a quick run)
#   REPORT_BUILD    build folder with heaptrail and bench_trace_workload (default build/release)
#   REPORT_PEERS    0 to skip heaptrack (default 1)
#   TMPDIR          where the traces go (needs about 8 bytes per event free)
# Exit status: 0 ok, 1 a run failed, 2 bad setup.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${REPORT_BUILD:-$root/build/release}
events=${REPORT_EVENTS:-100000000}
peers=${REPORT_PEERS:-1}
ht=$build/heaptrail
work=$build/bench_trace_workload

die() {
    echo "bench/run_report.sh: $*" >&2
    exit 2
}
[[ -x $ht ]] || die "no $ht (build first: make build, or set REPORT_BUILD)"
[[ -x $work ]] || die "no $work"
[[ $events =~ ^[0-9]+$ && $events -ge 100000 ]] || die "REPORT_EVENTS must be a number >= 100000"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (Debian package time; make bench-deps)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ht-run-report.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
avail=$(df --output=avail -B1 "$tmp" | tail -1)
need=$((events * 8))
((avail > need)) || die "need about $need bytes free in $tmp, have $avail"

have_heaptrack=0
if [[ $peers = 1 ]] && command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null; then
    have_heaptrack=1
fi

# timed NAME CMD...: runs CMD under /usr/bin/time -v, stdout to /dev/null; sets wall, cpu, rss.
timed() {
    local name=$1
    shift
    if ! /usr/bin/time -v -o "$tmp/time.$name" "$@" >/dev/null 2>"$tmp/err.$name"; then
        echo "bench/run_report.sh: $name failed: $(tail -3 "$tmp/err.$name")" >&2
        return 1
    fi
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tmp/time.$name")
    cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$tmp/time.$name")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time.$name")
}

rows=()
row() { # tool size events
    local eps cps
    eps=$(awk -v e="$3" -v w="$wall" 'BEGIN {printf "%.1f", (w > 0 ? e / w / 1e6 : 0)}')
    cps=$(awk -v e="$3" -v w="$cpu" 'BEGIN {printf "%.1f", (w > 0 ? e / w / 1e6 : 0)}')
    rows+=("$(printf '| %-36s | %12s | %8.2f | %8.2f | %9s | %9s | %9.1f |' "$1" "$2" "$wall" "$cpu" "$eps" "$cps" "$(awk -v r="$rss" 'BEGIN {print r / 1024}')")")
}

failed=0
for n in $((events / 10)) "$events"; do
    ops=$(((n - 2 * 4096) / 2))
    echo "bench/run_report.sh: recording $n events (heaptrail, fp stacks depth 16)..." >&2
    "$work" --alloc ht --ops "$ops" --trace "$tmp/t$n.htrace" --stacks 16 --unwind fp \
        --loss block >/dev/null || die "recording failed"
    got=$("$work" --verify "$tmp/t$n.htrace" | sed -E 's/.*events=([0-9]+).*/\1/')
    size=$(stat -c %s "$tmp/t$n.htrace")
    echo "bench/run_report.sh: $got events, $size bytes ($(awk -v s="$size" -v e="$got" 'BEGIN {printf "%.2f", s / e}') B/event)" >&2
    timed report "$ht" report "$tmp/t$n.htrace" && row "heaptrail report" "$got" "$got" || failed=1
    timed report_json "$ht" report --format json "$tmp/t$n.htrace" &&
        row "heaptrail report --format json" "$got" "$got" || failed=1
    timed dump_text "$ht" dump "$tmp/t$n.htrace" && row "heaptrail dump (text)" "$got" "$got" || failed=1
    timed dump_json "$ht" dump --format json "$tmp/t$n.htrace" &&
        row "heaptrail dump --format json" "$got" "$got" || failed=1
    timed dump_csv "$ht" dump --format csv "$tmp/t$n.htrace" &&
        row "heaptrail dump --format csv" "$got" "$got" || failed=1
    if [[ $have_heaptrack = 1 ]]; then
        echo "bench/run_report.sh: recording the same workload under heaptrack..." >&2
        (cd "$tmp" && heaptrack -o "$tmp/hk$n" "$work" --alloc malloc --ops "$ops" >/dev/null 2>&1) ||
            die "heaptrack recording failed"
        hk=$(ls "$tmp"/hk"$n"*.zst "$tmp"/hk"$n"*.gz "$tmp"/hk"$n" 2>/dev/null | head -1)
        [[ -n $hk ]] || die "heaptrack wrote no file"
        timed heaptrack_print heaptrack_print "$hk" &&
            row "heaptrack_print ($(stat -c %s "$hk") B trace)" "$got" "$got" || failed=1
        rm -f "$hk"
    fi
    rm -f "$tmp/t$n.htrace"
done

echo "## heaptrail report / dump vs heaptrack_print ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
echo
echo "| reader | events | wall s | CPU s | M events/s (wall) | M events/CPU-s | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
[[ $have_heaptrack = 1 ]] || echo "(heaptrack not installed or REPORT_PEERS=0: no peer row)"
exit $failed
