#!/usr/bin/env bash
# Throughput and the server's own CPU time per request, for several
# wasm-host servers side by side; robust to other load on the machine,
# which moves req/s far more than CPU per request.
#
# usage: bench/cpu-per-request.sh ROUNDS SECS "LABEL|BIN|WASM|ARGS" ...
# e.g.   bench/cpu-per-request.sh 4 5 \
#          "0.2|target/release/wasm-host|hello.wasm|" \
#          "0.3|target/release/wasm-host|hello-p3.wasm|--instance-uses 128"
# Starts every server (`serve WASM --listen 127.0.0.1:0 --no-watch ARGS`),
# then runs `wrk -t1 -c16 -dSECS` against each in turn, ROUNDS times in
# alternating order, and prints per round: µs of CPU (user+sys from
# /proc/PID/stat) per completed request, and req/s.
set -u
rounds=$1; secs=$2; shift 2
labels=(); addrs=(); pids=(); dirs=()
tck=$(getconf CLK_TCK)
for spec in "$@"; do
  IFS='|' read -r label bin wasm args <<< "$spec"
  dir=$(mktemp -d)
  $bin serve $wasm --listen 127.0.0.1:0 --no-watch --control $dir/c.sock --cache-dir $dir/cache --data-dir $dir/data --log-dir $dir/logs $args 2> $dir/err &
  pids+=($!); dirs+=($dir); labels+=("$label")
done
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for i in "${!labels[@]}"; do
  for t in $(seq 1 300); do grep -q "listening on" ${dirs[$i]}/err && break; sleep 0.1; done
  addrs+=($(grep -o "listening on http://[0-9.:]*" ${dirs[$i]}/err | head -1 | sed 's/listening on http:\/\///'))
  wrk -t1 -c16 -d1s http://${addrs[$i]}/ > /dev/null
done
declare -A res
n=${#labels[@]}
for r in $(seq 1 $rounds); do
  order=$(seq 0 $((n-1))); [ $((r % 2)) -eq 0 ] && order=$(seq $((n-1)) -1 0)
  for i in $order; do
    before=$(cpu ${pids[$i]})
    out=$(wrk -t1 -c16 -d${secs}s http://${addrs[$i]}/)
    after=$(cpu ${pids[$i]})
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}')
    us=$(awk -v a=$after -v b=$before -v t=$tck -v n=$reqs 'BEGIN {printf "%.1f", (a-b)/t*1e6/n}')
    res[$i]="${res[$i]:-} ${us}us/${rps}rps"
  done
done
for i in "${!labels[@]}"; do echo "${labels[$i]}:${res[$i]}"; kill ${pids[$i]}; done
wait 2>/dev/null
rm -rf "${dirs[@]}"
