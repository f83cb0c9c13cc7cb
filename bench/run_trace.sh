#!/usr/bin/env bash
# bench/run_trace.sh — what tracing costs per heap event (issue 3): heaptrail untraced, traced
# to a file without stacks, and with stacks of depth 16 (frame-pointer walk, DWARF unwinding),
# against glibc malloc untraced, heaptrack 1.4 (full, and --raw collector only) and LTTng-UST's
# libc wrapper with a live, lossless session — all on one program, bench_trace_workload
# (bench/trace_workload.c: bench_trace.c's churn loop, through ht_heap_* or malloc/free).
#
# Runs are interleaved (A B C … A B C …) for TRACE_ROUNDS rounds. Every run's wall time and
# CPU time (user + sys of the whole process tree: heaptrack's interpreter and zstd, and for
# LTTng the CPU the session and consumer daemons used between start and stop) are measured;
# ns/event = (run - baseline run of the same round) / events, where the baseline is heaptrail
# untraced for heaptrail's rows and glibc malloc untraced for the malloc peers; the table
# shows medians over rounds. Bytes/event = trace size on disk / events.
# Installs nothing (make bench-deps does). The report goes to stdout, progress to stderr;
# every temporary file lives under one mktemp directory, removed at exit.
#
# Environment (all optional):
#   TRACE_BIN      the workload binary   (default: build/release/bench_trace_workload)
#   TRACE_OPS      churn operations per run, two events each (default: 5000000)
#   TRACE_ROUNDS   interleaved rounds    (default: 3)
#   TRACE_DEPTH    stack depth for heaptrail's stack rows, and the workload's nesting (16)
#   TRACE_ROWS     rows, from: ht ht-trace ht-fp ht-dwarf ht-dwarf-alloc glibc heaptrack
#                  heaptrack-raw lttng (ht-dwarf-alloc: stacks on allocations only,
#                  --stack-events alloc+realloc: the events heaptrack unwinds at)
#                  (default: all)
#   TRACE_TIMEOUT  seconds before one run is killed (default: 300)
#   TRACE_LIBDIR   where liblttng-ust-libc-wrapper.so.1 lives (default: /usr/lib/x86_64-linux-gnu)
# Exit status: 0 when every run attempted succeeded (a peer that is not installed, or stacks
# not wired into the recorder yet, is reported as skipped / pending), 1 when a run failed,
# 2 on bad setup.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

bin=${TRACE_BIN:-$root/build/release/bench_trace_workload}
ops=${TRACE_OPS:-5000000}
rounds=${TRACE_ROUNDS:-3}
depth=${TRACE_DEPTH:-16}
rows_list=${TRACE_ROWS:-ht ht-trace ht-fp ht-dwarf ht-dwarf-alloc glibc heaptrack heaptrack-raw lttng}
timeout_s=${TRACE_TIMEOUT:-300}
libdir=${TRACE_LIBDIR:-/usr/lib/x86_64-linux-gnu}
wrapper=$libdir/liblttng-ust-libc-wrapper.so.1

die() {
    echo "bench/run_trace.sh: $*" >&2
    exit 2
}

[[ -x $bin ]] || die "no workload binary at $bin (build first: make build, or set TRACE_BIN)"
[[ $ops =~ ^[0-9]+$ && $ops -gt 0 ]] || die "TRACE_OPS must be a positive integer"
[[ $rounds =~ ^[0-9]+$ && $rounds -gt 0 ]] || die "TRACE_ROUNDS must be a positive integer"
[[ $depth =~ ^[0-9]+$ && $depth -gt 0 ]] || die "TRACE_DEPTH must be a positive integer"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ht-run-trace.XXXXXX") || die "mktemp failed"
sessiond_pid="" # started here, stopped by its pid
lttng_pid=""     # the daemon whose CPU is counted
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n $sessiond_pid ]] && kill -0 "$sessiond_pid" 2>/dev/null; then
        kill "$sessiond_pid" 2>/dev/null
        wait "$sessiond_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy of the binary, so that a rebuild during the run cannot mix two builds.
cp "$bin" "$tmp/bench_trace_workload" || die "cannot copy $bin"
W=$tmp/bench_trace_workload
base_args=(--ops "$ops" --nest "$depth")
events=$((2 * ops + 2 * 4096)) # bench/trace_workload.c: warm-up, churn, final frees

# ---- the rows -------------------------------------------------------------------------------
declare -A label base skip
notes=()
rows=()
for r in $rows_list; do
    case $r in
    ht) label[$r]="heaptrail untraced" base[$r]=ht ;;
    ht-trace) label[$r]="heaptrail traced, no stacks" base[$r]=ht ;;
    ht-fp) label[$r]="heaptrail traced, stacks fp depth $depth" base[$r]=ht ;;
    ht-dwarf) label[$r]="heaptrail traced, stacks dwarf depth $depth" base[$r]=ht ;;
    ht-dwarf-alloc) label[$r]="heaptrail traced, stacks dwarf depth $depth on allocations only" base[$r]=ht ;;
    glibc) label[$r]="glibc malloc untraced" base[$r]=glibc ;;
    heaptrack) label[$r]="heaptrack (full, with stacks)" base[$r]=glibc ;;
    heaptrack-raw) label[$r]="heaptrack --raw (collector only, with stacks)" base[$r]=glibc ;;
    lttng) label[$r]="LTTng-UST libc wrapper, lossless, no stacks" base[$r]=glibc ;;
    *) die "TRACE_ROWS: unknown row '$r'" ;;
    esac
    rows+=("$r")
done

# Peers that are not installed are skipped with a note.
has_row() {
    local x
    for x in "${rows[@]}"; do [[ $x == "$1" ]] && return 0; done
    return 1
}
if ! command -v heaptrack >/dev/null 2>&1; then
    for r in heaptrack heaptrack-raw; do
        has_row $r && skip[$r]="heaptrack is not installed (make bench-deps)"
    done
fi
if has_row lttng; then
    if ! command -v lttng >/dev/null 2>&1 || ! command -v lttng-sessiond >/dev/null 2>&1; then
        skip[lttng]="lttng-tools is not installed (make bench-deps)"
    elif [[ ! -f $wrapper ]]; then
        skip[lttng]="$wrapper is missing (liblttng-ust1; make bench-deps)"
    fi
fi

# ---- LTTng: one session daemon for the whole run, a fresh session per run ---------------------
lttng_home=$tmp/lttng-home
lt() { LTTNG_HOME=$lttng_home lttng "$@" >>"$tmp/lttng.log" 2>&1; }

sess=htbench-$$
start_sessiond() {
    mkdir -p "$lttng_home"
    # As root, every session daemon uses /var/run/lttng: when one runs already (Debian's
    # lttng-sessiond.service starts one), use it with a session of our own, and never stop it.
    local other
    other=$(pgrep -x -u 0 lttng-sessiond | head -n 1)
    if [[ $(id -u) == 0 && -n $other ]]; then
        lttng_pid=$other
        notes+=("LTTng: used the lttng-sessiond already running (pid $other), session $sess; its CPU between start and stop is counted")
        return 0
    fi
    LTTNG_HOME=$lttng_home lttng-sessiond --no-kernel >"$tmp/sessiond.log" 2>&1 &
    sessiond_pid=$!
    lttng_pid=$sessiond_pid
    local i
    for ((i = 0; i < 50; i++)); do # up to 5 s for its client socket
        LTTNG_HOME=$lttng_home lttng list >/dev/null 2>&1 && return 0
        kill -0 "$sessiond_pid" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# CPU ticks (user + sys, own and reaped children) of pid and every live descendant.
tree_ticks() {
    awk -v top="$1" '
    FNR == 1 {
        line = $0; sub(/^[^)]*\) /, "", line); split(line, f, " ")
        pid = FILENAME; sub(/^\/proc\//, "", pid); sub(/\/stat$/, "", pid)
        ppid[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15]
    }
    END {
        in_tree[top] = 1
        do { grew = 0; for (p in ppid) if (!(p in in_tree) && (ppid[p] in in_tree)) { in_tree[p] = 1; grew = 1 } } while (grew)
        for (p in in_tree) s += t[p]
        print s + 0
    }' /proc/[0-9]*/stat 2>/dev/null
}
hz=$(getconf CLK_TCK)

# ---- one run --------------------------------------------------------------------------------
results=$tmp/results # row round wall_s cpu_s bytes helper_cpu_s lost
: >"$results"
declare -A cmd_text
failed=0

# kv KEY FILE: the value of KEY= in the workload's output line.
kv() { grep -o "\b$1=[^ ]*" "$2" | tail -n 1 | cut -d= -f2; }

one_run() {
    local r=$1 rd=$2 out=$tmp/out err=$tmp/err tfile=$tmp/run.trace helper="" lost="" bytes=0
    local -a cmd env_prefix=()
    rm -rf "$tmp"/run.* "$tmp/lttng-out"
    case $r in
    ht) cmd=("$W" --alloc ht "${base_args[@]}") ;;
    ht-trace) cmd=("$W" --alloc ht "${base_args[@]}" --trace "$tfile") ;;
    ht-fp) cmd=("$W" --alloc ht "${base_args[@]}" --trace "$tfile" --stacks "$depth" --unwind fp) ;;
    ht-dwarf) cmd=("$W" --alloc ht "${base_args[@]}" --trace "$tfile" --stacks "$depth" --unwind dwarf) ;;
    ht-dwarf-alloc) cmd=("$W" --alloc ht "${base_args[@]}" --trace "$tfile" --stacks "$depth" --unwind dwarf --stack-events alloc+realloc) ;;
    glibc) cmd=("$W" --alloc malloc "${base_args[@]}") ;;
    heaptrack) cmd=(heaptrack -o "$tmp/run.hk" "$W" --alloc malloc "${base_args[@]}") ;;
    heaptrack-raw) cmd=(heaptrack --raw -o "$tmp/run.hk" "$W" --alloc malloc "${base_args[@]}") ;;
    lttng)
        env_prefix=(env LTTNG_UST_ALLOW_BLOCKING=1 LD_PRELOAD="$wrapper")
        cmd=("${env_prefix[@]}" "$W" --alloc malloc "${base_args[@]}")
        ;;
    esac
    cmd_text[$r]=$(printf '%s ' "${cmd[@]}" | sed "s#$tmp#\$TMP#g; s# \$##")

    local t0_ticks=0
    if [[ $r == lttng ]]; then
        if ! { lt create "$sess" --output "$tmp/lttng-out" &&
            lt enable-channel -u ch0 -s "$sess" --blocking-timeout=inf &&
            lt enable-event -u -c ch0 'lttng_ust_libc:*' -s "$sess" &&
            lt add-context -u -t vtid -c ch0 -s "$sess"; }; then
            notes+=("LTTng round $rd: session setup failed: $(tail -n 3 "$tmp/lttng.log" | tr '\n' ' ')")
            failed=1
            lt destroy "$sess"
            return 0
        fi
        t0_ticks=$(tree_ticks "$lttng_pid")
        lt start "$sess"
    fi
    # bash's time: wall, and user + sys of every descendant it reaped (getrusage children).
    local TIMEFORMAT='%3R %3U %3S'
    { time timeout "$timeout_s" "${cmd[@]}" >"$out" 2>"$err"; } 2>"$tmp/time"
    local rc=$?
    if [[ $r == lttng ]]; then
        lt stop "$sess" # waits until the consumer has written everything out
        helper=$(awk -v a="$t0_ticks" -v b="$(tree_ticks "$lttng_pid")" -v hz="$hz" \
            'BEGIN { printf "%.3f", (b - a) / hz }')
        lost=$(LTTNG_HOME=$lttng_home lttng list "$sess" 2>/dev/null |
            awk '/Discarded events:/ { s += $3 } END { print s + 0 }')
        lt destroy "$sess"
    fi
    if [[ $rc -ne 0 ]] || ! grep -q '^workload ' "$out"; then
        local why="exit status $rc"
        ((rc == 124)) && why="timed out after ${timeout_s}s"
        if [[ $r == ht-fp || $r == ht-dwarf* ]] && grep -q "ht_trace_start" "$err"; then
            skip[$r]="pending: ht_trace_start with stacks failed: $(head -c 200 "$err" | tr '\n' ' ')"
            return 0
        fi
        echo "bench/run_trace.sh: FAILED: ${label[$r]}, round $rd: $why" >&2
        sed 's/^/  | /' "$err" "$out" | head -n 20 >&2
        notes+=("${label[$r]}: FAILED in round $rd ($why); stderr: $(head -c 300 "$err" | tr '\n' ' ')")
        skip[$r]="failed"
        failed=1
        return 0
    fi
    case $r in
    ht-trace | ht-fp | ht-dwarf | ht-dwarf-alloc)
        bytes=$(stat -c %s "$tfile")
        helper=$(awk -v n="$(kv writer_cpu_ns "$out")" 'BEGIN { printf "%.3f", n / 1e9 }')
        lost=$(kv lost "$out")
        if [[ $rd == 1 ]]; then # stacks really recorded? (read back once, outside the timing)
            "$W" --verify "$tfile" >"$tmp/verify" 2>&1
            local ws mf
            ws=$(kv with_stack "$tmp/verify")
            mf=$(kv max_frames "$tmp/verify")
            if [[ $r != ht-trace && ${ws:-0} == 0 ]]; then
                skip[$r]="pending: the recorder wrote no stacks (stacks not wired into src/trace yet)"
            fi
            notes+=("${label[$r]}: read back: $(sed 's/^verify //' "$tmp/verify" | head -n 1)")
            : "$mf"
        fi
        ;;
    heaptrack | heaptrack-raw)
        bytes=$(cat "$tmp"/run.hk* 2>/dev/null | wc -c)
        local self_s
        self_s=$(kv self_cpu_ns "$out")
        helper=$(awk -v me="$self_s" '{ printf "%.3f", $2 + $3 - me / 1e9 }' "$tmp/time")
        ;;
    lttng) bytes=$(du -sb "$tmp/lttng-out" | cut -f1) ;;
    esac
    local wall cpu u s
    read -r wall u s <"$tmp/time"
    cpu=$(awk -v u="$u" -v s="$s" -v h="${helper:-0}" -v l="$r" \
        'BEGIN { printf "%.3f", u + s + (l == "lttng" ? h : 0) }')
    echo "$r $rd $wall $cpu $bytes ${helper:--} ${lost:--}" >>"$results"
    printf '  %-48s round %s: %6s s wall  %6s s cpu  %11s B  helper %6s s\n' \
        "${label[$r]}" "$rd" "$wall" "$cpu" "$bytes" "${helper:--}" >&2
    rm -rf "$tmp"/run.* "$tmp/lttng-out"
}

# ---- run ------------------------------------------------------------------------------------
start=$(date +%s)
if has_row lttng && [[ -z ${skip[lttng]:-} ]]; then
    start_sessiond || skip[lttng]="lttng-sessiond did not start: $(tail -n 3 "$tmp/sessiond.log" | tr '\n' ' ')"
fi
echo "bench/run_trace.sh: ${#rows[@]} rows x $rounds rounds, $ops ops ($events events) per run" >&2
for ((rd = 1; rd <= rounds; rd++)); do
    echo "round $rd/$rounds" >&2
    for r in "${rows[@]}"; do
        [[ -n ${skip[$r]:-} ]] && continue
        one_run "$r" "$rd"
    done
done
if [[ -n $sessiond_pid ]]; then
    kill "$sessiond_pid" 2>/dev/null
    wait "$sessiond_pid" 2>/dev/null
    sessiond_pid=""
fi
elapsed=$(($(date +%s) - start))

# ---- report ---------------------------------------------------------------------------------
model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)
pkgs=""
if command -v dpkg-query >/dev/null 2>&1; then
    pkgs=$(dpkg-query -W -f='${Package} ${Version}, ' heaptrack lttng-tools liblttng-ust1 \
        2>/dev/null | sed 's/, $//')
fi
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")

echo "## Tracing overhead"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, ${model:-unknown CPU}, $(uname -srm), load average $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -n $pkgs ]] && echo "- peers: $pkgs"
echo "- heaptrail: commit $rev (working tree as built), binary $bin ($(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC'))"
echo "- command: \`TRACE_OPS=$ops TRACE_ROUNDS=$rounds TRACE_DEPTH=$depth bash bench/run_trace.sh\`"
echo "- workload: $ops churn operations, $events heap events per run (bench/trace_workload.c);" \
    "the churn runs $depth frames deep; \$TMP is the script's mktemp directory"
echo "- $rounds interleaved rounds, medians; ns/event = (run − baseline of the same round) / events;" \
    "baseline: heaptrail untraced for heaptrail rows, glibc untraced for the malloc peers;" \
    "CPU = user + sys of the whole process tree (+ the LTTng daemons between start and stop);" \
    "helper CPU = heaptrail's writer thread, heaptrack's interpreter and zstd, LTTng's daemons;" \
    "CPU without helper = the traced program's own threads (the least disturbed by other load);" \
    "wall ${elapsed}s in all"
echo
echo "| row | baseline | wall s | CPU s | ns/event wall | ns/event CPU | ns/event CPU without helper | slowdown (wall) | bytes/event on disk | helper CPU s | lost | runs | command |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for r in "${rows[@]}"; do
    b=${base[$r]}
    cmdt=${cmd_text[$r]:-}
    if [[ ${skip[$r]:-} == pending* ]]; then
        echo "| ${label[$r]} | ${label[$b]:-$b} | pending | | | | | | | | | 0 | \`$cmdt\` |"
        continue
    fi
    awk -v r="$r" -v b="$b" -v lab="${label[$r]}" -v blab="${label[$b]:-$b}" -v ev="$events" \
        -v cmdt="$cmdt" -v why="${skip[$r]:-}" '
    function median(arr, n,    i, j, x) {
        for (i = 2; i <= n; i++) { x = arr[i]; for (j = i - 1; j >= 1 && arr[j] > x; j--) arr[j + 1] = arr[j]; arr[j + 1] = x }
        return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    $1 == b { bw[$2] = $3; bc[$2] = $4; bh[$2] = ($6 == "-" ? 0 : $6) }
    $1 == r { n++; rnd[n] = $2; w[n] = $3; c[n] = $4; by[n] = $5; h[n] = $6; l[n] = $7 }
    END {
        if (n == 0) { printf "| %s | %s | %s | | | | | | | | | 0 | `%s` |\n", lab, blab, (why != "" ? why : "no run"), cmdt; exit }
        for (i = 1; i <= n; i++) {
            W[i] = w[i]; C[i] = c[i]; B[i] = by[i] / ev; H[i] = h[i]
            if (rnd[i] in bw) { m++; dw[m] = (w[i] - bw[rnd[i]]) * 1e9 / ev; dc[m] = (c[i] - bc[rnd[i]]) * 1e9 / ev; sl[m] = w[i] / bw[rnd[i]]
                                dm[m] = ((c[i] - (h[i] == "-" ? 0 : h[i])) - (bc[rnd[i]] - bh[rnd[i]])) * 1e9 / ev }
            if (l[i] != "-") { lost += l[i]; haslost = 1 }
        }
        base_row = (r == b)
        printf "| %s | %s | %.3f | %.3f | %s | %s | %s | %s | %s | %s | %s | %d | `%s` |\n", lab, (base_row ? "—" : blab),
            median(W, n), median(C, n),
            (base_row ? "0" : (m ? sprintf("%.1f", median(dw, m)) : "–")),
            (base_row ? "0" : (m ? sprintf("%.1f", median(dc, m)) : "–")),
            (base_row ? "0" : (m && h[1] != "-" ? sprintf("%.1f", median(dm, m)) : "–")),
            (base_row ? "1.00x" : (m ? sprintf("%.2fx", median(sl, m)) : "–")),
            (median(B, n) > 0 ? sprintf("%.2f", median(B, n)) : "—"),
            (h[1] != "-" ? sprintf("%.2f", median(H, n)) : "—"),
            (haslost ? lost : "—"), n, cmdt
    }' "$results"
done

# Targets (DESIGN.md §3), from the same medians.
echo
awk -v ev="$events" '
function median(arr, n,    i, j, x) {
    for (i = 2; i <= n; i++) { x = arr[i]; for (j = i - 1; j >= 1 && arr[j] > x; j--) arr[j + 1] = arr[j]; arr[j + 1] = x }
    return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
{ w[$1, $2] = $3; by[$1, $2] = $5; rows[$1] = 1; if ($2 > nr) nr = $2 }
END {
    for (r in rows) {
        base = (r ~ /^ht/) ? "ht" : "glibc"; n = 0; nb = 0
        for (k = 1; k <= nr; k++) {
            if (((r, k) in w) && ((base, k) in w)) { d[++n] = (w[r, k] - w[base, k]) * 1e9 / ev }
            if ((r, k) in by) { bb[++nb] = by[r, k] / ev }
        }
        if (n) ns[r] = median(d, n)
        if (nb) bpe[r] = median(bb, nb)
    }
    if ("ht-trace" in ns)
        printf "- target < 10 ns/event without stacks: %.1f ns (%s); < 16 B/event: %.2f B (%s)\n",
            ns["ht-trace"], (ns["ht-trace"] < 10 ? "met" : "NOT met"), bpe["ht-trace"], (bpe["ht-trace"] < 16 ? "met" : "NOT met")
    if ("ht-fp" in ns)
        printf "- target < 100 ns/event with frame-pointer stacks: %.1f ns (%s)\n", ns["ht-fp"], (ns["ht-fp"] < 100 ? "met" : "NOT met")
    split("ht-fp ht-dwarf ht-dwarf-alloc", st, " ")
    for (i = 1; i <= 3; i++) {
        s = st[i]
        if (!(s in ns)) continue
        for (p = 1; p <= 2; p++) {
            hk = p == 1 ? "heaptrack" : "heaptrack-raw"
            if (hk in ns && ns[s] > 0)
                printf "- target stacks >= 5x cheaper than heaptrack: %s %.1f ns vs %s %.1f ns = %.1fx (%s)%s\n",
                    s, ns[s], hk, ns[hk], ns[hk] / ns[s], (ns[hk] / ns[s] >= 5 ? "met" : "NOT met"),
                    (s == "ht-dwarf-alloc" ? " [like for like: stacks on allocations, as heaptrack]" : "")
        }
    }
    if (("lttng" in ns) && ("ht-trace" in ns) && ns["ht-trace"] > 0)
        printf "- LTTng libc wrapper (no stacks) %.1f ns vs heaptrail no stacks %.1f ns = %.1fx\n",
            ns["lttng"], ns["ht-trace"], ns["lttng"] / ns["ht-trace"]
}' "$results"
echo
for r in "${rows[@]}"; do
    [[ -n ${skip[$r]:-} ]] && echo "- note: ${label[$r]}: ${skip[$r]}"
done
for n in "${notes[@]}"; do echo "- note: $n"; done
echo >&2
echo "bench/run_trace.sh: done in ${elapsed}s" >&2
exit $failed
