//! What the skb probes (drop, net) share on the user side: a packet's flow
//! as bpf/include/skb_flow.h records it, named for output.

use std::net::IpAddr;

/// A packet's flow in printable form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FlowText {
    /// `tcp`, `udp`, `icmp`, ..., empty without an IP header.
    pub protocol: String,
    /// `ipv4`, `ipv6` or empty.
    pub family: String,
    pub saddr: String,
    pub daddr: String,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (`SYN|ACK`), TCP only.
    pub tcp_flags: String,
    pub ethertype: u16,
    /// The IP header's packet length (0 without one).
    pub ip_len: u32,
}

/// The fields of `struct skb_flow`, whichever skeleton's copy of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFlow<'a> {
    pub protocol: u16,
    pub l4proto: u8,
    pub family: u8,
    pub tcp_flags: u8,
    pub sport: u16,
    pub dport: u16,
    pub ip_len: u32,
    pub saddr: &'a [u8; 16],
    pub daddr: &'a [u8; 16],
}

/// Builds a [`RawFlow`] from a skeleton's generated `skb_flow`.
macro_rules! raw_flow {
    ($f:expr) => {
        $crate::skb_flow::RawFlow {
            protocol: $f.protocol,
            l4proto: $f.l4proto,
            family: $f.family,
            tcp_flags: $f.tcp_flags,
            sport: $f.sport,
            dport: $f.dport,
            ip_len: $f.ip_len,
            saddr: &$f.saddr,
            daddr: &$f.daddr,
        }
    };
}
pub(crate) use raw_flow;

impl RawFlow<'_> {
    pub(crate) fn text(&self) -> FlowText {
        FlowText {
            protocol: if self.family == 0 {
                String::new()
            } else {
                ip_proto_name(self.l4proto)
            },
            family: match self.family {
                4 => "ipv4",
                6 => "ipv6",
                _ => "",
            }
            .into(),
            saddr: addr(self.family, self.saddr),
            daddr: addr(self.family, self.daddr),
            sport: self.sport,
            dport: self.dport,
            tcp_flags: if self.l4proto == 6 && self.family != 0 {
                tcp_flags(self.tcp_flags)
            } else {
                String::new()
            },
            ethertype: self.protocol,
            ip_len: self.ip_len,
        }
    }
}

pub(crate) fn ip_proto_name(p: u8) -> String {
    match p {
        0 => "hopopts".into(),
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

pub(crate) fn tcp_flags(f: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = [1usize, 0, 2, 3, 4, 5, 6, 7]
        .iter()
        .filter(|i| f & (1 << **i) != 0)
        .map(|i| NAMES[*i])
        .collect();
    set.join("|")
}

pub(crate) fn addr(family: u8, a: &[u8; 16]) -> String {
    match family {
        4 => crate::decode::inet_addr(2, a),
        6 => crate::decode::inet_addr(10, a),
        _ => String::new(),
    }
}

/// IPv4 as ::ffff:a.b.c.d, as the kernel sides key addresses.
pub(crate) fn addr_key(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_flags_in_the_usual_order() {
        assert_eq!(tcp_flags(0x02), "SYN");
        assert_eq!(tcp_flags(0x12), "SYN|ACK");
        assert_eq!(tcp_flags(0x14), "RST|ACK");
        assert_eq!(tcp_flags(0), "");
    }

    #[test]
    fn ipv4_addresses_are_keyed_as_mapped_ipv6() {
        let k = addr_key(&"10.88.93.5".parse().unwrap());
        assert_eq!(&k[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k[12..], &[10, 88, 93, 5]);
    }
}
