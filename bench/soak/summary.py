"""The soak's figures from a results directory (bench/results/soak-<stamp>/):
fanout.json (the load generator's report), rss.tsv (`<unix s> <VmRSS KiB>` every 10 s) and
server.log, whose `HEAP` lines (bench-shoal --heap-log) say what the allocator holds: bytes in
use by the program, and bytes it keeps free in its arenas. In use growing is a leak; free
growing while in use is flat is memory the allocator keeps (fragmentation), not a leak.

    python3 bench/soak/summary.py bench/results/soak-<stamp> [--skip 60]

The RSS window starts --skip seconds after the first sample (the sessions are open and
the first churn has begun by then) and runs to the last sample; the slope is a
least-squares fit over it. Writes soak-summary.json beside the inputs; exits 1 unless
every event reached every receiver (delivered == expected) and the RSS grew by less than
5% over the window.
"""
import json
import sys

out = sys.argv[1]
skip = float(sys.argv[sys.argv.index("--skip") + 1]) if "--skip" in sys.argv else 60.0
r = json.load(open(f"{out}/fanout.json"))
d, ch, conn = r["delivery"], r.get("churn", {}), r["connect"]
# Each row: unix s, VmRSS KiB, and (newer runs) RssAnon and RssFile KiB.
full = [tuple(map(int, line.split())) for line in open(f"{out}/rss.tsv") if len(line.split()) in (2, 4)]
rows = [r[:2] for r in full]
t0 = rows[0][0]
w = [(t, kib) for t, kib in rows if t - t0 >= skip]
n = len(w)
xs = [(t - t0) / 60 for t, _ in w]
ys = [kib for _, kib in w]
mx, my = sum(xs) / n, sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
span = xs[-1] - xs[0]
growth_pct = 100 * slope * span / my
half = n // 2
summary = {
    "clients_connected": conn["ok"],
    "window_s": d["window_s"],
    "published": d["published"],
    "expected": d["expected"],
    "delivered": d["delivered"],
    "missing": d["expected"] - d["delivered"],
    "ratio": d["ratio"],
    "latency_ms": {k: d["latency"][k] for k in ("p50_ms", "p99_ms", "max_ms") if k in d["latency"]},
    "reconnects": ch.get("reconnects"),
    "recovered": ch.get("recovered"),
    "not_recovered": (ch["reconnects"] - ch["recovered"]) if ch else None,
    # Of those, reconnections with no offset to send (no event since connecting): not
    # recoverable by the protocol, with any server.
    "not_recovered_no_offset": ch.get("no_offset"),
    "reconnect_failed": ch.get("reconnect_failed"),
    "duplicates": ch.get("duplicates"),
    "sessions_closed_early": r.get("sessions_closed_early"),
    "rss_samples": n,
    "rss_window_min": round(span, 1),
    "rss_first_mib": round(ys[0] / 1024, 1),
    "rss_last_mib": round(ys[-1] / 1024, 1),
    "rss_mean_mib": round(my / 1024, 1),
    "rss_slope_kib_per_min": round(slope, 1),
    "rss_slope_first_half_kib_per_min": None,
    "rss_slope_second_half_kib_per_min": None,
    "rss_growth_over_window_pct": round(growth_pct, 2),
    "server_cpu_pct_core": r["server"]["cpu_pct_core"],
}


def fit(pts):
    if len(pts) < 3:
        return None
    a = [x for x, _ in pts]
    b = [y for _, y in pts]
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    return round(sum((x - ma) * (y - mb) for x, y in pts) / max(1e-9, sum((x - ma) ** 2 for x in a)), 1)


pts = list(zip(xs, ys))
# Anonymous memory (the heap, stacks) apart from file pages (the binary's code as it is
# paged in): only the first can be a leak.
fw = [r for r in full if len(r) == 4 and r[0] - t0 >= skip]
if len(fw) >= 3:
    fx = [(r[0] - t0) / 60 for r in fw]
    for name, col in (("rss_anon", 2), ("rss_file", 3)):
        summary[f"{name}_first_mib"] = round(fw[0][col] / 1024, 1)
        summary[f"{name}_last_mib"] = round(fw[-1][col] / 1024, 1)
        summary[f"{name}_slope_kib_per_min"] = fit(list(zip(fx, [r[col] for r in fw])))

# The allocator's view over the same window (absent when the server did not log it).
heap = []
try:
    for line in open(f"{out}/server.log"):
        if line.startswith("HEAP "):
            f = line.split()
            kv = dict(x.split("=") for x in f[2:])
            heap.append((int(f[1]), int(kv["in_use"]), int(kv["free"]), int(kv["mmap"]), int(kv["sessions"])))
except FileNotFoundError:
    pass
hw = [h for h in heap if h[0] - t0 >= skip]
if len(hw) >= 3:
    hx = [(h[0] - t0) / 60 for h in hw]
    for name, col in (("in_use", 1), ("free", 2), ("mmap", 3)):
        ys_h = [h[col] / 1024 for h in hw]
        summary[f"heap_{name}_first_mib"] = round(ys_h[0] / 1024, 1)
        summary[f"heap_{name}_last_mib"] = round(ys_h[-1] / 1024, 1)
        summary[f"heap_{name}_slope_kib_per_min"] = fit(list(zip(hx, ys_h)))
    summary["heap_sessions_first_last"] = [hw[0][4], hw[-1][4]]
summary["rss_slope_first_half_kib_per_min"] = fit(pts[:half])
summary["rss_slope_second_half_kib_per_min"] = fit(pts[half:])
json.dump(summary, open(f"{out}/soak-summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
ok = d["delivered"] == d["expected"] and abs(growth_pct) < 5
print("soak:", "PASS" if ok else "FAIL", "(bar: every event to every receiver; RSS growth over the window under 5%)")
sys.exit(0 if ok else 1)
