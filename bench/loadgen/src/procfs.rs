//! What /proc says about a process tree: CPU seconds (utime + stime) and resident memory.
//! A server is measured as its process and all its descendants (node:cluster forks workers).

use std::fs;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of /proc/<pid>/stat after the command name: [0] is state (field 3).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) one process has used.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let f = stat_fields(pid)?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

pub fn self_cpu_secs() -> f64 {
    cpu_secs(std::process::id() as i32).unwrap_or(0.0)
}

/// Resident set size in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and every descendant of it.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1).and_then(|x| x.parse::<i32>().ok())) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// CPU seconds and RSS (KiB) of a whole process tree, or zeros when there is no pid.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

pub fn sample(pid: Option<i32>) -> Sample {
    let Some(pid) = pid else { return Sample::default() };
    let mut s = Sample::default();
    for p in tree(pid) {
        s.cpu_s += cpu_secs(p).unwrap_or(0.0);
        s.rss_kib += rss_kib(p).unwrap_or(0);
    }
    s
}

/// Busy and total jiffies of the whole machine (first line of /proc/stat).
pub fn machine_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The machine's cores: the `cpuN` lines of /proc/stat, which `machine_ticks` sums over.
/// Not `available_parallelism`, which is 1 when the load generator runs under `taskset -c 1`.
pub fn cores() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let n = text.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    if n > 0 {
        n as f64
    } else {
        std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
    }
}

/// The machine's busy time between two `machine_ticks`, in % of one core.
pub fn busy_pct_core(a: (u64, u64), b: (u64, u64)) -> f64 {
    let (busy, total) = (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1));
    if total == 0 {
        return 0.0;
    }
    (busy as f64 / total as f64 * cores() * 1000.0).round() / 10.0
}
