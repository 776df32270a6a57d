//! What `/proc` says about a process the test or tool started.

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `RssAnon`, `VmHWM`); `None` if the process or
/// the field is not there.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_and_names_nothing_absent() {
        let pid = std::process::id();
        assert!(super::status_kib(pid, "VmRSS").is_some_and(|kib| kib > 0));
        assert_eq!(super::status_kib(pid, "NoSuchField"), None);
        // A prefix of a field is not the field.
        assert_eq!(super::status_kib(pid, "VmR"), None);
    }
}
