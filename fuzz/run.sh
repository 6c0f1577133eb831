#!/usr/bin/env bash
# Runs every cargo-fuzz target in turn for SECONDS each (default 60) from the committed
# seeds (seeds/TARGET) plus what earlier runs found (corpus/TARGET), and prints each
# target's executions, coverage and crashes. Crashing inputs land in artifacts/TARGET/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable
# toolchain take the sanitizer-coverage flags libFuzzer needs.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(request_scanner reply_scanner topology config)
fi
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    if RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"logs/$t.log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
        status=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "logs/$t.log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    echo "$t: ${secs}s, ${execs:-?} executions, ${cov:-cov ?}, corpus $corpus, $result"
done
exit "$status"
