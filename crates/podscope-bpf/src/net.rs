//! net probe: a pod's packets followed across the stack's tracepoints
//! (device queue and transmit, receive, GRO, drop): per-flow totals and
//! per-stage latency histograms kept in the kernel and read each interval,
//! and with `--per-packet` / `--flow` one record per packet and stage.

use std::collections::HashMap;

use libbpf_rs::{MapCore, MapFlags};
use podscope_model::{
    Event, EventData, FlowFilter, Identity, NetFlowEvent, NetPacketEvent, NetStage, ProbeKind,
};

use crate::decode::{header, read_record, Clock};
use crate::load::{read_stat, LoadSettings, LoadedProbe};
use crate::skb_flow::raw_flow;
use crate::Error;

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/net.skel.rs"));
}

use skel::types;

// SAFETY: generated from the C structs: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::net_event {}
unsafe impl plain::Plain for types::net_flow_key {}
unsafe impl plain::Plain for types::net_flow_stats {}
unsafe impl plain::Plain for types::net_config {}

/// The largest record this probe writes to its ring, in bytes.
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<types::net_event>();

const TPS: usize = 4;
const LOCS: usize = 4;
const STAGES: usize = TPS * LOCS;
const STAGE_DROP: u8 = 255;
const TP_NAMES: [&str; TPS] = ["queue", "xmit", "recv", "gro"];
const LOC_NAMES: [&str; LOCS] = ["pod", "veth", "host", "peer"];

/// The net probe's settings: per-packet records or not, and the `--flow`
/// filter (its protocol, port and host terms are applied in the kernel; the
/// `pod` terms by the caller, after enrichment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetOptions {
    /// A record per packet and stage (`--per-packet`, or any `--flow`).
    pub per_packet: bool,
    /// The `--flow` filter.
    pub filter: Option<FlowFilter>,
}

/// `pod_queue`, `veth_recv`, ... (`drop` for drops).
pub fn stage_name(stage: u8) -> String {
    if stage == STAGE_DROP {
        return "drop".into();
    }
    let s = stage as usize;
    if s >= STAGES {
        return stage.to_string();
    }
    format!("{}_{}", LOC_NAMES[s / TPS], TP_NAMES[s % TPS])
}

/// The order stages are listed in a flow summary: the way out of a pod
/// (its devices, its veth, the host, the peer), then the way in.
const PATH_ORDER: [usize; STAGES] = [0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 2, 3];

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < RECORD_BYTES {
        return None;
    }
    let raw: types::net_event = read_record(data);
    let h = header!(raw.hdr);
    let flow = raw_flow!(raw.flow).text();
    let drop = raw.stage == STAGE_DROP;
    let ev = EventData::NetPacket(Box::new(NetPacketEvent {
        kind: "packet".into(),
        packet: raw.packet,
        skb: format!("{:#x}", raw.skb),
        stage: stage_name(raw.stage),
        ifname: crate::decode::c_str(&raw.ifname),
        ifindex: raw.ifindex,
        netns: raw.netns,
        len: raw.len,
        first: raw.first != 0,
        step_ns: raw.step_ns,
        total_ns: raw.total_ns,
        protocol: flow.protocol,
        family: flow.family,
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        tcp_flags: flow.tcp_flags,
        ip_len: flow.ip_len,
        reason: drop.then(|| {
            if raw.has_reason != 0 {
                crate::drop::reason_name(raw.reason)
            } else {
                "unknown".into()
            }
        }),
        location: drop.then(|| crate::drop::location_name(raw.location)),
    }));
    let mut e = h.into_event(clock, ev);
    // Packets belong to a pod, not a task.
    e.pid = 0;
    e.tid = 0;
    Some(e)
}

pub(crate) struct Probe {
    skel: crate::load::Owned<skel::NetProbeSkel<'static>>,
    netns: HashMap<u32, u64>,
}

/// The host's netns inode (what `net->ns.inum` holds).
fn host_netns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

pub(crate) fn load(settings: &LoadSettings) -> Result<Box<dyn LoadedProbe>, Error> {
    let host = host_netns();
    let skel = crate::load::load_skeleton!(
        skel::NetProbeSkelBuilder,
        "net",
        settings,
        |open: &mut skel::OpenNetProbeSkel| {
            if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                ro.host_netns = host;
            }
        }
    );
    // Named before the first drop arrives, not on the tracing thread's first event.
    let _ = crate::drop::reason_name(0);
    let _ = crate::drop::location_name(0);
    Ok(Box::new(Probe {
        skel,
        netns: HashMap::new(),
    }))
}

/// The kernel's `net_config` for these options.
fn config(opts: &NetOptions) -> types::net_config {
    let mut c = types::net_config {
        per_packet: u8::from(opts.per_packet || opts.filter.is_some()),
        ..Default::default()
    };
    if let Some(f) = &opts.filter {
        c.l4proto = f.protocol.unwrap_or(0);
        for (slot, p) in c.ports.iter_mut().zip(&f.ports) {
            *slot = *p;
        }
        c.nports = f.ports.len().min(c.ports.len()) as u8;
        for (slot, a) in c.hosts.iter_mut().zip(&f.hosts) {
            *slot = crate::skb_flow::addr_key(a);
        }
        c.nhosts = f.hosts.len().min(c.hosts.len()) as u8;
    }
    c
}

fn bytes_of<T: plain::Plain>(v: &T) -> &[u8] {
    // SAFETY: T is Plain: any byte pattern, no padding invariants relied on.
    unsafe { plain::as_bytes(v) }
}

fn quantiles(hist: &[u32]) -> (u64, u64) {
    let h: Vec<u64> = hist.iter().map(|c| u64::from(*c)).collect();
    (
        crate::syscalls::percentile(&h, 0.5),
        crate::syscalls::percentile(&h, 0.99),
    )
}

/// A flow's summary event from its kernel totals.
pub(crate) fn flow_event(
    clock: &Clock,
    now: u64,
    k: &types::net_flow_key,
    st: &types::net_flow_stats,
) -> Event {
    let flow = crate::skb_flow::RawFlow {
        protocol: 0,
        l4proto: k.l4proto,
        family: k.family,
        tcp_flags: 0,
        sport: k.sport,
        dport: k.dport,
        ip_len: 0,
        saddr: &k.saddr,
        daddr: &k.daddr,
    }
    .text();
    let mut stages = Vec::new();
    let mut e2e = (0, 0);
    for &s in &PATH_ORDER {
        if st.seen[s] == 0 {
            continue;
        }
        let (step_p50, step_p99) = quantiles(&st.step[s]);
        let (total_p50, total_p99) = quantiles(&st.total[s]);
        if total_p50 > e2e.0 || (total_p50 == e2e.0 && total_p99 > e2e.1) {
            e2e = (total_p50, total_p99);
        }
        stages.push(NetStage {
            stage: stage_name(s as u8),
            packets: u64::from(st.seen[s]),
            step_p50_ns: step_p50,
            step_p99_ns: step_p99,
            total_p50_ns: total_p50,
            total_p99_ns: total_p99,
        });
    }
    Event {
        timestamp: clock.wall(now),
        identity: Identity::default(),
        pid: 0,
        tid: 0,
        uid: 0,
        comm: String::new(),
        cgroup_id: k.cgroup_id,
        data: EventData::NetFlow(NetFlowEvent {
            kind: "flow".into(),
            protocol: flow.protocol,
            family: flow.family,
            saddr: flow.saddr,
            daddr: flow.daddr,
            sport: flow.sport,
            dport: flow.dport,
            packets: st.packets,
            bytes: st.bytes,
            drops: st.drops,
            duration_ns: st.last_ns.saturating_sub(st.first_ns),
            end_to_end_p50_ns: e2e.0,
            end_to_end_p99_ns: e2e.1,
            stages,
        }),
    }
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Net
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> crate::load::DecodeFn {
        decode
    }
    crate::load::common_accessors!();

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let m = &self.skel.maps.net_stats;
        vec![
            ("net_packets", read_stat(m, 2)),
            ("net_filtered_in_kernel", read_stat(m, 3)),
            ("net_skb_reused", read_stat(m, 4)),
            ("net_flows_full", read_stat(m, 5)),
            ("net_drops", read_stat(m, 6)),
        ]
    }

    fn set_pod_nets(&mut self, nets: &[crate::PodNet]) -> Result<(), Error> {
        let want: HashMap<u32, u64> = nets
            .iter()
            .filter_map(|n| n.netns.map(|ns| (ns, n.cgroup_id)))
            .collect();
        crate::drop::sync_map(
            &self.skel.maps.net_netns,
            &mut self.netns,
            want,
            |k| k.to_ne_bytes().to_vec(),
            "network namespace",
        )
    }

    fn set_net_options(&mut self, opts: &NetOptions) -> Result<(), Error> {
        let c = config(opts);
        self.skel
            .maps
            .net_config
            .update(&0u32.to_ne_bytes(), bytes_of(&c), MapFlags::ANY)
            .map_err(Error::runtime("setting the net probe's options"))
    }

    fn collect(&mut self, clock: &Clock, out: &mut Vec<Event>) -> Result<(), Error> {
        let now = Clock::now_mono();
        let map = &self.skel.maps.net_flows;
        let mut rows = Vec::new();
        for key in map.keys() {
            let Some(v) = map
                .lookup(&key, MapFlags::ANY)
                .map_err(Error::runtime("reading the net probe's flows"))?
            else {
                continue;
            };
            let k: types::net_flow_key = read_record(&key);
            let st: types::net_flow_stats = read_record(&v);
            rows.push((k, st));
        }
        // Per pod, busiest first.
        rows.sort_by_key(|(k, st)| (k.cgroup_id, std::cmp::Reverse(st.bytes)));
        for (k, st) in rows {
            out.push(flow_event(clock, now, &k, &st));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names() {
        assert_eq!(stage_name(0), "pod_queue");
        assert_eq!(stage_name(1), "pod_xmit");
        assert_eq!(stage_name(6), "veth_recv");
        assert_eq!(stage_name(14), "peer_recv");
        assert_eq!(stage_name(255), "drop");
        let mut all: Vec<usize> = PATH_ORDER.to_vec();
        all.sort();
        assert_eq!(all, (0..STAGES).collect::<Vec<_>>());
    }

    #[test]
    fn config_from_a_filter() {
        let f = FlowFilter::parse("tcp and port 80 and host 10.1.2.3").unwrap();
        let c = config(&NetOptions {
            per_packet: false,
            filter: Some(f),
        });
        assert_eq!((c.per_packet, c.l4proto, c.nports, c.nhosts), (1, 6, 1, 1));
        assert_eq!(c.ports[0], 80);
        assert_eq!(&c.hosts[0][10..], &[0xff, 0xff, 10, 1, 2, 3]);
        let c = config(&NetOptions::default());
        assert_eq!((c.per_packet, c.l4proto, c.nports, c.nhosts), (0, 0, 0, 0));
    }

    #[test]
    fn flow_summary_quantiles_and_order() {
        let clock = Clock::new();
        let k = types::net_flow_key {
            cgroup_id: 7,
            family: 4,
            l4proto: 6,
            sport: 1000,
            dport: 80,
            saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        let mut st = types::net_flow_stats {
            packets: 3,
            bytes: 180,
            first_ns: 100,
            last_ns: 500,
            ..Default::default()
        };
        // pod_queue: at the first stage; veth_recv (6): 3 packets, ~1 us after.
        st.seen[0] = 3;
        st.step[0][0] = 3;
        st.total[0][0] = 3;
        st.seen[6] = 3;
        st.step[6][9] = 3; // [512, 1024)
        st.total[6][10] = 3; // [1024, 2048)
        let e = flow_event(&clock, 1000, &k, &st);
        let EventData::NetFlow(f) = &e.data else {
            panic!("{e:?}")
        };
        assert_eq!((f.packets, f.bytes, f.duration_ns), (3, 180, 400));
        assert_eq!((f.saddr.as_str(), f.dport), ("10.0.0.1", 80));
        let names: Vec<&str> = f.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["pod_queue", "veth_recv"]);
        assert_eq!(f.stages[1].step_p50_ns, 1023);
        assert_eq!(f.stages[1].total_p99_ns, 2047);
        assert_eq!((f.end_to_end_p50_ns, f.end_to_end_p99_ns), (2047, 2047));
        assert_eq!(e.cgroup_id, 7);
    }
}
