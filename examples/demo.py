# demo.py — a small dict/list-heavy program for `make demo`: heaptrail records it under the
# preload library, then reports what its heap did. Prints one line (the same with and
# without heaptrail).
import json


def build_index(n):
    index = {}
    for i in range(n):
        word = "w%05d" % (i * 7919 % n)
        index.setdefault(word[:4], []).append((word, i))
    return index


def churn(rounds):
    kept = []
    for r in range(rounds):
        tmp = [str(i) * (1 + i % 5) for i in range(2000)]
        kept.append("".join(tmp[:50]))
    return kept


index = build_index(50000)
kept = churn(40)
blob = json.dumps({k: len(v) for k, v in index.items()})
print("demo.py: %d keys, %d kept strings, %d bytes of JSON" % (len(index), len(kept), len(blob)))
