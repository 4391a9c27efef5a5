#!/usr/bin/env python3
"""Tables of bench/issue10's runs.

python3 bench/issue10/summarize.py runs DIR       # repro.sh: NAME.RATE.json
python3 bench/issue10/summarize.py syscalls DIR   # syscalls.sh: sys-NAME.RATE.{json,perf}
"""
import glob, json, os, sys

kind, d = sys.argv[1], sys.argv[2]
if kind == "runs":
    print("| server | R/s | deliveries/s offered | delivered | p50 ms | p99 ms | max ms | server CPU % core | server CPU µs/delivery | loadgen CPU % core |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    files = [f for f in glob.glob(os.path.join(d, "*.*.json")) if not os.path.basename(f).startswith(("sys-", "sat-"))]
    for f in sorted(files, key=lambda f: (os.path.basename(f).split(".")[0], float(os.path.basename(f).split(".")[1]))):
        v = json.load(open(f))
        if "delivery" not in v:
            print(f"| {f} | error: {v.get('error')} |")
            continue
        dl, l = v["delivery"], v["delivery"]["latency"]
        print(f"| {v['label']} | {v['params']['rate']:g} | {v['params']['rate'] * v['delivery']['receivers']:,.0f} | {dl['ratio'] * 100:.2f}% | {l.get('p50_ms')} | {l.get('p99_ms')} | {l.get('max_ms')} | {v['server']['cpu_pct_core']} | {v['server']['cpu_s_per_million']} | {v['loadgen']['cpu_pct_core']} |")
else:
    print("| server | R/s | server task-clock in 6 s | syscalls per delivery | sendto | writev | read+recvfrom | epoll_wait | futex | CPU µs per delivery | whole run: delivered, p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for f in sorted(glob.glob(os.path.join(d, "sys-*.perf"))):
        name, rate = os.path.basename(f)[4:-5].rsplit(".", 1)
        c = {}
        for line in open(f):
            p = line.strip().split(",")
            if len(p) > 3:
                try:
                    c[p[2]] = float(p[0])
                except ValueError:
                    c[p[2]] = 0.0
        n = float(rate) * 5000 * 6
        g = lambda *k: sum(c.get(x, 0.0) for x in k) / n
        v = json.load(open(f[:-5] + ".json"))
        if "delivery" not in v:
            print(f"| {name} | {rate} | {c.get('task-clock', 0) / 1000:.2f} s | {g('raw_syscalls:sys_enter'):.2f} | {g('syscalls:sys_enter_sendto', 'syscalls:sys_enter_write'):.3f} | | | | | | run failed: {v.get('error')} |")
            continue
        print(f"| {name} | {rate} | {c['task-clock'] / 1000:.2f} s | {g('raw_syscalls:sys_enter'):.2f} | {g('syscalls:sys_enter_sendto', 'syscalls:sys_enter_write'):.3f} | {g('syscalls:sys_enter_writev'):.3f} | {g('syscalls:sys_enter_read', 'syscalls:sys_enter_recvfrom'):.3f} | {g('syscalls:sys_enter_epoll_wait', 'syscalls:sys_enter_epoll_pwait'):.3f} | {g('syscalls:sys_enter_futex'):.3f} | {c['task-clock'] * 1000 / n:.2f} | {v['delivery']['ratio'] * 100:.2f}%, {v['delivery']['latency']['p99_ms']} |")
