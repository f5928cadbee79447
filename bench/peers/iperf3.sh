#!/usr/bin/env bash
# Measures raw TCP throughput over loopback (127.0.0.1) with iperf3, as a ceiling for
# the all-reduce benchmarks: one stream with iperf3's default 128 KiB writes, then one
# stream with 1 MiB writes. Each run gets its own one-off server (-s -1) on a free port.
#
#   bash bench/peers/iperf3.sh [DURATION_S=10]
#
# Prints the received rate in Gbit/s (1e9 bits/s) and in GB/s (1e9 bytes/s, the unit of
# busbw). Every iperf3 process is bounded by timeout(1), and on exit this script stops
# only the server it started.
set -euo pipefail

DURATION_S=${1:-10}
PYTHON=/usr/bin/python3

if ! [[ $DURATION_S =~ ^[1-9][0-9]*$ ]]; then
  echo "iperf3.sh: invalid duration '$DURATION_S': use a whole number of seconds, such as 10" >&2
  exit 2
fi
if ! command -v iperf3 >/dev/null; then
  echo "iperf3.sh: iperf3 not found: install it with bench/peers/setup.sh" >&2
  exit 127
fi

WORK_DIR=$(mktemp -d -t iperf3.XXXXXX)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a one-off server on 127.0.0.1 and waits until it listens.
start_server() {
  local port=$1 log=$2
  timeout $((DURATION_S + 30)) iperf3 -s -1 -B 127.0.0.1 -p "$port" --forceflush >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 50); do
    if grep -q "Server listening" "$log"; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "iperf3.sh: the iperf3 server on 127.0.0.1:$port did not start; its output:" >&2
  cat "$log" >&2
  return 1
}

# Prints the received rate and CPU use of a client's JSON report.
print_rate() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import json
import sys

path, label = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        report = json.load(f)
except ValueError:
    sys.exit("iperf3.sh: the iperf3 client wrote no valid JSON report")
if "error" in report:
    sys.exit(f"iperf3.sh: iperf3 client failed: {report['error']}")
end = report["end"]
gbits = end["sum_received"]["bits_per_second"] / 1e9
cpu = end["cpu_utilization_percent"]
print(f"{label}: {gbits:.1f} Gbit/s = {gbits / 8:.2f} GB/s received "
      f"(client CPU {cpu['host_total']:.0f}%, server CPU {cpu['remote_total']:.0f}%)")
EOF
}

echo "iperf3 $(iperf3 --version | head -n 1 | cut -d' ' -f2), TCP over 127.0.0.1, 1 stream, ${DURATION_S} s per run"
for LENGTH in 128K 1M; do
  PORT=$(free_port)
  start_server "$PORT" "$WORK_DIR/server_$LENGTH.log"
  CLIENT_STATUS=0
  timeout $((DURATION_S + 20)) iperf3 -c 127.0.0.1 -B 127.0.0.1 -p "$PORT" -t "$DURATION_S" -l "$LENGTH" -J \
    >"$WORK_DIR/client_$LENGTH.json" || CLIENT_STATUS=$?
  if ((CLIENT_STATUS == 124)); then
    echo "iperf3.sh: the iperf3 client timed out after $((DURATION_S + 20)) s" >&2
    exit 124
  fi
  if ((CLIENT_STATUS == 0)); then
    wait "$SERVER_PID"
    SERVER_PID=
  fi
  if [[ $LENGTH == 128K ]]; then
    LABEL="128 KiB writes"
  else
    LABEL="1 MiB writes"
  fi
  print_rate "$WORK_DIR/client_$LENGTH.json" "$LABEL"
  if ((CLIENT_STATUS != 0)); then
    echo "iperf3.sh: the iperf3 client exited with status $CLIENT_STATUS" >&2
    exit "$CLIENT_STATUS"
  fi
done
