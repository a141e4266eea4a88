//! `probe`: a task that proves order and exclusion from outside, cheaply enough to drive with
//! fast traffic. While it runs it holds a lock file per resource (`flock`, shared for a
//! `shared:` resource), taken without waiting: a lock someone else holds is written down as
//! an `overlap`. A `slot:` resource takes its lock shared (so a writer of it overlaps) and one
//! of its `slots` slot files: none free is an overlap too (one holder more than the capacity). It appends `start <job> <unix ns> a<attempt> <resources…>` and `end <job>`
//! to its log and sleeps `ms` in between, so the log alone tells which jobs ran, how often,
//! in which order per resource and whether two ran at once.
//!
//! It writes files, so a worker runs it only when given `LANES_PROBE_DIR`, and only inside
//! that directory: `{"log": NAME, "ms": N, "resources": [...]}` writes `<dir>/<NAME>/log` and
//! takes `<dir>/<NAME>/<resource>.lock`.

use super::{Ctx, Permanent, TaskResult};
use crate::protocol::{resource_kind, Access};
use serde::Deserialize;
use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeArgs {
    /// The log's directory under `LANES_PROBE_DIR`: one name, no path.
    pub log: String,
    #[serde(default)]
    pub ms: u64,
    /// The resources to lock (as submitted, `shared:` and `slot:` included).
    #[serde(default)]
    pub resources: Vec<String>,
    /// The capacity of each resource held as `slot:` (1 if not given).
    #[serde(default)]
    pub slots: std::collections::HashMap<String, u32>,
}

/// A name that stays inside its directory.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn append(log: &Path, line: &str) -> std::io::Result<()> {
    // One write per line on an O_APPEND file: lines of concurrent runs never interleave.
    let mut f = OpenOptions::new().create(true).append(true).open(log)?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// Takes `flock` `mode` on `path` without waiting: the file, and whether it was free.
fn try_lock(path: &Path, mode: i32) -> std::io::Result<(File, bool)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let free = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } == 0;
    Ok((file, free))
}

/// Locks `resources` in `dir` without waiting; the names of those someone else holds.
fn lock(
    dir: &Path,
    resources: &[String],
    slots: &std::collections::HashMap<String, u32>,
) -> std::io::Result<(Vec<File>, Vec<String>)> {
    let (mut held, mut taken) = (Vec::new(), Vec::new());
    for r in resources {
        let (name, access) = resource_kind(r);
        let mode = match access {
            Access::Exclusive => libc::LOCK_EX,
            Access::Shared | Access::Slot => libc::LOCK_SH,
        };
        let (file, free) = try_lock(&dir.join(format!("{name}.lock")), mode)?;
        held.push(file);
        let mut free = free;
        if access == Access::Slot {
            let n = slots.get(name).copied().unwrap_or(1);
            let mut slot = None;
            for i in 0..n {
                let (file, ok) = try_lock(&dir.join(format!("{name}.slot{i}")), libc::LOCK_EX)?;
                if ok {
                    slot = Some(file);
                    break;
                }
            }
            free &= slot.is_some();
            held.extend(slot);
        }
        if !free {
            taken.push(name.to_owned());
        }
    }
    Ok((held, taken))
}

/// Runs the probe under `root` (the worker's `LANES_PROBE_DIR`).
pub async fn probe(root: Option<PathBuf>, ctx: Ctx, args: ProbeArgs) -> TaskResult {
    let root =
        root.ok_or_else(|| Permanent("`probe` needs the worker's LANES_PROBE_DIR".into()))?;
    if !plain(&args.log) || args.resources.iter().any(|r| !plain(r)) {
        return Err(Permanent("`probe`: log and resources must be plain names".into()).into());
    }
    let dir = root.join(&args.log);
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("log");
    let job = ctx.job_id();
    let (locks, taken) = lock(&dir, &args.resources, &args.slots)?;
    for name in taken {
        append(&log, &format!("overlap {job} {name}"))?;
    }
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    append(
        &log,
        &format!(
            "start {job} {now} a{} {}",
            ctx.attempt(),
            args.resources.join(" ")
        ),
    )?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(args.ms)) => {}
        _ = ctx.cancelled().cancelled() => return Err("canceled".into()),
    }
    append(&log, &format!("end {job}"))?;
    drop(locks);
    Ok(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_directory() {
        for ok in ["run-1", "repo:4", "a.b_c"] {
            assert!(plain(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/etc", "a b"] {
            assert!(!plain(bad), "{bad}");
        }
    }

    #[test]
    fn a_held_lock_is_seen_and_shared_locks_share() {
        let dir = std::env::temp_dir().join(format!("probe-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = Default::default();
        let (_held, taken) = lock(&dir, &["a".into(), "shared:b".into()], &none).unwrap();
        assert!(taken.is_empty());
        let (_second, taken) = lock(&dir, &["a".into(), "shared:b".into()], &none).unwrap();
        assert_eq!(taken, vec!["a".to_owned()]);
        let (_third, taken) = lock(&dir, &["b".into()], &none).unwrap();
        assert_eq!(taken, vec!["b".to_owned()]);
        // Two slots: a third holder, or a writer, overlaps.
        let two = std::collections::HashMap::from([("c".to_owned(), 2)]);
        let (_s1, taken) = lock(&dir, &["slot:c".into()], &two).unwrap();
        assert!(taken.is_empty());
        let (_s2, taken) = lock(&dir, &["slot:c".into()], &two).unwrap();
        assert!(taken.is_empty());
        let (_s3, taken) = lock(&dir, &["slot:c".into()], &two).unwrap();
        assert_eq!(taken, vec!["c".to_owned()]);
        let (_w, taken) = lock(&dir, &["c".into()], &none).unwrap();
        assert_eq!(taken, vec!["c".to_owned()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
