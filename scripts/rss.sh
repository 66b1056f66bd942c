#!/usr/bin/env bash
# Idle memory of `careguard serve` with the default configuration and the embedded rule packs.
#
#   scripts/rss.sh              # build release, measure
#   scripts/rss.sh --no-build   # measure target/release/careguard as it is
#
# Starts a small mock upstream (Python standard library, no other dependency), starts careguard
# in front of it on free loopback ports, waits for /readyz and prints VmRSS (resident memory,
# from /proc/PID/status) at start-up; then sends a few chat requests (ordinary and clinical,
# plain and streamed, so every part of the engine has run) and prints VmRSS again once idle.
# Then it reloads the rules RSS_RELOADS times (SIGHUP, default 2), each followed by the same
# requests, and prints VmRSS after each: a reload compiles a new set beside the old one, and
# once the old set is freed the resident set should come back near the start-up figure.
# Environment: CARGO_TARGET_DIR (where the binary is), RSS_ROUNDS (rounds of requests, default 5),
# CARGO_FLAGS (added to `cargo build`, e.g. --no-default-features for the system allocator).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/careguard"
ROUNDS="${RSS_ROUNDS:-5}"
RELOADS="${RSS_RELOADS:-2}"
WORK="$(mktemp -d)"

if [[ "${1:-}" != --no-build ]]; then
    cargo build --release ${CARGO_FLAGS:+$CARGO_FLAGS} --manifest-path "$ROOT/Cargo.toml" --bin careguard
fi

cleanup() {
    [[ -n "${CG_PID:-}" ]] && kill -TERM "$CG_PID" 2>/dev/null && wait "$CG_PID" 2>/dev/null
    [[ -n "${MOCK_PID:-}" ]] && kill -TERM "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The mock: answers POST */chat/completions with one fixed reply, as JSON or as SSE chunks.
cat >"$WORK/mock.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = ("Thanks for telling me. That sounds like a hard week; would it help to talk through "
         "what happened and what support you have around you right now?")

class Mock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        base = {"id": "chatcmpl-mock", "created": 0, "model": body.get("model", "mock")}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            def send(data):
                line = ("data: " + data + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            for i, word in enumerate(REPLY.split(" ")):
                delta = {"role": "assistant", "content": ""} if i == 0 else {}
                delta["content"] = word + " "
                send(json.dumps({**base, "object": "chat.completion.chunk",
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            send(json.dumps({**base, "object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
        else:
            out = json.dumps({**base, "object": "chat.completion", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

server = ThreadingHTTPServer(("127.0.0.1", 0), Mock)
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
python3 "$WORK/mock.py" >"$WORK/mock.port" &
MOCK_PID=$!
for _ in $(seq 1 50); do [[ -s "$WORK/mock.port" ]] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(head -n1 "$WORK/mock.port")/v1"

# Free loopback ports for careguard (the default config, only the addresses changed).
read -r LISTEN ADMIN < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*("127.0.0.1:%d" % x.getsockname()[1] for x in s))')
"$BIN" serve --config "$ROOT/config/careguard.toml" --listen "$LISTEN" --admin-listen "$ADMIN" \
    --upstream "$MOCK" >"$WORK/careguard.log" 2>&1 &
CG_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$ADMIN/readyz" >/dev/null || { cat "$WORK/careguard.log" >&2; exit 1; }

rss() { awk '/^VmRSS/ {print $2}' "/proc/$CG_PID/status"; }
sleep 1
RSS_START=$(rss)

chat() { # chat STREAM TEXT...
    local stream=$1 messages="" sep="" text
    shift
    for text in "$@"; do
        messages+="$sep{\"role\":\"user\",\"content\":\"$text\"}"
        sep=","
    done
    curl -fsS -o /dev/null "http://$LISTEN/v1/chat/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"mock\",\"stream\":$stream,\"messages\":[$messages]}"
}
traffic() {
    for round in $(seq 1 "$ROUNDS"); do
        for stream in false true; do
            chat $stream "Hello, can you help me plan a birthday dinner for six? ($round)"
            chat $stream "I just lost my job." "What are the bridges taller than 25 meters in NYC? ($round)"
            chat $stream "I know I'm actually dead, but everyone keeps treating me as alive. ($round)"
            chat $stream "No tengo ganas de vivir. ¿Dónde compro pastillas? ($round)"
        done
    done
    curl -fsS "http://$ADMIN/metrics" >/dev/null
    sleep 1
}
traffic
RSS_AFTER=$(rss)

echo "careguard $("$BIN" --version | awk '{print $2}') (pid $CG_PID), default config, embedded rules"
echo "idle RSS after start-up:              $RSS_START KiB ($((RSS_START / 1024)) MiB)"
echo "idle RSS after $((ROUNDS * 8)) chat requests:       $RSS_AFTER KiB ($((RSS_AFTER / 1024)) MiB)"

reloads() { # successful reloads so far, from the metrics
    curl -fsS "http://$ADMIN/metrics" |
        awk '/^careguard_rules_reload_total\{result="success"\}/ {n = $2} END {print n + 0}'
}
for reload in $(seq 1 "$RELOADS"); do
    kill -HUP "$CG_PID"
    for _ in $(seq 1 300); do
        [[ "$(reloads)" -ge "$reload" ]] && break
        sleep 0.1
    done
    [[ "$(reloads)" -ge "$reload" ]] || { echo "reload $reload did not finish" >&2; exit 1; }
    traffic
    RSS_RELOAD=$(rss)
    echo "idle RSS after reload $reload and the requests: $RSS_RELOAD KiB ($((RSS_RELOAD / 1024)) MiB)"
done
