#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/fuzz_targets/ for a bounded time, one after another,
# each from its checked-in seeds (fuzz/corpus-seed/<target>/) plus a corpus of its own.
#
#   tools/fuzz-all.sh [SECS] [TARGET...]
#
# SECS per target: the argument, else $BACKSTOP_FUZZ_SECS, else 300 (5 minutes; 16 targets,
# about 80 minutes in all). TARGETs default to every file in fuzz/fuzz_targets/.
# Environment:
#   BACKSTOP_FUZZ_CORPUS   where each target's growing corpus lives (<dir>/<target>/); default
#                          fuzz/corpus, git-ignored, so longer runs build on each other.
#                          libFuzzer writes new inputs into the first corpus directory only,
#                          never into the checked-in seeds.
#   BACKSTOP_FUZZ_RSS_MB   libFuzzer's -rss_limit_mb (default 2048).
#   BACKSTOP_FUZZ_INPUT_TIMEOUT_SECS
#                          libFuzzer's -timeout: one input slower than this is a failure
#                          (default 25; generous for a loaded 2-core machine).
#   BACKSTOP_FUZZ_BUDGET_SECS
#                          wall-clock budget of the whole script, build included (default: none).
#                          A build that does not finish inside it is stopped, and targets that
#                          no longer fit are not started; both are reported by name, and the
#                          script then exits 3 (not 1: nothing failed, something did not run).
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`; .ci/run
# installs a pinned version). Builds all targets once, then runs each. A crash, leak, timeout
# or out-of-memory does not stop the loop: every target runs, and the script exits 1 at the end,
# naming each failing target with its reproducer (under fuzz/artifacts/<target>/) and the
# command that replays it. Each run's full libFuzzer output is kept in the log directory it
# prints. A crash becomes a regression test beside the code it broke, and its input a seed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${BACKSTOP_FUZZ_SECS:-300}
if [ $# -gt 0 ]; then
  secs=$1
  shift
fi
case $secs in
  '' | *[!0-9]*) echo "fuzz-all: SECS must be a whole number of seconds, got '$secs'" >&2; exit 2 ;;
esac
corpus_root=${BACKSTOP_FUZZ_CORPUS:-$root/fuzz/corpus}
rss_mb=${BACKSTOP_FUZZ_RSS_MB:-2048}
input_timeout=${BACKSTOP_FUZZ_INPUT_TIMEOUT_SECS:-25}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz-all: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz-all: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    t=${f##*/}
    targets+=("${t%.rs}")
  done
fi
for t in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "fuzz-all: no target $t in fuzz/fuzz_targets/" >&2
    exit 2
  fi
  if [ ! -d "fuzz/corpus-seed/$t" ]; then
    echo "fuzz-all: target $t has no seed directory fuzz/corpus-seed/$t/" >&2
    exit 2
  fi
done

logs=$(mktemp -d "${TMPDIR:-/tmp}/backstop-fuzz-logs.XXXXXX")
echo "fuzz-all: ${#targets[@]} targets, ${secs}s each; corpora under $corpus_root; logs in $logs"

budget=${BACKSTOP_FUZZ_BUDGET_SECS:-}
case $budget in
  *[!0-9]*) echo "fuzz-all: BACKSTOP_FUZZ_BUDGET_SECS must be a whole number, got '$budget'" >&2; exit 2 ;;
esac

cd fuzz
started=$SECONDS
if [ -n "$budget" ]; then
  build_status=0
  timeout "$budget" cargo +nightly fuzz build || build_status=$?
  if [ "$build_status" -eq 124 ]; then
    echo "fuzz-all: NOT RUN: the fuzz build did not finish inside the ${budget}s budget"
    exit 3
  elif [ "$build_status" -ne 0 ]; then
    exit "$build_status"
  fi
else
  cargo +nightly fuzz build
fi
echo "fuzz-all: build took $((SECONDS - started))s"

failed=()
summary=()
skipped=()
for t in "${targets[@]}"; do
  if [ -n "$budget" ] && [ $((SECONDS - started + secs + 15)) -gt "$budget" ]; then
    skipped+=("$t")
    continue
  fi
  mkdir -p "$corpus_root/$t" "artifacts/$t"
  log=$logs/$t.log
  t0=$SECONDS
  status=0
  # First corpus directory: the one libFuzzer writes to. The seeds are read only.
  cargo +nightly fuzz run "$t" "$corpus_root/$t" "corpus-seed/$t" -- \
    -max_total_time="$secs" -rss_limit_mb="$rss_mb" -timeout="$input_timeout" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  took=$((SECONDS - t0))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  line=$(printf '%-24s %10s runs %5ss' "$t" "${runs:-?}" "$took")
  if [ "$status" -eq 0 ]; then
    summary+=("$line  ok")
    echo "  $line  ok"
    continue
  fi
  summary+=("$line  FAILED (exit $status)")
  echo "  $line  FAILED (exit $status); last lines of $log:"
  tail -n 40 "$log" | sed 's/^/    | /'
  # cargo-fuzz names the reproducer in its report ("Failing input: artifacts/<t>/crash-…").
  new=$(grep -oE "artifacts/$t/[A-Za-z0-9_.-]+" "$log" | sed "s|^artifacts/$t/||" | sort -u || true)
  if [ -n "$new" ]; then
    while IFS= read -r a; do
      echo "    reproducer: $root/fuzz/artifacts/$t/$a"
      echo "    replay:     cd fuzz && cargo +nightly fuzz run $t artifacts/$t/$a"
      failed+=("$t: $root/fuzz/artifacts/$t/$a")
    done <<<"$new"
  else
    failed+=("$t: no reproducer written (see $log)")
  fi
done

echo
echo "fuzz-all: summary (${secs}s per target, $((SECONDS - started))s in all with the build)"
printf '  %s\n' "${summary[@]}"
if [ ${#skipped[@]} -gt 0 ]; then
  echo "fuzz-all: NOT RUN (outside the ${budget}s budget): ${skipped[*]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-all: ${#failed[@]} failure(s):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
if [ ${#skipped[@]} -gt 0 ]; then
  exit 3
fi
