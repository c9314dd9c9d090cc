//! cgroup helpers: find the cgroup v2 mount, map pids and paths to cgroup v2 ids.
//!
//! A cgroup's v2 id, the value `bpf_get_current_cgroup_id()` returns, is the
//! inode number of its directory in the cgroup2 file system. That holds on
//! pure v2 nodes (`/sys/fs/cgroup`) and on hybrid ones (`/sys/fs/cgroup/unified`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One cgroup file system mount, from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/unified`.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy is the mount's root (`/` unless bind-mounted).
    pub root: String,
    /// `true` for cgroup2, `false` for a v1 hierarchy.
    pub v2: bool,
    /// v1 controllers (e.g. `cpu`, `name=systemd`); empty for cgroup2.
    pub controllers: Vec<String>,
}

impl CgroupMount {
    /// The directory of a cgroup given by its path as /proc/PID/cgroup shows it.
    pub fn dir_of(&self, cgroup_path: &str) -> PathBuf {
        let rel = if self.root != "/" {
            cgroup_path
                .strip_prefix(self.root.as_str())
                .unwrap_or(cgroup_path)
        } else {
            cgroup_path
        };
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        }
    }
}

/// Unescapes the octal escapes (`\040` for a space) mountinfo uses in paths.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses every cgroup (v1 and v2) mount out of /proc/self/mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        let fstype = fields[sep + 1];
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            fields
                .get(sep + 3)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| {
                            !matches!(
                                *o,
                                "rw" | "ro"
                                    | "nosuid"
                                    | "nodev"
                                    | "noexec"
                                    | "relatime"
                                    | "clone_children"
                                    | "xattr"
                            ) && !o.starts_with("release_agent=")
                        })
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            root: unescape_mountinfo(fields[3]),
            v2,
            controllers,
        });
    }
    mounts
}

/// Picks the cgroup2 mount: `/sys/fs/cgroup` (pure v2) first, then
/// `/sys/fs/cgroup/unified` (hybrid), then any other.
pub fn pick_cgroup2(mounts: &[CgroupMount]) -> Option<CgroupMount> {
    let v2 = || mounts.iter().filter(|m| m.v2);
    v2().find(|m| m.mount_point == Path::new("/sys/fs/cgroup"))
        .or_else(|| v2().find(|m| m.mount_point == Path::new("/sys/fs/cgroup/unified")))
        .or_else(|| v2().next())
        .cloned()
}

/// Every cgroup mount of this process's mount namespace.
pub fn cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let path = "/proc/self/mountinfo";
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_cgroup_mounts(&text))
}

/// The cgroup2 mount (pure v2 or the hybrid `unified` one).
pub fn cgroup2_mount() -> Result<CgroupMount> {
    pick_cgroup2(&cgroup_mounts()?).ok_or(Error::NoCgroup2)
}

/// A parsed /proc/PID/cgroup file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The cgroup v2 path (the `0::` line), if any.
    pub unified: Option<String>,
    /// v1 hierarchies: (controllers as listed, e.g. `cpu,cpuacct` or `name=systemd`; path).
    pub v1: Vec<(String, String)>,
}

impl ProcCgroup {
    /// The v1 path for a controller (`memory`, `name=systemd`, ...).
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(c, _)| c.split(',').any(|x| x == controller))
            .map(|(_, p)| p.as_str())
    }
}

/// Parses the text of /proc/PID/cgroup (`hierarchy-id:controllers:path` lines).
pub fn parse_proc_cgroup(text: &str) -> ProcCgroup {
    let mut out = ProcCgroup::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrl.is_empty() {
            out.unified = Some(path.to_owned());
        } else if !ctrl.is_empty() {
            out.v1.push((ctrl.to_owned(), path.to_owned()));
        }
    }
    out
}

/// Reads and parses /proc/PID/cgroup.
pub fn proc_cgroup(pid: u32) -> Result<ProcCgroup> {
    let path = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(path, e))?;
    Ok(parse_proc_cgroup(&text))
}

/// The cgroup v2 path of a process (its `0::` line).
pub fn cgroup_path_of_pid(pid: u32) -> Result<String> {
    proc_cgroup(pid)?
        .unified
        .ok_or(Error::NoCgroup2Entry { pid })
}

/// The cgroup v2 id of a cgroup directory: its inode number.
pub fn cgroup_id_of_dir(dir: &Path) -> Result<u64> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|e| Error::io(dir, e))
}

/// The cgroup v2 id of a cgroup path (as /proc/PID/cgroup shows it) under a cgroup2 mount.
pub fn cgroup_id_of_path(mount: &CgroupMount, cgroup_path: &str) -> Result<u64> {
    cgroup_id_of_dir(&mount.dir_of(cgroup_path))
}

/// The cgroup v2 id of the cgroup a process is in.
pub fn cgroup_id_of_pid(pid: u32) -> Result<u64> {
    let mount = cgroup2_mount()?;
    cgroup_id_of_path(&mount, &cgroup_path_of_pid(pid)?)
}

/// Expands a systemd-driver `cgroupsPath` (`slice:prefix:name`, as runc
/// takes it) into the cgroup path systemd creates, e.g.
/// `kubepods-besteffort-pod1_2.slice:cri-containerd:abc` becomes
/// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/cri-containerd-abc.scope`.
/// Returns `None` for anything else (cgroupfs paths start with `/`).
pub fn expand_systemd_cgroups_path(cgroups_path: &str) -> Option<String> {
    let mut parts = cgroups_path.splitn(3, ':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if slice.contains('/') || name.is_empty() {
        return None;
    }
    let mut path = expand_slice(slice)?;
    let unit = if name.ends_with(".slice") || name.ends_with(".scope") {
        name.to_owned()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push('/');
    path.push_str(&unit);
    Some(path)
}

/// Expands a systemd slice name into its path: `a-b-c.slice` is
/// `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` and the empty name are the root.
pub fn expand_slice(slice: &str) -> Option<String> {
    if slice.is_empty() || slice == "-.slice" {
        return Some(String::new());
    }
    let base = slice.strip_suffix(".slice")?;
    if base.starts_with('-') || base.ends_with('-') || base.contains("--") {
        return None;
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for (i, part) in base.split('-').enumerate() {
        if i > 0 {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Some(path)
}

/// Removes a cgroup and everything below it (bottom-up `rmdir`) in every
/// mounted hierarchy, v1 and v2. Returns the directories removed. Missing
/// directories are not an error; a directory that still holds processes is.
///
/// containerd never removes pod-level cgroups (kubelet does), so test beds
/// call this after removing a pod sandbox.
pub fn remove_cgroup_everywhere(cgroup_path: &str) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for mount in cgroup_mounts()? {
        let dir = mount.dir_of(cgroup_path);
        if dir == mount.mount_point || !dir.is_dir() {
            continue;
        }
        remove_tree(&dir, &mut removed)?;
    }
    Ok(removed)
}

fn remove_tree(dir: &Path, removed: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path(), removed)?;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {
            removed.push(dir.to_owned());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PURE_V2: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn mountinfo_hybrid() {
        let m = parse_cgroup_mounts(HYBRID);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert_eq!(m[2].controllers, vec!["name=systemd"]);
        let v2 = pick_cgroup2(&m).unwrap();
        assert_eq!(v2.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            v2.dir_of("/kubepods/besteffort/podx/abc"),
            Path::new("/sys/fs/cgroup/unified/kubepods/besteffort/podx/abc")
        );
        assert_eq!(v2.dir_of("/"), Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn mountinfo_pure_v2_with_optional_fields() {
        let m = parse_cgroup_mounts(PURE_V2);
        assert_eq!(m.len(), 1);
        let v2 = pick_cgroup2(&m).unwrap();
        assert_eq!(v2.mount_point, Path::new("/sys/fs/cgroup"));
        assert!(v2.v2);
    }

    #[test]
    fn mountinfo_prefers_sys_fs_cgroup_and_handles_roots_and_escapes() {
        let text = "\
50 22 0:40 /kubepods /host/cg\\040x rw - cgroup2 cgroup2 rw
30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        let m = parse_cgroup_mounts(text);
        assert_eq!(m[0].mount_point, Path::new("/host/cg x"));
        assert_eq!(
            m[0].dir_of("/kubepods/pod1/c"),
            Path::new("/host/cg x/pod1/c")
        );
        assert_eq!(
            pick_cgroup2(&m).unwrap().mount_point,
            Path::new("/sys/fs/cgroup")
        );
        assert!(pick_cgroup2(&parse_cgroup_mounts(HYBRID)[..2]).is_none());
    }

    #[test]
    fn proc_cgroup_hybrid_and_v2() {
        let hybrid = "\
9:name=systemd:/
4:memory:/kubepods/besteffort/pod1/abc
2:cpu,cpuacct:/kubepods/besteffort/pod1/abc
0::/kubepods/besteffort/pod1/abc
";
        let p = parse_proc_cgroup(hybrid);
        assert_eq!(p.unified.as_deref(), Some("/kubepods/besteffort/pod1/abc"));
        assert_eq!(p.v1_path("cpuacct"), Some("/kubepods/besteffort/pod1/abc"));
        assert_eq!(p.v1_path("name=systemd"), Some("/"));
        assert_eq!(p.v1_path("pids"), None);
        let v2 = parse_proc_cgroup("0::/system.slice/foo.service\n");
        assert_eq!(v2.unified.as_deref(), Some("/system.slice/foo.service"));
        assert!(v2.v1.is_empty());
        // A path with a colon stays whole.
        let odd = parse_proc_cgroup("0::/a:b\n");
        assert_eq!(odd.unified.as_deref(), Some("/a:b"));
        assert_eq!(parse_proc_cgroup("garbage\n"), ProcCgroup::default());
    }

    #[test]
    fn systemd_paths() {
        assert_eq!(
            expand_systemd_cgroups_path(
                "kubepods-besteffort-pod1234_56.slice:cri-containerd:abcdef"
            )
            .as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_56.slice/cri-containerd-abcdef.scope")
        );
        assert_eq!(
            expand_systemd_cgroups_path("kubepods-pod9.slice:crio:ff").as_deref(),
            Some("/kubepods.slice/kubepods-pod9.slice/crio-ff.scope")
        );
        assert_eq!(
            expand_systemd_cgroups_path("system.slice:docker:ff").as_deref(),
            Some("/system.slice/docker-ff.scope")
        );
        assert_eq!(
            expand_systemd_cgroups_path("/kubepods/besteffort/pod1/abc"),
            None
        );
        assert_eq!(expand_slice("-.slice").as_deref(), Some(""));
        assert_eq!(expand_slice("a--b.slice"), None);
        assert_eq!(expand_slice("nodot"), None);
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_mountinfo("a\\040b"), "a b");
        assert_eq!(unescape_mountinfo("a\\\\b"), "a\\\\b");
        assert_eq!(unescape_mountinfo("end\\04"), "end\\04");
    }
}
