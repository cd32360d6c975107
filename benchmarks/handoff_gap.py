#!/usr/bin/env python3
"""Time from the first to the second streamed token, one request at a time.

In a disaggregated server (1 prefill + 1 decode worker) that gap is the hand-off: the KV moving
to the decode worker plus its first step. Layer-wise transfer streams the KV during the prefill,
so only the last layer's tail and KvDone remain after the first token; the pull flow moves all of
it after. Usage:

    benchmarks/handoff_gap.py --port 8000 [--requests 12] [--words 600] [--label NAME]

Prints one JSON line: median and p90 of the gap and of TTFT, in milliseconds.
"""
import argparse
import http.client
import json
import random
import statistics
import time


def one_request(port, prompt):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = json.dumps({"prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": True,
                       "ignore_eos": True})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    times = []
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk["choices"] and chunk["choices"][0].get("text"):
            times.append(time.perf_counter() - start)
    conn.close()
    if len(times) < 2:
        raise SystemExit("fewer than two tokens streamed")
    return times[0], times[1] - times[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--words", type=int, default=600)
    ap.add_argument("--label", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    vocab = [w for w in "the of and to in is was for on that with as by at from his her an it".split()]
    ttft, gap = [], []
    for i in range(args.requests + 1):
        # A fresh prompt each time (no prefix-cache hits); the first request warms up.
        prompt = f"Request {i}. " + " ".join(rng.choice(vocab) for _ in range(args.words))
        first, second = one_request(args.port, prompt)
        if i > 0:
            ttft.append(first * 1e3)
            gap.append(second * 1e3)
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
    print(json.dumps({"label": args.label, "requests": args.requests,
                      "gap_ms_median": round(statistics.median(gap), 2),
                      "gap_ms_p90": round(q(gap, 0.9), 2),
                      "ttft_ms_median": round(statistics.median(ttft), 1)}))


if __name__ == "__main__":
    main()
