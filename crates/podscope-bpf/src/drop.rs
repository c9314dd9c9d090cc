//! drop probe: packets the kernel dropped (skb:kfree_skb), with the reason
//! named from the running kernel's BTF, the freeing location named from
//! /proc/kallsyms, the pod found in the kernel, and the flow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use libbpf_rs::{MapCore, MapFlags};
use podscope_model::{DropEvent, Event, EventData, ProbeKind};

use crate::decode::{header, read_record, Clock};
use crate::load::{read_stat, LoadSettings, LoadedProbe};
use crate::Error;

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/drop.skel.rs"));
}

use skel::types;

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::drop_event {}

/// The largest record this probe writes to its ring, in bytes.
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<types::drop_event>();

/// Where a pod's packets can be recognised by the drop and net probes: its
/// pod-level cgroup (what its packets are attributed to), its network
/// namespace and its addresses. Filled from the pod store by the node (see
/// [`crate::Tracer::set_pod_nets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// The cgroup id the pod's drops carry (the pod-level cgroup).
    pub cgroup_id: u64,
    /// Inode of the pod's network namespace (`stat /proc/<pause>/ns/net`),
    /// None for host-network pods (their netns is the host's).
    pub netns: Option<u32>,
    /// The pod's IP addresses.
    pub addrs: Vec<IpAddr>,
}

/// The names of `enum skb_drop_reason` of the running kernel, by value,
/// without the `SKB_DROP_REASON_` prefix; empty where the kernel has no
/// such enum (before 5.17) or no BTF.
fn reasons() -> &'static HashMap<u32, String> {
    static REASONS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    REASONS.get_or_init(|| {
        let mut out = HashMap::new();
        let Ok(btf) = libbpf_rs::btf::Btf::from_vmlinux() else {
            return out;
        };
        if let Some(e) = btf.type_by_name::<libbpf_rs::btf::types::Enum>("skb_drop_reason") {
            for m in e.iter() {
                let Some(name) = m.name.and_then(|n| n.to_str()) else {
                    continue;
                };
                let short = name
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| name.strip_prefix("SKB_"))
                    .unwrap_or(name);
                out.insert(m.value as u32, short.to_string());
            }
        }
        out
    })
}

/// The name of a drop reason value: the kernel's, else the number (values
/// with a subsystem in their upper 16 bits: `SUBSYS_<n>:<code>`).
pub(crate) fn reason_name(code: u32) -> String {
    reason_name_in(reasons(), code)
}

fn reason_name_in(table: &HashMap<u32, String>, code: u32) -> String {
    if let Some(n) = table.get(&code) {
        return n.clone();
    }
    let subsys = code >> 16;
    if subsys != 0 {
        return format!("SUBSYS_{subsys}:{}", code & 0xffff);
    }
    code.to_string()
}

/// Kernel text symbols, sorted by address, for naming a freeing location.
struct Symbols {
    addrs: Vec<u64>,
    names: Vec<String>,
}

impl Symbols {
    fn parse(text: &str) -> Symbols {
        let mut syms: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                let kind = w.next()?;
                let name = w.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then_some((addr, name))
            })
            .collect();
        syms.sort_unstable_by_key(|s| s.0);
        Symbols {
            addrs: syms.iter().map(|s| s.0).collect(),
            names: syms.iter().map(|s| s.1.to_string()).collect(),
        }
    }

    fn name(&self, addr: u64) -> Option<String> {
        let i = self.addrs.partition_point(|a| *a <= addr).checked_sub(1)?;
        Some(format!("{}+{:#x}", self.names[i], addr - self.addrs[i]))
    }
}

fn symbols() -> &'static Symbols {
    static SYMS: OnceLock<Symbols> = OnceLock::new();
    SYMS.get_or_init(|| {
        Symbols::parse(&std::fs::read_to_string("/proc/kallsyms").unwrap_or_default())
    })
}

pub(crate) fn location_name(addr: u64) -> String {
    symbols().name(addr).unwrap_or_else(|| format!("{addr:#x}"))
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < RECORD_BYTES {
        return None;
    }
    let raw: types::drop_event = read_record(data);
    let h = header!(raw.hdr);
    let (reason, reason_code) = if raw.has_reason != 0 {
        (reason_name(raw.reason), Some(raw.reason))
    } else {
        ("unknown".to_string(), None)
    };
    let ifname = crate::decode::c_str(&raw.ifname);
    let flow = crate::skb_flow::raw_flow!(raw.flow).text();
    let ev = EventData::Drop(Box::new(DropEvent {
        kind: "drop".into(),
        reason,
        reason_code,
        location: location_name(raw.location),
        attributed_by: match raw.by {
            1 => "socket",
            2 => "netns",
            3 => "address",
            _ => "none",
        }
        .into(),
        netns: raw.netns,
        ifname,
        ifindex: raw.ifindex,
        protocol: flow.protocol,
        family: flow.family,
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        tcp_flags: flow.tcp_flags,
        len: raw.len,
        ethertype: flow.ethertype,
    }));
    Some(h.into_event(clock, ev))
}

pub(crate) struct Probe {
    skel: crate::load::Owned<skel::DropProbeSkel<'static>>,
    /// What the kernel maps hold now.
    netns: HashMap<u32, u64>,
    addrs: HashMap<[u8; 16], u64>,
}

pub(crate) fn load(settings: &LoadSettings) -> Result<Box<dyn LoadedProbe>, Error> {
    let skel = crate::load::load_skeleton!(skel::DropProbeSkelBuilder, "drop", settings);
    // Named before the first drop arrives, not on the tracing thread's first event.
    let _ = reasons();
    let _ = symbols();
    Ok(Box::new(Probe {
        skel,
        netns: HashMap::new(),
        addrs: HashMap::new(),
    }))
}

pub(crate) fn sync_map<K: std::hash::Hash + Eq + Copy>(
    map: &dyn MapCore,
    have: &mut HashMap<K, u64>,
    want: HashMap<K, u64>,
    key: impl Fn(&K) -> Vec<u8>,
    what: &str,
) -> Result<(), Error> {
    for (k, v) in &want {
        if have.get(k) != Some(v) {
            map.update(&key(k), &v.to_ne_bytes(), MapFlags::ANY)
                .map_err(Error::runtime(format!(
                    "adding a pod's {what} to a probe's map"
                )))?;
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(k)) {
        match map.delete(&key(k)) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::runtime(format!(
                    "removing a pod's {what} from a probe's map"
                ))(e))
            }
        }
    }
    *have = want;
    Ok(())
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Drop
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> crate::load::DecodeFn {
        decode
    }
    crate::load::common_accessors!();

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("drop_seen", read_stat(&self.skel.maps.drop_stats, 2)),
            (
                "drop_consumed_skipped",
                read_stat(&self.skel.maps.drop_stats, 3),
            ),
        ]
    }

    fn set_pod_nets(&mut self, nets: &[PodNet]) -> Result<(), Error> {
        let mut netns = HashMap::new();
        let mut addrs = HashMap::new();
        for n in nets {
            if let Some(ns) = n.netns {
                netns.insert(ns, n.cgroup_id);
            }
            for a in &n.addrs {
                addrs.insert(crate::skb_flow::addr_key(a), n.cgroup_id);
            }
        }
        sync_map(
            &self.skel.maps.drop_netns,
            &mut self.netns,
            netns,
            |k| k.to_ne_bytes().to_vec(),
            "network namespace",
        )?;
        sync_map(
            &self.skel.maps.drop_addrs,
            &mut self.addrs,
            addrs,
            |k| k.to_vec(),
            "address",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_fall_back_to_numbers() {
        let t = HashMap::from([(3, "NO_SOCKET".to_string())]);
        assert_eq!(reason_name_in(&t, 3), "NO_SOCKET");
        assert_eq!(reason_name_in(&t, 7), "7");
        assert_eq!(reason_name_in(&t, (2 << 16) | 5), "SUBSYS_2:5");
    }

    #[test]
    fn locations_are_named_from_the_symbol_below() {
        let s = Symbols::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t udp_rcv\n\
             ffffffff81000200 D some_data\nffffffff81000300 T tcp_v4_rcv\n",
        );
        assert_eq!(s.name(0xffffffff81000110).unwrap(), "udp_rcv+0x10");
        assert_eq!(s.name(0xffffffff81000300).unwrap(), "tcp_v4_rcv+0x0");
        assert!(s.name(0x10).is_none());
    }

    /// The running kernel's BTF names the reasons our tests rely on (skipped
    /// where the kernel has no drop reasons).
    #[test]
    fn the_kernel_names_no_socket() {
        let t = reasons();
        if t.is_empty() {
            eprintln!("SKIP: this kernel has no enum skb_drop_reason in its BTF");
            return;
        }
        assert!(t.values().any(|n| n == "NO_SOCKET"), "{t:?}");
        assert!(t.values().any(|n| n == "NETFILTER_DROP"), "{t:?}");
        assert!(t.values().any(|n| n == "NOT_SPECIFIED"), "{t:?}");
    }
}
