#!/usr/bin/env python3
"""An independent streaming client (stdlib only) to cross-check `cleave bench`'s TTFT and TPOT.

Sends the requests of a JSONL workload ({"prompt", "output_len"}, cycled to --num-prompts) one
at a time to an OpenAI-compatible server, timing each SSE event with time.perf_counter():
  TTFT = request sent -> first event whose choice has non-empty text / delta.content;
  TPOT = (last content event - first content event) / (completion_tokens - 1), over requests
         with at least 2 output tokens (completion_tokens from usage, else the event count).
Prints one JSON object: {"n", "failed", "mean_ttft_ms", "mean_tpot_ms"}.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse


def one_request(conn_args, path, body, headers, timeout):
    conn = http.client.HTTPConnection(*conn_args, timeout=timeout)
    sent = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        conn.close()
        return None
    times, usage_tokens = [], None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators and ": comment" lines
        now = time.perf_counter()
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        obj = json.loads(payload)
        for c in obj.get("choices") or []:
            text = c.get("text") or (c.get("delta") or {}).get("content") or ""
            if text:
                times.append(now - sent)
        if obj.get("usage"):
            usage_tokens = obj["usage"].get("completion_tokens")
    conn.close()
    if not times:
        return None
    n_out = usage_tokens if usage_tokens is not None else len(times)
    tpot = (times[-1] - times[0]) / (n_out - 1) if n_out > 1 else None
    return times[0], tpot


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--endpoint", default="/v1/completions")
    p.add_argument("--workload", required=True, help="JSONL with prompt and output_len")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--output-len", type=int, default=0, help="override every output_len")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    url = urllib.parse.urlparse(a.base_url)
    rows = [json.loads(l) for l in open(a.workload) if l.strip()]
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    ttfts, tpots, failed = [], [], 0
    for i in range(a.num_prompts):
        row = rows[i % len(rows)]
        body = {"model": a.model, "max_tokens": a.output_len or row["output_len"], "stream": True,
                "stream_options": {"include_usage": True}, "ignore_eos": True}
        if "chat" in a.endpoint:
            body["messages"] = [{"role": "user", "content": row["prompt"]}]
        else:
            body["prompt"] = row["prompt"]
        r = one_request((url.hostname, url.port or 80), (url.path.rstrip("/")) + a.endpoint, body,
                        headers, a.timeout)
        if r is None:
            failed += 1
            continue
        ttfts.append(r[0])
        if r[1] is not None:
            tpots.append(r[1])
    mean = lambda v: 1000.0 * sum(v) / len(v) if v else None
    json.dump({"n": len(ttfts), "failed": failed, "mean_ttft_ms": mean(ttfts),
               "mean_tpot_ms": mean(tpots)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
