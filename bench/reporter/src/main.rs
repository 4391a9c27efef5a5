//! reporter: turns one run's JSON files (`<server>__<scenario>.json`, `meta.json`) into
//! `benchmarks.md` and SVG charts, with absolute figures and the ratios shoal/peer.
//! `analysis.md` in the output folder, if present, is appended (the profiles and what
//! they say are written by a person, not generated).
//!
//! ```text
//! reporter <results-dir> <report-dir>
//! ```

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

const SERVERS: &[&str] = &["floor", "shoal", "shoal-1t", "socketioxide", "node", "node-cluster"];
const PEERS: &[&str] = &["floor", "socketioxide", "node", "node-cluster"];

fn server_desc(s: &str) -> &'static str {
    match s {
        "floor" => "the floor (bench/servers/floor): one thread, epoll, hand-made WebSocket; the cheapest server of the contract",
        "shoal" => "shoal, 2 tokio worker threads",
        "shoal-1t" => "shoal, 1 tokio worker thread",
        "socketioxide" => "socketioxide 0.18 (crates.io, defaults), hyper http1, 2 worker threads",
        "node" => "Node.js socket.io 4.8, one process",
        "node-cluster" => "Node.js socket.io 4.8, node:cluster with 2 workers, @socket.io/sticky + @socket.io/cluster-adapter",
        _ => "",
    }
}

type Runs = BTreeMap<(String, String), Value>;

fn get<'a>(runs: &'a Runs, server: &str, scenario: &str) -> Option<&'a Value> {
    runs.get(&(server.to_owned(), scenario.to_owned())).filter(|v| v.get("error").is_none())
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

/// shoal's figure over the peer's, e.g. "0.25×".
fn ratio(shoal: Option<f64>, peer: Option<f64>) -> String {
    match (shoal, peer) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn scenarios_of(runs: &Runs, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = runs.keys().map(|(_, s)| s.clone()).filter(|s| s.starts_with(prefix)).collect();
    v.sort();
    v.dedup();
    v
}

fn servers_in(runs: &Runs, scenario: &str) -> Vec<&'static str> {
    SERVERS.iter().copied().filter(|s| runs.contains_key(&(s.to_string(), scenario.to_owned()))).collect()
}

fn failed_note(runs: &Runs, server: &str, scenario: &str) -> Option<String> {
    let v = runs.get(&(server.to_owned(), scenario.to_owned()))?;
    v.get("error").and_then(Value::as_str).map(|e| format!("| {server} | run failed: {e} |\n"))
}

fn idle_section(md: &mut String, runs: &Runs) {
    for sc in scenarios_of(runs, "idle") {
        let _ = writeln!(md, "\n### {sc}: idle WebSocket sessions\n");
        md.push_str("| server | connected | connect rate (/s) | handshake p50 (ms) | handshake p99 (ms) | RSS growth (MiB) | **RSS per session (KiB)** | idle CPU (% core) |\n|---|---|---|---|---|---|---|---|\n");
        for s in servers_in(runs, &sc) {
            if let Some(n) = failed_note(runs, s, &sc) {
                md.push_str(&n);
                continue;
            }
            let Some(v) = get(runs, s, &sc) else { continue };
            let _ = writeln!(
                md,
                "| {s} | {}/{} | {} | {} | {} | {} | **{}** | {} |",
                num(f(v, &["connect", "ok"]), 0),
                num(f(v, &["connect", "attempted"]), 0),
                num(f(v, &["connect", "rate_per_s"]), 0),
                num(f(v, &["connect", "handshake", "p50_ms"]), 1),
                num(f(v, &["connect", "handshake", "p99_ms"]), 1),
                num(f(v, &["server", "rss_growth_kib"]).map(|k| k / 1024.0), 1),
                num(f(v, &["server", "rss_per_session_bytes"]).map(|b| b / 1024.0), 2),
                num(f(v, &["server", "idle_cpu_pct"]), 1),
            );
        }
        ratios(md, runs, &sc, &[("RSS per session", &["server", "rss_per_session_bytes"]), ("connect rate", &["connect", "rate_per_s"]), ("handshake p99", &["connect", "handshake", "p99_ms"])]);
    }
}

fn ratios(md: &mut String, runs: &Runs, sc: &str, metrics: &[(&str, &[&str])]) {
    let Some(sh) = get(runs, "shoal", sc) else { return };
    let peers: Vec<&str> = PEERS.iter().copied().filter(|p| get(runs, p, sc).is_some()).collect();
    if peers.is_empty() {
        return;
    }
    let _ = write!(md, "\nshoal / peer: ");
    let mut parts = Vec::new();
    for (name, path) in metrics {
        let per: Vec<String> = peers.iter().map(|p| format!("{p} {}", ratio(f(sh, path), get(runs, p, sc).and_then(|v| f(v, path))))).collect();
        parts.push(format!("{name}: {}", per.join(", ")));
    }
    let _ = writeln!(md, "{}.", parts.join("; "));
}

fn delivery_table(md: &mut String, runs: &Runs, sc: &str) {
    md.push_str("| server | delivered / expected | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | server CPU (% core) | server CPU s per 10⁶ deliveries | loadgen CPU (% core) | other processes (% core) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for s in servers_in(runs, sc) {
        if let Some(n) = failed_note(runs, s, sc) {
            md.push_str(&n);
            continue;
        }
        let Some(v) = get(runs, s, sc) else { continue };
        let _ = writeln!(
            md,
            "| {s} | {} / {} ({}%) | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(f(v, &["delivery", "delivered"]), 0),
            num(f(v, &["delivery", "expected"]), 0),
            num(f(v, &["delivery", "ratio"]).map(|r| r * 100.0), 2),
            num(f(v, &["delivery", "latency", "p50_ms"]), 1),
            num(f(v, &["delivery", "latency", "p90_ms"]), 1),
            num(f(v, &["delivery", "latency", "p99_ms"]), 1),
            num(f(v, &["delivery", "latency", "max_ms"]), 1),
            num(f(v, &["server", "cpu_pct_core"]), 0),
            num(f(v, &["server", "cpu_s_per_million"]), 1),
            num(f(v, &["loadgen", "cpu_pct_core"]), 0),
            num(f(v, &["machine", "other_pct_core"]), 0),
        );
    }
    ratios(md, runs, sc, &[("p99", &["delivery", "latency", "p99_ms"]), ("CPU per delivery", &["server", "cpu_s_per_million"])]);
}

fn echo_table(md: &mut String, runs: &Runs, sc: &str) {
    md.push_str("| server | acked / sent | acks/s | RTT p50 (ms) | RTT p90 (ms) | RTT p99 (ms) | RTT max (ms) | server CPU (% core) | loadgen CPU (% core) | other processes (% core) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for s in servers_in(runs, sc) {
        if let Some(n) = failed_note(runs, s, sc) {
            md.push_str(&n);
            continue;
        }
        let Some(v) = get(runs, s, sc) else { continue };
        let _ = writeln!(
            md,
            "| {s} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(f(v, &["echo", "acked"]), 0),
            num(f(v, &["echo", "sent"]), 0),
            num(f(v, &["echo", "acks_per_s"]), 0),
            num(f(v, &["echo", "rtt", "p50_ms"]), 2),
            num(f(v, &["echo", "rtt", "p90_ms"]), 2),
            num(f(v, &["echo", "rtt", "p99_ms"]), 2),
            num(f(v, &["echo", "rtt", "max_ms"]), 1),
            num(f(v, &["server", "cpu_pct_core"]), 0),
            num(f(v, &["loadgen", "cpu_pct_core"]), 0),
            num(f(v, &["machine", "other_pct_core"]), 0),
        );
    }
    ratios(md, runs, sc, &[("RTT p99", &["echo", "rtt", "p99_ms"]), ("server CPU", &["server", "cpu_pct_core"])]);
}

fn slow_table(md: &mut String, runs: &Runs, sc: &str) {
    md.push_str("| server | slow clients dropped by the server | normal clients: delivered | server RSS at start (MiB) | max (MiB) | at end (MiB) |\n|---|---|---|---|---|---|\n");
    for s in servers_in(runs, sc) {
        if let Some(n) = failed_note(runs, s, sc) {
            md.push_str(&n);
            continue;
        }
        let Some(v) = get(runs, s, sc) else { continue };
        let mib = |p: &[&str]| f(v, p).map(|k| k / 1024.0);
        let _ = writeln!(
            md,
            "| {s} | {} of {} | {}% | {} | {} | {} |",
            num(f(v, &["slow", "dropped_by_server"]), 0),
            num(f(v, &["slow", "clients"]), 0),
            num(f(v, &["delivery", "ratio"]).map(|r| r * 100.0), 2),
            num(mib(&["server", "rss_start_kib"]), 1),
            num(mib(&["server_rss_max_kib"]), 1),
            num(mib(&["server", "rss_end_kib"]), 1),
        );
    }
}


/// One figure of a run.
type Metric = fn(&Value) -> Option<f64>;

fn deliveries_per_cpu_s(v: &Value) -> Option<f64> {
    Some(f(v, &["delivery", "delivered"])? / f(v, &["server", "cpu_s"]).filter(|c| *c > 0.0)?)
}

fn cpu_us_per_ack(v: &Value) -> Option<f64> {
    Some(f(v, &["server", "cpu_s"])? / f(v, &["echo", "acked"]).filter(|a| *a > 0.0)? * 1e6)
}

/// The table the report opens with: every target of the issue, the figure of each server,
/// shoal over the floor, and whether shoal meets the target.
fn lead_table(md: &mut String, runs: &Runs) {
    md.push_str("\n## Targets: shoal against the floor and the peers\n\n");
    md.push_str("The floor is the cheapest server of the contract (`bench/servers/floor`); shoal/floor says how far shoal is from what this machine can do. \
CPU figures are server CPU (user + system, whole process tree) per delivery, ack or handshake, in µs.\n\n");
    md.push_str("| scenario | figure | target (shoal) | floor | shoal | socketioxide | Node | shoal/floor | met? |\n|---|---|---|---|---|---|---|---|---|\n");
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    };
    // (scenario, figure, target text, metric, digits, test(shoal, floor, socketioxide, node))
    type Test = fn(f64, Option<f64>, Option<f64>, Option<f64>) -> Option<bool>;
    let rows: &[(&str, &str, &str, Metric, usize, Test)] = &[
        ("saturation", "highest deliveries/s (100%, p99 ≤ 250 ms), server on 1 core", "≥ 1.5× socketioxide", |v| f(v, &["saturation", "deliveries_per_s"]), 0,
            // A peer with no passing step (0) gives nothing to compare against.
            |a, _, x, _| x.filter(|x| *x > 0.0).map(|x| a >= 1.5 * x)),
        ("saturation", "highest deliveries/s with ≥ 99.9% delivered, p99 ≤ 250 ms (for the record)", "–", |v| f(v, &["saturation", "deliveries_per_s_999"]), 0, |_, _, _, _| None),
        ("idle-19k", "RSS per WebSocket session (KiB)", "≤ 4 KiB", |v| f(v, &["server", "rss_per_session_bytes"]).map(|b| b / 1024.0), 2, |a, _, _, _| Some(a <= 4.0)),
        ("fanout-5kx20", "delivered (%)", "100%", |v| f(v, &["delivery", "ratio"]).map(|r| r * 100.0), 3, |a, _, _, _| Some(a >= 100.0)),
        ("fanout-5kx20", "p99 (ms)", "≤ 20 ms", |v| f(v, &["delivery", "latency", "p99_ms"]), 1, |a, _, _, _| Some(a <= 20.0)),
        ("fanout-5kx20", "CPU per delivery (µs)", "≤ 1.2× floor", |v| f(v, &["server", "cpu_s_per_million"]), 2, |a, fl, _, _| fl.map(|fl| a <= 1.2 * fl)),
        ("fanout-1kx50", "delivered (%)", "100%", |v| f(v, &["delivery", "ratio"]).map(|r| r * 100.0), 3, |a, _, _, _| Some(a >= 100.0)),
        ("fanout-1kx50", "p99 (ms)", "≤ 10 ms", |v| f(v, &["delivery", "latency", "p99_ms"]), 1, |a, _, _, _| Some(a <= 10.0)),
        ("fanout-1kx50", "CPU per delivery (µs)", "≤ 1.2× floor", |v| f(v, &["server", "cpu_s_per_million"]), 2, |a, fl, _, _| fl.map(|fl| a <= 1.2 * fl)),
        ("echo-1k", "ack RTT p99 (ms)", "≤ 1.5× floor", |v| f(v, &["echo", "rtt", "p99_ms"]), 2, |a, fl, _, _| fl.map(|fl| a <= 1.5 * fl)),
        ("echo-1k", "CPU per ack (µs)", "≤ 1.3× floor", cpu_us_per_ack, 2, |a, fl, _, _| fl.map(|fl| a <= 1.3 * fl)),
        ("connect-ws", "CPU per handshake, WebSocket (µs)", "≤ ½ socketioxide", |v| f(v, &["connect", "server_cpu_us_per_handshake"]), 1, |a, _, x, _| x.map(|x| a <= x / 2.0)),
        ("connect-upgrade", "CPU per handshake, polling + upgrade (µs)", "≤ ½ socketioxide", |v| f(v, &["connect", "server_cpu_us_per_handshake"]), 1, |a, _, x, _| x.map(|x| a <= x / 2.0)),
        ("polling-1k", "CPU per delivery (µs)", "≤ Node", |v| f(v, &["server", "cpu_s_per_million"]), 2, |a, _, _, n| n.map(|n| a <= n)),
    ];
    for (sc, figure, target, metric, d, test) in rows {
        let val = |s: &str| get(runs, s, sc).and_then(|v| metric(v));
        let (sh, fl, sx, nd) = (val("shoal"), val("floor"), val("socketioxide"), val("node"));
        if sh.is_none() && fl.is_none() && sx.is_none() && nd.is_none() {
            continue;
        }
        let met = sh.and_then(|a| test(a, fl, sx, nd));
        let _ = writeln!(md, "| {sc} | {figure} | {target} | {} | {} | {} | {} | {} | {} |", num(fl, *d), num(sh, *d), num(sx, *d), num(nd, *d), ratio(sh, fl), yes(met));
    }
    // Core scaling: deliveries per CPU-second on 1 and 2 worker threads.
    for sc in ["fanout-5kx20", "fanout-1kx50"] {
        let (Some(one), Some(two)) = (get(runs, "shoal-1t", sc).and_then(deliveries_per_cpu_s), get(runs, "shoal", sc).and_then(deliveries_per_cpu_s)) else { continue };
        let fl = get(runs, "floor", sc).and_then(deliveries_per_cpu_s);
        let _ = writeln!(
            md,
            "| {sc} | core scaling: deliveries per CPU-second, 1 thread / 2 threads | within 10% | {} | {:.0} / {:.0} | – | – | – | {} |",
            num(fl, 0), one, two, yes(Some((two / one - 1.0).abs() <= 0.10))
        );
    }
}

fn saturation_section(md: &mut String, runs: &Runs) {
    for sc in scenarios_of(runs, "saturation") {
        let p = runs.iter().find(|((_, s), _)| *s == sc).map(|(_, v)| v["params"].clone()).unwrap_or(Value::Null);
        let _ = writeln!(
            md,
            "\n### {sc}: {} clients, the rate stepped up ({} s warm-up + {} s measured per step) until delivery falls under 100% or p99 passes {} ms\n\n\
The server runs pinned to core 0 (`taskset -c 0`), the load generator to core 1, so neither waits for the other's core. The figure is the highest deliveries/s of a passing step.\n",
            p["clients"], p["warmup_s"], p["duration_s"], p["p99_limit_ms"]
        );
        md.push_str("| server | broadcasts/s | deliveries/s | delivered | p50 (ms) | p99 (ms) | max (ms) | drained after (s) | server CPU (% core) | CPU per delivery (µs) | loadgen CPU (% core) | other (% core) | pass |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for s in servers_in(runs, &sc) {
            if let Some(n) = failed_note(runs, s, &sc) {
                md.push_str(&n);
                continue;
            }
            let Some(v) = get(runs, s, &sc) else { continue };
            for st in v["steps"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    md,
                    "| {s} | {} | {} | {}% | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    num(f(st, &["rate"]), 0),
                    num(f(st, &["deliveries_per_s"]), 0),
                    num(f(st, &["ratio"]).map(|r| r * 100.0), 3),
                    num(f(st, &["latency", "p50_ms"]), 1),
                    num(f(st, &["latency", "p99_ms"]), 1),
                    num(f(st, &["latency", "max_ms"]), 1),
                    num(f(st, &["drained_s"]), 1),
                    num(f(st, &["server", "cpu_pct_core"]), 0),
                    num(f(st, &["server", "cpu_s_per_million"]), 2),
                    num(f(st, &["loadgen", "cpu_pct_core"]), 0),
                    num(f(st, &["machine", "other_pct_core"]), 0),
                    if st["pass"].as_bool().unwrap_or(false) { "yes" } else { "**no**" },
                );
            }
        }
    }
}

/// The issue's targets, checked against this run.
fn targets(md: &mut String, runs: &Runs) {
    md.push_str("\n### Earlier targets (issue 3)\n\n| target | measured | met? |\n|---|---|---|\n");
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    if let Some(v) = get(runs, "shoal", "idle-19k") {
        let kib = f(v, &["server", "rss_per_session_bytes"]).unwrap_or(f64::MAX) / 1024.0;
        let _ = writeln!(md, "| idle memory ≤ 4 KiB per WebSocket session at 19k | {kib:.2} KiB | {} |", yes(kib <= 4.0));
    }
    if let Some(v) = get(runs, "shoal", "fanout-5kx20") {
        let r = f(v, &["delivery", "ratio"]).unwrap_or(0.0);
        let p99 = f(v, &["delivery", "latency", "p99_ms"]).unwrap_or(f64::MAX);
        let cpu = f(v, &["server", "cpu_pct_core"]).unwrap_or(f64::MAX);
        let _ = writeln!(md, "| fan-out 5k × 20/s: 100% delivered | {:.3}% | {} |", r * 100.0, yes(r >= 0.99999));
        let _ = writeln!(md, "| fan-out 5k × 20/s: p99 ≤ 20 ms | {p99:.1} ms | {} |", yes(p99 <= 20.0));
        let _ = writeln!(md, "| fan-out 5k × 20/s: server CPU ≤ 40% of one core | {cpu:.0}% | {} |", yes(cpu <= 40.0));
    }
    if let (Some(a), Some(b)) = (get(runs, "shoal", "echo-1k"), get(runs, "socketioxide", "echo-1k")) {
        let (pa, pb) = (f(a, &["echo", "rtt", "p99_ms"]).unwrap_or(f64::MAX), f(b, &["echo", "rtt", "p99_ms"]).unwrap_or(0.0));
        let (ca, cb) = (f(a, &["server", "cpu_pct_core"]).unwrap_or(f64::MAX), f(b, &["server", "cpu_pct_core"]).unwrap_or(0.0));
        let _ = writeln!(md, "| echo 1k at 5k acks/s: RTT p99 ≤ socketioxide's | {pa:.2} ms vs {pb:.2} ms | {} |", yes(pa <= pb));
        let _ = writeln!(md, "| echo 1k at 5k acks/s: server CPU ≤ ½ socketioxide's | {ca:.0}% vs {cb:.0}% | {} |", yes(ca <= cb / 2.0));
    }
    let best = |s: &str| ["idle-10k", "idle-19k"].iter().filter_map(|sc| get(runs, s, sc).and_then(|v| f(v, &["connect", "rate_per_s"]))).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    if let (Some(a), Some(b)) = (get(runs, "shoal", "idle-19k").and_then(|v| f(v, &["connect", "rate_per_s"])), get(runs, "socketioxide", "idle-19k").and_then(|v| f(v, &["connect", "rate_per_s"]))) {
        let _ = writeln!(md, "| connect rate ≥ 2× socketioxide's (19k run) | {a:.0}/s vs {b:.0}/s ({:.2}×) | {} |", a / b, yes(a >= 2.0 * b));
    } else if let (Some(a), Some(b)) = (best("shoal"), best("socketioxide")) {
        let _ = writeln!(md, "| connect rate ≥ 2× socketioxide's | {a:.0}/s vs {b:.0}/s | {} |", yes(a >= 2.0 * b));
    }
    if let Some(v) = get(runs, "shoal", "slow-4") {
        let start = f(v, &["server", "rss_start_kib"]).unwrap_or(0.0) / 1024.0;
        let max = f(v, &["server_rss_max_kib"]).unwrap_or(0.0) / 1024.0;
        let dropped = f(v, &["slow", "dropped_by_server"]).unwrap_or(0.0);
        let n = f(v, &["slow", "clients"]).unwrap_or(0.0);
        let _ = writeln!(md, "| a client that stops reading is dropped, memory stays flat | {dropped:.0} of {n:.0} dropped; RSS {start:.1} → max {max:.1} MiB | {} |", yes(dropped >= n && max - start < 64.0));
    }
}

// ---- charts ------------------------------------------------------------------------------

fn color(s: &str) -> RGBColor {
    match s {
        "floor" => RGBColor(120, 120, 120),
        "shoal" => RGBColor(0, 114, 178),
        "shoal-1t" => RGBColor(86, 180, 233),
        "socketioxide" => RGBColor(230, 159, 0),
        "node" => RGBColor(0, 158, 115),
        _ => RGBColor(204, 121, 167),
    }
}

/// One bar panel: `value` for each server in `scenario`.
fn bars(area: &DrawingArea<SVGBackend, plotters::coord::Shift>, title: &str, runs: &Runs, scenario: &str, path: &[&str], scale: f64) -> Result<(), Box<dyn std::error::Error>> {
    let data: Vec<(&str, f64)> = servers_in(runs, scenario).into_iter().filter_map(|s| get(runs, s, scenario).and_then(|v| f(v, path)).map(|x| (s, x * scale))).collect();
    let max = data.iter().map(|d| d.1).fold(0.0, f64::max).max(1e-9) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..data.len().max(1) as f64, 0f64..max)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_labels(6).draw()?;
    for (i, (s, x)) in data.iter().enumerate() {
        let x0 = i as f64 + 0.15;
        chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + 0.7, *x)], color(s).filled())))?;
        chart.draw_series(std::iter::once(Text::new(format!("{x:.1}"), (x0 + 0.05, *x + max * 0.02), ("sans-serif", 12))))?;
        chart.draw_series(std::iter::once(Text::new(s.to_string(), (x0, -max * 0.06), ("sans-serif", 12))))?;
    }
    Ok(())
}

fn summary_chart(runs: &Runs, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    bars(&panels[0], "idle 19k: RSS per session (KiB, lower is better)", runs, "idle-19k", &["server", "rss_per_session_bytes"], 1.0 / 1024.0)?;
    bars(&panels[1], "idle 19k: connect rate (/s, higher is better)", runs, "idle-19k", &["connect", "rate_per_s"], 1.0)?;
    bars(&panels[2], "fan-out 5k x 20/s: p99 latency (ms, lower is better)", runs, "fanout-5kx20", &["delivery", "latency", "p99_ms"], 1.0)?;
    bars(&panels[3], "fan-out 5k x 20/s: server CPU s per 1e6 deliveries", runs, "fanout-5kx20", &["server", "cpu_s_per_million"], 1.0)?;
    root.present()?;
    Ok(())
}

fn slow_chart(runs: &Runs, scenario: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut series = Vec::new();
    for s in servers_in(runs, scenario) {
        if let Some(points) = get(runs, s, scenario).and_then(|v| v["server_series"].as_array()) {
            let pts: Vec<(f64, f64)> = points.iter().filter_map(|p| Some((p["t"].as_f64()?, p["rss_kib"].as_f64()? / 1024.0))).collect();
            series.push((s, pts));
        }
    }
    let tmax = series.iter().flat_map(|(_, p)| p.iter().map(|x| x.0)).fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("A client that stops reading: server RSS (MiB) over time (s)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..tmax, 0f64..ymax)?;
    chart.configure_mesh().draw()?;
    for (s, pts) in series {
        let c = color(s);
        chart.draw_series(LineSeries::new(pts, c.stroke_width(2)))?.label(s).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
    root.present()?;
    Ok(())
}

/// A run during which other processes on the machine used a noticeable share of the CPU
/// (the quiet wait gave up, or they took over 40% of a core in the window).
fn noisy(v: &Value) -> Option<String> {
    let before = f(v, &["machine_before", "busy_pct_core"]).unwrap_or(0.0);
    let step_other = v["steps"].as_array().into_iter().flatten().filter_map(|st| f(st, &["machine", "other_pct_core"])).fold(0.0, f64::max);
    let other = f(v, &["machine", "other_pct_core"]).unwrap_or(0.0).max(step_other);
    let idle = v["scenario"] == "idle";
    if before >= 30.0 || (!idle && other > 40.0) {
        Some(format!("machine busy {before:.0}% of a core before the run{}", if idle { String::new() } else { format!(", other processes {other:.0}% during it") }))
    } else {
        None
    }
}

fn load_runs(input: &Path) -> Result<Runs, Box<dyn std::error::Error>> {
    let mut runs = Runs::new();
    for entry in std::fs::read_dir(input)? {
        let p = entry?.path();
        let Some(name) = p.file_stem().and_then(|n| n.to_str()) else { continue };
        let Some((server, scenario)) = name.split_once("__") else { continue };
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
        runs.insert((server.to_owned(), scenario.to_owned()), v);
    }
    Ok(runs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--noisy" {
        // `reporter --noisy <results-dir>`: the runs worth repeating, "server scenario" per line.
        for ((server, scenario), v) in load_runs(Path::new(&args[2]))? {
            if noisy(&v).is_some() || v.get("error").is_some() {
                println!("{server} {scenario}");
            }
        }
        return Ok(());
    }
    if args.len() != 3 {
        eprintln!("usage: reporter <results-dir> <report-dir>");
        std::process::exit(64);
    }
    let (input, output) = (Path::new(&args[1]), Path::new(&args[2]));
    std::fs::create_dir_all(output)?;
    let meta: Value = std::fs::read_to_string(input.join("meta.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let runs = load_runs(input)?;
    if runs.is_empty() {
        return Err(format!("no <server>__<scenario>.json in {}", input.display()).into());
    }

    let mut md = String::new();
    md.push_str("# Benchmarks: shoal, socketioxide and Node.js socket.io\n\n");
    md.push_str("Generated by `bench/reporter` from the run below; every figure comes from that one run, one server at a time on the same machine. Raw JSON per run: `bench/report/raw/`.\n\n");
    let m = |k: &str| meta[k].as_str().map(str::to_owned).or_else(|| meta[k].as_f64().map(|x| x.to_string())).unwrap_or_else(|| "?".into());
    let _ = writeln!(md, "- **Command**: `{}` (from the repository root; it installs Node/npm when missing, runs `npm ci`, builds in release)", m("command"));
    let _ = writeln!(md, "- **Machine**: {} cores ({}), {} GiB RAM, {}, kernel {}; open files capped at {} per process", m("cores"), m("cpu"), m("memory_gib"), m("os"), m("kernel"), m("open_files"));
    let _ = writeln!(md, "- **Versions**: {}; Node {}; socket.io {}; socketioxide {}; shoal at commit {}", m("rustc"), m("node"), m("socket_io"), m("socketioxide"), m("shoal_commit"));
    let _ = writeln!(md, "- **Run**: {} (UTC)", m("stamp"));
    md.push_str("\nServers (all with default options, one at a time, restarted for every scenario):\n\n");
    for s in SERVERS {
        if runs.keys().any(|(sv, _)| sv == s) {
            let _ = writeln!(md, "- `{s}`: {}", server_desc(s));
        }
    }
    md.push_str("\nThe contract, on namespace `/`: `join(room)`, `broadcast(payload)` → `tick` with the payload to room `bench`, `echo(payload, ack)`. \
The load generator (`bench/loadgen`, Rust) runs the clients in worker processes of at most 2,500 clients each, from source addresses 127.0.0.2–127.0.0.254, \
answering heartbeats; a publisher client emits `broadcast` at the target rate, so every server does the same work. Payloads carry their send time \
(wall clock, µs); latency is receive time minus send time. Only messages published inside the measured window count; after it the receivers wait until \
nothing has arrived for 1 s (at most 15 s), and what has not arrived then counts as lost. Server CPU is utime+stime of the server's process tree from \
`/proc/<pid>/stat` over the measured window (and the drain); RSS is VmRSS of the tree. **This machine has 2 cores, shared by the server and the load generator**, \
so when their CPU adds up to ~200% the latencies include waiting for a core. \
The machine is also shared with other work (builds, test suites): each full-mode run first waits up to 20 s for the machine to be quiet, and the \
\"other processes\" column is the machine's busy time (from `/proc/stat`) minus server and load generator over the window.\n");

    let noisy_runs: Vec<String> = runs.iter().filter_map(|((s, sc), v)| noisy(v).map(|why| format!("`{s}` {sc} ({why})"))).collect();
    if !noisy_runs.is_empty() {
        let _ = writeln!(md, "\n**Runs disturbed by other work on the machine** (repeated once where time allowed; these figures are less trustworthy): {}.", noisy_runs.join("; "));
    }
    lead_table(&mut md, &runs);
    targets(&mut md, &runs);
    md.push_str("\n![summary](summary.svg)\n");
    md.push_str("\n## Saturation: the highest fan-out rate each server sustains on one core\n");
    saturation_section(&mut md, &runs);
    md.push_str("\n## Idle sessions\n");
    idle_section(&mut md, &runs);
    md.push_str("\n## Fan-out (one room, a publisher emits `broadcast`)\n");
    for sc in scenarios_of(&runs, "fanout") {
        let p = runs.iter().find(|((_, s), _)| *s == sc).map(|(_, v)| v["params"].clone()).unwrap_or(Value::Null);
        let _ = writeln!(md, "\n### {sc}: {} clients × {}/s, {}-byte payload, {} s measured\n", p["clients"], p["rate"], p["payload"], p["duration_s"]);
        delivery_table(&mut md, &runs, &sc);
    }
    md.push_str("\n## Echo with ack\n");
    for sc in scenarios_of(&runs, "echo") {
        let p = runs.iter().find(|((_, s), _)| *s == sc).map(|(_, v)| v["params"].clone()).unwrap_or(Value::Null);
        let _ = writeln!(md, "\n### {sc}: {} clients, {} acks/s in all\n", p["clients"], p["rate"]);
        echo_table(&mut md, &runs, &sc);
    }
    md.push_str("\n## Polling-only clients receiving broadcasts\n");
    for sc in scenarios_of(&runs, "polling") {
        let p = runs.iter().find(|((_, s), _)| *s == sc).map(|(_, v)| v["params"].clone()).unwrap_or(Value::Null);
        let _ = writeln!(md, "\n### {sc}: {} HTTP long-polling clients × {}/s\n", p["clients"], p["rate"]);
        delivery_table(&mut md, &runs, &sc);
    }
    md.push_str("\n## Core scaling: shoal on 1 and 2 worker threads\n\n| scenario | metric | 1 thread | 2 threads |\n|---|---|---|---|\n");
    for (_, sc) in runs.keys().filter(|(s, _)| s == "shoal-1t").cloned().collect::<Vec<_>>() {
        let (Some(a), Some(b)) = (get(&runs, "shoal-1t", &sc), get(&runs, "shoal", &sc)) else { continue };
        if sc.starts_with("saturation") {
            let _ = writeln!(md, "| {sc} | highest deliveries/s | {} | {} |", num(f(a, &["saturation", "deliveries_per_s"]), 0), num(f(b, &["saturation", "deliveries_per_s"]), 0));
            continue;
        }
        let metrics: &[(&str, &[&str], usize)] = if sc.starts_with("echo") {
            &[("RTT p99 (ms)", &["echo", "rtt", "p99_ms"], 2), ("server CPU (% core)", &["server", "cpu_pct_core"], 0)]
        } else {
            &[("delivered (%)", &["delivery", "ratio"], 3), ("p99 (ms)", &["delivery", "latency", "p99_ms"], 1), ("server CPU (% core)", &["server", "cpu_pct_core"], 0)]
        };
        for (name, path, d) in metrics {
            let scale = if *name == "delivered (%)" { 100.0 } else { 1.0 };
            let _ = writeln!(md, "| {sc} | {name} | {} | {} |", num(f(a, path).map(|x| x * scale), *d), num(f(b, path).map(|x| x * scale), *d));
        }
    }
    md.push_str("\n## A client that stops reading\n\n");
    for sc in scenarios_of(&runs, "slow") {
        let p = runs.iter().find(|((_, s), _)| *s == sc).map(|(_, v)| v["params"].clone()).unwrap_or(Value::Null);
        let _ = writeln!(
            md,
            "{} clients join the room with a 4 KiB receive buffer and never read again, beside {} normal clients, while the publisher sends {}/s of {} bytes for {} s. \
\"Dropped\" means the server closed the connection (the client saw the end of the stream when it read again at the end).\n",
            p["slow"], p["clients"], p["rate"], p["payload"], p["duration_s"]
        );
        slow_table(&mut md, &runs, &sc);
        let svg = format!("{sc}.svg");
        slow_chart(&runs, &sc, &output.join(&svg))?;
        let _ = writeln!(md, "\n![server RSS while clients stop reading]({svg})");
    }
    summary_chart(&runs, &output.join("summary.svg"))?;
    if let Ok(analysis) = std::fs::read_to_string(output.join("analysis.md")) {
        md.push('\n');
        md.push_str(&analysis);
    }
    std::fs::write(output.join("benchmarks.md"), md)?;
    println!("{}", output.join("benchmarks.md").display());
    Ok(())
}
