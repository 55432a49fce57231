//! Server CPU time from `/proc`: `utime + stime` of a process and of every
//! process descended from it (nginx's workers, a Node cluster's children),
//! summed over all their threads (the kernel's per-process figure already
//! is). Sampled at the two ends of a phase, it gives the server's CPU per
//! delivery: a figure that depends far less on how fast the machine is this
//! minute than deliveries per second do.

use std::collections::HashMap;

/// `/proc/PID/stat` counts in clock ticks of `USER_HZ`, which Linux fixes at
/// 100 for user space on every architecture it ships (`CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// The processes of a server under test: a root pid and its descendants,
/// looked up anew at each sample (workers may be respawned).
#[derive(Debug, Clone, Copy)]
pub struct ServerProcesses {
    pub root: u32,
}

impl ServerProcesses {
    /// CPU seconds (user + system) the root and its living descendants have
    /// used so far; `None` if the root is gone or `/proc` is unreadable.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let mut parent_of = HashMap::new();
        let mut ticks = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((ppid, used)) = parse_stat(&stat) {
                parent_of.insert(pid, ppid);
                ticks.insert(pid, used);
            }
        }
        let root_ticks = *ticks.get(&self.root)?;
        let mut total = root_ticks;
        for (&pid, &used) in &ticks {
            if pid != self.root && descends_from(pid, self.root, &parent_of) {
                total += used;
            }
        }
        Some(total as f64 / TICKS_PER_SEC)
    }
}

/// `(ppid, utime + stime)` from the text of `/proc/PID/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn descends_from(mut pid: u32, root: u32, parent_of: &HashMap<u32, u32>) -> bool {
    for _ in 0..64 {
        match parent_of.get(&pid) {
            Some(&parent) if parent == root => return true,
            Some(&parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let stat = "1234 (nginx: worker (x)) S 1200 1200 1200 0 -1 4194560 10 0 0 0 250 75 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(stat), Some((1200, 325)));
    }

    #[test]
    fn finds_descendants() {
        let parents = HashMap::from([(10, 1), (11, 10), (12, 11), (20, 1)]);
        assert!(descends_from(12, 10, &parents));
        assert!(!descends_from(20, 10, &parents));
    }

    #[test]
    fn reads_this_process() {
        let me = ServerProcesses {
            root: std::process::id(),
        };
        assert!(me.cpu_seconds().is_some());
    }
}
