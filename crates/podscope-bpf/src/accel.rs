//! accelerate: TCP between local pods redirected at the socket layer
//! (sockops + sk_msg on a sockhash), kept in the kernel by pins under
//! /sys/fs/bpf/podscope/accel so that it outlives the command that set it up.
//!
//! Lifetime: `enable` loads the programs, fills the maps, pins the maps and
//! the sockops cgroup link, and returns; nothing of podscope keeps running.
//! `status` reads the pinned maps; `disable` detaches the link and removes
//! the pins: new connections take the ordinary TCP path, open accelerated
//! ones stay so until they close, then the kernel frees everything. A podscope that dies halfway
//! through `enable` leaves pins that `enable` and `disable` both recognise
//! and remove (the link is pinned last: no link pin means "not complete").

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel as _, SkelBuilder as _};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle};

use crate::Error;

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/accel.skel.rs"));
}

use skel::types;

// SAFETY: generated from the C structs: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::accel_key {}
// SAFETY: as above.
unsafe impl plain::Plain for types::accel_sock_info {}
// SAFETY: as above.
unsafe impl plain::Plain for types::accel_pod_stats {}

/// Where the pins live.
pub const ACCEL_PIN_DIR: &str = "/sys/fs/bpf/podscope/accel";

const LINK_PIN: &str = "sockops_link";
/// The verdict programs, pinned for inspection (`bpftool prog show pinned`).
const MSG_PIN: &str = "accel_msg";
const SKB_PIN: &str = "accel_skb_pass";
const MAPS: [&str; 6] = [
    "accel_socks",
    "accel_socks_info",
    "accel_cgroups",
    "accel_addrs",
    "accel_pods",
    "accel_stats",
];

/// Index of the node-wide counters (bpf/accel.h ACCEL_STAT_*), with the
/// names `--status` shows.
pub const ACCEL_COUNTERS: [&str; 16] = [
    "established_seen",
    "left_alone_not_selected",
    "left_alone_peer_not_local",
    "left_alone_peer_not_selected",
    "left_alone_map_full",
    "left_alone_map_error",
    "sockets_added",
    "connections_accelerated",
    "sockets_closed",
    "messages_redirected",
    "bytes_redirected",
    "messages_passed",
    "bytes_passed",
    "left_alone_not_inet",
    "preexisting_not_accelerated",
    "left_alone_loopback",
];
const STAT_PREEXISTING: u32 = 14;

/// What `enable` is told: the selected pods and every local pod address.
#[derive(Debug, Clone, Default)]
pub struct AccelSelection {
    /// Pod-level cgroup v2 ids of the selected pods.
    pub cgroups: Vec<u64>,
    /// Every pod address of the node: (address, its pod's cgroup id, selected).
    pub addrs: Vec<(IpAddr, u64, bool)>,
    /// Sockets of the selected pods already established (not accelerated).
    pub preexisting: u64,
}

/// What `enable` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelEnabled {
    /// Programs loaded and attached now.
    Attached,
    /// Already on: the selection maps were updated in place.
    Updated,
}

/// One pod's counters (per pod-level cgroup id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccelPodStats {
    /// The pod-level cgroup id.
    pub cgroup_id: u64,
    /// Messages redirected from this pod's sockets.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages of this pod's mapped sockets that went the normal way.
    pub passed_messages: u64,
    /// Their bytes.
    pub passed_bytes: u64,
    /// Sockets of this pod added to the sockhash.
    pub sockets: u64,
    /// Connections accelerated (counted on the second end to join).
    pub accelerated: u64,
}

/// A socket in the sockhash now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelSocket {
    /// Local address and port.
    pub local: (IpAddr, u16),
    /// Remote address and port.
    pub remote: (IpAddr, u16),
    /// The selected pod-level cgroup it belongs to.
    pub cgroup_id: u64,
    /// Its peer socket is in the map too: its messages are redirected.
    pub accelerated: bool,
    /// Messages and bytes this socket sent that were redirected.
    pub messages: u64,
    /// Bytes redirected.
    pub bytes: u64,
    /// Messages and bytes that went the normal way.
    pub passed_messages: u64,
    /// Bytes passed.
    pub passed_bytes: u64,
}

/// What `status` reads from the pins.
#[derive(Debug, Clone, Default)]
pub struct AccelStatus {
    /// Node-wide counters, by [`ACCEL_COUNTERS`] name.
    pub counters: Vec<(&'static str, u64)>,
    /// Selected pod cgroup ids.
    pub selected: Vec<u64>,
    /// Per-pod counters.
    pub pods: Vec<AccelPodStats>,
    /// The sockets in the sockhash.
    pub sockets: Vec<AccelSocket>,
}

impl AccelStatus {
    /// A selected pod's counters (zero if it has none yet) and how many of
    /// its sockets are in the sockhash now.
    pub fn pod(&self, cgroup_id: u64) -> (AccelPodStats, usize) {
        let p = self
            .pods
            .iter()
            .find(|p| p.cgroup_id == cgroup_id)
            .copied()
            .unwrap_or_default();
        let now = self
            .sockets
            .iter()
            .filter(|s| s.cgroup_id == cgroup_id)
            .count();
        (p, now)
    }

    /// A counter by name (0 if unknown).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|c| c.1)
            .unwrap_or(0)
    }
}

fn pin_dir() -> PathBuf {
    PathBuf::from(ACCEL_PIN_DIR)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn addr_key(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn key_addr(b: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Whether the pins of a complete set-up exist.
pub fn accel_is_on() -> bool {
    pin_dir().join(LINK_PIN).exists()
}

fn open_map(name: &str) -> Result<MapHandle, Error> {
    MapHandle::from_pinned_path(pin_dir().join(name)).map_err(Error::runtime(format!(
        "opening the pinned map {ACCEL_PIN_DIR}/{name}"
    )))
}

/// Replaces the selection maps' contents with `sel`.
fn fill(
    cgroups: &dyn MapCore,
    addrs: &dyn MapCore,
    stats: &dyn MapCore,
    sel: &AccelSelection,
) -> Result<(), Error> {
    let want: std::collections::HashSet<u64> = sel.cgroups.iter().copied().collect();
    for k in cgroups.keys().collect::<Vec<_>>() {
        let id = u64::from_ne_bytes(k.as_slice().try_into().unwrap_or([0; 8]));
        if !want.contains(&id) {
            let _ = cgroups.delete(&k);
        }
    }
    for id in &want {
        cgroups
            .update(&id.to_ne_bytes(), &[1u8], MapFlags::ANY)
            .map_err(Error::runtime(
                "adding a selected pod's cgroup to accel_cgroups",
            ))?;
    }
    let want_addrs: std::collections::HashMap<[u8; 16], (u64, bool)> = sel
        .addrs
        .iter()
        .map(|(a, cg, s)| (addr_key(a), (*cg, *s)))
        .collect();
    for k in addrs.keys().collect::<Vec<_>>() {
        let Ok(key): Result<[u8; 16], _> = k.as_slice().try_into() else {
            continue;
        };
        if !want_addrs.contains_key(&key) {
            let _ = addrs.delete(&k);
        }
    }
    for (k, (cg, selected)) in &want_addrs {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&cg.to_ne_bytes());
        v[8..12].copy_from_slice(&u32::from(*selected).to_ne_bytes());
        addrs
            .update(k, &v, MapFlags::ANY)
            .map_err(Error::runtime("adding a pod address to accel_addrs"))?;
    }
    // A per-CPU slot written from user space: the count on CPU 0, zeros elsewhere.
    let cpus = libbpf_rs::num_possible_cpus()
        .map_err(|e| Error::runtime("counting the possible CPUs")(e))?;
    let mut per_cpu = vec![0u64.to_ne_bytes().to_vec(); cpus];
    per_cpu[0] = sel.preexisting.to_ne_bytes().to_vec();
    stats
        .update_percpu(&STAT_PREEXISTING.to_ne_bytes(), &per_cpu, MapFlags::ANY)
        .map_err(Error::runtime("writing the pre-existing socket count"))?;
    Ok(())
}

/// Turns acceleration on for `sel` (or updates the selection if it is on).
pub fn accel_enable(sel: &AccelSelection, cgroup2_root: &Path) -> Result<AccelEnabled, Error> {
    crate::sys::check_privileges()?;
    if accel_is_on() {
        let (c, a, s) = (
            open_map("accel_cgroups")?,
            open_map("accel_addrs")?,
            open_map("accel_stats")?,
        );
        fill(&c, &a, &s, sel)?;
        return Ok(AccelEnabled::Updated);
    }
    // Leftovers of an enable that did not finish: start clean.
    remove_pins()?;
    let fail = |stage: &'static str| {
        move |source: libbpf_rs::Error| Error::Load {
            probe: "accelerate",
            stage,
            source,
            log: crate::load::take_log(),
        }
    };
    crate::load::start_log_capture();
    let mut obj = MaybeUninit::uninit();
    let open = skel::AccelProbeSkelBuilder::default()
        .open(&mut obj)
        .map_err(fail("opened"))?;
    let mut skel = open.load().map_err(fail("loaded"))?;
    let socks_fd = skel.maps.accel_socks.as_fd().as_raw_fd();
    skel.progs
        .accel_msg
        .attach_sockmap(socks_fd)
        .map_err(fail("attached (sk_msg verdict on the sockhash)"))?;
    skel.progs
        .accel_skb_pass
        .attach_sockmap(socks_fd)
        .map_err(fail("attached (stream verdict on the sockhash)"))?;
    fill(
        &skel.maps.accel_cgroups,
        &skel.maps.accel_addrs,
        &skel.maps.accel_stats,
        sel,
    )?;
    std::fs::create_dir_all(pin_dir()).map_err(io(format!("creating {ACCEL_PIN_DIR}")))?;
    let dir = pin_dir();
    let maps = &mut skel.maps;
    for (name, map) in [
        ("accel_socks", &mut maps.accel_socks),
        ("accel_socks_info", &mut maps.accel_socks_info),
        ("accel_cgroups", &mut maps.accel_cgroups),
        ("accel_addrs", &mut maps.accel_addrs),
        ("accel_pods", &mut maps.accel_pods),
        ("accel_stats", &mut maps.accel_stats),
    ] {
        map.pin(dir.join(name)).map_err(fail("pinned"))?;
    }
    skel.progs
        .accel_msg
        .pin(dir.join(MSG_PIN))
        .map_err(fail("pinned"))?;
    skel.progs
        .accel_skb_pass
        .pin(dir.join(SKB_PIN))
        .map_err(fail("pinned"))?;
    let cg = std::fs::File::open(cgroup2_root).map_err(io(format!(
        "opening the cgroup v2 root {}",
        cgroup2_root.display()
    )))?;
    let mut link = skel
        .progs
        .accel_sockops
        .attach_cgroup(cg.as_raw_fd())
        .map_err(fail("attached (sockops on the cgroup v2 root)"))?;
    link.pin(dir.join(LINK_PIN)).map_err(fail("pinned"))?;
    Ok(AccelEnabled::Attached)
}

fn remove_pins() -> Result<(), Error> {
    let dir = pin_dir();
    if !dir.exists() {
        return Ok(());
    }
    for name in MAPS.iter().copied().chain([LINK_PIN, MSG_PIN, SKB_PIN]) {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(io(format!("removing {}", p.display())))?;
        }
    }
    // Anything else in there is not ours: leave it (and the directory).
    if std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
    {
        std::fs::remove_dir(&dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    Ok(())
}

/// Turns acceleration off: detaches the sockops program (no socket joins
/// any more) and removes every pin. Returns None if nothing was there, else
/// how many sockets were still in the sockhash.
///
/// Those sockets are *not* taken out: they stay accelerated until they
/// close, and the kernel frees the sockhash and the programs after the last
/// one has. Taking a socket out while a thread sleeps in `recv()` on it
/// stalled that connection on Linux 6.18.44 (tests/accelerate.rs found it:
/// no wake-up after --off; docs/accelerate.md), and traffic must not break
/// because acceleration was turned off. The verdicts stay attached too: a
/// mapped socket without the stream verdict would meet the FIONREAD bug.
pub fn accel_disable() -> Result<Option<u64>, Error> {
    let dir = pin_dir();
    if !dir.exists() {
        return Ok(None);
    }
    let link_pin = dir.join(LINK_PIN);
    if link_pin.exists() {
        let link = Link::open(&link_pin).map_err(Error::runtime(format!(
            "opening the pinned link {}",
            link_pin.display()
        )))?;
        // Detach even if someone else holds the link open.
        link.detach()
            .map_err(Error::runtime("detaching the sockops program"))?;
    }
    let mut mapped = 0;
    if dir.join("accel_socks").exists() {
        mapped = open_map("accel_socks")?.keys().count() as u64;
    }
    remove_pins()?;
    Ok(Some(mapped))
}

/// Reads what is accelerated; None when acceleration is off.
pub fn accel_status() -> Result<Option<AccelStatus>, Error> {
    if !accel_is_on() {
        return Ok(None);
    }
    let stats = open_map("accel_stats")?;
    let mut out = AccelStatus::default();
    for (i, name) in ACCEL_COUNTERS.iter().enumerate() {
        out.counters
            .push((name, crate::load::read_stat(&stats, i as u32)));
    }
    let cgroups = open_map("accel_cgroups")?;
    out.selected = cgroups
        .keys()
        .filter_map(|k| k.as_slice().try_into().ok().map(u64::from_ne_bytes))
        .collect();
    out.selected.sort_unstable();
    let pods = open_map("accel_pods")?;
    for k in pods.keys() {
        let Some(id) = k.as_slice().try_into().ok().map(u64::from_ne_bytes) else {
            continue;
        };
        let Ok(Some(v)) = pods.lookup(&k, MapFlags::ANY) else {
            continue;
        };
        let mut p = types::accel_pod_stats::default();
        if plain::copy_from_bytes(&mut p, &v).is_err() {
            continue;
        }
        out.pods.push(AccelPodStats {
            cgroup_id: id,
            messages: p.msgs,
            bytes: p.bytes,
            passed_messages: p.passed_msgs,
            passed_bytes: p.passed_bytes,
            sockets: p.sockets,
            accelerated: p.accelerated,
        });
    }
    out.pods.sort_by_key(|p| p.cgroup_id);
    let info = open_map("accel_socks_info")?;
    for k in info.keys() {
        let Ok(Some(v)) = info.lookup(&k, MapFlags::ANY) else {
            continue;
        };
        let mut key = types::accel_key::default();
        let mut s = types::accel_sock_info::default();
        if plain::copy_from_bytes(&mut key, &k).is_err()
            || plain::copy_from_bytes(&mut s, &v).is_err()
        {
            continue;
        }
        out.sockets.push(AccelSocket {
            local: (key_addr(&key.local), key.lport as u16),
            remote: (key_addr(&key.remote), key.rport as u16),
            cgroup_id: s.pod_cgroup,
            accelerated: s.accelerated != 0,
            messages: s.msgs,
            bytes: s.bytes,
            passed_messages: s.passed_msgs,
            passed_bytes: s.passed_bytes,
        });
    }
    out.sockets.sort_by_key(|s| (s.local, s.remote));
    Ok(Some(out))
}

/// Whether a kernel release carries the sockmap receive regression (commit
/// 929e30f93125, "FIONREAD 0 and lost epoll wake-ups for mapped sockets
/// without a stream verdict"): 6.6.128+, 6.12.75+, 6.18.14+ and 6.19+.
/// podscope attaches a pass-through stream verdict on every kernel, which
/// avoids it; this only names the hazard in `--status` and the docs.
pub fn fionread_regression(release: &str) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let (Some(maj), Some(min)) = (it.next(), it.next()) else {
        return false;
    };
    let patch = it.next().unwrap_or(0);
    match (maj, min) {
        (6, 6) => patch >= 128,
        (6, 12) => patch >= 75,
        (6, 18) => patch >= 14,
        (6, m) if m >= 19 => true,
        (m, _) if m >= 7 => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affected_kernels() {
        assert!(fionread_regression("6.18.44-fc-v1045"));
        assert!(fionread_regression("6.18.14"));
        assert!(!fionread_regression("6.18.13"));
        assert!(fionread_regression("6.12.75-amd64"));
        assert!(!fionread_regression("6.12.74"));
        assert!(fionread_regression("6.6.128"));
        assert!(!fionread_regression("6.6.127"));
        assert!(fionread_regression("6.19.0"));
        assert!(fionread_regression("7.0.1"));
        assert!(!fionread_regression("6.1.150"));
        assert!(!fionread_regression("5.10.0-32-amd64"));
        assert!(!fionread_regression("garbage"));
    }

    #[test]
    fn addresses_round_trip() {
        for a in ["10.88.95.3", "::1", "fd00::5"] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(key_addr(&addr_key(&ip)), ip);
        }
    }
}
