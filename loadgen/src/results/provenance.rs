//! Where and from what a run was made: the machine, the code's git revision, and the UTC
//! times that name runs.

use std::path::Path;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    pub memory_mb: u64,
    pub cpu_model: String,
    pub kernel: String,
    /// The file system the results (and the replicas' data) were written to:
    /// `ext4 on /dev/vda1`.
    #[serde(default)]
    pub disk: String,
}

impl Machine {
    /// This machine, with the file system holding `results_dir`.
    pub fn detect(results_dir: &Path) -> Machine {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_memory(MemoryRefreshKind::nothing().with_ram())
                .with_cpu(CpuRefreshKind::nothing()),
        );
        Machine {
            // What the scheduler lets this process use (cgroups, affinity), not the host's.
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mb: sys.total_memory() / (1024 * 1024),
            cpu_model: sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .unwrap_or_default(),
            kernel: System::kernel_version().unwrap_or_default(),
            disk: disk_of(results_dir),
        }
    }
}

/// The file system holding `path`: the longest mount point that contains it.
fn disk_of(path: &Path) -> String {
    use sysinfo::{DiskRefreshKind, Disks};
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // Names only: no statvfs, which could hang on a dead network mount.
    let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing());
    disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| {
            format!(
                "{} on {}",
                d.file_system().to_string_lossy(),
                d.name().to_string_lossy()
            )
        })
        .unwrap_or_default()
}

/// The commit of the working directory (`git rev-parse`), `-dirty` when tracked files
/// changed; `None` outside a git checkout.
pub fn git_rev() -> Option<String> {
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = out(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// `2026-11-27T12:45:01Z`: RFC 3339 in UTC, to the second.
pub fn utc_seconds(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("a UTC time formats")
}

/// `20261127T124501Z`: the same, compact, for run names (which then sort by time).
pub fn utc_compact(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_are_utc_to_the_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_999);
        assert_eq!(utc_seconds(t), "2027-01-15T08:00:00Z");
        assert_eq!(utc_compact(t), "20270115T080000Z");
    }

    #[test]
    fn this_machine_is_described() {
        let m = Machine::detect(Path::new("."));
        assert!(m.cores >= 1 && m.memory_mb > 0, "{m:?}");
        assert!(!m.kernel.is_empty(), "{m:?}");
        assert!(m.disk.contains(" on "), "{m:?}");
    }
}
