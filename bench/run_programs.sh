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
#   BENCH_PROGRAMS   from: python python-malloc sqlite gcc churn (default: all five)
#   BENCH_MODES      from: glibc jemalloc mimalloc tcmalloc ht-before ht ht-trace ht-stacks heaptrack
#                    lttng (default: all but ht-before; with BENCH_PRELOAD_BEFORE all)
#   BENCH_STACKS     stack depth of ht-stacks (default 16)
#   BENCH_SCALE      multiplies each program's work (default 1)
#   BENCH_PRELOAD    libheaptrail-preload.so (default: build/release/libheaptrail-preload.so)
#   BENCH_PRELOAD_BEFORE  a second libheaptrail-preload.so (e.g. an earlier commit's): adds the
#                    mode ht-before (untraced), interleaved with the others
#   BENCH_LIBDIR     where the peer allocators live (default /usr/lib/x86_64-linux-gnu)
#   BENCH_TIMEOUT    seconds before one run is killed (default 600)
#   BENCH_PYTHON     the python3 to run (default /usr/bin/python3: Debian's, not a pyenv shim,
#                    whose bash and pyenv processes would be timed and traced too)
# Traced runs are checked: every heaptrail trace file is read back (preload_trace_check), and
# the table shows the events and lost events each mode really recorded (heaptrack: the
# allocations its interpreter counted; LTTng: babeltrace2's count and the discarded events).
# LTTng's CPU includes its session and consumer daemons' (between start and stop).
# Exit status: 0 when every attempted run succeeded (a missing peer is skipped with a note),
# 1 when a run failed, 2 on bad setup.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${BENCH_ROUNDS:-3}
programs=${BENCH_PROGRAMS:-python python-malloc sqlite gcc churn}
modes=${BENCH_MODES:-glibc jemalloc mimalloc tcmalloc ht ht-trace ht-stacks heaptrack lttng}
depth=${BENCH_STACKS:-16}
scale=${BENCH_SCALE:-1}
preload_lib=${BENCH_PRELOAD:-$root/build/release/libheaptrail-preload.so}
preload_before=${BENCH_PRELOAD_BEFORE:-}
if [[ -n $preload_before && -z ${BENCH_MODES:-} ]]; then
    modes="glibc jemalloc mimalloc tcmalloc ht-before ht ht-trace ht-stacks heaptrack lttng"
fi
libdir=${BENCH_LIBDIR:-/usr/lib/x86_64-linux-gnu}
timeout_s=${BENCH_TIMEOUT:-600}
churn_bin=$root/build/release/bench_churn
check_bin=$root/build/release/preload_trace_check
python_bin=${BENCH_PYTHON:-/usr/bin/python3}

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
    if [[ -n $sessiond_pid ]] && kill -0 "$sessiond_pid" 2>/dev/null; then
        kill "$sessiond_pid" 2>/dev/null
        wait "$sessiond_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
# Private copies, so that a rebuild during the run cannot mix two builds.
mkdir -p "$tmp/bin"
for v in preload_lib churn_bin check_bin; do
    if [[ -e ${!v} ]]; then
        cp "${!v}" "$tmp/bin/" || die "cannot copy ${!v}"
        printf -v "$v" '%s' "$tmp/bin/$(basename "${!v}")"
    fi
done
if [[ -n $preload_before ]]; then
    [[ -e $preload_before ]] || die "BENCH_PRELOAD_BEFORE: no $preload_before"
    mkdir -p "$tmp/bin/before"
    cp "$preload_before" "$tmp/bin/before/" || die "cannot copy $preload_before"
    preload_before=$tmp/bin/before/$(basename "$preload_before")
fi

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
# gcc: four of heaptrail's larger files, copied once so that the run compiles the same text
mkdir -p "$tmp/gcc/src"
gcc_src=()
for f in src/trace/writer.c src/reader/reader.c src/heap/walk.c src/analysis/symbolize.c; do
    [[ -f $root/$f ]] || die "$root/$f is missing (the gcc workload compiles it)"
    d=$tmp/gcc/src/$(dirname "$f")
    mkdir -p "$d"
    cp "$root/$f" "$d/"
    gcc_src+=("$tmp/gcc/src/$f")
done
# their includes
cp -r "$root/include" "$tmp/gcc/include"
(cd "$root/src" && find . -name '*.h' -exec cp --parents {} "$tmp/gcc/src/" \;)

# prog_cmd NAME: sets cmd to the command line (an array) of one workload, prog_env to the
# variables it needs.
prog_cmd() {
    prog_env=()
    case $1 in
    python) cmd=("$python_bin" "$tmp/work.py") ;;
    python-malloc) cmd=("$python_bin" "$tmp/work.py") prog_env=(PYTHONMALLOC=malloc) ;;
    sqlite) cmd=(sqlite3 -batch -bail :memory: ".read $tmp/batch.sql") ;;
    gcc) cmd=(gcc -O2 -g -D_GNU_SOURCE "-I$tmp/gcc/include" "-I$tmp/gcc/src" -c "${gcc_src[@]}") ;;
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
    ht-before) label[$m]="heaptrail, untraced (before)" lib=${preload_before:-/nonexistent} ;;
    ht-trace) label[$m]="heaptrail, traced, no stacks" lib=$preload_lib ;;
    ht-stacks) label[$m]="heaptrail, traced, stacks $depth (${HEAPTRAIL_UNWIND:-auto})" lib=$preload_lib ;;
    heaptrack) label[$m]="heaptrack (stacks)" lib=$(command -v heaptrack || echo /usr/bin/heaptrack) ;;
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
    python | python-malloc) [[ -x $python_bin ]] || die "$python_bin is missing (BENCH_PYTHON)" ;;
    sqlite) command -v sqlite3 >/dev/null || die "sqlite3 is missing" ;;
    gcc) command -v gcc >/dev/null || die "gcc is missing" ;;
    churn) [[ -x $churn_bin ]] || die "no $churn_bin (make build)" ;;
    *) die "BENCH_PROGRAMS: unknown program '$p'" ;;
    esac
done

for m in "${rows[@]}"; do
    if [[ $m == ht-trace || $m == ht-stacks ]] && [[ ! -x $check_bin ]]; then
        die "no $check_bin (make build): traced runs are read back with it"
    fi
done

# ---- LTTng: one session daemon for the whole run, a fresh session per run ---------------------
lttng_on=0
for m in "${rows[@]}"; do [[ $m == lttng ]] && lttng_on=1; done
export LTTNG_HOME=$tmp/lttng-home
sess=htprog-$$
lttng_pid=""
lt() { lttng "$@" >>"$tmp/lttng.log" 2>&1; }
if ((lttng_on)); then
    mkdir -p "$LTTNG_HOME"
    # As root every session daemon uses /var/run/lttng: when one runs already, use it with a
    # session of our own, and never stop it.
    other=$(pgrep -x -u 0 lttng-sessiond | head -n 1)
    if [[ $(id -u) == 0 && -n $other ]]; then
        lttng_pid=$other
        notes+=("LTTng: used the lttng-sessiond already running (pid $other); its CPU between start and stop is counted")
    else
        lttng-sessiond --no-kernel >"$tmp/sessiond.log" 2>&1 &
        sessiond_pid=$!
        lttng_pid=$sessiond_pid
        for _ in $(seq 50); do
            lttng list >/dev/null 2>&1 && break
            kill -0 "$sessiond_pid" 2>/dev/null || break
            sleep 0.1
        done
        lttng list >/dev/null 2>&1 || die "lttng-sessiond did not start: $(head -c 300 "$tmp/sessiond.log")"
    fi
fi
command -v babeltrace2 >/dev/null || notes+=("babeltrace2 is missing: LTTng's recorded events are not counted")

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

results=$tmp/results # program mode round wall_s cpu_s maxrss_kib events lost files
: >"$results"
failed=0
declare -A broken

# one_run PROGRAM MODE ROUND
one_run() {
    local p=$1 m=$2 r=$3 out=$tmp/out err=$tmp/err tf=$tmp/time rc t0 t1 t0_ticks=0
    local helper=0 events=- lost=- files=-
    local -a cmd prog_env
    prog_cmd "$p"
    local -a env_=() pre=()
    rm -rf "$tmp/trace" "$tmp/run" && mkdir -p "$tmp/trace" "$tmp/run"
    case $m in
    jemalloc) env_=(LD_PRELOAD=$libdir/libjemalloc.so.2) ;;
    mimalloc) env_=(LD_PRELOAD=$libdir/libmimalloc.so.2) ;;
    tcmalloc) env_=(LD_PRELOAD=$libdir/libtcmalloc_minimal.so.4) ;;
    ht) env_=(LD_PRELOAD=$preload_lib HEAPTRAIL_ENABLED=0) ;;
    ht-before) env_=(LD_PRELOAD=$preload_before HEAPTRAIL_ENABLED=0) ;;
    ht-trace) env_=(LD_PRELOAD=$preload_lib HEAPTRAIL_ENABLED=1
        "HEAPTRAIL_OUTPUT=$tmp/trace/t.%p.htr" HEAPTRAIL_STACKS=0) ;;
    ht-stacks) env_=(LD_PRELOAD=$preload_lib HEAPTRAIL_ENABLED=1
        "HEAPTRAIL_OUTPUT=$tmp/trace/t.%p.htr" HEAPTRAIL_STACKS=$depth) ;;
    heaptrack) pre=(heaptrack -o "$tmp/trace/ht") ;;
    lttng)
        if ! { lt create "$sess" --output="$tmp/trace/lt" &&
            lt enable-channel -u ch0 -s "$sess" &&
            lt enable-event -u -c ch0 'lttng_ust_libc:*' -s "$sess" &&
            lt add-context -u -t vtid -c ch0 -s "$sess"; }; then
            notes+=("LTTng: session setup failed ($(tail -n 2 "$tmp/lttng.log" | tr '\n' ' ')), not run")
            lt destroy "$sess"
            broken[$m]=1
            failed=1
            return 0
        fi
        t0_ticks=$(tree_ticks "$lttng_pid")
        lt start "$sess"
        env_=(LD_PRELOAD=$libdir/liblttng-ust-libc-wrapper.so.1)
        ;;
    esac
    t0=$(date +%s%N)
    # Only the program itself is preloaded (timeout and time are not: their traces would be
    # counted); it runs in a scratch directory (gcc writes its objects there).
    (cd "$tmp/run" && timeout "$timeout_s" /usr/bin/time -f '%e %U %S %M' -o "$tf" \
        env "${prog_env[@]}" "${env_[@]}" "${pre[@]}" "${cmd[@]}" >"$out" 2>"$err")
    rc=$?
    t1=$(date +%s%N)
    if [[ $m == lttng ]]; then
        lt stop "$sess" # waits until the consumer has written everything out
        helper=$(awk -v a="$t0_ticks" -v b="$(tree_ticks "$lttng_pid")" -v hz="$hz" \
            'BEGIN { printf "%.3f", (b - a) / hz }')
        lost=$(lttng list "$sess" 2>/dev/null | awk '/Discarded events:/ { s += $3 } END { print s + 0 }')
        lt destroy "$sess"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "bench/run_programs.sh: FAILED: $p under ${label[$m]}, round $r: exit $rc" >&2
        sed 's/^/  | /' "$err" | head -n 10 >&2
        notes+=("$p under ${label[$m]}: FAILED in round $r (exit $rc), not run again")
        broken[$p.$m]=1
        failed=1
        return 0
    fi
    # Correctness: the output must equal glibc's (heaptrack prints its own lines to stdout;
    # bench_churn prints timings, and checks its blocks itself: exit 1 on a bad one).
    if [[ $m == heaptrack || $p == churn ]]; then
        :
    elif [[ $m == glibc ]]; then
        cp "$out" "$tmp/expect.$p"
    elif [[ -f $tmp/expect.$p ]] && ! cmp -s "$out" "$tmp/expect.$p"; then
        notes+=("$p under ${label[$m]}: output differs from glibc's (round $r)")
        failed=1
    fi
    # What did the tracers really record? (outside the timing)
    case $m in
    ht-trace | ht-stacks)
        local -a tfiles=("$tmp"/trace/t.*)
        if [[ ! -e ${tfiles[0]} ]]; then
            notes+=("$p under ${label[$m]}: no trace file was written (round $r)")
            failed=1
            files=0
        else
            files=${#tfiles[@]}
            "$check_bin" --allow-incomplete "${tfiles[@]}" >"$tmp/check" 2>&1 ||
                notes+=("$p under ${label[$m]}: preload_trace_check found an inconsistent trace (round $r): $(grep -v 'ok=1' "$tmp/check" | head -c 300)")
            events=$(grep -o '\bevents=[0-9]*' "$tmp/check" | awk -F= '{ s += $2 } END { print s + 0 }')
            lost=$(grep -o '\blost=[0-9]*' "$tmp/check" | awk -F= '{ s += $2 } END { print s + 0 }')
        fi
        ;;
    heaptrack)
        # heaptrack's stats (its interpreter, on stderr): allocation calls recorded
        events=$(cat "$out" "$err" | awk '/^[[:space:]]*allocations:/ { print $2; exit }')
        [[ -n $events ]] || events=-
        files=$(ls "$tmp"/trace/ht* 2>/dev/null | wc -l)
        ;;
    lttng)
        if command -v babeltrace2 >/dev/null; then
            events=$(babeltrace2 -c sink.utils.counter "$tmp/trace/lt" 2>/dev/null |
                awk '/Event messages/ { n = $1 } END { print n }')
        fi
        [[ -n $events ]] || events=-
        files=1
        ;;
    esac
    awk -v p="$p" -v m="$m" -v r="$r" -v w="$(((t1 - t0) / 1000000))" -v h="$helper" \
        -v ev="$events" -v lo="$lost" -v fi="$files" \
        '{ printf "%s %s %s %.3f %.2f %d %s %s %s\n", p, m, r, w / 1000, $2 + $3 + h, $4, ev, lo, fi }' \
        "$tf" >>"$results"
    printf '  %-7s %-34s round %s: %s\n' "$p" "${label[$m]}" "$r" \
        "$(tail -n 1 "$results" | awk '{printf "%6.2f s wall %6.2f s cpu %8d KiB  events %s lost %s files %s", $4, $5, $6, $7, $8, $9}')" >&2
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
echo "- command: \`BENCH_ROUNDS=$rounds BENCH_SCALE=$scale${BENCH_PROGRAMS:+ BENCH_PROGRAMS=\"$programs\"}${BENCH_MODES:+ BENCH_MODES=\"$modes\"}${BENCH_PRELOAD_BEFORE:+ BENCH_PRELOAD_BEFORE=$BENCH_PRELOAD_BEFORE} bash bench/run_programs.sh\`"
echo "- programs: python3 (dict/list script; python-malloc: the same with PYTHONMALLOC=malloc," \
    "every object from malloc), sqlite3 (SQL batch, in-memory db), gcc -O2 -g -c of four heaptrail" \
    "files (writer.c, reader.c, walk.c, symbolize.c; gcc runs cc1 and as per file: exec is followed)," \
    "bench_churn --alloc malloc at 2 threads; the python3 is $python_bin"
echo "- medians of $rounds interleaved rounds; ratios are medians of per-round ratios to glibc" \
    "(< 1: faster / smaller); CPU = user+sys of the whole process tree; $elapsed s in all"
echo
echo "| program | mode | wall s | wall vs glibc (min–max) | CPU s | CPU vs glibc (min–max) | peak RSS MiB | RSS vs glibc | events recorded (lost) | trace files |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for p in $programs; do
    for m in "${rows[@]}"; do
        awk -v p="$p" -v m="$m" -v lab="${label[$m]}" '
        function median(arr, n,    i, j, x) {
            for (i = 2; i <= n; i++) { x = arr[i]; for (j = i - 1; j >= 1 && arr[j] > x; j--) arr[j + 1] = arr[j]; arr[j + 1] = x }
            return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
        }
        # median (min–max) of a ratio array, sorted in place by median()
        function ratio(arr, n,    md) {
            if (n == 0) return "–"
            md = median(arr, n)
            return n > 1 ? sprintf("%.2fx (%.2f–%.2f)", md, arr[1], arr[n]) : sprintf("%.2fx", md)
        }
        $1 == p && $2 == "glibc" { gw[$3] = $4; gc[$3] = $5; gr[$3] = $6 }
        $1 == p && $2 == m {
            n++; rd[n] = $3; w[n] = $4; c[n] = $5; s[n] = $6; fi = $9
            if ($7 != "-") { ne++; ev[ne] = $7 }
            if ($8 != "-") { nl++; if ($8 + 0 > maxlost) maxlost = $8 + 0 }
        }
        END {
            if (n == 0) { printf "| %s | %s | failed | | | | | | | |\n", p, lab; exit }
            for (i = 1; i <= n; i++) if (rd[i] in gw && gw[rd[i]] > 0) {
                k++; rw[k] = w[i] / gw[rd[i]]; rc[k] = (gc[rd[i]] > 0 ? c[i] / gc[rd[i]] : 0); rr[k] = s[i] / gr[rd[i]]
            }
            evs = ne ? sprintf("%d", median(ev, ne)) : "–"
            if (ne && nl) evs = evs sprintf(" (%d)", maxlost)
            printf "| %s | %s | %.2f | %s | %.2f | %s | %.1f | %s | %s | %s |\n", p, lab, median(w, n),
                   ratio(rw, k), median(c, n), ratio(rc, k), median(s, n) / 1024,
                   k ? sprintf("%.2fx", median(rr, k)) : "–", evs, fi == "-" ? "–" : fi
        }' "$results"
    done
done
echo
echo "Events: heaptrail's are read back from every trace file of the run (median over rounds;"
echo "lost: the largest count of any round, as the trace files state it); heaptrack's are the"
echo "allocation calls its interpreter reports (it follows no exec: for gcc only the driver);"
echo "LTTng's are babeltrace2's count of the session's events, lost its discarded events."
if [[ ${#notes[@]} -gt 0 ]]; then
    echo
    for n in "${notes[@]}"; do echo "- note: $n"; done
fi
exit $failed
