#!/usr/bin/env bash
# Runs the libFuzzer targets built by build.sh.
#   run.sh --ci                 replay every input of Tests/Fuzz/<target>/, then fuzz each target
#                               for 10 s (new inputs go to a scratch folder); all 7 in about 1.5 min
#   run.sh SECONDS [TARGET...]  a campaign: fuzz each target for SECONDS; new inputs are kept in
#                               .build-fuzz/corpus/<target>, and the committed corpus is then
#                               extended with a minimal set covering them (-merge=1)
# A crash stops with the reproducer's path (crash-*, timeout-*, oom-* in .build-fuzz/findings).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.build-fuzz
ALL=(labels data_yaml model_yaml hyp_yaml safetensors png jpeg)
# Limits per input: 25 s timeout, 2 GB RSS, inputs up to 64 KiB.
OPTS=(-timeout=25 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=0)
mkdir -p "$OUT/findings"
# Let libFuzzer (not Swift's backtracer) handle a trap, so it writes the reproducer.
export SWIFT_BACKTRACE=enable=no

replay() {   # every committed input once
  local t=$1
  local files=(Tests/Fuzz/"$t"/*)
  "$OUT/$t" "${OPTS[@]}" -artifact_prefix="$OUT/findings/$t-" "${files[@]}" > "$OUT/$t.replay.log" 2>&1 \
    || { echo "fuzz $t: a committed input fails:"; tail -30 "$OUT/$t.replay.log"; exit 1; }
  echo "fuzz $t: ${#files[@]} committed inputs replayed"
}

fuzz() {     # target, seconds, scratch corpus
  local t=$1 s=$2 scratch=$3
  mkdir -p "$scratch"
  "$OUT/$t" "${OPTS[@]}" -max_total_time="$s" -artifact_prefix="$OUT/findings/$t-" "$scratch" "Tests/Fuzz/$t" > "$OUT/$t.fuzz.log" 2>&1 \
    || { echo "fuzz $t: found a crash:"; tail -40 "$OUT/$t.fuzz.log"; exit 1; }
  echo "fuzz $t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$OUT/$t.fuzz.log" | tail -1 || echo "ran $s s"), corpus $(ls "$scratch" | wc -l) new inputs"
}

if [ "${1:-}" = "--ci" ]; then
  for t in "${ALL[@]}"; do [ -x "$OUT/$t" ] || { echo "run.sh: $OUT/$t missing: run tools/fuzz/build.sh" >&2; exit 1; }; done
  for t in "${ALL[@]}"; do replay "$t"; done
  tmp=$(mktemp -d)
  for t in "${ALL[@]}"; do fuzz "$t" 10 "$tmp/$t"; done
  rm -rf "$tmp"
  exit 0
fi

seconds=${1:?usage: run.sh --ci | run.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  replay "$t"
  fuzz "$t" "$seconds" "$OUT/corpus/$t"
  "$OUT/$t" -merge=1 "${OPTS[@]}" "Tests/Fuzz/$t" "$OUT/corpus/$t" > "$OUT/$t.merge.log" 2>&1
  echo "fuzz $t: committed corpus now $(ls "Tests/Fuzz/$t" | wc -l) inputs"
done
