#!/usr/bin/env bash
# Behaviour snapshot for refactors (issue 22): what a refactor must leave byte-identical.
#   benchmarks/behaviour_snapshot.sh make DIR     fresh runs (mock run + sweep on the virtual clock, a small
#                                                  reference run) into DIR/runs, then `recompute`
#   benchmarks/behaviour_snapshot.sh recompute RUNS OUT
#                                                  with the code checked out now: every command's --help,
#                                                  summary.json/csv of each run (report DIR), the sweep's CSVs
#                                                  (report SWEEP) and model.json (model SWEEP), copied into OUT
# Compare two OUTs with `diff -r`.  The runs themselves are made once (before the change) and recomputed by
# both sides, so only the code differs; the mock runs on the virtual clock are also reproducible afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
SB="${SB:-.venv/bin/speedbench}"  # another checkout: SB="env PYTHONPATH=$PWD/src /work/main/.venv/bin/speedbench"
MOCK=(--engine mock -E cost=batch -E clock=virtual -E base_ms=10 -E per_token_ms=0.5)

helps() {  # every command's and sub-command's --help, at a fixed width
  local out=$1
  mkdir -p "$out/help"
  for c in "" run check-lossless sweep report model engines serve-mock data analyze "data show" "data fetch" \
      "data build" "data select" "data audit" "data build-throughput" "data synthetic" "analyze vocab"; do
    # shellcheck disable=SC2086
    COLUMNS=200 TERM=dumb NO_COLOR=1 $SB $c --help > "$out/help/${c// /_}.txt" 2>&1 || true
  done
}

recompute() {
  local runs=$1 out=$2 work
  work=$(mktemp -d)
  cp -r "$runs"/. "$work"/
  mkdir -p "$out"
  helps "$out"
  for d in "$work"/mockrun "$work"/refrun; do
    $SB report "$d" > "$out/$(basename "$d").report.txt" 2>&1 || true
    cp "$d/summary.json" "$out/$(basename "$d").summary.json"
    cp "$d/summary.csv" "$out/$(basename "$d").summary.csv"
  done
  $SB report "$work/mocksweep" > "$out/mocksweep.report.txt" 2>&1 || true
  $SB model "$work/mocksweep" > "$out/mocksweep.model.txt" 2>&1 || true
  for f in "$work"/mocksweep/*.csv "$work"/mocksweep/model.json; do cp "$f" "$out/mocksweep.$(basename "$f")"; done
  for cell in "$work"/mocksweep/cells/*/; do
    [ -f "$cell/summary.json" ] && cp "$cell/summary.json" "$out/mocksweep.cell.$(basename "$cell").summary.json"
  done
  sed -i "s#$work#RUNS#g" "$out"/*.*  # model.json and the reports name the copy
  rm -rf "$work"
}

case "${1:-}" in
  make)
    dir=$2
    mkdir -p "$dir/runs"
    $SB run "${MOCK[@]}" -n 22 -c 8 --no-progress --out "$dir/runs/mockrun" > "$dir/mockrun.log" 2>&1
    $SB sweep "${MOCK[@]}" -k 1,3 -c 1,4,8 -n 12 --no-progress --no-html --out "$dir/runs/mocksweep" > "$dir/mocksweep.log" 2>&1
    $SB run -n 3 -c 2 --output-len 8 --no-progress --out "$dir/runs/refrun" > "$dir/refrun.log" 2>&1
    recompute "$dir/runs" "$dir/out"
    ;;
  recompute) recompute "$2" "$3" ;;
  *) echo "usage: $0 make DIR | recompute RUNS OUT" >&2; exit 2 ;;
esac
