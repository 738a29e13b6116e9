#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; `fuzz/run.sh 600` for ten
# minutes each, or `fuzz/run.sh 60 smtp_session` for one). Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Seeds are in fuzz/corpus/TARGET (committed); what
# libFuzzer finds goes to fuzz/corpus-work/TARGET and crashes to fuzz/artifacts/TARGET
# (neither committed). Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(outer_post roster_op signed_request smtp_session bounce open_post)
fi
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus-work/$target" "corpus/$target"
  echo "== $target for ${seconds}s"
  if ! cargo +nightly fuzz run -O "$target" "corpus-work/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1; then
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crashes in ${targets[*]}"
