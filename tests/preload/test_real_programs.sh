#!/usr/bin/env bash
# Real programs from Debian run on heaptrail: plain, preloaded untraced, and under `heaptrail
# record` give the same output and exit status; every trace of every process reads back
# consistent, and record's summary line says what the trace holds. python3 (dicts, threads,
# a subprocess), sqlite3 (a SQL batch into an in-memory database), git (init, add, commit,
# log), perl, gcc compiling a small C file and running it, make, a bash pipeline with fork and
# exec. python3 once more with 16-frame stacks (the default unwinder, DWARF when built).
set -u
. "$HT_SOURCE_DIR/tests/preload/lib.sh"

W=$T/work
cat >"$T/script.py" <<'PY'
import subprocess, sys, threading
d = {}
for i in range(20000):
    d["k%d" % i] = [i] * (i % 7)
out = []
def work(n):
    s = sum(len(v) for k, v in d.items() if hash(k) % 4 == n)
    out.append(s)
ts = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(len(d), sum(out))
r = subprocess.run([sys.executable, "-c", "print(sorted({'b': 2, 'a': 1}.items()))"],
                   capture_output=True, text=True)
print(r.stdout.strip(), r.returncode)
PY
same_output python3 "$W" /usr/bin/python3 "$T/script.py"
RECORD_ARGS=--stacks=16 same_output python3-stacks "$W" /usr/bin/python3 "$T/script.py"

cat >"$T/batch.sql" <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)
INSERT INTO t(name, v) SELECT printf('name-%05d', x), x * 1.5 FROM c;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(v), min(name), max(name) FROM t;
SELECT name FROM t WHERE id % 1000 = 0 ORDER BY name DESC;
SQL
same_output sqlite3 "$W" bash -c "sqlite3 :memory: < '$T/batch.sql'"

git_run()
{
    export HOME=$PWD GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
    export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.org GIT_COMMITTER_NAME=t
    export GIT_COMMITTER_EMAIL=t@example.org GIT_AUTHOR_DATE='2020-01-01T00:00:00Z'
    export GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
    git init -q -b main repo && cd repo &&
        for i in 1 2 3; do echo "line $i" >"f$i.txt"; done &&
        git add . && git commit -q -m first && echo more >>f1.txt &&
        git commit -q -am second && git log --format='%H %s' && git status --short
}
export -f git_run
same_output git "$W" bash -c git_run

same_output perl "$W" perl -e 'my %h; $h{$_ % 97} .= "x$_" for 1..50000;
    my @k = sort { $a <=> $b } keys %h; print scalar(@k), " ", length(join("", values %h)), "\n";
    my $s = join ",", map { sprintf "%03d", $_ } reverse 1..20; print "$s\n";'

cat >"$T/hello.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
int main(void) { char *p = malloc(32); snprintf(p, 32, "hello %d", 6 * 7); puts(p); free(p); return 0; }
C
same_output gcc "$W" bash -c "gcc -O1 -o hello '$T/hello.c' && ./hello"

cat >"$T/Makefile" <<'MK'
all: c.txt
a.txt: ; @echo alpha > $@
b.txt: a.txt ; @tr a-z A-Z < $< > $@
c.txt: a.txt b.txt ; @cat $^ | sort > $@; cat $@
MK
same_output make "$W" make -s -f "$T/Makefile"

same_output bash-pipeline "$W" bash -c 'seq 1 2000 | sort -r | head -n 5 | tr "\n" " "; echo;
    x=$(ls / | wc -l); ( echo sub $((x > 0)) ); wait; echo done'
finish
