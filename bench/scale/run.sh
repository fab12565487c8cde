#!/usr/bin/env bash
# The click pipeline of `pedal serve` in its two deployments, one after the
# other, on this machine: "embedded" (the defaults: Pebble log, embedded
# analytics store) and "scale" (--log kafka://… on kfake, an in-memory
# Kafka-protocol broker, and --analytics clickhouse://… on a private
# clickhouse-server). For each mode: a warm-up, then a ladder of constant
# rates (pedal loadgen, batches of BATCH clicks), then one run with --verify
# that checks the totals against the loadgen's ledger. Not run in CI.
#
#   bench/scale/run.sh [embedded] [scale]        (default: both)
#
# Environment: RATES (clicks/s, default "20000 40000 60000 80000";
# RATES_EMBEDDED and RATES_SCALE override it for one mode), EMBEDDED_FLAGS and
# SCALE_FLAGS (more pedal serve flags for one mode, e.g. SCALE_FLAGS="--aggregate-workers 16"),
# DURATION (each step, default 30s), WARMUP (default 10s at the first rate), BATCH
# (default 500), VERIFY_RATE (clicks/s of the verified run, default 40000; 0
# skips it), DRAIN_TIMEOUT (seconds to wait for the aggregator to catch up
# after a step, default 120), PEDAL_BIN (a pedal binary built before), OUT
# (results directory, default a new /tmp/scalebench-results.XXXXXX, kept).
#
# Per step it records: acknowledged clicks/s and ack latency (loadgen's
# summary); the clicks the aggregator processed during the step
# (pedal_aggregate_clicks_total); how far it was behind (the sum over
# partitions of pedal_aggregate_lag_records, sampled every 2 s: its largest
# value, its value when the step ends, and how long it took to reach 0 after
# the step; "kept up" means within 10 s); the
# user + system CPU seconds (/proc/PID/stat) of pedal serve, and in scale mode
# of kfake and clickhouse-server, from the step's start until the aggregator
# caught up, hence CPU microseconds per acknowledged click; and in scale mode
# the INSERTs and rows that pedal sent to ClickHouse during the step
# (pedal_analytics_ch_inserts_total, pedal_analytics_ch_inserted_rows_total),
# and the mean time the aggregator waited for a publication of its totals to
# the analytics store (pedal_aggregate_publish_duration_seconds).
# The verified run's CPU and INSERT figures include the verification's
# queries and waiting, so the table leaves them out. Everything listens on
# 127.0.0.1 only, on free ports, and is stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(embedded scale)
for m in "${modes[@]}"; do
	case "$m" in embedded | scale) ;; *)
		echo "unknown mode $m (embedded, scale)" >&2
		exit 2
		;;
	esac
done
duration=${DURATION:-30s}
warmup=${WARMUP:-10s}
batch=${BATCH:-500}
verify_rate=${VERIFY_RATE:-40000}
drain_timeout=${DRAIN_TIMEOUT:-120}

need=()
command -v curl >/dev/null || need+=(curl)
case " ${modes[*]} " in *" scale "*)
	command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server)
	;;
esac
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq "${need[@]}" >/dev/null
	else
		echo "missing: ${need[*]} (run as root, or apt-get install -y ${need[*]})" >&2
		exit 1
	fi
fi
CH=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
HZ=$(getconf CLK_TCK)

tmp=$(mktemp -d /tmp/scalebench.XXXXXX)
TIME=() # the load generator's CPU, where GNU time is installed
if [ -x /usr/bin/time ]; then TIME=(/usr/bin/time -f "%U %S" -o "$tmp/lgtime"); fi
out=${OUT:-$(mktemp -d /tmp/scalebench-results.XXXXXX)}
mkdir -p "$out"
pids=()
stop_pid() { # pid: SIGTERM, then SIGKILL after 20 s
	local p=$1
	kill -TERM "$p" 2>/dev/null || return 0
	for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}
cleanup() {
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
	pids=()
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build"
if [ -n "${PEDAL_BIN:-}" ]; then cp "$PEDAL_BIN" "$tmp/pedal"; else (cd "$root" && go build -o "$tmp/pedal" ./cmd/pedal); fi
(cd "$root" && go build -o "$tmp/kfake" ./bench/scale/kfake)
commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$root" && git status --porcelain --untracked-files=no 2>/dev/null | head -1)
[ -n "$dirty" ] && commit="$commit+modified"

. "$root/bench/freeport.sh"
waitport() { # port name pid
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		kill -0 "$3" 2>/dev/null || break
		sleep 0.1
	done
	echo "$2 did not start on port $1" >&2
	exit 1
}

cpu_s() { # pid: user + system seconds so far
	sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$HZ" '{printf "%.2f", ($12 + $13) / hz}'
}
now() { date +%s.%N; }
metric() { # file name: the sum of every series of the metric
	awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }' "$1"
}
scrape() { curl -sf "$url/metrics" >"$1"; }
lag() { # records not yet processed, all partitions (the file of a scrape, or a new scrape)
	if [ $# -gt 0 ]; then metric "$1" pedal_aggregate_lag_records; else
		curl -sf "$url/metrics" | awk '$1 ~ /^pedal_aggregate_lag_records[{]/ { s += $2 } END { printf "%.0f", s }'
	fi
}
wait_caught_up() { # timeout-seconds: 0 once the lag was 0 twice in a row, 1 on timeout
	local deadline=$(($(date +%s) + $1)) zeros=0 l
	while [ "$(date +%s)" -lt "$deadline" ]; do
		l=$(lag || echo -1)
		if [ "$l" = 0 ]; then
			zeros=$((zeros + 1))
			[ $zeros -ge 2 ] && return 0
		else
			zeros=0
		fi
		sleep 0.5
	done
	return 1
}
ms() { # a Go duration → milliseconds
	awk -v d="$1" 'BEGIN {
		if (d ~ /ms$/) { sub(/ms$/, "", d); printf "%.2f", d }
		else if (d ~ /µs$/ || d ~ /us$/) { sub(/(µs|us)$/, "", d); printf "%.3f", d / 1000 }
		else if (d ~ /ns$/) { sub(/ns$/, "", d); printf "%.4f", d / 1e6 }
		else if (d ~ /m[0-9.]+s$/) { split(d, a, "m"); sub(/s$/, "", a[2]); printf "%.0f", (a[1] * 60 + a[2]) * 1000 }
		else if (d ~ /s$/) { sub(/s$/, "", d); printf "%.0f", d * 1000 }
		else printf "%s", d }'
}

start_clickhouse() { # dir tcp-port http-port
	local dir=$1
	mkdir -p "$dir"/{log,data,tmp,user_files,format_schemas}
	cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/server.err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$2</tcp_port>
  <http_port>$3</http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
	(cd "$dir" && exec "$CH" --config-file="$dir/config.xml") >"$dir/log/stdout.log" 2>&1 &
	ch_pid=$!
	pids+=("$ch_pid")
	for _ in $(seq 300); do
		[ "$(curl -s "http://127.0.0.1:$3/ping" 2>/dev/null)" = "Ok." ] && return 0
		kill -0 "$ch_pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "clickhouse-server did not start on 127.0.0.1:$2" >&2
	tail -20 "$dir/log/server.err.log" >&2 || true
	exit 1
}

steps="$out/steps.tsv"
printf 'mode\tstep\toffered\tacked_per_s\tacked\tfailed\trejected\tp50_ms\tp99_ms\tp999_ms\tmax_lag\tlag_at_end\tcatchup_s\tkept_up\tstep_s\tpedal_cpu_s\tkfake_cpu_s\tch_cpu_s\tloadgen_cpu_s\tpedal_us_per_click\tall_us_per_click\tpedal_cores\tall_cores\tinserts\tinserts_per_s\trows\trows_per_insert\taggregated\tverify\taggregated_per_s\tpublish_ms\n' >"$steps"

# step mode name rate [loadgen flags...]: one constant-rate run and its figures
step() {
	local mode=$1 name=$2 rate=$3
	shift 3
	local lg="$out/${mode%% *}-$name.txt" m0="$tmp/m0" m1="$tmp/m1" m2="$tmp/m2"
	wait_caught_up "$drain_timeout" || echo "   (aggregator still behind before the step)"
	scrape "$m0"
	local t0 p0 k0=0 c0=0
	t0=$(now)
	p0=$(cpu_s "$pedal_pid")
	[ -n "$kfake_pid" ] && k0=$(cpu_s "$kfake_pid")
	[ -n "$ch_pid" ] && c0=$(cpu_s "$ch_pid")
	rm -f "$tmp/lgtime"
	"${TIME[@]}" "$tmp/pedal" loadgen --target "$url" --token "$token" --rate "$rate" \
		--duration "$duration" --batch "$batch" "$@" >"$lg" 2>&1 &
	local lgpid=$! behind=0 a lgrc=0
	while kill -0 "$lgpid" 2>/dev/null; do
		a=$(lag || echo 0)
		[ "${a:-0}" -gt "$behind" ] && behind=$a
		for _ in $(seq 20); do kill -0 "$lgpid" 2>/dev/null || break; sleep 0.1; done
	done
	wait "$lgpid" || lgrc=$?
	# A --verify run has already waited for the aggregator and queried the
	# totals; its figures after the send phase are not comparable.
	local t1 p1 k1=0 c1=0 lag_end
	t1=$(now)
	p1=$(cpu_s "$pedal_pid")
	[ -n "$kfake_pid" ] && k1=$(cpu_s "$kfake_pid")
	[ -n "$ch_pid" ] && c1=$(cpu_s "$ch_pid")
	scrape "$m1"
	lag_end=$(lag "$m1")
	[ "$lag_end" -gt "$behind" ] && behind=$lag_end
	local kept=yes t2 p2 k2=0 c2=0
	wait_caught_up "$drain_timeout" || kept=no
	t2=$(now)
	# Kept up: back at lag 0 within 10 s of the step's end (one flush of
	# 250 ms per partition is always in flight).
	[ "$kept" = yes ] && awk -v a="$t2" -v b="$t1" 'BEGIN { exit !(a - b > 10) }' && kept=late
	p2=$(cpu_s "$pedal_pid")
	[ -n "$kfake_pid" ] && k2=$(cpu_s "$kfake_pid")
	[ -n "$ch_pid" ] && c2=$(cpu_s "$ch_pid")
	scrape "$m2"

	local sum acked ackrate failed rejected p50 p99 p999 lgcpu=- verify=-
	sum=$(sed -n '/^loadgen summary/,$p' "$lg")
	acked=$(awk '$1 == "clicks" { print $4 }' <<<"$sum")
	rejected=$(awk '$1 == "clicks" { print $6 }' <<<"$sum")
	ackrate=$(awk '$1 == "rate" { print $6 }' <<<"$sum")
	failed=$(awk '$1 == "failed" { print $2 }' <<<"$sum")
	p50=$(ms "$(awk '$1 == "latency" { print $3 }' <<<"$sum")")
	p99=$(ms "$(awk '$1 == "latency" { print $7 }' <<<"$sum")")
	p999=$(ms "$(awk '$1 == "latency" { print $9 }' <<<"$sum")")
	[ -s "$tmp/lgtime" ] && lgcpu=$(tail -1 "$tmp/lgtime" | awk '{ printf "%.2f", $1 + $2 }')
	case " $* " in *" --verify "*)
		if [ $lgrc = 0 ] && grep -q '^verify: compared' "$lg"; then verify=exact; else verify="FAILED(rc=$lgrc)"; fi
		;;
	esac
	if [ -z "$acked" ]; then
		echo "   loadgen printed no summary (exit $lgrc):" >&2
		tail -5 "$lg" >&2
		acked=0 rejected=0 failed=0 ackrate=0
	fi
	local ins0 ins1 rows0 rows1 agg0 agg1 agg2
	ins0=$(metric "$m0" pedal_analytics_ch_inserts_total)
	ins1=$(metric "$m1" pedal_analytics_ch_inserts_total)
	rows0=$(metric "$m0" pedal_analytics_ch_inserted_rows_total)
	rows1=$(metric "$m1" pedal_analytics_ch_inserted_rows_total)
	agg0=$(metric "$m0" pedal_aggregate_clicks_total)
	agg1=$(metric "$m1" pedal_aggregate_clicks_total)
	# The aggregator's publications to the analytics store: their mean duration.
	local pubs pubn
	pubs=$(awk -v a="$(metric "$m0" pedal_aggregate_publish_duration_seconds_sum)" -v b="$(metric "$m1" pedal_aggregate_publish_duration_seconds_sum)" 'BEGIN { print b - a }')
	pubn=$(($(metric "$m1" pedal_aggregate_publish_duration_seconds_count) - $(metric "$m0" pedal_aggregate_publish_duration_seconds_count)))
	agg2=$(metric "$m2" pedal_aggregate_clicks_total)
	awk -v OFS='\t' -v mode="$mode" -v name="$name" -v rate="$rate" -v acked="$acked" -v failed="$failed" \
		-v rejected="$rejected" -v p50="$p50" -v p99="$p99" -v p999="$p999" -v behind="$behind" -v lag_end="$lag_end" \
		-v kept="$kept" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v p0="$p0" -v p1="$p1" -v p2="$p2" \
		-v k0="$k0" -v k1="$k1" -v k2="$k2" -v c0="$c0" -v c1="$c1" -v c2="$c2" -v lgcpu="$lgcpu" \
		-v ins0="$ins0" -v ins1="$ins1" -v rows0="$rows0" -v rows1="$rows1" -v agg0="$agg0" -v agg1="$agg1" -v agg2="$agg2" -v ackrate="$ackrate" -v pubs="$pubs" -v pubn="$pubn" \
		-v verify="$verify" 'BEGIN {
		st = t1 - t0; all = t2 - t0
		pc = p2 - p0; kc = k2 - k0; cc = c2 - c0
		ins = ins1 - ins0; rows = rows1 - rows0
		v = (verify != "-")
		print mode, name, rate, ackrate, acked, failed, rejected, p50, p99, p999,
			behind, lag_end, sprintf("%.1f", t2 - t1), kept, sprintf("%.1f", st),
			sprintf("%.2f", pc), sprintf("%.2f", kc), sprintf("%.2f", cc), lgcpu,
			(acked > 0 && !v ? sprintf("%.2f", pc * 1e6 / acked) : "-"),
			(acked > 0 && !v ? sprintf("%.2f", (pc + kc + cc) * 1e6 / acked) : "-"),
			(v ? "-" : sprintf("%.2f", (p1 - p0) / st)), (v ? "-" : sprintf("%.2f", (p1 - p0 + k1 - k0 + c1 - c0) / st)),
			(v ? "-" : ins), (v ? "-" : sprintf("%.2f", ins / st)), (v ? "-" : rows), (ins > 0 && !v ? sprintf("%.0f", rows / ins) : "-"),
			agg2 - agg0, verify, (v ? "-" : sprintf("%.0f", (agg1 - agg0) / st)),
			(pubn > 0 && !v ? sprintf("%.1f", pubs * 1000 / pubn) : "-")
	}' >>"$steps"
	tail -1 "$steps" | awk -F'\t' '{ printf "   %s %s: offered %s, acked %s/s, aggregated %s/s, p50 %s ms, p99 %s ms, lag max %s, at end %s, caught up after %s s (%s), pedal %s µs/click, all %s µs/click, %s cores, INSERTs/s %s, rows/INSERT %s, publish %s ms%s\n", $1, $2, $3, $4, $30, $8, $9, $11, $12, $13, $14, $20, $21, $23, $25, $27, $31, ($29 == "-" ? "" : ", verify " $29) }'
}

run_mode() {
	local mode=$1 label extra rates=()
	local dir="$tmp/$mode" port flags=()
	if [ "$mode" = scale ]; then
		read -r -a rates <<<"${RATES_SCALE:-${RATES:-20000 40000 60000 80000}}"
		read -r -a extra <<<"${SCALE_FLAGS:-}"
	else
		read -r -a rates <<<"${RATES_EMBEDDED:-${RATES:-20000 40000 60000 80000}}"
		read -r -a extra <<<"${EMBEDDED_FLAGS:-}"
	fi
	label="$mode${extra[*]:+ ${extra[*]}}"
	mkdir -p "$dir"
	kfake_pid="" ch_pid=""
	if [ "$mode" = scale ]; then
		local kport chtcp chhttp
		kport=$(freeport) chtcp=$(freeport) chhttp=$(freeport)
		echo "== $mode: kfake on 127.0.0.1:$kport, clickhouse-server on 127.0.0.1:$chtcp"
		"$tmp/kfake" -port "$kport" >"$dir/kfake.log" 2>&1 &
		kfake_pid=$!
		pids+=("$kfake_pid")
		waitport "$kport" kfake "$kfake_pid"
		start_clickhouse "$dir/ch" "$chtcp" "$chhttp"
		flags=(--log "kafka://127.0.0.1:$kport/" --analytics "clickhouse://127.0.0.1:$chtcp/bench")
	fi
	port=$(freeport)
	url="http://127.0.0.1:$port"
	flags+=("${extra[@]}")
	echo "== $mode: pedal serve on $url ${flags[*]}" | tee -a "$out/machine.txt"
	"$tmp/pedal" serve --data-dir "$dir/pd" --http-addr "127.0.0.1:$port" "${flags[@]}" >"$dir/serve.log" 2>&1 &
	pedal_pid=$!
	pids+=("$pedal_pid")
	for _ in $(seq 600); do
		grep -q '"pedal serving"' "$dir/serve.log" 2>/dev/null && break
		kill -0 "$pedal_pid" 2>/dev/null || break
		sleep 0.1
	done
	grep -q '"pedal serving"' "$dir/serve.log" || {
		echo "pedal serve did not start" >&2
		tail "$dir/serve.log" >&2
		exit 1
	}
	token=$("$tmp/pedal" token --data-dir "$dir/pd" --sub bench --role admin)

	echo "== $label: rates ${rates[*]} clicks/s; warm-up, $warmup at ${rates[0]} clicks/s"
	"$tmp/pedal" loadgen --target "$url" --token "$token" --rate "${rates[0]}" --duration "$warmup" --batch "$batch" >"$out/$mode-warmup.txt" 2>&1
	for r in "${rates[@]}"; do
		echo "== $mode: $r clicks/s for $duration"
		step "$label" "$r" "$r"
	done
	if [ "$verify_rate" != 0 ]; then
		echo "== $mode: $verify_rate clicks/s for $duration, --verify"
		step "$label" "verify-$verify_rate" "$verify_rate" --verify
	fi
	curl -sf "$url/metrics" >"$out/$mode-metrics.txt" || true
	cp "$dir/serve.log" "$out/$mode-serve.log" 2>/dev/null || true
	if [ -n "$kfake_pid" ]; then
		awk '/^VmHWM/ { print "kfake peak RSS", $2, $3 }' "/proc/$kfake_pid/status" | tee "$out/$mode-kfake-rss.txt"
	fi
	awk '/^VmHWM/ { print "pedal serve peak RSS", $2, $3 }' "/proc/$pedal_pid/status" | tee "$out/$mode-pedal-rss.txt"
	# Stop this mode's processes before the next mode starts.
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
	pids=()
}

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "commit: $commit"
	echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
	echo "go: $(cd "$root" && go version | awk '{ print $3 }')"
	echo "clickhouse-server: $(dpkg-query -W -f '${Version}' clickhouse-server 2>/dev/null || echo -)"
	echo "steps: $duration each, batch $batch, warm-up $warmup at the first rate, verify at $verify_rate clicks/s"
} | tee "$out/machine.txt"
for m in "${modes[@]}"; do
	echo "== $m: load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
	run_mode "$m"
done
echo "== load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"

echo
echo "| mode | offered | acknowledged | aggregated during the step | ack p50 / p99 / p99.9 (ms) | lag max / at end (records) | caught up after | pedal CPU/click | all CPU/click | cores (all) | INSERTs/s | rows/INSERT | publish, mean | verify |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' 'NR > 1 {
	sc = ($1 ~ /^scale/)
	printf "| %s | %s/s | %s/s | %s/s | %s / %s / %s | %s / %s | %s s (%s) | %s µs | %s µs | %s | %s | %s | %s ms | %s |\n",
		$1, $3, $4, $30, $8, $9, $10, $11, $12, $13, $14, $20, $21, $23,
		(sc ? $25 : "-"), (sc ? $27 : "-"), $31, $29
}' "$steps"
echo
echo "results: $out (steps.tsv, loadgen outputs, server logs)"
