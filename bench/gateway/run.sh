#!/usr/bin/env bash
# pedal's API gateway as a reverse proxy, beside direct calls, nginx and Caddy,
# all in front of the same upstream (bench/gateway/upstream) on this machine,
# one after the other, interleaved. Not run in CI.
#
#   bench/gateway/run.sh [rounds]        (default 3)
#
# Environment: DURATION (wrk, default 15s), CONNS (default 64), THREADS (default 2),
# RATE (fixed-rate latency run, requests/s, default 3000; 0 skips it),
# OL_DURATION (default 10s), LEAN=1 (also a pedal without span sampling and access log),
# PEDAL_BIN (a pedal binary built before, instead of building ./cmd/pedal),
# PROFILE=1 (a 10 s CPU profile of pedal under wrk at the end).
#
# Logging, as each proxy does by default or as its docs recommend: pedal writes one
# JSON access-log line per request to its stdout, redirected to a file in the temp dir;
# nginx writes its access log to a file with buffer=64k; Caddy logs no access (its default).
# The load generator shares the two cores with the proxy and the upstream.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=${1:-3}
duration=${DURATION:-15s}
conns=${CONNS:-64}
threads=${THREADS:-2}
rate=${RATE:-3000}
ol_duration=${OL_DURATION:-10s}

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v caddy >/dev/null || need+=(caddy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
		# The packages may start system services; this benchmark runs its own.
		if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; service caddy stop >/dev/null 2>&1 || true; fi
	else
		echo "missing: ${need[*]} (run as root, or apt-get install -y ${need[*]})" >&2
		exit 1
	fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

tmp=$(mktemp -d /tmp/gwbench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

echo "== build"
if [ -n "${PEDAL_BIN:-}" ]; then cp "$PEDAL_BIN" "$tmp/pedal"; else (cd "$root" && go build -o "$tmp/pedal" ./cmd/pedal); fi
(cd "$root" && go build -o "$tmp/upstream" ./bench/gateway/upstream &&
	go build -o "$tmp/openloop" ./bench/gateway/openloop)

. "$root/bench/freeport.sh"
waitport() { # port name
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "$2 did not start on port $1" >&2
	exit 1
}

UP=$(freeport); PEDAL=$(freeport); NGX=$(freeport); CADDY=$(freeport); DEBUG=$(freeport)

echo "== upstream on 127.0.0.1:$UP"
"$tmp/upstream" -addr "127.0.0.1:$UP" &
pids+=($!)
up_pid=$!
waitport "$UP" upstream

echo "== pedal serve on 127.0.0.1:$PEDAL (access log: $tmp/pedal.log)"
mkdir "$tmp/pd"
"$tmp/pedal" serve --data-dir "$tmp/pd" --http-addr "127.0.0.1:$PEDAL" --debug-addr "127.0.0.1:$DEBUG" >"$tmp/pedal.log" 2>&1 &
pids+=($!)
pedal_pid=$!
for _ in $(seq 300); do grep -q '"pedal serving"' "$tmp/pedal.log" 2>/dev/null && break; sleep 0.1; done
grep -q '"pedal serving"' "$tmp/pedal.log" || { echo "pedal did not start" >&2; tail "$tmp/pedal.log" >&2; exit 1; }
TOKEN=$("$tmp/pedal" token --data-dir "$tmp/pd" --sub bench --role admin)
setup_routes() { # port data-dir
	local tok
	tok=$("$tmp/pedal" token --data-dir "$2" --sub bench --role admin)
	admin() { curl -sf -X PUT -H "Authorization: Bearer $tok" "http://127.0.0.1:$1/v1/admin/$2" -d "$3" >/dev/null; }
	admin "$1" clusters/up '{"endpoints": ["http://127.0.0.1:'"$UP"'"], "max_concurrency": 100000}'
	admin "$1" routes/up '{"path_pattern": "GET /up/", "target_cluster": "up", "auth": "public", "max_concurrency": 100000}'
	admin "$1" routes/upa '{"path_pattern": "GET /upa/", "target_cluster": "up", "auth": "authenticated", "max_concurrency": 100000}'
	for _ in $(seq 50); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/up/x")" = 200 ] &&
			[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" "http://127.0.0.1:$1/upa/x")" = 200 ] && break
		sleep 0.1
	done
}
setup_routes "$PEDAL" "$tmp/pd"

targets=(direct pedal pedal-auth nginx caddy)
if [ "${LEAN:-0}" = 1 ]; then
	# A second pedal without per-request work that is not proxying: spans not sampled
	# (OTEL_TRACES_SAMPLER=always_off) and no access log (--log-level warn).
	LEANP=$(freeport)
	echo "== pedal serve, lean (always_off sampler, --log-level warn), on 127.0.0.1:$LEANP"
	mkdir "$tmp/pd2"
	OTEL_TRACES_SAMPLER=always_off "$tmp/pedal" serve --data-dir "$tmp/pd2" --http-addr "127.0.0.1:$LEANP" --log-level warn >"$tmp/pedal-lean.log" 2>&1 &
	pids+=($!)
	lean_pid=$!
	waitport "$LEANP" pedal-lean
	setup_routes "$LEANP" "$tmp/pd2"
	targets+=(pedal-lean)
fi

echo "== nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGX"
mkdir -p "$tmp/nginx/logs" "$tmp/nginx/tmp"
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 4096; }
http {
    access_log $tmp/nginx/logs/access.log combined buffer=64k flush=1s;
    client_body_temp_path $tmp/nginx/tmp/body;
    proxy_temp_path $tmp/nginx/tmp/proxy;
    fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
    uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
    scgi_temp_path $tmp/nginx/tmp/scgi;
    keepalive_requests 100000;
    upstream up {
        server 127.0.0.1:$UP;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGX;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"$NGINX" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" &
pids+=($!)
nginx_pid=$!
waitport "$NGX" nginx

echo "== caddy $(caddy version | cut -d" " -f1) on 127.0.0.1:$CADDY"
mkdir -p "$tmp/caddy"
cat >"$tmp/caddy/Caddyfile" <<EOF
{
	admin off
	auto_https off
	storage file_system $tmp/caddy/data
}
http://127.0.0.1:$CADDY {
	reverse_proxy 127.0.0.1:$UP
}
EOF
HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" \
	caddy run --config "$tmp/caddy/Caddyfile" --adapter caddyfile >"$tmp/caddy/caddy.log" 2>&1 &
pids+=($!)
caddy_pid=$!
waitport "$CADDY" caddy

url() {
	case $1 in
	direct) echo "http://127.0.0.1:$UP/up/x" ;;
	pedal) echo "http://127.0.0.1:$PEDAL/up/x" ;;
	pedal-auth) echo "http://127.0.0.1:$PEDAL/upa/x" ;;
	nginx) echo "http://127.0.0.1:$NGX/up/x" ;;
	caddy) echo "http://127.0.0.1:$CADDY/up/x" ;;
	pedal-lean) echo "http://127.0.0.1:$LEANP/up/x" ;;
	esac
}
proxypid() {
	case $1 in
	direct) echo "" ;;
	pedal | pedal-auth) echo "$pedal_pid" ;;
	nginx) echo "$nginx_pid" ;;
	caddy) echo "$caddy_pid" ;;
	pedal-lean) echo "$lean_pid" ;;
	esac
}
cputicks() { # CPU ticks (user + system) of the processes given and of their children
	local sum=0 p
	for p in "$@"; do
		# cat, not awk on the files: a process may exit between the glob and the read
		sum=$((sum + $(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$p" '$1 == p || $4 == p { s += $14 + $15 } END { print s + 0 }')))
	done
	echo "$sum"
}
tck=$(getconf CLK_TCK)
hdr() { if [ "$1" = pedal-auth ]; then echo "Authorization: Bearer $TOKEN"; else echo "X-Bench: 1"; fi; }
for t in "${targets[@]}"; do
	body=$(curl -sf -H "$(hdr "$t")" "$(url "$t")") || { echo "$t does not answer 200" >&2; exit 1; }
	[ ${#body} = 63 ] || { echo "$t: unexpected body" >&2; exit 1; }
done

ms() { # wrk latency ("812.00us", "1.20ms", "1.01s") in ms
	awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
results="$tmp/results"
: >"$results"
echo "== $rounds rounds, interleaved (each round starts one target later): wrk -t$threads -c$conns -d$duration --latency; then openloop -rate $rate -duration $ol_duration -conns $conns"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
	# Each round starts one target later, so that no target always follows the same one.
	nt=${#targets[@]}
	for i in $(seq 0 $((nt - 1))); do
		t=${targets[$(((i + r - 1) % nt))]}
		pp=$(proxypid "$t")
		c0=$(cputicks $pp); u0=$(cputicks "$up_pid")
		out=$(wrk -t"$threads" -c"$conns" -d"$duration" --latency -H "$(hdr "$t")" "$(url "$t")")
		c1=$(cputicks $pp); u1=$(cputicks "$up_pid")
		rps=$(echo "$out" | awk '/^Requests\/sec/ { printf "%.0f", $2 }')
		reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
		# CPU time per request of the proxy and of the upstream, in microseconds
		pcpu=$(awk -v c="$((c1 - c0))" -v n="$reqs" -v t="$tck" 'BEGIN { printf "%.1f", c / t * 1e6 / n }')
		ucpu=$(awk -v c="$((u1 - u0))" -v n="$reqs" -v t="$tck" 'BEGIN { printf "%.1f", c / t * 1e6 / n }')
		p50=$(ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
		p99=$(ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
		bad=$(echo "$out" | awk '/Non-2xx|Socket errors/ { print }' | tr -s ' ' | tr '\n' ';')
		ol="- - -"
		if [ "$rate" != 0 ]; then
			o=$("$tmp/openloop" -url "$(url "$t")" -H "$(hdr "$t")" -rate "$rate" -duration "$ol_duration" -conns "$conns")
			ol=$(echo "$o" | tr ' ' '\n' | awk -F= '/^p50=|^p99=|^errors=/ { sub(/ms$/, "", $2); printf "%s ", $2 }')
		fi
		echo "$r $t $rps $p50 $p99 $ol $pcpu $ucpu" >>"$results"
		printf 'round %s %-10s wrk: %7s req/s  p50 %7s ms  p99 %8s ms  CPU/req proxy %6s µs upstream %5s µs %s| openloop %s/s: errors p50 p99 = %s\n' \
			"$r" "$t" "$rps" "$p50" "$p99" "$pcpu" "$ucpu" "$bad" "$rate" "$ol"
	done
done

echo
echo "== summary (min–max over $rounds rounds; added = target minus direct, medians of rounds)"
awk -v rate="$rate" '
function lo(t, k) { return mn[t, k] } function hi(t, k) { return mx[t, k] }
{
	t = $2; n[t]++
	v["rps"] = $3; v["p50"] = $4; v["p99"] = $5; v["olp50"] = $7; v["olp99"] = $8; v["pcpu"] = $9
	for (k in v) {
		if (n[t] == 1 || v[k] < mn[t, k]) mn[t, k] = v[k]
		if (n[t] == 1 || v[k] > mx[t, k]) mx[t, k] = v[k]
		all[t, k, n[t]] = v[k]
	}
}
function med(t, k,   a, i, j, m, x) {
	m = n[t]; for (i = 1; i <= m; i++) a[i] = all[t, k, i]
	for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
	return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
	printf "| target | wrk req/s | wrk p50 ms | wrk p99 ms | at %d/s: p50 ms | p99 ms | added p50 / p99 at %d/s (ms) | req/s ÷ nginx | req/s ÷ caddy | proxy CPU µs/req |\n", rate, rate
	print "|---|---|---|---|---|---|---|---|---|---|"
	no = split("direct pedal pedal-auth pedal-lean nginx caddy", order, " ")
	for (i = 1; i <= no; i++) {
		t = order[i]
		if (!n[t]) continue
		printf "| %s | %d–%d | %.2f–%.2f | %.2f–%.2f | %.3f–%.3f | %.3f–%.3f | %.3f / %.3f | %.2f | %.2f | %.0f–%.0f |\n", t,
			lo(t, "rps"), hi(t, "rps"), lo(t, "p50"), hi(t, "p50"), lo(t, "p99"), hi(t, "p99"),
			lo(t, "olp50"), hi(t, "olp50"), lo(t, "olp99"), hi(t, "olp99"),
			med(t, "olp50") - med("direct", "olp50"), med(t, "olp99") - med("direct", "olp99"),
			med(t, "rps") / med("nginx", "rps"), med(t, "rps") / med("caddy", "rps"), lo(t, "pcpu"), hi(t, "pcpu")
	}
}' "$results"
echo "(ratios: medians of the rounds' wrk req/s)"

if [ "${PROFILE:-0}" = 1 ]; then
	echo
	echo "== pedal CPU profile, 10 s under wrk -t$threads -c$conns (public route)"
	wrk -t"$threads" -c"$conns" -d14s "$(url pedal)" >/dev/null &
	wp=$!
	sleep 2
	curl -s -o "$tmp/cpu.pprof" "http://127.0.0.1:$DEBUG/debug/pprof/profile?seconds=10"
	wait "$wp" || true
	(cd "$root" && go tool pprof -top -nodecount=40 "$tmp/pedal" "$tmp/cpu.pprof" 2>/dev/null | head -50)
	(cd "$root" && go tool pprof -top -cum -nodecount=60 "$tmp/pedal" "$tmp/cpu.pprof" 2>/dev/null | head -70)
	cp "$tmp/cpu.pprof" /tmp/gateway-cpu.pprof && echo "(profile kept in /tmp/gateway-cpu.pprof)"
fi
