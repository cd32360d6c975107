#!/usr/bin/env python3
"""A small fake OpenAI-compatible streaming server for testing `cleave bench` (stdlib only).

Serves POST /v1/completions and /v1/chat/completions (stream=true as SSE with chunked transfer
encoding, stream_options.include_usage, or a plain JSON answer), POST /tokenize in vLLM's shape
({"count", "max_model_len", "tokens"}), GET /v1/models and GET /health.

Timing model, so that latencies are known in advance:
  * the first token is sent --ttft-ms after the request arrives (with --serial-prefill, prefills
    run one at a time under a global lock, so TTFT grows with load the way a real server's does);
  * each further token --token-ms after the previous one, on an absolute schedule (no drift).
Tokens are whitespace-separated words: a prompt of N words is N prompt tokens, and every
generated token is one chunk " wK". With ignore_eos the answer has exactly max_tokens tokens;
without it, at most max_tokens and at least 1 (a deterministic "EOS" after 3/4 of them).

Usage: fake_openai_server.py --port 0 --port-file F [--ttft-ms 50] [--token-ms 10] ...
With --port 0 the chosen port is written to --port-file once the server is listening.
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def count_tokens(text):
    return len(text.split())


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.prefill_lock = threading.Lock()
        self.num_completions = 0


def make_handler(state):
    args = state.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # keep test output quiet
            if args.verbose:
                sys.stderr.write("fake_openai_server: " + (fmt % a) + "\n")

        def send_json(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_error_json(self, status, message, etype="invalid_request_error"):
            self.send_json(status, {"error": {"message": message, "type": etype, "code": status}})

        def authorized(self):
            if not args.api_key:
                return True
            if self.headers.get("Authorization", "") == "Bearer " + args.api_key:
                return True
            self.send_json(401, {"error": "Unauthorized"})
            return False

        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/v1/models":
                if not self.authorized():
                    return
                self.send_json(200, {"object": "list", "data": [
                    {"id": args.model, "object": "model", "root": args.model,
                     "max_model_len": args.max_model_len}]})
            else:
                self.send_error_json(404, "no route " + self.path, "not_found_error")

        def read_body(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length > 0 else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self.send_error_json(400, "body is not JSON")
                return None
            if not isinstance(body, dict):
                self.send_error_json(400, "body must be a JSON object")
                return None
            return body

        def do_POST(self):
            arrived = time.monotonic()
            if self.path == "/tokenize":
                if args.no_tokenize:
                    self.send_error_json(404, "no route /tokenize", "not_found_error")
                    return
                body = self.read_body()
                if body is None:
                    return
                words = str(body.get("prompt", "")).split()
                self.send_json(200, {"count": len(words), "max_model_len": args.max_model_len,
                                     "tokens": [hash(w) % 50000 for w in words]})
                return
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self.send_error_json(404, "no route " + self.path, "not_found_error")
                return
            if not self.authorized():
                return
            body = self.read_body()
            if body is None:
                return
            chat = self.path == "/v1/chat/completions"
            with state.lock:
                state.num_completions += 1
                n = state.num_completions
            if args.fail_every and n % args.fail_every == 0:
                self.send_error_json(503, "injected failure %d" % n, "unavailable_error")
                return
            if chat:
                msgs = body.get("messages")
                if not isinstance(msgs, list) or not msgs:
                    self.send_error_json(400, "messages must be a non-empty list")
                    return
                prompt = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
                max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
            else:
                prompt = body.get("prompt")
                if not isinstance(prompt, str):
                    self.send_error_json(400, "prompt must be a string")
                    return
                max_tokens = body.get("max_tokens", 16)
            if not isinstance(max_tokens, int) or max_tokens < 1:
                self.send_error_json(400, "max_tokens must be a positive integer")
                return
            n_out = max_tokens if body.get("ignore_eos") else max(1, (3 * max_tokens) // 4)
            prompt_tokens = count_tokens(prompt)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_out,
                     "total_tokens": prompt_tokens + n_out}
            created = int(time.time())
            rid = ("chatcmpl-%d" if chat else "cmpl-%d") % n

            # Prefill: TTFT after arrival; serialized when --serial-prefill.
            def prefill():
                if args.serial_prefill:
                    with state.prefill_lock:
                        time.sleep(args.ttft_ms / 1000.0)
                    return time.monotonic()
                target = arrived + args.ttft_ms / 1000.0
                time.sleep(max(0.0, target - time.monotonic()))
                return target

            def choice(i, last):
                text = " w%d" % i
                fin = ("length" if body.get("ignore_eos") else "stop") if last else None
                if chat:
                    return {"index": 0, "delta": {"content": text}, "logprobs": None,
                            "finish_reason": fin}
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": fin}

            def chunk(choices, extra=None):
                obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                       "created": created, "model": args.model, "choices": choices}
                if extra:
                    obj.update(extra)
                return obj

            if not body.get("stream"):
                prefill()
                time.sleep(args.token_ms * (n_out - 1) / 1000.0)
                text = "".join(" w%d" % i for i in range(n_out))
                if chat:
                    ch = {"index": 0, "message": {"role": "assistant", "content": text},
                          "finish_reason": "length"}
                else:
                    ch = {"index": 0, "text": text, "finish_reason": "length"}
                self.send_json(200, {"id": rid, "object": "chat.completion" if chat else
                                     "text_completion", "created": created, "model": args.model,
                                     "choices": [ch], "usage": usage})
                return

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def write_event(payload):
                data = ("data: " + payload + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            try:
                # A comment line and, for chat, a role-only chunk before prefill: clients must
                # ignore both when measuring TTFT.
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b": ping\n\n"), b": ping\n\n"))
                if chat:
                    write_event(json.dumps(chunk([{"index": 0, "delta": {"role": "assistant",
                                                   "content": ""}, "finish_reason": None}])))
                first = prefill()
                for i in range(n_out):
                    target = first + i * args.token_ms / 1000.0
                    time.sleep(max(0.0, target - time.monotonic()))
                    write_event(json.dumps(chunk([choice(i, i == n_out - 1)])))
                opts = body.get("stream_options") or {}
                if opts.get("include_usage") and not args.no_usage:
                    write_event(json.dumps(chunk([], {"usage": usage})))
                write_event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (timeout or cancel)

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", default="")
    p.add_argument("--model", default="fake-model")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--token-ms", type=float, default=10.0)
    p.add_argument("--serial-prefill", action="store_true")
    p.add_argument("--fail-every", type=int, default=0, help="every Nth completion gets HTTP 503")
    p.add_argument("--no-usage", action="store_true", help="ignore stream_options.include_usage")
    p.add_argument("--no-tokenize", action="store_true", help="/tokenize answers 404")
    p.add_argument("--api-key", default="")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--max-lifetime-s", type=float, default=600.0,
                   help="exit after this long even if nobody stops us")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    server = ThreadingHTTPServer((args.host, args.port), make_handler(State(args)))
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print("fake_openai_server listening on %s:%d" % (args.host, port), flush=True)
    killer = threading.Timer(args.max_lifetime_s, server.shutdown)
    killer.daemon = True
    killer.start()
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
