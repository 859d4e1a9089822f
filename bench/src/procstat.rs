//! CPU time and memory of a process, from /proc.

use anyhow::{Context as _, anyhow};

/// Clock ticks per second of /proc/PID/stat times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in seconds (all threads).
pub fn cpu_seconds(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    parse_cpu(&text).map(|t| t as f64 / ticks)
}

/// utime + stime in ticks from a /proc/PID/stat line.
pub fn parse_cpu(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) may hold spaces and parentheses; fields
    // after the last ')' start with field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("unexpected /proc stat format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, stime 15: indices 11 and 12 after the state (field 3).
    let get = |i: usize| -> anyhow::Result<u64> {
        f.get(i).ok_or_else(|| anyhow!("short /proc stat"))?.parse::<u64>().context("bad /proc stat number")
    };
    Ok(get(11)? + get(12)?)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid}"))?;
    parse_rss(&text)
}

pub fn parse_rss(status: &str) -> anyhow::Result<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS"))?;
    let kib = line.split_whitespace().nth(1).ok_or_else(|| anyhow!("bad VmRSS line"))?;
    kib.parse().context("bad VmRSS value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "1234 (we ird) name)) S 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20 0 9 0";
        assert_eq!(parse_cpu(line).unwrap(), 267);
        assert!(parse_cpu("garbage").is_err());
        assert!(parse_cpu("1 (x) S 1 2").is_err());
    }

    #[test]
    fn rss_line() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t  12345 kB\n").unwrap(), 12345);
        assert!(parse_rss("Name: x\n").is_err());
    }

    #[test]
    fn own_process() {
        let t = clock_ticks();
        assert!(cpu_seconds(std::process::id(), t).is_ok());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
