#!/usr/bin/env bash
# Multi-host for real: three network namespaces ("hosts") joined by veth pairs in a triangle,
#
#   frontend 10.77.0.1 ── prefill 10.77.0.2
#          \                /
#           decode 10.77.0.3
#
# The frontend (cleave serve --accept-workers) runs in the first, a prefill worker and a decode
# worker register with it from the others (cleave worker --join), and the decode worker pulls
# the KV from the prefill worker over TCP between namespaces. Greedy completions, one at a time
# and concurrently, must equal a colocated server's on the default model.
#
# Usage: netns_e2e.sh CLEAVE_BINARY MODEL_PATH. Exit 0: pass; 77: skipped (not root, no
# iproute2, namespaces not allowed); anything else: failure. Namespaces, links and processes
# are removed on every exit path.
set -u
cleave=$1
model=$2
tag="cl$$"
ns_fe="$tag-fe" ns_p="$tag-p" ns_d="$tag-d"
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for ns in "$ns_fe" "$ns_p" "$ns_d"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}

if ! command -v ip >/dev/null; then echo "SKIP: iproute2 (ip) is not installed"; exit 77; fi
if ! ip netns add "$ns_fe" 2>"$work/netns.err"; then
  echo "SKIP: cannot create network namespaces ($(cat "$work/netns.err")); needs root"
  exit 77
fi
ip netns add "$ns_p" && ip netns add "$ns_d" || fail "ip netns add"

# One veth pair per pair of hosts; each host has its /32 address on its ends, and a host route
# to each neighbour through the pair that leads there.
link() {  # ns_a addr_a ns_b addr_b name
  local a=$1 ip_a=$2 b=$3 ip_b=$4 name=$5
  ip link add "$name-a" netns "$a" type veth peer name "$name-b" netns "$b" || return 1
  ip -n "$a" addr add "$ip_a/32" dev "$name-a" && ip -n "$a" link set "$name-a" up &&
    ip -n "$a" route add "$ip_b/32" dev "$name-a" &&
    ip -n "$b" addr add "$ip_b/32" dev "$name-b" && ip -n "$b" link set "$name-b" up &&
    ip -n "$b" route add "$ip_a/32" dev "$name-b"
}
for ns in "$ns_fe" "$ns_p" "$ns_d"; do ip -n "$ns" link set lo up; done
link "$ns_fe" 10.77.0.1 "$ns_p" 10.77.0.2 "$tag-fp" || fail "veth frontend-prefill"
link "$ns_fe" 10.77.0.1 "$ns_d" 10.77.0.3 "$tag-fd" || fail "veth frontend-decode"
link "$ns_p" 10.77.0.2 "$ns_d" 10.77.0.3 "$tag-pd" || fail "veth prefill-decode"

# The client: completions for a fixed prompt set, one at a time then all at once, as JSON.
cat >"$work/client.py" <<'PY'
import json, sys, threading, urllib.request
base = sys.argv[1]
prompts = ["The capital of France is", "def fibonacci(n):",
           "In 1969, the first humans landed on the Moon. The mission was called",
           "Once upon a time, in a small village at the edge of a great forest, there lived an "
           "old clockmaker who had never once left the village. One morning, a stranger said"]
def complete(p):
    body = json.dumps({"prompt": p, "max_tokens": 24, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", body,
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["text"]
single = [complete(p) for p in prompts]
batch = [None] * (2 * len(prompts))
def run(i): batch[i] = complete(prompts[i % len(prompts)])
threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batch))]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"single": single, "batch": batch}))
PY
wait_health() {  # ns url want_workers
  for _ in $(seq 1 600); do
    if ip netns exec "$1" python3 - "$2" "$3" <<'PY' 2>/dev/null; then return 0; fi
import json, sys, urllib.request
h = json.load(urllib.request.urlopen(sys.argv[1] + "/health", timeout=2))
ok = h.get("status") == "ok" and len(h.get("workers", [])) >= int(sys.argv[2])
sys.exit(0 if ok else 1)
PY
    sleep 0.2
  done
  return 1
}

export CLEAVE_CLUSTER_SECRET="netns-test-secret-$$-0123456789"
# Colocated reference, in the frontend's namespace on loopback.
ip netns exec "$ns_fe" "$cleave" serve -m "$model" --host 127.0.0.1 --port 8100 --threads 1 \
  --kv-cache-tokens 4096 >"$work/colocated.log" 2>&1 &
pids+=($!)
wait_health "$ns_fe" http://127.0.0.1:8100 0 || fail "colocated server did not start"
ip netns exec "$ns_fe" python3 "$work/client.py" http://127.0.0.1:8100 >"$work/want.json" ||
  fail "colocated requests"
kill "${pids[0]}"

# The cluster: frontend on 10.77.0.1, workers join from the other hosts.
ip netns exec "$ns_fe" "$cleave" serve -m "$model" --host 10.77.0.1 --port 8000 \
  --accept-workers 10.77.0.1:9000 >"$work/frontend.log" 2>&1 &
pids+=($!)
for role in prefill decode; do
  [ $role = prefill ] && ns=$ns_p addr=10.77.0.2 || ns=$ns_d addr=10.77.0.3
  ip netns exec "$ns" "$cleave" worker --role $role -m "$model" --listen "$addr:9001" \
    --join 10.77.0.1:9000 -t 1 --kv-cache-tokens 4096 >"$work/$role.log" 2>&1 &
  pids+=($!)
done
wait_health "$ns_fe" http://10.77.0.1:8000 2 || fail "the workers did not join"
grep -q "prefill worker at 10.77.0.2:9001 joined" "$work/frontend.log" || fail "prefill address"
grep -q "decode worker at 10.77.0.3:9001 joined" "$work/frontend.log" || fail "decode address"
# The client on the prefill worker's host: the frontend is reached across namespaces too.
ip netns exec "$ns_p" python3 "$work/client.py" http://10.77.0.1:8000 >"$work/got.json" ||
  fail "cluster requests"
python3 - "$work/want.json" "$work/got.json" <<'PY' || fail "cluster output differs from colocated"
import json, sys
want, got = (json.load(open(p)) for p in sys.argv[1:3])
for kind in ("single", "batch"):
    for i, (w, g) in enumerate(zip(want[kind], got[kind])):
        if w != g:
            print(f"{kind} {i}: want {w!r}, got {g!r}")
            sys.exit(1)
    if len(want[kind]) != len(got[kind]):
        sys.exit(1)
print(f"{len(want['single']) + len(want['batch'])} completions equal colocated")
PY
bytes=$(ip netns exec "$ns_fe" python3 -c '
import urllib.request
for l in urllib.request.urlopen("http://10.77.0.1:8000/metrics").read().decode().splitlines():
    if l.startswith("cleave:kv_transfer_bytes_total"): print(int(float(l.split()[-1])))')
[ "${bytes:-0}" -gt 0 ] || fail "no KV bytes moved between the workers (metric: '$bytes')"
# auto transport: the decode worker offered its shared-memory cache, which the prefill worker
# cannot map from another namespace, so the KV went over TCP.
grep -q "KV from 10.77.0.2:9001 over TCP" "$work/decode.log" || fail "KV did not go over TCP"
echo "PASS: KV bytes moved prefill(10.77.0.2) -> decode(10.77.0.3): $bytes"
