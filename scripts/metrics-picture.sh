#!/usr/bin/env bash
# Remakes docs/metrics-miner-alert.png from a real run: a live agent, a miner-like exec in a
# sandbox cgroup, Debian's prometheus scraping the agent with our rules, and Prometheus' graph
# page in headless Chromium. Needs root, `scripts/setup.sh --test` and `apt-get install chromium`.
# Uses loopback ports 19477 (agent) and 19090 (prometheus).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
cgroup2=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
[ -n "$cgroup2" ] || { echo "no cgroup2 mount" >&2; exit 2; }
cgroup="$cgroup2/sandbox-research-7f3a"
out="$repo/docs/metrics-miner-alert.png"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rmdir "$cgroup" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"${PYTHON:-$repo/.venv/bin/python}" -m ebpfguard run --output "$work/events.jsonl" --metrics-addr 127.0.0.1:19477 \
  2> "$work/agent.log" &
pids+=($!)
until grep -qx ready "$work/agent.log"; do sleep 0.5; done

cat > "$work/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: ["$repo/dashboards/prometheus/ebpfguard.rules.yml"]
scrape_configs:
  - job_name: ebpfguard
    static_configs: [{targets: ["127.0.0.1:19477"]}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address=127.0.0.1:19090 --log.level=warn 2> "$work/prometheus.log" &
pids+=($!)
sleep 20  # a quiet baseline on the graph

# The miner-like exec, twice, in a sandbox cgroup (copied sleep: it rejects the arguments).
cp /bin/sleep "$work/kworker"
mkdir -p "$cgroup"
for _ in 1 2; do
  sh -c "echo \$\$ > $cgroup/cgroup.procs; exec $work/kworker -o stratum+tcp://pool.example.net:3333 \
    -u 48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD \
    --donate-level 1" 2>/dev/null || true
  sleep 25
done

grep -q "\"rule\":\"miner.exec\".*\"name\":\"${cgroup##*/}\"" "$work/events.jsonl" \
  || { echo "the agent raised no miner.exec alert in ${cgroup##*/}" >&2; exit 1; }
query() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
# One graph: the recording rule's series for the sandbox, and the alert it fired (ALERTS).
expr="ebpfguard:alerts:increase5m{sandbox=\"${cgroup##*/}\"} or ALERTS{sandbox=\"${cgroup##*/}\"}"
url="http://127.0.0.1:19090/graph?g0.expr=$(query "$expr")&g0.tab=0&g0.range_input=2m"
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 \
  --virtual-time-budget=15000 --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out"
