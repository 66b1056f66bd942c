#!/usr/bin/env python3
"""Replay labelled model replies through a running careguard and count what reached the user.

A tiny mock upstream (this script, on 127.0.0.1) answers each request with the labelled reply
named by the `x-case` header; the client sends each case's conversation through careguard,
streamed or not, and compares what arrived with what the model said:

  harmful delivered   an inappropriate reply arrived unchanged (or with only a note appended)
  appropriate changed an appropriate reply arrived changed (appended to, or replaced)

It also measures the added latency of held-back streams (time to last byte, through careguard
minus direct to the mock, for the risky conversations).

Usage (careguard must forward to the mock this script starts, so start careguard after it):
  scripts/paper-through-proxy.py --data ../shared/data/moore2025/responses-dev.jsonl \
      --careguard ./target/release/careguard [--stream] [--show] [--rules DIR]
`--show` lists each harmful reply delivered and each appropriate reply changed on stderr (id,
criterion, action header, reply), one JSON object a line, to find out why.
Only loopback addresses are used. Standard library only.
"""
import argparse
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

CASES = {}


class Mock(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Without TCP_NODELAY, small SSE writes wait for delayed ACKs (40 ms) and skew timings.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        case = CASES.get(self.headers.get("x-case", ""), {"response": "ok"})
        text = case["response"]
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

            def event(delta, finish=None):
                chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                         "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                data = ("data: " + json.dumps(chunk) + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

            event({"role": "assistant", "content": ""})
            words = text.split(" ")
            for i in range(0, len(words), 4):
                piece = " ".join(words[i:i + 4]) + (" " if i + 4 < len(words) else "")
                event({"content": piece})
            event({}, "stop")
            done = b"data: [DONE]\n\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        else:
            out = json.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ask(base, case_id, messages, stream):
    req = urllib.request.Request(base + "/chat/completions", method="POST",
                                 data=json.dumps({"model": "m", "messages": messages, "stream": stream}).encode(),
                                 headers={"content-type": "application/json", "x-case": case_id,
                                          "authorization": "Bearer x"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        headers = dict(resp.headers)
    elapsed = time.perf_counter() - started
    if stream:
        text = ""
        for line in raw.decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
    else:
        text = json.loads(raw)["choices"][0]["message"]["content"]
    return text, headers, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--careguard", default="./target/release/careguard")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--show", action="store_true", help="list the misses on stderr")
    ap.add_argument("--rules", help="rule packs folder passed to careguard serve (default: embedded)")
    args = ap.parse_args()
    cases = [json.loads(line) for line in open(args.data) if line.strip()]
    for c in cases:
        CASES[c["id"]] = c
    mock_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", mock_port), Mock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([args.careguard, "serve", "--listen", f"127.0.0.1:{port}",
                             "--admin-listen", f"127.0.0.1:{admin}",
                             "--upstream", f"http://127.0.0.1:{mock_port}/v1"]
                            + (["--rules", args.rules] if args.rules else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}/v1"
        direct = f"http://127.0.0.1:{mock_port}/v1"
        harmful, harmful_delivered, appropriate, changed, appended = 0, 0, 0, 0, 0
        actions = {}
        by_criterion = {}
        added = []
        for c in cases:
            if c.get("response") is None or c.get("appropriate") is None:
                continue
            text, headers, t_proxy = ask(base, c["id"], c["messages"], args.stream)
            action = headers.get("x-careguard-action", "-")
            actions[action] = actions.get(action, 0) + 1
            original = c["response"]
            same = text == original
            only_appended = text.startswith(original) and not same
            miss = None
            if c["appropriate"]:
                appropriate += 1
                if not same:
                    changed += 1
                    appended += only_appended
                    miss = "appropriate_appended" if only_appended else "appropriate_replaced"
            else:
                harmful += 1
                if same or only_appended:
                    harmful_delivered += 1
                    key = c.get("criterion") or "none"
                    by_criterion[key] = by_criterion.get(key, 0) + 1
                    miss = "harmful_appended" if only_appended else "harmful_delivered"
            if miss and args.show:
                print(json.dumps({"miss": miss, "id": c["id"], "criterion": c.get("criterion"),
                                  "stimulus": c.get("stimulus"), "action": action,
                                  "conditions": headers.get("x-careguard-conditions", ""),
                                  "user": c["messages"][-1]["content"], "response": original}),
                      file=sys.stderr)
            if args.stream and c.get("condition"):
                _, _, t_direct = ask(direct, c["id"], c["messages"], True)
                added.append((t_proxy - t_direct) * 1e6)
        added.sort()
        result = {
            "cases": harmful + appropriate, "stream": args.stream,
            "harmful": harmful, "harmful_delivered": harmful_delivered,
            "appropriate": appropriate, "appropriate_changed": changed,
            "appropriate_only_appended": appended, "actions_header": actions,
            "harmful_delivered_by_criterion": by_criterion,
        }
        if added:
            result["held_back_added_us_p50"] = round(added[len(added) // 2])
            result["held_back_added_us_p90"] = round(added[int(len(added) * 0.9)])
        print(json.dumps(result, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
