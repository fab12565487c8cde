#!/bin/sh
# Throughput and accuracy of our metadata collector and of metascraper on the
# metadata-peers corpus (../../../shared/testdata/metadata-peers), one after
# the other, on this machine. Not run in CI. Needs Go and Node (npm install
# first). Usage: bench/metascraper/run.sh [runs] (default 3)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
runs=${1:-3}
pages=${PAGES:-3000}           # Go: pages a run
node_pages=${NODE_PAGES:-630} # metascraper: ten passes over the 63 pages (about a minute)

cd "$root"
echo "== accuracy, ours (TestPeerAgreementBySource); writes $here/expect.json"
PEDAL_PEERS_EXPECT="$here/expect.json" go test -count 1 -run '^TestPeerAgreementBySource$' -v ./internal/metadata/extract/ |
	grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok'

echo "== throughput, ours: BenchmarkCollectPeers, 16 workers, -cpu 2, $runs runs"
go test -run '^$' -bench BenchmarkCollectPeers -benchtime "${pages}x" -cpu 2 -count "$runs" ./internal/metadata/collect/ |
	grep Benchmark

cd "$here"
[ -d node_modules ] || npm install --no-audit --no-fund
echo "== metascraper, 16 concurrent requests, $runs runs"
for i in $(seq "$runs"); do
	if [ "$i" = 1 ]; then node bench.mjs --pages "$node_pages"; else node bench.mjs --pages "$node_pages" | grep throughput; fi
done
