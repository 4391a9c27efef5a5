// The tables of bench/gateway.sh: its raw results -> markdown + JSON.
//
//   node gateway-table.mjs DIR OUT.md OUT.json      the report of one run of gateway.sh
//   node gateway-table.mjs --verdict RUN.json P99_LIMIT_MS RATE SECS
//                                                    "pass ..." or "FAIL: why" for one run
//
// A run passes when every client connected and stayed, every ack came back (acked == sent),
// the load generator sent at least 95% of the offered rate, and p99 <= the limit.

import { readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";

function readJson(file, fallback = null) {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return fallback;
  }
}

function verdict(run, p99Limit, rate, secs) {
  if (!run) return "FAIL: no result";
  if (run.error) return `FAIL: ${run.error}`;
  const e = run.echo ?? {};
  const why = [];
  if ((run.connect?.failed ?? 1) > 0) why.push(`${run.connect?.failed} clients failed to connect`);
  if ((run.sessions_closed_early ?? 0) > 0) why.push(`${run.sessions_closed_early} sessions closed`);
  if (!(e.sent > 0) || e.acked !== e.sent) why.push(`acked ${e.acked} of ${e.sent}`);
  const window = e.window_s ?? secs;
  if (e.sent < 0.95 * rate * window) why.push(`sent ${Math.round(e.sent / window)}/s of ${rate}/s offered`);
  const p99 = e.rtt?.p99_ms;
  if (!(p99 <= p99Limit)) why.push(`p99 ${p99} ms > ${p99Limit} ms`);
  return why.length ? `FAIL: ${why.join(", ")}` : `pass (p99 ${p99} ms, ${e.acks_per_s} acks/s)`;
}

const fmt = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? "" : Number(x).toFixed(d));
const mib = (kib) => (kib ? (kib / 1024).toFixed(0) : "");

/** One row: what a run of one server at one rate measured. */
function row(dir, file, meta) {
  const run = readJson(path.join(dir, file));
  const [server, rateText] = file.replace(/\.json$/, "").split("__");
  const rate = Number(rateText);
  const first = rate === meta.rates[0];
  const secs = first ? meta.duration_s : meta.step_duration_s;
  const e = run?.echo ?? {};
  const acked = e.acked ?? 0;
  const perK = (cpu) => (acked > 0 && cpu !== undefined ? (cpu / acked) * 1e6 : undefined); // CPU ms per 1,000 acks
  const serverCpu = run?.server?.cpu_s;
  const peerCpu = run?.peer?.cpu_s;
  const total = serverCpu === undefined ? undefined : serverCpu + (peerCpu ?? 0);
  const out = {
    server, rate, window_s: e.window_s, sent: e.sent ?? 0, acked, acks_per_s: e.acks_per_s,
    ratio: e.ratio, rtt: e.rtt ?? {},
    cpu_s: { server: serverCpu, app: peerCpu, total },
    cpu_ms_per_1k: { server: perK(serverCpu), app: peerCpu === undefined ? undefined : perK(peerCpu), total: perK(total) },
    cpu_pct_core: { server: run?.server?.cpu_pct_core, app: run?.peer?.cpu_pct_core,
      total: (run?.server?.cpu_pct_core ?? 0) + (run?.peer?.cpu_pct_core ?? 0) },
    rss_kib: { server: run?.server_rss_max_kib ?? run?.server?.rss_kib, app: run?.peer?.rss_kib },
    loadgen_cpu_pct_core: run?.loadgen?.cpu_pct_core,
    machine_other_pct_core: run?.machine?.other_pct_core,
    connect_failed: run?.connect?.failed, sessions_closed: run?.sessions_closed_early,
    errors: (run?.errors ?? []).slice(0, 5),
    verdict: verdict(run, meta.p99_limit_ms, rate, secs),
  };
  const appStats = readJson(path.join(dir, file.replace(/\.json$/, ".app-stats.json")));
  if (appStats) out.app = appStats;
  const metricsFile = path.join(dir, file.replace(/\.json$/, ".metrics.txt"));
  if (existsSync(metricsFile)) {
    const lines = readFileSync(metricsFile, "utf8").split("\n");
    const sum = (prefix) => lines.filter((l) => l.startsWith(prefix)).reduce((a, l) => a + Number(l.split(" ").pop()), 0);
    const errors = {};
    for (const l of lines) {
      const m = /^shoal_gateway_proxy_errors_total\{proxy="event",error="([a-z_]+)"\} (\d+)/.exec(l);
      if (m) errors[m[1]] = Number(m[2]);
    }
    out.proxy = { requests: sum('shoal_gateway_proxy_requests_total{proxy="event"}'), errors };
  }
  return out;
}

const LABEL = {
  gateway: "**A** shoal gateway + Node app (event proxy)",
  node: "**B** Node socket.io, ack in its handler",
  "shoal-native": "C shoal library, Rust handler",
  floor: "C floor (yardstick)",
};
const ORDER = ["gateway", "node", "shoal-native", "floor"];

function markdown(meta, rows) {
  const busy = Math.max(0, ...rows.map((r) => r.machine_other_pct_core ?? 0));
  const out = [];
  out.push("# Gateway benchmark: echo through the event proxy against a plain Node socket.io server", "");
  out.push(`Command: \`${meta.command}\` (${meta.stamp}, shoal ${meta.shoal_commit}; Node ${meta.node}, socket.io ${meta.socket_io}; ` +
    `${meta.cores} cores, ${meta.cpu}, Linux ${meta.kernel}).`, "");
  if (meta.mode !== "full") out.push("**Smoke run: proves the script works; no figure from here.**", "");
  out.push(`${meta.clients} WebSocket clients each emit \`echo\` with an ack at an even pace, ${meta.rates[0]} events/s in all; ` +
    `after ${meta.warmup_s} s of warm-up, ${meta.duration_s} s measured. Round trip: from the client's send to its ack (wall clock). ` +
    `CPU: utime + stime from \`/proc/PID/stat\` of every server-side process at the start and end of the window, per 1,000 acked events ` +
    `(ms of CPU per 1,000 events = µs per event). RSS: the server's largest sample (1/s), the app's at the end. Pinning: ${meta.pinning}. ` +
    `Every server restarted for every run.`, "");
  out.push(`"other" is the machine's busy time not spent by the server side or the load generator, in % of one core (other programs).` +
    (busy > 20 ? ` **It reached ${busy}% of a core here: busy machine, these figures are not for claims; rerun on a quiet machine.**` : ""), "");
  const head = rows.filter((r) => r.rate === meta.rates[0]).sort((a, b) => ORDER.indexOf(a.server) - ORDER.indexOf(b.server));
  out.push(`## ${meta.rates[0]} events/s, ${meta.clients} clients`, "");
  out.push("| server | acked / sent | p50 ms | p99 ms | max ms | CPU ms / 1k events (shoal + app = total) | server side, % of a core | RSS MiB (shoal / app) | other % |");
  out.push("|---|---|---|---|---|---|---|---|---|");
  for (const r of head) {
    const cpu = r.cpu_ms_per_1k.app !== undefined
      ? `${fmt(r.cpu_ms_per_1k.server)} + ${fmt(r.cpu_ms_per_1k.app)} = **${fmt(r.cpu_ms_per_1k.total)}**`
      : `**${fmt(r.cpu_ms_per_1k.total)}**`;
    const rss = r.rss_kib.app !== undefined ? `${mib(r.rss_kib.server)} / ${mib(r.rss_kib.app)}` : mib(r.rss_kib.server);
    out.push(`| ${LABEL[r.server] ?? r.server} | ${r.acked} / ${r.sent} | ${fmt(r.rtt.p50_ms, 2)} | ${fmt(r.rtt.p99_ms, 2)} | ${fmt(r.rtt.max_ms, 2)} | ${cpu} | ${fmt(r.cpu_pct_core.total)} | ${rss} | ${fmt(r.machine_other_pct_core)} |`);
  }
  out.push("", "## Stepping the rate", "");
  out.push(`Each step is a fresh run (${meta.step_duration_s} s measured); a server steps up only while the step passes: every ack back, ` +
    `at least 95% of the offered rate sent, p99 ≤ ${meta.p99_limit_ms} ms.`, "");
  out.push("| server | offered/s | acks/s | acked / sent | p50 ms | p99 ms | max ms | CPU ms / 1k | server side % core | loadgen % core | other % | verdict |");
  out.push("|---|---|---|---|---|---|---|---|---|---|---|---|");
  const all = [...rows].sort((a, b) => ORDER.indexOf(a.server) - ORDER.indexOf(b.server) || a.rate - b.rate);
  for (const r of all) {
    out.push(`| ${r.server} | ${r.rate} | ${r.acks_per_s ?? ""} | ${r.acked} / ${r.sent} | ${fmt(r.rtt.p50_ms, 2)} | ${fmt(r.rtt.p99_ms, 2)} | ${fmt(r.rtt.max_ms, 2)} | ${fmt(r.cpu_ms_per_1k.total)} | ${fmt(r.cpu_pct_core.total)} | ${fmt(r.loadgen_cpu_pct_core)} | ${fmt(r.machine_other_pct_core)} | ${r.verdict.replace(/\|/g, "/")} |`);
  }
  const gw = all.filter((r) => r.server === "gateway" && r.app);
  if (gw.length) {
    out.push("", "## The gateway's requests to the app", "");
    out.push("TCP connections the app accepted against requests it answered (pooled keep-alive: far fewer connections than requests), " +
      "requests it refused (bad signature or body; must be 0), and shoal's own `shoal_gateway_proxy_*` counters " +
      "(`queue_full`: events refused at once with an `app_overloaded` ack because their socket already had `max_queued_events` waiting).", "");
    out.push("| offered/s | app requests | app connections accepted | most open at once | refused | shoal event requests | shoal proxy errors |");
    out.push("|---|---|---|---|---|---|---|");
    for (const r of gw) {
      out.push(`| ${r.rate} | ${r.app.requests ?? ""} | ${r.app.connections ?? ""} | ${r.app.max_open ?? ""} | ${r.app.refused ?? ""} | ${r.proxy?.requests ?? ""} | ${Object.entries(r.proxy?.errors ?? {}).map(([k, v]) => `${k} ${v}`).join(", ") || 0} |`);
    }
  }
  out.push("");
  return out.join("\n");
}

const args = process.argv.slice(2);
if (args[0] === "--verdict") {
  const [, file, limit, rate, secs] = args;
  console.log(verdict(readJson(file), Number(limit), Number(rate), Number(secs)));
} else {
  const [dir, mdOut, jsonOut] = args;
  const meta = readJson(path.join(dir, "meta.json"));
  const files = readdirSync(dir).filter((f) => /^[a-z-]+__\d+\.json$/.test(f));
  const rows = files.map((f) => row(dir, f, meta));
  const md = markdown(meta, rows);
  writeFileSync(mdOut, md);
  writeFileSync(jsonOut, JSON.stringify({ meta, rows }, null, 2) + "\n");
  console.log(md);
  if (!rows.length) process.exit(1);
}
