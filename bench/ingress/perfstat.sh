#!/bin/bash
# perfstat.sh BENCH_BINARY ROW [SECONDS]: CPU time and system calls per
# request of one row's proxy (and of the backend and wrk), from perf stat
# attached for SECONDS (default 6) while the bench runs that row alone.
# Build the bench first (go build -o /tmp/bench-ingress ./bench/ingress);
# run under the lab lock. Requests = wrk's req/s x SECONDS, so the figures
# are approximate (the perf window sits inside the 14 s wrk run).
set -eu
BIN=$1 ROW=$2 T=${3:-6}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
EV=task-clock,context-switches,raw_syscalls:sys_enter
for s in read write writev recvfrom sendto epoll_wait epoll_pwait futex nanosleep sched_yield; do EV=$EV,syscalls:sys_enter_$s; done
"$BIN" -duration 14s -repeat 1 -only "$ROW" >"$OUT/bench" 2>&1 &
BP=$!
sleep 5 # start-up, the 2 s warm-up, and a little of the run
case $ROW in
uncloud-*) P=$(pgrep -f -- "^$BIN -role ingress" | head -1) ;;
nginx-*) P=$(pgrep -x nginx | paste -sd,) ;;
haproxy-*) P=$(pgrep -x haproxy | head -1) ;;
caddy-*) P=$(pgrep -x caddy | head -1) ;;
*) echo "row $ROW: no proxy to attach to" >&2; exit 1 ;;
esac
BK=$(pgrep -f -- "^$BIN -role backend" | head -1)
WK=$(pgrep -x wrk | head -1)
perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$BK" -- sleep "$T" 2>"$OUT/backend" &
perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$WK" -- sleep "$T" 2>"$OUT/wrk" &
perf stat -x, -e "$EV" -p "$P" -- sleep "$T" 2>"$OUT/proxy"
wait $BP
RPS=$(awk -v r="$ROW" '$1=="round" && $3==r {print $4}' "$OUT/bench")
echo "row $ROW: $RPS req/s; load $(cut -d' ' -f1-3 /proc/loadavg)"
for f in proxy backend wrk; do
	echo " $f:"
	awk -F, -v n="$(echo "$RPS * $T" | bc)" '$3!="" && $1>0 {
		if ($3=="task-clock") printf "  %-28s %8.2f us/request\n", $3, $1*1000/n
		else printf "  %-28s %8.3f /request\n", $3, $1/n }' "$OUT/$f"
done
