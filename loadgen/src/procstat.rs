//! The gateway process's memory and CPU time, read from /proc, so that a
//! run can report what its load cost the gateway (RSS per agent, CPU
//! seconds per session) next to the latencies it saw.

use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcSample {
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// User plus system CPU time since the process started, seconds.
    pub cpu_secs: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|e| format!("cannot read /proc/{pid}/{file}: {e}"))
    };
    let rss_kib = parse_vm_rss(&read("status")?).ok_or(format!("no VmRSS in /proc/{pid}/status"))?;
    let ticks = parse_cpu_ticks(&read("stat")?).ok_or(format!("cannot parse /proc/{pid}/stat"))?;
    Ok(ProcSample {
        rss_kib,
        cpu_secs: ticks as f64 / clock_ticks_per_sec() as f64,
    })
}

/// The kernel's clock tick for /proc times (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is what Linux reports on every architecture we run on; it only
    // stands in if sysconf fails.
    if hz > 0 { hz as u64 } else { 100 }
}

/// The `VmRSS:   1234 kB` line, in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of a `stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may hold spaces and `)`,
/// so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_lines() {
        let status = "Name:\tringway\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(4321));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let stat = "42 (ring way) S 1 42 42 0 -1 4194560 300 0 0 0 17 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0);
    }
}
