//! What Linux says about a process on this machine: its CPU time and its memory, read from
//! `/proc`, for the bench's figures of the processes it runs (and of a local broker).

/// CPU time the process has used, user and system, in clock ticks of 1/100 s.
pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A memory figure of the process's `/proc/PID/status` (`VmRSS`, `VmHWM`), in MB.
pub(super) fn memory_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The process id of the local broker (`beam.smp`), if it runs on this machine.
pub(super) fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "beam.smp").then(|| e.file_name().to_string_lossy().parse().ok())?
    })
}
