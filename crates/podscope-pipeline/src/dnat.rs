//! Where NAT sent a client's connection. A pod that dials a Service's
//! ClusterIP (or a NodePort, or a port Docker published) talks to whichever
//! pod the node's DNAT rules chose, but its socket still names the address
//! it dialed, so its requests name no peer pod and cannot be joined to the
//! server's spans. The node's connection-tracking table knows the answer:
//! the tracked connection's reply tuple comes from the server that really
//! answered. [`Dnat`] asks it (ctnetlink, one `IPCTNL_MSG_CT_GET` per
//! connection, cached a few seconds) for the client connections (tcp
//! events), requests and DNS queries whose peer is not a pod of the node,
//! and rewrites `daddr`/`dport` to the server that answered, keeping the
//! dialed address in `dialed_addr`/`dialed_port`.
//!
//! The socket is opened in the host's network namespace (PID 1's), where
//! kube-proxy's rules and their conntrack entries live; the agent's own pod
//! has a namespace of its own. Needs CAP_NET_ADMIN (and CAP_SYS_ADMIN to
//! join the host's namespace); without them, or without conntrack, nothing
//! is rewritten and the reason is said once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use podscope_model::{Event, EventData};

// netlink(7), nfnetlink and ctnetlink (linux/netfilter/nfnetlink_conntrack.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// `IPS_DST_NAT`: the connection's destination was rewritten.
const IPS_DST_NAT: u32 = 1 << 5;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// IP protocol numbers of the lookups.
pub const TCP: u8 = 6;
/// See [`TCP`].
pub const UDP: u8 = 17;

/// How long an answer (translated or not) is believed: a 4-tuple is only
/// reused after its connection is gone, and then NAT may choose again.
const TTL: Duration = Duration::from_secs(5);
/// Answers cached at most; beyond that the cache starts again.
const MAX_CACHED: usize = 65_536;

/// A ctnetlink socket that asks the connection-tracking table about one
/// connection at a time.
#[derive(Debug)]
pub struct Conntrack {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    /// A socket in the host's network namespace ([`host_netns`]), or in
    /// this process's when they are the same or no host namespace can be
    /// named.
    pub fn open_host() -> io::Result<Conntrack> {
        let own = std::fs::read_link("/proc/self/ns/net");
        let fd = match host_netns() {
            Some((path, ns)) if own.as_ref().ok() != Some(&ns) => {
                // setns affects only the calling thread: a thread of its own
                // joins, makes the socket (which stays in the namespace it
                // was made in) and ends.
                std::thread::spawn(move || -> io::Result<OwnedFd> {
                    let f = std::fs::File::open(path)?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                        io::Error::other(format!(
                            "joining the host's network namespace ({path}): {e}; it needs \
                             CAP_SYS_ADMIN"
                        ))
                    })?;
                    netlink_socket()
                })
                .join()
                .map_err(|_| io::Error::other("the conntrack socket's thread panicked"))??
            }
            _ => netlink_socket()?,
        };
        Ok(Conntrack {
            fd,
            seq: 0,
            buf: vec![0; 8192],
        })
    }

    /// The address that answered a connection from `src` to `dst` when NAT
    /// rewrote its destination; `None` when it was not rewritten or is not
    /// tracked.
    pub fn lookup(
        &mut self,
        proto: u8,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<Option<SocketAddr>> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(self.seq, proto, src, dst)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mixed address families"))?;
        socket::send(self.fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(io::Error::from)?;
        // The kernel answers a GET while it handles the send: the answer is
        // queued by now. A short wait all the same, never a hang.
        for _ in 0..4 {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => {
                    let mut fds = [nix::poll::PollFd::new(
                        self.fd.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u8))
                        .map_err(io::Error::from)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match parse_reply(&self.buf[..n], self.seq) {
                Reply::Other => continue,
                Reply::Missing => return Ok(None),
                Reply::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                Reply::Entry(e) => {
                    return Ok(e
                        .dst_nat
                        .then_some(e.answered)
                        .flatten()
                        .filter(|a| *a != dst))
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "conntrack did not answer",
        ))
    }
}

/// The host's network namespace: PID 1's (with the host's PID namespace,
/// as the agent runs), else kthreadd's where PID 1's cannot be read (an
/// init that is not dumpable): kernel threads live in the initial one.
fn host_netns() -> Option<(&'static str, PathBuf)> {
    if let Ok(ns) = std::fs::read_link("/proc/1/ns/net") {
        return Some(("/proc/1/ns/net", ns));
    }
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    kthreadd
        .then(|| std::fs::read_link("/proc/2/ns/net").ok())
        .flatten()
        .map(|ns| ("/proc/2/ns/net", ns))
}

fn netlink_socket() -> io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| io::Error::other(format!("a conntrack netlink socket: {e}")))
}

fn put_attr(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// Starts a nested attribute; [`end_nest`] writes its length.
fn begin_nest(b: &mut Vec<u8>, ty: u16) -> usize {
    let at = b.len();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(b: &mut [u8], at: usize) {
    let len = (b.len() - at) as u16;
    b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// An `IPCTNL_MSG_CT_GET` for the original-direction tuple `src -> dst`.
fn request(seq: u32, proto: u8, src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    let mut b = Vec::with_capacity(96);
    b.extend_from_slice(&[0; 4]); // nlmsg_len, below
    b.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
    b.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => return None,
    };
    b.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: family, NFNETLINK_V0, res_id
    let tuple = begin_nest(&mut b, CTA_TUPLE_ORIG);
    let ip = begin_nest(&mut b, CTA_TUPLE_IP);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put_attr(&mut b, CTA_IP_V4_SRC, &s.octets());
            put_attr(&mut b, CTA_IP_V4_DST, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            put_attr(&mut b, CTA_IP_V6_SRC, &s.octets());
            put_attr(&mut b, CTA_IP_V6_DST, &d.octets());
        }
        _ => return None,
    }
    end_nest(&mut b, ip);
    let p = begin_nest(&mut b, CTA_TUPLE_PROTO);
    put_attr(&mut b, CTA_PROTO_NUM, &[proto]);
    put_attr(&mut b, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
    put_attr(&mut b, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
    end_nest(&mut b, p);
    end_nest(&mut b, tuple);
    let len = b.len() as u32;
    b[..4].copy_from_slice(&len.to_ne_bytes());
    Some(b)
}

/// What a conntrack entry says about the connection.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// The reply direction's source: who answered.
    answered: Option<SocketAddr>,
    /// The destination was rewritten (DNAT).
    dst_nat: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Entry(Entry),
    /// ENOENT: no such connection is tracked.
    Missing,
    Error(i32),
    /// Not the answer to this request.
    Other,
}

/// The attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, payload))
    })
}

fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// The source end of a tuple attribute's payload.
fn tuple_source(t: &[u8]) -> Option<SocketAddr> {
    let ip = attr(t, CTA_TUPLE_IP)?;
    let addr: IpAddr = if let Some(v4) = attr(ip, CTA_IP_V4_SRC) {
        <[u8; 4]>::try_from(v4).ok()?.into()
    } else {
        <[u8; 16]>::try_from(attr(ip, CTA_IP_V6_SRC)?).ok()?.into()
    };
    let port = attr(attr(t, CTA_TUPLE_PROTO)?, CTA_PROTO_SRC_PORT)?;
    Some(SocketAddr::new(
        addr,
        u16::from_be_bytes(port.try_into().ok()?),
    ))
}

/// The answer to request `seq` among the messages in `b`, if there.
fn parse_reply(mut b: &[u8], seq: u32) -> Reply {
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let got = u32::from_ne_bytes(b[8..12].try_into().unwrap());
        if len < 16 || len > b.len() {
            break;
        }
        let body = &b[16..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        if got != seq {
            continue;
        }
        match ty {
            NLMSG_ERROR if body.len() >= 4 => {
                let err = -i32::from_ne_bytes(body[..4].try_into().unwrap());
                return match err {
                    0 => Reply::Other,
                    e if e == nix::errno::Errno::ENOENT as i32 => Reply::Missing,
                    e => Reply::Error(e),
                };
            }
            NLMSG_DONE => return Reply::Missing,
            t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW && body.len() >= 4 => {
                let a = &body[4..];
                let status = attr(a, CTA_STATUS)
                    .and_then(|s| Some(u32::from_be_bytes(s.try_into().ok()?)))
                    .unwrap_or(0);
                return Reply::Entry(Entry {
                    answered: attr(a, CTA_TUPLE_REPLY).and_then(tuple_source),
                    dst_nat: status & IPS_DST_NAT != 0,
                });
            }
            _ => {}
        }
    }
    Reply::Other
}

/// What [`Dnat::translate`] did with a session's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnatCounts {
    /// Client connection events, requests and DNS queries to a peer that is
    /// no pod of the node (and not loopback): the ones asked about.
    pub asked: u64,
    /// Of those, the ones NAT had sent elsewhere: peer rewritten.
    pub translated: u64,
    /// Of those, the ones conntrack could not answer for (no socket, or the
    /// lookup failed): peer kept as dialed.
    pub unknown: u64,
}

impl DnatCounts {
    /// Adds another call's counts.
    pub fn add(&mut self, o: DnatCounts) {
        self.asked += o.asked;
        self.translated += o.translated;
        self.unknown += o.unknown;
    }

    /// The summary line, empty when nothing was asked.
    pub fn summary_text(&self) -> String {
        if self.asked == 0 {
            return String::new();
        }
        format!(
            "podscope: nat: {} client connection events, requests and DNS queries to addresses no \
             pod of the node has: {} \
             sent elsewhere by NAT (peer rewritten to who answered, dialed_addr kept), {} not \
             translated, {} unknown (conntrack could not say)\n",
            self.asked,
            self.translated,
            self.asked - self.translated - self.unknown,
            self.unknown
        )
    }
}

/// A connection's answer.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// NAT sent it here.
    To(SocketAddr),
    /// Not translated (or not tracked).
    Same,
    /// Conntrack could not say.
    Unknown,
}

type Key = (u8, SocketAddr, SocketAddr);

/// The node's conntrack answers, shared by its sessions.
#[derive(Debug, Default)]
pub struct Dnat {
    ct: Option<Conntrack>,
    /// The socket was tried (once: a failure is said once and kept).
    tried: bool,
    cache: HashMap<Key, (Instant, Answer)>,
    /// Questions asked of the conntrack table, and how many failed.
    pub lookups: u64,
    pub lookup_failures: u64,
}

fn socket_addr(addr: &str, port: u16) -> Option<SocketAddr> {
    let addr = addr.strip_prefix("::ffff:").unwrap_or(addr);
    Some(SocketAddr::new(addr.parse().ok()?, port))
}

impl Dnat {
    /// Rewrites the peer of client connections, requests and DNS queries
    /// that NAT sent elsewhere. `skip(addr)`: a peer known not to be translated (a pod of
    /// the node, loopback), not asked about.
    pub fn translate(&mut self, events: &mut [Event], skip: impl Fn(&str) -> bool) -> DnatCounts {
        let mut n = DnatCounts::default();
        for ev in events {
            match &mut ev.data {
                EventData::Http(h) if h.role == "client" && h.dialed_addr.is_empty() => {
                    if let Some(to) =
                        self.rewrite(TCP, &h.saddr, h.sport, &h.daddr, h.dport, &skip, &mut n)
                    {
                        h.dialed_addr = std::mem::replace(&mut h.daddr, to.ip().to_string());
                        h.dialed_port = std::mem::replace(&mut h.dport, to.port());
                    }
                }
                EventData::Dns(d) if d.role == "client" && d.dialed_addr.is_empty() => {
                    let proto = if d.transport == "tcp" { TCP } else { UDP };
                    if let Some(to) =
                        self.rewrite(proto, &d.saddr, d.sport, &d.daddr, d.dport, &skip, &mut n)
                    {
                        d.dialed_addr = std::mem::replace(&mut d.daddr, to.ip().to_string());
                        d.dialed_port = std::mem::replace(&mut d.dport, to.port());
                    }
                }
                EventData::Tcp(t) if t.role == "client" && t.dialed_addr.is_empty() => {
                    if let Some(to) =
                        self.rewrite(TCP, &t.saddr, t.sport, &t.daddr, t.dport, &skip, &mut n)
                    {
                        t.dialed_addr = std::mem::replace(&mut t.daddr, to.ip().to_string()).into();
                        t.dialed_port = std::mem::replace(&mut t.dport, to.port());
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// Where NAT sent `saddr:sport -> daddr:dport`, when it did; counted.
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        &mut self,
        proto: u8,
        saddr: &str,
        sport: u16,
        daddr: &str,
        dport: u16,
        skip: &impl Fn(&str) -> bool,
        n: &mut DnatCounts,
    ) -> Option<SocketAddr> {
        if skip(daddr) {
            return None;
        }
        let (src, dst) = (socket_addr(saddr, sport)?, socket_addr(daddr, dport)?);
        n.asked += 1;
        match self.answered(proto, src, dst) {
            Answer::To(to) => {
                n.translated += 1;
                Some(to)
            }
            Answer::Same => None,
            Answer::Unknown => {
                n.unknown += 1;
                None
            }
        }
    }

    fn answered(&mut self, proto: u8, src: SocketAddr, dst: SocketAddr) -> Answer {
        let key = (proto, src, dst);
        let now = Instant::now();
        if let Some((at, a)) = self.cache.get(&key) {
            if now.duration_since(*at) < TTL {
                return *a;
            }
        }
        if !self.tried {
            self.tried = true;
            match Conntrack::open_host() {
                Ok(c) => self.ct = Some(c),
                Err(e) => eprintln!(
                    "podscope: warning: no conntrack socket ({e}): requests to a Service's \
                     address keep the address dialed as their peer"
                ),
            }
        }
        let Some(ct) = self.ct.as_mut() else {
            return Answer::Unknown;
        };
        self.lookups += 1;
        let a = match ct.lookup(proto, src, dst) {
            Ok(Some(to)) => Answer::To(to),
            Ok(None) => Answer::Same,
            Err(e) => {
                if self.lookup_failures == 0 {
                    eprintln!(
                        "podscope: warning: asking conntrack where {src} -> {dst} went: {e} \
                         (kept as dialed; counted as unknown)"
                    );
                }
                self.lookup_failures += 1;
                Answer::Unknown
            }
        };
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(key, (now, a));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_request_names_the_original_tuple() {
        let r = request(7, TCP, sa("10.0.0.1:40000"), sa("10.96.0.5:80")).unwrap();
        assert_eq!(
            u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len()
        );
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 0x0101);
        assert_eq!(r[16], AF_INET);
        let orig = attr(&r[20..], CTA_TUPLE_ORIG).unwrap();
        let ip = attr(orig, CTA_TUPLE_IP).unwrap();
        assert_eq!(attr(ip, CTA_IP_V4_DST).unwrap(), &[10, 96, 0, 5]);
        let p = attr(orig, CTA_TUPLE_PROTO).unwrap();
        assert_eq!(attr(p, CTA_PROTO_NUM).unwrap(), &[TCP]);
        assert_eq!(attr(p, CTA_PROTO_DST_PORT).unwrap(), &80u16.to_be_bytes());
        assert_eq!(tuple_source(orig), Some(sa("10.0.0.1:40000")));
        assert!(request(1, TCP, sa("10.0.0.1:1"), sa("[::1]:2")).is_none());
    }

    /// An answer as the kernel writes it: the reply tuple comes from the
    /// pod that answered.
    #[test]
    fn an_answer_names_who_answered() {
        let mut m = request(9, TCP, sa("10.0.0.1:40000"), sa("10.96.0.5:80")).unwrap();
        m[4..6].copy_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW).to_ne_bytes());
        let reply = request(0, TCP, sa("10.0.0.9:8080"), sa("10.0.0.1:40000")).unwrap();
        let t = begin_nest(&mut m, CTA_TUPLE_REPLY);
        m.extend_from_slice(&attrs(&reply[20..]).next().map(|(_, p)| p.to_vec()).unwrap());
        end_nest(&mut m, t);
        put_attr(&mut m, CTA_STATUS, &(IPS_DST_NAT | 0xe).to_be_bytes());
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_reply(&m, 8), Reply::Other, "another request's answer");
        assert_eq!(
            parse_reply(&m, 9),
            Reply::Entry(Entry {
                answered: Some(sa("10.0.0.9:8080")),
                dst_nat: true
            })
        );
        let mut err = vec![0u8; 20];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&3u32.to_ne_bytes());
        err[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(parse_reply(&err, 3), Reply::Missing);
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_reply(&err, 3), Reply::Error(1));
        assert_eq!(parse_reply(&err[..10], 3), Reply::Other, "truncated");
    }
}
