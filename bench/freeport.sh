# Sourced by the benchmark scripts: freeport prints a random high loopback
# port nobody listens on, outside the ephemeral range, not handed out before
# by this shell.
used=" "
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
freeport() { # a random high port nobody listens on, outside the ephemeral range, not handed out before
	local p
	while :; do
		p=$((10000 + RANDOM % 50000))
		[ "$p" -ge "$eph_lo" ] && [ "$p" -le "$eph_hi" ] && continue
		case "$used" in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			used="$used$p "
			echo "$p"
			return
		fi
	done
}
