//! http probe, kernel side: socket reads and writes of selected tasks with
//! the first bytes of each message (parsed into HTTP/1.x and HTTP/2 requests
//! by podscope-proto).

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/http.skel.rs"));
}

use podscope_model::{Event, EventData, ProbeKind, SockDataEvent, SockDataKind};
use skel::{types, HttpProbeSkel, HttpProbeSkelBuilder};

use crate::decode::{family_name, header, inet_addr, read_into, Clock};
use crate::load::{common_accessors, load_skeleton, DecodeFn, LoadSettings, LoadedProbe};

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::http_event {}

/// The most a message capture can be (HTTP_DATA_MAX in bpf/http.h).
pub const MAX_CAPTURE_BYTES: u32 = 16384;

pub(crate) struct Probe {
    skel: crate::load::Owned<HttpProbeSkel<'static>>,
}

pub(crate) fn load(settings: &LoadSettings) -> Result<Box<dyn LoadedProbe>, crate::Error> {
    let capture = settings.http_capture_bytes.min(MAX_CAPTURE_BYTES);
    let skel = load_skeleton!(
        HttpProbeSkelBuilder,
        ProbeKind::Http.name(),
        settings,
        |open: &mut skel::OpenHttpProbeSkel| {
            if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                ro.capture_bytes = capture;
            }
            // The scratch slot array is indexed by CPU (bpf/http.bpf.c).
            // Setting the size of an opened map cannot fail short of a
            // libbpf bug; if it did, messages on the CPUs without a slot
            // are counted lost in the kernel (STAT_MAP_FULL), not dropped
            // silently.
            let cpus = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1);
            let _ = open.maps.scratch.set_max_entries(cpus as u32);
        }
    );
    Ok(Box::new(Probe { skel }))
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Http
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> DecodeFn {
        decode
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let m = &self.skel.maps.http_stats;
        vec![
            ("connections_not_http", crate::load::read_stat(m, 0)),
            ("bytes_not_http", crate::load::read_stat(m, 1)),
        ]
    }
    common_accessors!();
}

fn syscall_name(n: u8) -> &'static str {
    match n {
        1 => "read",
        2 => "write",
        3 => "readv",
        4 => "writev",
        5 => "recvfrom",
        6 => "sendto",
        7 => "recvmsg",
        8 => "sendmsg",
        9 => "sendfile",
        _ => "",
    }
}

/// The fixed part of a record before the payload.
const HEAD: usize = std::mem::offset_of!(types::http_event, data);

thread_local! {
    /// One record's fixed part, reused: the struct's payload array is large.
    static SCRATCH: std::cell::RefCell<Box<types::http_event>> = std::cell::RefCell::new(Box::default());
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < HEAD {
        return None;
    }
    // Only the fixed part is copied into the struct; the payload is taken
    // from the record itself (it is as long as `captured` says).
    SCRATCH.with_borrow_mut(|raw| {
        read_into(&mut **raw, &data[..HEAD]);
        let raw: &types::http_event = raw;
        let kind = match raw.kind {
            1 => SockDataKind::Data,
            2 => SockDataKind::Close,
            _ => return None,
        };
        let captured = raw.captured as usize;
        let payload = data.get(HEAD..HEAD + captured)?.to_vec();
        let h = header!(raw.hdr);
        let ev = EventData::SockData(SockDataEvent {
            kind,
            // What the kernel sniffed the connection's first message as.
            protocol: if raw.proto == 2 { "http2" } else { "http" }.into(),
            tls: false,
            sock: raw.sock,
            fd: raw.fd,
            direction: match raw.dir {
                1 => "tx",
                2 => "rx",
                _ => "",
            }
            .into(),
            syscall: syscall_name(raw.syscall).into(),
            len: raw.len,
            seq: raw.seq,
            family: family_name(raw.family).into(),
            saddr: inet_addr(raw.family, &raw.saddr),
            daddr: inet_addr(raw.family, &raw.daddr),
            sport: raw.sport,
            dport: raw.dport,
            payload,
        });
        Some(h.into_event(clock, ev))
    })
}
