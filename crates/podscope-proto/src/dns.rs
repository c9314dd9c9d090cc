//! DNS messages (RFC 1035) as captured from UDP and TCP port-53 sockets: the
//! header, the first question and the answers, TCP streams cut back into
//! messages, and queries matched to responses by (process, socket, id).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Answers kept per response.
const MAX_ANSWERS: usize = 16;
/// A DNS header's size: the shortest message.
const HEADER: usize = 12;
/// Queries waiting for a response, over all sockets.
const MAX_PENDING: usize = 4096;

/// One parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message id.
    pub id: u16,
    /// A response (QR set).
    pub response: bool,
    /// Response code name.
    pub rcode: String,
    /// The first question's name, without the trailing dot.
    pub name: String,
    /// The first question's type name.
    pub qtype: String,
    /// Answer records as text.
    pub answers: Vec<String>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A (possibly compressed) name at `at`: the name and the offset after it.
fn name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    // Each pointer must go backwards, so a loop cannot last; the count is a
    // second bound.
    let mut limit = at;
    for _ in 0..128 {
        let len = *msg.get(at)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let after = end.unwrap_or(at + 1);
                return Some((labels.join("."), after));
            }
            0x00 => {
                let label = msg.get(at + 1..at + 1 + len)?;
                labels.push(
                    label
                        .iter()
                        .map(|b| {
                            if b.is_ascii_graphic() {
                                *b as char
                            } else {
                                '?'
                            }
                        })
                        .collect(),
                );
                at += 1 + len;
            }
            0xc0 => {
                let ptr = (be16(msg, at)? & 0x3fff) as usize;
                if ptr >= limit {
                    return None;
                }
                end.get_or_insert(at + 2);
                limit = ptr;
                at = ptr;
            }
            _ => return None,
        }
    }
    None
}

fn type_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        t => format!("TYPE{t}"),
    }
}

fn rcode_name(r: u16) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        r => format!("RCODE{r}"),
    }
}

/// Parses a DNS message; None if it is not one (or cut before its question).
pub fn parse(msg: &[u8]) -> Option<Message> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    let qd = be16(msg, 4)?;
    let an = be16(msg, 6)?;
    if qd == 0 || (flags >> 11) & 0xf != 0 {
        return None; // no question, or not a standard query
    }
    let (qname, mut at) = name(msg, 12)?;
    let qtype = be16(msg, at)?;
    at += 4;
    for _ in 1..qd {
        let (_, next) = name(msg, at)?;
        at = next + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an.min(MAX_ANSWERS as u16) {
        // A response cut by the capture keeps the answers read so far.
        let Some((_, next)) = name(msg, at) else {
            break;
        };
        let (Some(t), Some(rdlen)) = (be16(msg, next), be16(msg, next + 8)) else {
            break;
        };
        let rdata_at = next + 10;
        let Some(rdata) = msg.get(rdata_at..rdata_at + rdlen as usize) else {
            break;
        };
        answers.push(match (t, rdata.len()) {
            (1, 4) => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            (28, 16) => Ipv6Addr::from(<[u8; 16]>::try_from(rdata).unwrap()).to_string(),
            (5 | 12 | 2, _) => name(msg, rdata_at).map_or_else(|| type_name(t), |(n, _)| n),
            _ => type_name(t),
        });
        at = rdata_at + rdlen as usize;
    }
    Some(Message {
        id,
        response: flags & 0x8000 != 0,
        rcode: rcode_name(flags & 0xf),
        name: qname,
        qtype: type_name(qtype),
        answers,
    })
}

/// One direction of a DNS-over-TCP connection cut back into messages: each
/// is sent after its length in two bytes (RFC 1035 4.2.2, RFC 7766), and a
/// syscall may move part of one, several, or a length alone (dnsmasq reads
/// the two length bytes one at a time, glibc writes two queries with one
/// writev).
#[derive(Debug, Default)]
pub struct TcpFraming {
    /// Length bytes of the next message read so far.
    head: Vec<u8>,
    /// The message being read: its length (0 while reading the length).
    want: usize,
    /// Its bytes passed so far, captured or not.
    got: usize,
    /// Its captured bytes.
    msg: Vec<u8>,
    /// Bytes were lost across a message boundary: the next record starts over.
    lost: bool,
}

impl TcpFraming {
    /// One syscall's bytes: `data` was captured, the `missed` bytes after it
    /// were not (the capture limit). Complete messages go to `out` (a message
    /// whose end was missed goes cut, which [`parse`] reads as far as it can).
    /// Returns false when the framing is lost: the missed bytes crossed into
    /// the next message's length, or a length was shorter than a DNS header
    /// (the stream was joined mid-message). The next call then starts a new
    /// message (clients and servers read and write whole messages).
    pub fn push(&mut self, data: &[u8], missed: usize, out: &mut Vec<Vec<u8>>) -> bool {
        if std::mem::take(&mut self.lost) {
            self.reset();
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.want == 0 {
                self.head.push(rest[0]);
                rest = &rest[1..];
                if self.head.len() == 2 {
                    self.want = usize::from(u16::from_be_bytes([self.head[0], self.head[1]]));
                    self.head.clear();
                    if self.want < HEADER {
                        // Shorter than a DNS header: not a length, the
                        // stream was joined mid-message.
                        self.want = 0;
                        self.lost = true;
                        return false;
                    }
                }
                continue;
            }
            let take = (self.want - self.got).min(rest.len());
            self.msg.extend_from_slice(&rest[..take]);
            self.got += take;
            rest = &rest[take..];
            if self.got == self.want {
                out.push(std::mem::take(&mut self.msg));
                self.want = 0;
                self.got = 0;
            }
        }
        if missed == 0 {
            return true;
        }
        if self.want > 0 && self.want - self.got >= missed {
            self.got += missed;
            if self.got == self.want {
                out.push(std::mem::take(&mut self.msg));
                self.want = 0;
                self.got = 0;
            }
            return true;
        }
        self.lost = true;
        false
    }

    /// What came out was not DNS, so the framing is wrong (the stream was
    /// joined mid-message): the next call starts over.
    pub fn resync(&mut self) {
        self.lost = true;
    }

    /// Inside a message (or its length): bytes of it were seen.
    pub fn mid_message(&self) -> bool {
        !self.lost && (self.want > 0 || !self.head.is_empty())
    }

    fn reset(&mut self) {
        self.head.clear();
        self.msg.clear();
        self.want = 0;
        self.got = 0;
    }
}

/// A finished (or abandoned) query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The task answered it.
    pub server: bool,
    /// What was asked and answered.
    pub message: Message,
    /// When the query moved (or the response, without a query).
    pub start_ns: u64,
    /// Query to response.
    pub latency_ns: Option<u64>,
    /// Why it is incomplete.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Pending {
    query: Message,
    at_ns: u64,
    server: bool,
}

/// Queries waiting for their responses, per (pid, socket, id).
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<(u32, u64, u16), Pending>,
}

impl Tracker {
    /// One message; a response completes its query.
    pub fn message(
        &mut self,
        pid: u32,
        sock: u64,
        at_ns: u64,
        sent: bool,
        m: Message,
        out: &mut Vec<Lookup>,
    ) {
        let key = (pid, sock, m.id);
        if !m.response {
            if self.pending.len() >= MAX_PENDING {
                self.expire_oldest(out);
            }
            if let Some(old) = self.pending.insert(
                key,
                Pending {
                    query: m,
                    at_ns,
                    server: !sent,
                },
            ) {
                out.push(unanswered(old, "no response (id reused)"));
            }
            return;
        }
        match self.pending.remove(&key) {
            Some(q) => out.push(Lookup {
                server: q.server,
                start_ns: q.at_ns,
                latency_ns: Some(at_ns.saturating_sub(q.at_ns)),
                message: m,
                error: None,
            }),
            None => out.push(Lookup {
                server: sent,
                start_ns: at_ns,
                latency_ns: None,
                message: m,
                error: Some("response to a query not seen".into()),
            }),
        }
    }

    fn expire_oldest(&mut self, out: &mut Vec<Lookup>) {
        if let Some(key) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.at_ns)
            .map(|(k, _)| *k)
        {
            let p = self.pending.remove(&key).unwrap();
            out.push(unanswered(p, "no response (too many queries waiting)"));
        }
    }

    /// Queries still waiting, with their (pid, socket): reported, not dropped.
    pub fn finish(&mut self) -> Vec<((u32, u64), Lookup)> {
        let mut all: Vec<((u32, u64, u16), Pending)> = self.pending.drain().collect();
        all.sort_by_key(|(_, p)| p.at_ns);
        all.into_iter()
            .map(|((pid, sock, _), p)| {
                (
                    (pid, sock),
                    unanswered(p, "no response before the trace ended"),
                )
            })
            .collect()
    }

    /// Queries waiting now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn unanswered(p: Pending, why: &str) -> Lookup {
    Lookup {
        server: p.server,
        start_ns: p.at_ns,
        latency_ns: None,
        message: Message {
            rcode: String::new(),
            answers: Vec::new(),
            ..p.query
        },
        error: Some(why.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype`, and its answer with `ips`.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![
            (id >> 8) as u8,
            id as u8,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    fn answer(id: u16, name: &str, rcode: u8, ips: &[[u8; 4]]) -> Vec<u8> {
        let mut m = query(id, name, 1);
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = ips.len() as u8;
        for ip in ips {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(ip);
        }
        m
    }

    #[test]
    fn parses_question_rcode_and_compressed_answers() {
        let q = parse(&query(7, "known.test", 28)).unwrap();
        assert_eq!(
            (q.id, q.response, q.name.as_str(), q.qtype.as_str()),
            (7, false, "known.test", "AAAA")
        );
        let a = parse(&answer(7, "known.test", 0, &[[10, 1, 2, 3], [10, 1, 2, 4]])).unwrap();
        assert!(a.response);
        assert_eq!(a.rcode, "NOERROR");
        assert_eq!(a.answers, ["10.1.2.3", "10.1.2.4"]);
        let nx = parse(&answer(8, "nx.missing.test", 3, &[])).unwrap();
        assert_eq!((nx.rcode.as_str(), nx.answers.len()), ("NXDOMAIN", 0));
    }

    #[test]
    fn queries_match_responses_by_socket_and_id() {
        let mut t = Tracker::default();
        let mut out = Vec::new();
        t.message(
            1,
            9,
            100,
            true,
            parse(&query(1, "a.test", 1)).unwrap(),
            &mut out,
        );
        t.message(
            1,
            9,
            110,
            true,
            parse(&query(2, "a.test", 28)).unwrap(),
            &mut out,
        );
        t.message(
            1,
            9,
            150,
            false,
            parse(&answer(2, "a.test", 0, &[])).unwrap(),
            &mut out,
        );
        t.message(
            1,
            9,
            170,
            false,
            parse(&answer(1, "a.test", 0, &[[1, 2, 3, 4]])).unwrap(),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].message.id, out[0].latency_ns), (2, Some(40)));
        assert_eq!((out[1].message.id, out[1].latency_ns), (1, Some(70)));
        assert!(!out[0].server);
        t.message(
            1,
            9,
            200,
            true,
            parse(&query(3, "b.test", 1)).unwrap(),
            &mut out,
        );
        let left = t.finish();
        assert_eq!(left.len(), 1);
        assert!(left[0].1.error.is_some());
    }

    /// `m` after its two-byte length, as DNS over TCP sends it.
    fn framed(m: &[u8]) -> Vec<u8> {
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(m);
        f
    }

    #[test]
    fn tcp_streams_are_cut_into_messages_however_they_are_read() {
        let a = query(1, "known.test", 1);
        let b = query(2, "known.test", 28);
        let stream = [framed(&a), framed(&b)].concat();
        // Every way of cutting the two messages into two or three reads.
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut f = TcpFraming::default();
                let mut out = Vec::new();
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    assert!(f.push(part, 0, &mut out));
                }
                assert_eq!(out, [a.clone(), b.clone()], "cut at {i}, {j}");
            }
        }
        // One byte at a time (dnsmasq reads the length so).
        let mut f = TcpFraming::default();
        let mut out = Vec::new();
        for byte in &stream {
            f.push(std::slice::from_ref(byte), 0, &mut out);
        }
        assert_eq!(out, [a.clone(), b.clone()]);
    }

    #[test]
    fn bytes_missed_inside_a_message_cut_it_and_across_messages_resync() {
        let big = answer(3, "known.test", 0, &[[1, 1, 1, 1]; 16]);
        let small = query(4, "next.test", 1);
        // The capture kept 40 bytes of the first read: the message goes cut,
        // the framing holds and the next message is whole.
        let first = framed(&big);
        let mut f = TcpFraming::default();
        let mut out = Vec::new();
        assert!(f.push(&first[..40], first.len() - 40, &mut out));
        assert!(f.push(&framed(&small), 0, &mut out));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], big[..38]);
        let cut = parse(&out[0]).unwrap();
        assert_eq!((cut.id, cut.name.as_str()), (3, "known.test"));
        assert_eq!(out[1], small);
        // Missed bytes that ran into the next length: lost, then the next
        // read starts a new message.
        let two = [framed(&big), framed(&small)].concat();
        let mut f = TcpFraming::default();
        let mut out = Vec::new();
        assert!(!f.push(&two[..10], two.len() - 10, &mut out));
        assert!(out.is_empty());
        assert!(f.push(&framed(&small), 0, &mut out));
        assert_eq!(out, [small]);
    }

    #[test]
    fn arbitrary_and_cut_messages_never_panic() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let good = answer(5, "www.example.test", 0, &[[1, 1, 1, 1], [2, 2, 2, 2]]);
        for i in 0..200_000 {
            let mut m = if i % 2 == 0 {
                good.clone()
            } else {
                (0..next() % 300).map(|_| next() as u8).collect()
            };
            for _ in 0..next() % 4 {
                if !m.is_empty() {
                    let at = (next() as usize) % m.len();
                    m[at] = next() as u8;
                }
            }
            let cut = (next() as usize) % (m.len() + 1);
            if let Some(p) = parse(&m[..cut]) {
                assert!(p.answers.len() <= MAX_ANSWERS);
            }
        }
        // Arbitrary reads and misses of a TCP stream: no panic, and what is
        // kept never exceeds one message.
        let mut f = TcpFraming::default();
        let mut out = Vec::new();
        for _ in 0..200_000 {
            let data: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
            let missed = if next() % 4 == 0 {
                next() as usize % 70_000
            } else {
                0
            };
            f.push(&data, missed, &mut out);
            assert!(f.msg.len() <= usize::from(u16::MAX) && f.head.len() < 2);
            for m in out.drain(..) {
                assert!(m.len() <= usize::from(u16::MAX));
                let _ = parse(&m);
            }
        }
        // A pointer loop is refused, not followed forever.
        let mut looped = query(1, "a", 1);
        looped[12] = 0xc0;
        looped[13] = 12;
        assert!(parse(&looped).is_none());
    }
}
