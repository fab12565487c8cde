#!/usr/bin/env bash
# Installs the ClickHouse server that the chstore tests start privately (via
# internal/analytics/chtest: 127.0.0.1 only, free ports, data in a temp dir),
# then runs those tests. Debian's package is 18.16; the tests accept any later
# release too (binary clickhouse-server, or clickhouse with "server").
# With TEST_CLICKHOUSE_DSN=clickhouse://host:9000/default set, the tests use
# that server instead and start none.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-true}" # chtest fails instead of skipping when no server is found
if ! command -v clickhouse-server >/dev/null && ! [ -x /usr/sbin/clickhouse-server ] && ! command -v clickhouse >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The package's service is not started (policy-rc.d in containers); the tests
	# need only the binary and /etc/clickhouse-server/users.xml.
	apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi
go test -race -count=1 "$@" ./internal/analytics/chstore/...
