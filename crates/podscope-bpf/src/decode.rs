//! Turning raw ring-buffer records into model events: byte copying, C strings,
//! and the kernel-clock to wall-clock mapping.

use podscope_model::{Event, EventData, Identity, Timestamp};

/// Copies a record into a zeroed `T`. Records may be shorter than `T` (the
/// exec probe sends only the used part of argv); the rest stays zero.
pub(crate) fn read_record<T: plain::Plain + Default>(data: &[u8]) -> T {
    let mut out = T::default();
    // SAFETY: `T: Plain` promises any byte pattern is a valid `T`, and the
    // slice covers exactly `size_of::<T>()` bytes of `out`.
    let dst = unsafe { plain::as_mut_bytes(&mut out) };
    let n = dst.len().min(data.len());
    dst[..n].copy_from_slice(&data[..n]);
    out
}

/// Copies the first bytes of a record into `out`, whose other bytes keep
/// what they held: for records whose struct ends in a large payload array
/// (http, tls, dns) that is read from the record itself, so the 16 KiB
/// array is neither zeroed nor copied per record ([`read_record`] does both).
pub(crate) fn read_into<T: plain::Plain>(out: &mut T, data: &[u8]) {
    // SAFETY: `T: Plain` promises any byte pattern is a valid `T`; at most
    // `size_of::<T>()` bytes are written.
    let dst = unsafe { plain::as_mut_bytes(out) };
    let n = dst.len().min(data.len());
    dst[..n].copy_from_slice(&data[..n]);
}

/// A NUL-terminated C char array as a String (lossy UTF-8).
pub(crate) fn c_str(chars: &[i8]) -> String {
    let len = chars.iter().position(|c| *c == 0).unwrap_or(chars.len());
    // SAFETY: i8 and u8 have the same size and alignment, and every bit
    // pattern is valid for both; the slice is the first `len` of `chars`.
    // (One allocation per string, on the hot path of every event.)
    let bytes = unsafe { std::slice::from_raw_parts(chars.as_ptr().cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Maps `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    pub(crate) fn wall(&self, mono_ns: u64) -> Timestamp {
        Timestamp((mono_ns as i128 + self.offset_ns).max(0) as u64)
    }

    pub(crate) fn now_mono() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The common header fields, decoded once for every probe.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub ppid: u32,
    pub comm: String,
}

impl Header {
    pub(crate) fn into_event(self, clock: &Clock, data: EventData) -> Event {
        Event {
            timestamp: clock.wall(self.ts_ns),
            identity: Identity::default(),
            pid: self.pid,
            tid: self.tid,
            uid: self.uid,
            comm: self.comm,
            cgroup_id: self.cgroup_id,
            data,
        }
    }
}

/// Each skeleton generates its own copy of `struct event_header`; this turns
/// any of them into a [`Header`].
macro_rules! header {
    ($h:expr) => {
        $crate::decode::Header {
            ts_ns: $h.ts_ns,
            cgroup_id: $h.cgroup_id,
            pid: $h.pid,
            tid: $h.tid,
            uid: $h.uid,
            ppid: $h.ppid,
            comm: $crate::decode::c_str(&$h.comm),
        }
    };
}
pub(crate) use header;

const AF_INET6: u16 = 10;

/// A socket address from a record's 16-byte field (IPv4 in the first four).
pub(crate) fn inet_addr(family: u16, raw: &[u8; 16]) -> String {
    // Formatting an address costs more than the rest of a socket record's
    // decoding; a node talks to few addresses, so each thread keeps the
    // text of the ones it has formatted (bounded; cleared when full).
    const MAX: usize = 4096;
    thread_local! {
        static SEEN: std::cell::RefCell<foldhash::HashMap<(u16, [u8; 16]), String>> =
            std::cell::RefCell::new(foldhash::HashMapExt::new());
    }
    let v6 = family == AF_INET6;
    let mut key = *raw;
    if !v6 {
        key[4..].fill(0);
    }
    SEEN.with_borrow_mut(|seen| {
        if let Some(s) = seen.get(&(family, key)) {
            return s.clone();
        }
        let s = if v6 {
            std::net::Ipv6Addr::from(*raw).to_string()
        } else {
            std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string()
        };
        if seen.len() >= MAX {
            seen.clear();
        }
        seen.insert((family, key), s.clone());
        s
    })
}

/// `ipv4` or `ipv6`, as the JSON's `family`.
pub(crate) fn family_name(family: u16) -> &'static str {
    if family == AF_INET6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_str_stops_at_nul() {
        let raw: Vec<i8> = b"bash\0junk".iter().map(|b| *b as i8).collect();
        assert_eq!(c_str(&raw), "bash");
    }

    #[test]
    fn clock_maps_now_to_now() {
        let c = Clock::new();
        let wall = c.wall(Clock::now_mono()).0;
        let now = Timestamp::now().0;
        assert!(now.abs_diff(wall) < 1_000_000_000, "{now} vs {wall}");
    }
}
