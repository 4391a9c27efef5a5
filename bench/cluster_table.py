#!/usr/bin/env python3
"""Markdown tables from a bench/cluster.sh results directory (bench/results/cluster-*)."""
import json, os, sys

d = sys.argv[1]

def load(name):
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p):
        return None
    v = json.load(open(p))
    r = os.path.join(d, name + ".redis.json")
    if os.path.exists(r):
        try:
            v["_redis"] = json.load(open(r))["redis_cpu_s_whole_run"]
        except ValueError:
            pass
    return v

def pct(x):
    return f"{x * 100:.2f}%"

for pre, title in (("fanout2", "2,000 receivers"), ("fanout2s", "20 receivers")):
    if not load(f"{pre}__shoal__alone") and not load(f"{pre}__node__alone"):
        continue
    print(f"### Cross-node fan-out ({title}, 20 msg/s, 100 B, 10 s)\n")
    print("| server | layout | delivered | deliveries/s | p50 ms | p99 ms | max ms | CPU n1 | CPU n2 | CPU both, s per 10^6 | redis-server CPU s (whole run) | other load on the machine |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {}
    for kind in ("shoal", "node"):
        for lay in ("alone", "local", "split", "remote"):
            v = load(f"{pre}__{kind}__{lay}")
            if not v or "delivery" not in v:
                print(f"| {kind} | {lay} | failed: {v and v.get('error')} |"); continue
            dl, s, p = v["delivery"], v["server"], v.get("peer", {})
            both = s["cpu_s"] + p.get("cpu_s", 0)
            per_m = both / (dl["delivered"] / 1e6) if dl["delivered"] else 0
            rate = dl["delivered"] / dl["window_s"] if dl["window_s"] else 0
            if lay == "alone":
                base[kind] = dl["latency"]
            print(f"| {kind} | {lay} | {pct(dl['ratio'])} | {rate:,.0f} | {dl['latency']['p50_ms']:.2f} | {dl['latency']['p99_ms']:.2f} | {dl['latency']['max_ms']:.1f} "
                  f"| {s['cpu_pct_core']}% | {p.get('cpu_pct_core', '-')}{'%' if p else ''} | {per_m:.1f} | {v.get('_redis', '-')} | {v['machine']['other_pct_core']}% |")
    print()
    print("Redis round-trip overhead = latency(all remote) - latency(all local on 2 nodes):\n")
    print("| server | p50 local | p50 remote | overhead p50 | p99 local | p99 remote | overhead p99 |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("shoal", "node"):
        a, b = load(f"{pre}__{kind}__local"), load(f"{pre}__{kind}__remote")
        if a and b and "delivery" in a and "delivery" in b:
            la, lb = a["delivery"]["latency"], b["delivery"]["latency"]
            print(f"| {kind} | {la['p50_ms']:.2f} | {lb['p50_ms']:.2f} | {lb['p50_ms'] - la['p50_ms']:+.2f} ms | {la['p99_ms']:.2f} | {lb['p99_ms']:.2f} | {lb['p99_ms'] - la['p99_ms']:+.2f} ms |")


    print()
print("\n### Forwarding hop (shoal binary, 2 nodes, 200 clients, 1,000 echo/s in all, 10 s)\n")
print("| transport | path | acked | p50 ms | p90 ms | p99 ms | max ms | CPU n1 (owner) | CPU n2 (hop) | CPU both, ms per 1k echoes |")
print("|---|---|---|---|---|---|---|---|---|---|")
for t in ("websocket", "polling"):
    for path in ("direct", "hop"):
        v = load(f"hop__{t}__{path}")
        if not v or "echo" not in v:
            print(f"| {t} | {path} | failed: {v and v.get('error')} |"); continue
        e, s, p = v["echo"], v["server"], v.get("peer", {})
        both = s["cpu_s"] + p.get("cpu_s", 0)
        per_k = both * 1000 / (e["acked"] / 1000) if e["acked"] else 0
        print(f"| {t} | {'direct to owner n1' if path == 'direct' else 'via n2 (forwarded)'} | {e['acked']}/{e['sent']} ({pct(e['ratio'])}) | {e['rtt']['p50_ms']:.2f} | {e['rtt']['p90_ms']:.2f} | {e['rtt']['p99_ms']:.2f} | {e['rtt']['max_ms']:.1f} "
              f"| {s['cpu_s']:.2f} s ({s['cpu_pct_core']}%) | {p.get('cpu_s', 0):.2f} s ({p.get('cpu_pct_core', 0)}%) | {per_k:.1f} |")

print("\n### Churn (1,000 receivers x 20 msg/s, each drops its TCP connection every 5 s on average, back after 0.1-0.5 s, 10 s)\n")
print("| server | delivered (each event id once) | reconnects | recovered | duplicates | reconnect failures | p50 ms | p99 ms | max ms | server CPU |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in ("shoal-recovery", "shoal-redis-recovery", "shoal-cross-node", "shoal-norecovery", "node-recovery", "node-redis", "socketioxide"):
    v = load(f"churn__{name}")
    if not v or "delivery" not in v:
        print(f"| {name} | failed: {v and v.get('error')} |"); continue
    dl, c = v["delivery"], v.get("churn", {})
    print(f"| {name} | {dl['delivered']:,}/{dl['expected']:,} = {pct(dl['ratio'])} | {c.get('reconnects')} | {c.get('recovered')} | {c.get('duplicates')} | {c.get('reconnect_failed')} "
          f"| {dl['latency']['p50_ms']:.2f} | {dl['latency']['p99_ms']:.1f} | {dl['latency']['max_ms']:.0f} | {v['server']['cpu_pct_core']}%{' + ' + str(v['peer']['cpu_pct_core']) + '%' if 'peer' in v else ''} |")

rows = [(n, load(f"recovery_cost__{n}")) for n in ("off", "memory", "redis")]
if any(v for _, v in rows):
    print("\n### Cost of recovery (bench-shoal, fan-out 2,000 receivers x 20 msg/s, 10 s, no churn)\n")
    print("| recovery | delivered | p50 ms | p99 ms | server CPU | CPU s per 10^6 deliveries | Redis commands (whole run) | Redis commands per broadcast |")
    print("|---|---|---|---|---|---|---|---|")
    for n, v in rows:
        if not v or "delivery" not in v:
            print(f"| {n} | failed |"); continue
        dl, s = v["delivery"], v["server"]
        cmds, detail = 0, []
        cs = os.path.join(d, f"recovery_cost__{n}.commandstats.txt")
        if os.path.exists(cs):
            for line in open(cs):
                if line.startswith("cmdstat_"):
                    name, rest = line.strip().split(":", 1)
                    calls = int(rest.split("calls=")[1].split(",")[0])
                    if not name.startswith(("cmdstat_config", "cmdstat_info")):
                        cmds += calls
                        detail.append(f"{name[8:]} {calls}")
        # broadcasts in the whole run: warm-up + measured (the publisher's rate x time)
        pub = v["params"]["rate"] * (v["params"]["warmup_s"] + v["params"]["duration_s"])
        print(f"| {n} | {pct(dl['ratio'])} | {dl['latency']['p50_ms']:.2f} | {dl['latency']['p99_ms']:.2f} | {s['cpu_pct_core']}% | {s['cpu_s_per_million']:.1f} | {cmds} ({', '.join(detail) or '-'}) | {cmds / pub:.2f} |")
