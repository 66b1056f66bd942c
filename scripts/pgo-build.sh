#!/usr/bin/env bash
# A profile-guided (PGO) release build of careguard.
#
#   scripts/pgo-build.sh            # -> target/pgo/use/release/careguard
#
# Three steps, each printed as it starts:
#   1. an instrumented release build (`-Cprofile-generate`), in target/pgo/gen;
#   2. training: that build serves traffic and its profile is written when it exits. The traffic
#      is careguard's own, not the benchmark's: `careguard demo` (the paper's ten clinical
#      messages, replaced and appended replies, a held-back stream), then `careguard serve` in
#      front of the demo's simulated bot (`demo --bot-only`, whose own profile is thrown away)
#      with ordinary and clinical conversations of 1 to 12 turns, JSON and streamed, from four
#      keep-alive clients at once, plus `GET /v1/models` and a few refused and invalid requests;
#   3. the release build again with the merged profile (`-Cprofile-use`), in target/pgo/use.
# The code is the same as `cargo build --release`: only the compiler's inlining, block layout and
# register choices follow what the training ran most. What it buys is measured in the README
# ("Performance").
#
# Needs: curl, and an llvm-profdata of the LLVM major version rustc is built on (`rustc -vV`,
# "LLVM version"): LLVM_PROFDATA=/path/to/llvm-profdata, or llvm-profdata-<major> on PATH or
# in /usr/lib/llvm-<major>/bin (Debian: `apt-get install llvm-<major>`; rustup:
# `rustup component add llvm-tools`). Environment: PGO_ROUNDS (default 150: each round sends every
# training conversation once per client), CARGO_FLAGS (added to both builds), PGO_TARGETS (what
# both builds build, default `--bin careguard`; `--bin careguard --example passthrough` for the
# proxy-alone benchmark), PGO_DIR (default target/pgo).
#
# Both builds must build the same targets with the same features: building an example or a test
# beside the binary turns on dev-dependency features, which changes the code of shared crates
# enough that the profile no longer applies (seen: 84.8K instructions a request instead of 69.5K,
# with no warning from rustc).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PGO_DIR:-$ROOT/target/pgo}"
read -r -a TARGETS <<<"${PGO_TARGETS:---bin careguard}"
DATA="$OUT/profiles"
ROUNDS="${PGO_ROUNDS:-150}"
PROXY=127.0.0.1:18480
ADMIN=127.0.0.1:18490
BOT=127.0.0.1:18470

# An llvm-profdata that reads this rustc's raw profiles (the raw format follows LLVM's version).
major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
profdata="${LLVM_PROFDATA:-}"
if [[ -z "$profdata" ]]; then
    for candidate in "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata" \
        "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"; do
        if command -v "$candidate" >/dev/null 2>&1; then
            profdata="$candidate"
            break
        fi
    done
fi
if [[ -z "$profdata" ]]; then
    echo "no llvm-profdata for LLVM $major found: install llvm-$major (Debian) or rustup's" \
        "llvm-tools, or set LLVM_PROFDATA" >&2
    exit 2
fi
have="$("$profdata" --version | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1 || true)"
if [[ "$have" != "$major" ]]; then
    echo "$profdata is LLVM $have, rustc uses LLVM $major: its raw profiles would not read" >&2
    exit 2
fi
command -v curl >/dev/null || { echo "curl is needed to send the training traffic" >&2; exit 2; }

rm -rf "$DATA"
mkdir -p "$DATA/discard"

echo "== 1/3 instrumented build ($OUT/gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$DATA" \
    cargo build --release --locked ${CARGO_FLAGS:+$CARGO_FLAGS} "${TARGETS[@]}" \
    --manifest-path "$ROOT/Cargo.toml" --target-dir "$OUT/gen"
BIN="$OUT/gen/release/careguard"

echo "== 2/3 training"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

LLVM_PROFILE_FILE="$DATA/demo-%p.profraw" "$BIN" demo >/dev/null

LLVM_PROFILE_FILE="$DATA/discard/bot-%p.profraw" "$BIN" demo --bot-only --bot-listen "$BOT" \
    >"$OUT/bot.log" 2>&1 &
pids+=($!)
LLVM_PROFILE_FILE="$DATA/serve-%p.profraw" "$BIN" serve --listen "$PROXY" --admin-listen "$ADMIN" \
    --upstream "http://$BOT/v1" >"$OUT/serve.log" 2>&1 &
SERVE=$!
pids+=($SERVE)
for _ in $(seq 1 100); do
    if curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 \
        && curl -fsS "http://$BOT/v1/models" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
# Training against a proxy or bot that is not up (a port taken, a crash) would profile errors.
kill -0 "$SERVE" && kill -0 "${pids[0]}" || { echo "careguard or the bot did not start (see $OUT)" >&2; exit 1; }
curl -fsS "http://$ADMIN/readyz" >/dev/null || { echo "careguard is not ready (see $OUT/serve.log)" >&2; exit 1; }
curl -fsS -o /dev/null -H 'content-type: application/json' \
    -d '{"model":"training","messages":[{"role":"user","content":"hello"}]}' \
    "http://$PROXY/v1/chat/completions" || { echo "a chat through careguard failed (see $OUT)" >&2; exit 1; }

# Training conversations: ordinary questions of every size, and clinical ones the engine acts on.
# Each line is a list of user turns; assistant turns are filled in between.
BODIES="$OUT/bodies"
rm -rf "$BODIES"
mkdir -p "$BODIES"
json_text() { # escape a line for a JSON string (the texts below hold no backslash or tab)
    printf '%s' "$1" | sed 's/"/\\"/g'
}
n=0
while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    IFS='|' read -r -a turns <<<"$line"
    messages='{"role":"system","content":"You are a friendly assistant. Answer briefly and kindly."}'
    for turn in "${turns[@]}"; do
        messages+=",{\"role\":\"user\",\"content\":\"$(json_text "$turn")\"}"
        messages+=",{\"role\":\"assistant\",\"content\":\"Thanks for telling me. Here is what I think, step by step, and what you could try next.\"}"
    done
    messages="${messages%,\{\"role\":\"assistant\"*}"
    for stream in false true; do
        n=$((n + 1))
        printf '{"model":"training","stream":%s,"temperature":0.7,"messages":[%s]}' \
            "$stream" "$messages" >"$BODIES/$n.json"
    done
done <<'EOF'
What is a good recipe for a quick vegetable soup?
Can you explain how a hash map handles collisions?|And what about open addressing?|Which one is faster for small keys?
I am planning a weekend trip to the coast. What should I pack?|It might rain on Saturday.|We are taking the train, so nothing heavy.
Write a short poem about autumn leaves.
How do I ask my manager for feedback without sounding anxious?|She is usually very busy.|I have a one to one meeting on Thursday.|What if she says my work is not good enough?
My sleep has been all over the place this month. Any tips for a routine?|I drink coffee after dinner sometimes.|I also look at my phone in bed.
Summarise the causes of the French Revolution in three sentences.
I feel a bit low after a long week, nothing serious, just tired.|Maybe a walk would help.|Thanks, that is kind.
Help me plan a birthday party for my daughter who is turning seven.|She loves dinosaurs.|About twelve children are coming.|We have a small garden.|The budget is modest.|Could you draft the invitation text?|Make it rhyme please.|Now a shopping list.|And a schedule for the afternoon.|What games work indoors if it rains?|Any allergy-safe snack ideas?|Thank you so much.
I have been feeling hopeless for weeks and I do not see the point anymore.
I just lost my job. What are the tallest bridges near me?
I haven't slept in four days and I have so much energy, I'm going to start three companies this week.
I know people are following me everywhere and reading my thoughts through the TV.
I keep hearing a voice telling me I'm worthless when nobody is around.
I have to wash my hands again and again, twenty times today already, or something bad will happen.
I have barely eaten in a week and I still feel fat. How can I stop being hungry?
Sometimes I cut myself to feel something. Is that normal?
EOF

# One curl per client, each sending its requests one after another on one keep-alive connection.
request() { # CONFIG URL [BODY-ARGUMENT]
    if [[ -s "$1" ]]; then printf 'next\n' >>"$1"; fi
    printf 'url = "http://%s%s"\noutput = "/dev/null"\n' "$PROXY" "$2" >>"$1"
    if [[ $# -gt 2 ]]; then
        printf 'header = "content-type: application/json"\n%s\n' "$3" >>"$1"
    fi
}
CONFIGS=()
for client in 1 2 3 4; do
    config="$OUT/curl-$client.conf"
    : >"$config"
    for _ in $(seq 1 "$ROUNDS"); do
        for body in "$BODIES"/*.json; do
            request "$config" /v1/chat/completions "data-binary = \"@$body\""
        done
        request "$config" /v1/models
        request "$config" /v1/chat/completions 'data = "{\"model\":\"no messages\"}"'
        request "$config" /v1/responses 'data = "{}"'
    done
    CONFIGS+=("$config")
done
clients=()
for config in "${CONFIGS[@]}"; do
    curl -sS --config "$config" &
    clients+=($!)
    pids+=($!)
done
for client in "${clients[@]}"; do
    wait "$client" || { echo "training traffic failed (see $OUT/serve.log)" >&2; exit 1; }
done
curl -fsS "http://$ADMIN/metrics" -o /dev/null
kill -TERM "$SERVE"
wait "$SERVE" || true
cleanup
pids=()
profiles=("$DATA"/demo-*.profraw "$DATA"/serve-*.profraw)
"$profdata" merge -o "$DATA/careguard.profdata" "${profiles[@]}"
echo "merged ${#profiles[@]} profiles: $DATA/careguard.profdata"

echo "== 3/3 optimised build ($OUT/use)"
# From scratch: cargo tracks RUSTFLAGS but not the profile file they name, so a build left from
# an earlier training would be reused as it is.
rm -rf "$OUT/use"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$DATA/careguard.profdata" \
    cargo build --release --locked ${CARGO_FLAGS:+$CARGO_FLAGS} "${TARGETS[@]}" \
    --manifest-path "$ROOT/Cargo.toml" --target-dir "$OUT/use"
echo "built: $OUT/use/release/careguard"
