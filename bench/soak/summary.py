"""The soak's figures from a results directory (bench/results/soak-<stamp>/):
fanout.json (the load generator's report) and rss.tsv (`<unix s> <VmRSS KiB>` every 10 s).

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
rows = [tuple(map(int, line.split())) for line in open(f"{out}/rss.tsv") if len(line.split()) == 2]
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
summary["rss_slope_first_half_kib_per_min"] = fit(pts[:half])
summary["rss_slope_second_half_kib_per_min"] = fit(pts[half:])
json.dump(summary, open(f"{out}/soak-summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
ok = d["delivered"] == d["expected"] and abs(growth_pct) < 5
print("soak:", "PASS" if ok else "FAIL", "(bar: every event to every receiver; RSS growth over the window under 5%)")
sys.exit(0 if ok else 1)
