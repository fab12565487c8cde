#!/usr/bin/env bash
# Measures the per-core figures that `pedal estimate` reads, on this machine,
# and writes them with the machine they came from (CPU, cores, memory, Go
# version, commit, date) to bench/capacity/figures.json; the raw go test output
# goes to bench/capacity/bench.txt. About three minutes on 2 cores. Needs
# clickhouse-server (apt-get install -y clickhouse-server): the ClickHouse
# benchmark starts a private one on free loopback ports.
#
#   bench/capacity/run.sh              # 3 runs of each throughput benchmark
#   COUNT=5 bench/capacity/run.sh
#
# Then rebuild pedal: the checked-in figures.json is built into it.
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${COUNT:-3}
raw=bench/capacity/bench.txt

if ! command -v clickhouse-server >/dev/null && ! command -v clickhouse >/dev/null; then
	echo "run.sh: clickhouse-server is not installed (apt-get install -y clickhouse-server)" >&2
	exit 1
fi
if [ -n "${TEST_CLICKHOUSE_DSN:-}" ]; then
	echo "run.sh: unset TEST_CLICKHOUSE_DSN: the ClickHouse figure needs a local server's CPU time" >&2
	exit 1
fi

# bench REGEXP BENCHTIME COUNT
bench() { go test -run '^$' -bench "$1" -benchtime "$2" -count "$3" ./bench/capacity/; }
{
	bench '^BenchmarkIngest$' 3000x "$count"                    # 1.5M clicks a run
	bench '^BenchmarkAggregatePartition$' 1000000x "$count"
	bench '^BenchmarkClickHouseUpsert$' 2000000x "$count"
	bench '^BenchmarkEmbedStoreRow$' 1x 1                       # memory: the same every run
	bench '^BenchmarkDedupBytesPerKey$' 1x 1
} | tee "$raw"

commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	commit="$commit+modified"
fi
go run ./bench/capacity/writefigures -in "$raw" -out bench/capacity/figures.json -commit "$commit"
echo "wrote bench/capacity/figures.json" >&2
