//! Process CPU time from `/proc/PID/stat` (`utime` + `stime`, fields 14 and 15, in clock
//! ticks): read for the server before and after a run, and for the load generator itself.

use anyhow::Context as _;

/// User and system CPU time of a process, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTime {
    /// `utime`.
    pub user_secs: f64,
    /// `stime` (page faults on mapped files and socket work land here).
    pub system_secs: f64,
}

impl CpuTime {
    /// user + system.
    pub fn total_secs(&self) -> f64 {
        self.user_secs + self.system_secs
    }

    /// The time spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_secs: self.user_secs - earlier.user_secs,
            system_secs: self.system_secs - earlier.system_secs,
        }
    }
}

/// `(utime, stime)` in clock ticks from the contents of a `/proc/PID/stat` file. The command
/// name (field 2, in parentheses) may itself contain spaces and `)`, so fields are counted
/// from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Result<(u64, u64), String> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| "no `)` closing the command name".to_string())?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime (15) 12.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let mut next = |name: &str| -> Result<u64, String> {
        let field = fields.next().ok_or_else(|| format!("no {name} field"))?;
        field
            .parse::<u64>()
            .map_err(|e| format!("{name} {field:?}: {e}"))
    };
    let utime = next("utime")?;
    let stime = next("stime")?;
    Ok((utime, stime))
}

/// CPU time consumed so far by process `pid` (`None`: this process).
pub fn cpu_time(pid: Option<u32>) -> anyhow::Result<CpuTime> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (utime, stime) = parse_stat_ticks(&stat)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("parsing {path}"))?;
    let per_sec = rustix::param::clock_ticks_per_second().max(1) as f64;
    Ok(CpuTime {
        user_secs: utime as f64 / per_sec,
        system_secs: stime as f64 / per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_even_when_the_name_has_spaces_and_parens() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 27 0 0 20 0 3 0 98765 123456 789 18446744073709551615\n";
        assert_eq!(parse_stat_ticks(stat), Ok((150, 27)));
    }

    #[test]
    fn malformed_stat_lines_name_what_is_missing() {
        assert!(
            parse_stat_ticks("4242 no-paren S 1")
                .unwrap_err()
                .contains("`)`")
        );
        assert!(
            parse_stat_ticks("1 (x) S 1 2 3")
                .unwrap_err()
                .contains("utime")
        );
        assert!(
            parse_stat_ticks("1 (x) S 1 2 3 4 5 6 7 8 9 10 x 1")
                .unwrap_err()
                .contains("utime \"x\"")
        );
    }

    #[test]
    fn this_process_has_a_readable_cpu_time() {
        let t = cpu_time(None).unwrap();
        assert!(t.user_secs >= 0.0 && t.system_secs >= 0.0);
        assert_eq!(t.since(&t).total_secs(), 0.0);
    }
}
