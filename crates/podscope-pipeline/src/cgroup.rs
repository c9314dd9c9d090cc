//! Turning a user's cgroup path into the cgroup v2 id the kernel filter uses,
//! on pure v2 and on hybrid (v1 controllers + unified) layouts.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where cgroup v2 is mounted: /sys/fs/cgroup on pure v2, /sys/fs/cgroup/unified on hybrid.
pub fn v2_mount() -> Result<PathBuf> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    // fields: id parent maj:min root mountpoint opts ... - fstype source superopts
    let found = info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    });
    match found {
        Some(p) => Ok(p),
        None => bail!(
            "no cgroup v2 hierarchy is mounted; podscope filters by cgroup v2 ids \
             (mount one with: mount -t cgroup2 none /sys/fs/cgroup/unified)"
        ),
    }
}

/// The cgroup v2 directory a user meant by `arg`.
pub fn resolve_dir(arg: &Path) -> Result<PathBuf> {
    let v2 = v2_mount()?;
    let candidate = if arg.starts_with(&v2) {
        arg.to_path_buf()
    } else if let Some(rest) = v1_relative(arg) {
        // A v1 controller path (/sys/fs/cgroup/cpu/kubepods/...): same path under v2.
        v2.join(rest)
    } else if arg.starts_with("/sys/fs/cgroup") {
        arg.to_path_buf()
    } else {
        let rel: PathBuf = arg
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        v2.join(rel)
    };
    if !candidate.is_dir() {
        bail!(
            "cgroup path {} does not exist (looked for {} in the cgroup v2 hierarchy at {}); \
             give a directory under {} or a path relative to it, e.g. /kubepods/besteffort",
            arg.display(),
            candidate.display(),
            v2.display(),
            v2.display()
        );
    }
    Ok(candidate)
}

/// For /sys/fs/cgroup/<controller>/rest on a hybrid layout, `rest`.
fn v1_relative(arg: &Path) -> Option<PathBuf> {
    let rest = arg.strip_prefix("/sys/fs/cgroup").ok()?;
    let mut parts = rest.components();
    let controller = parts.next()?;
    let mount = Path::new("/sys/fs/cgroup").join(controller);
    // A v1 hierarchy root has cgroup.procs; a plain directory of a pure v2 root is a cgroup itself.
    let is_v1_root = mount.join("cgroup.procs").exists()
        && std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| {
                m.lines().any(|l| {
                    l.split_whitespace().nth(4) == mount.to_str()
                        && l.split_once(" - ")
                            .is_some_and(|(_, p)| p.starts_with("cgroup "))
                })
            })
            .unwrap_or(false);
    is_v1_root.then(|| parts.as_path().to_path_buf())
}

/// The cgroup v2 id of a directory: its inode number.
pub fn id_of_dir(dir: &Path) -> Result<u64> {
    Ok(std::fs::metadata(dir)
        .with_context(|| format!("reading cgroup {}", dir.display()))?
        .ino())
}

/// Resolves a user's cgroup argument to its v2 id.
pub fn resolve(arg: &Path) -> Result<u64> {
    id_of_dir(&resolve_dir(arg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cgroup_is_a_clear_error() {
        let err = resolve(Path::new("/no-such-cgroup-podscope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("/no-such-cgroup-podscope"), "{err}");
    }

    #[test]
    fn missing_cgroup_under_sys_fs_cgroup_is_not_the_root() {
        let err = resolve(Path::new("/sys/fs/cgroup/no-such-podscope-cg"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn root_resolves_to_id_1() {
        assert_eq!(resolve(Path::new("/")).unwrap(), 1);
    }
}
