//! HPACK (RFC 7541) decoding for a passive observer: one decoder per
//! direction of an HTTP/2 connection, tolerant of a table it only partly
//! knows.
//!
//! An observer that joins a connection late (or loses a header block) does
//! not know the older dynamic-table entries. It still knows every entry added
//! since, and they sit at the front of the table at the same indices as in
//! the encoder's table (new entries go in at index 62, older ones move up).
//! So a reference to an index past what we hold is "unknown", not an error,
//! and a literal whose name is such a reference is still added (with an
//! unknown name) to keep the indices of everything after it right. After a
//! decoding error or a lost block the table is cleared and marked partial:
//! that recovers the same way, from the next block on.
//!
//! Values of credential headers (`authorization`, `proxy-authorization`,
//! `cookie`, `set-cookie`) are never stored, not even in the table: their
//! entries keep the name and the size only.
//!
//! Huffman decoding is the well-tested `loona-hpack` crate's; its `Decoder`
//! cannot continue past an unknown index, which is why the table logic is
//! here.

use std::collections::VecDeque;

use loona_hpack::huffman::HuffmanDecoder;

/// The RFC 7541 Appendix A static table (index 1..=61).
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The default SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// The most table we keep per direction whatever the peers agree on (bounds
/// memory); a size update above it makes the table partial, not an error.
pub const MAX_TABLE_SIZE: usize = 256 * 1024;
/// A string literal longer than this is an error (a header block is bounded
/// by the frame parser anyway).
const MAX_STRING: usize = 64 * 1024;

/// Names whose values podscope never keeps.
pub fn is_credential(name: &[u8]) -> bool {
    matches!(
        name,
        b"authorization" | b"proxy-authorization" | b"cookie" | b"set-cookie"
    )
}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a field.
    Truncated,
    /// An integer longer than 32 bits.
    IntegerOverflow,
    /// Index 0, or past a table we know completely.
    BadIndex,
    /// A Huffman string that does not decode.
    Huffman,
    /// A string literal longer than the block allows.
    StringTooLong,
    /// A table size update above SETTINGS_HEADER_TABLE_SIZE.
    SizeAboveSetting,
}

impl Error {
    /// For parse-error reasons and counters.
    pub fn reason(self) -> &'static str {
        match self {
            Error::Truncated => "hpack block ends inside a field",
            Error::IntegerOverflow => "hpack integer overflow",
            Error::BadIndex => "hpack index not in the table",
            Error::Huffman => "hpack huffman string invalid",
            Error::StringTooLong => "hpack string too long",
            Error::SizeAboveSetting => "hpack table size update above the peer's setting",
        }
    }
}

/// One decoded field; `None` where it referred to a table entry we do not
/// know. Credential values are always `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Header name, lower case on the wire in HTTP/2.
    pub name: Option<Vec<u8>>,
    /// Header value.
    pub value: Option<Vec<u8>>,
}

/// A table entry's name and value (`None`: unknown or withheld).
type NameValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

#[derive(Debug, Clone)]
struct Entry {
    name: Option<Box<[u8]>>,
    value: Option<Box<[u8]>>,
    /// RFC size: 32 + name + value octets (also for withheld or unknown parts).
    size: usize,
}

/// One direction's decoder.
pub struct Decoder {
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The peer's SETTINGS_HEADER_TABLE_SIZE: size updates above it are errors.
    setting: usize,
    /// Every entry of the encoder's table is in ours (we saw the
    /// connection start and lost nothing since).
    complete: bool,
    huffman: HuffmanDecoder,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.table.len())
            .field("size", &self.size)
            .field("max_size", &self.max_size)
            .field("complete", &self.complete)
            .finish()
    }
}

impl Decoder {
    /// A decoder for a connection seen from its start (`complete`) or joined
    /// later.
    pub fn new(complete: bool) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            setting: DEFAULT_TABLE_SIZE,
            complete,
            huffman: HuffmanDecoder::new(),
        }
    }

    /// Whether the table is known in full (decoded fields are never unknown).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// A block was lost or failed to decode: forget the table, keep decoding
    /// from the next block with what becomes known again.
    pub fn lose_state(&mut self) {
        self.table.clear();
        self.size = 0;
        self.complete = false;
    }

    /// The peer that decodes this direction announced SETTINGS_HEADER_TABLE_SIZE.
    pub fn set_setting(&mut self, size: u32) {
        self.setting = size as usize;
    }

    /// Bytes held by the table (for memory accounting in tests).
    pub fn table_bytes(&self) -> usize {
        self.table
            .iter()
            .map(|e| {
                e.name.as_ref().map_or(0, |n| n.len()) + e.value.as_ref().map_or(0, |v| v.len())
            })
            .sum()
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn add(&mut self, name: Option<&[u8]>, value: Option<&[u8]>, size: usize) {
        if size > self.max_size {
            // An entry larger than the table empties it (RFC 7541 4.4).
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        let keep_value = !name.is_some_and(is_credential);
        self.table.push_front(Entry {
            name: name.map(Box::from),
            value: if keep_value {
                value.map(Box::from)
            } else {
                None
            },
            size,
        });
        self.size += size;
    }

    /// `Ok(None)`: a dynamic entry we do not hold (table partial).
    fn lookup(&self, index: usize) -> Result<Option<NameValue<'_>>, Error> {
        if index == 0 {
            return Err(Error::BadIndex);
        }
        if index <= STATIC.len() {
            let (n, v) = STATIC[index - 1];
            return Ok(Some((Some(n.as_bytes()), Some(v.as_bytes()))));
        }
        match self.table.get(index - STATIC.len() - 1) {
            Some(e) => Ok(Some((e.name.as_deref(), e.value.as_deref()))),
            None if self.complete => Err(Error::BadIndex),
            None => Ok(None),
        }
    }

    fn string(&mut self, buf: &[u8], pos: &mut usize) -> Result<Vec<u8>, Error> {
        let first = *buf.get(*pos).ok_or(Error::Truncated)?;
        let huffman = first & 0x80 != 0;
        let len = integer(buf, pos, 7)? as usize;
        if len > MAX_STRING {
            return Err(Error::StringTooLong);
        }
        let end = pos.checked_add(len).ok_or(Error::Truncated)?;
        let raw = buf.get(*pos..end).ok_or(Error::Truncated)?;
        *pos = end;
        if huffman {
            self.huffman.decode(raw).map_err(|_| Error::Huffman)
        } else {
            Ok(raw.to_vec())
        }
    }

    /// Decodes one whole header block (HEADERS or PUSH_PROMISE plus its
    /// CONTINUATIONs, padding and priority removed). On an error the table
    /// is forgotten ([`Decoder::lose_state`]) and the fields decoded before
    /// it are returned with the error.
    pub fn decode(&mut self, buf: &[u8]) -> (Vec<Field>, Option<Error>) {
        let mut fields = Vec::new();
        match self.decode_into(buf, &mut fields) {
            Ok(()) => (fields, None),
            Err(e) => {
                self.lose_state();
                (fields, Some(e))
            }
        }
    }

    fn decode_into(&mut self, buf: &[u8], fields: &mut Vec<Field>) -> Result<(), Error> {
        let mut pos = 0;
        while pos < buf.len() {
            let b = buf[pos];
            if b & 0x80 != 0 {
                // Indexed field.
                let index = integer(buf, &mut pos, 7)? as usize;
                let field = match self.lookup(index)? {
                    Some((n, v)) => field(n, v),
                    None => field(None, None),
                };
                fields.push(field);
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update.
                let size = integer(buf, &mut pos, 5)? as usize;
                if size > self.setting.max(DEFAULT_TABLE_SIZE) {
                    return Err(Error::SizeAboveSetting);
                }
                if size > MAX_TABLE_SIZE {
                    // Tracking a table this big costs more memory than we
                    // allow a connection: we stop knowing it in full.
                    self.lose_state();
                    self.max_size = MAX_TABLE_SIZE;
                } else {
                    self.max_size = size;
                    self.evict_to(size);
                }
            } else {
                // Literal: with incremental indexing (01), without (0000) or
                // never indexed (0001).
                let (prefix, indexing) = if b & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let index = integer(buf, &mut pos, prefix)? as usize;
                let name: Option<Vec<u8>> = if index == 0 {
                    Some(self.string(buf, &mut pos)?)
                } else {
                    match self.lookup(index)? {
                        Some((n, _)) => n.map(<[u8]>::to_vec),
                        None => None,
                    }
                };
                let value = self.string(buf, &mut pos)?;
                if indexing {
                    // The size counts the real name; an unknown name's size
                    // is unknown too, so the table cannot be trusted to
                    // evict like the encoder's: it stays partial.
                    let size = match &name {
                        Some(n) => 32 + n.len() + value.len(),
                        None => {
                            self.complete = false;
                            32 + value.len()
                        }
                    };
                    self.add(name.as_deref(), Some(&value), size);
                }
                fields.push(field(name.as_deref(), Some(&value)));
            }
        }
        Ok(())
    }
}

fn field(name: Option<&[u8]>, value: Option<&[u8]>) -> Field {
    let keep_value = !name.is_some_and(is_credential);
    Field {
        name: name.map(<[u8]>::to_vec),
        value: if keep_value {
            value.map(<[u8]>::to_vec)
        } else {
            None
        },
    }
}

/// An HPACK integer with an N-bit prefix at `buf[*pos]` (RFC 7541 5.1).
fn integer(buf: &[u8], pos: &mut usize, prefix: u8) -> Result<u32, Error> {
    let mask = (1u16 << prefix) as u8 - 1;
    let first = *buf.get(*pos).ok_or(Error::Truncated)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(u32::from(first));
    }
    let mut value = u64::from(mask);
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(Error::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(Error::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value as u32);
        }
        shift += 7;
        if shift > 28 {
            return Err(Error::IntegerOverflow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                let s = |b: &Option<Vec<u8>>| {
                    b.as_ref()
                        .map_or("?".to_string(), |b| String::from_utf8_lossy(b).into_owned())
                };
                (s(&f.name), s(&f.value))
            })
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 7541 C.4: requests with Huffman coding, sharing one table.
    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = Decoder::new(true);
        let (f, e) = d.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
        assert_eq!(e, None);
        assert_eq!(
            names(&f),
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let (f, e) = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"));
        assert_eq!(e, None);
        assert_eq!(
            names(&f)[3],
            (":authority".into(), "www.example.com".into())
        );
        assert_eq!(names(&f)[4], ("cache-control".into(), "no-cache".into()));
        let (f, e) = d.decode(&hex(
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ));
        assert_eq!(e, None);
        assert_eq!(names(&f)[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.size, 164);
    }

    /// RFC 7541 C.6: responses with Huffman coding and evictions (256-byte table).
    #[test]
    fn rfc7541_c6_responses_with_eviction() {
        let mut d = Decoder::new(true);
        d.set_setting(256);
        d.max_size = 256;
        let blocks = [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ];
        let mut last = Vec::new();
        for b in blocks {
            let (f, e) = d.decode(&hex(b));
            assert_eq!(e, None);
            last = names(&f);
        }
        assert_eq!(last[0], (":status".into(), "200".into()));
        assert_eq!(
            last[5],
            (
                "set-cookie".into(),
                "?".into() // withheld, never stored
            )
        );
        assert_eq!(d.size, 215);
    }

    #[test]
    fn a_partial_table_reports_unknown_entries_and_keeps_later_indices_right() {
        let mut d = Decoder::new(false);
        // Literal with incremental indexing, name :path (static 4), value /a;
        // then index 62 (that entry) and index 63 (older, unknown).
        let (f, e) = d.decode(&[0x44, 0x02, b'/', b'a', 0x80 | 62, 0x80 | 63]);
        assert_eq!(e, None);
        assert_eq!(
            names(&f),
            [(":path", "/a"), (":path", "/a"), ("?", "?")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // Literal indexed with an unknown name (index 63), then a reference
        // to it and to the /a entry behind it.
        let (f, e) = d.decode(&[0x7f, 0x00, 0x01, b'x', 0x80 | 62, 0x80 | 63]);
        assert_eq!(e, None);
        assert_eq!(names(&f)[1], ("?".into(), "x".into()));
        assert_eq!(names(&f)[2], (":path".into(), "/a".into()));
    }

    #[test]
    fn a_complete_table_refuses_unknown_indices_and_forgets_itself() {
        let mut d = Decoder::new(true);
        let (_, e) = d.decode(&[0x80 | 62]);
        assert_eq!(e, Some(Error::BadIndex));
        assert!(!d.complete());
        let (_, e) = d.decode(&[0x80]);
        assert_eq!(e, Some(Error::BadIndex));
    }

    #[test]
    fn credentials_are_never_stored() {
        let mut d = Decoder::new(true);
        // authorization (static 23) literal with indexing, value "secret".
        let mut block = vec![0x40 | 23, 6];
        block.extend_from_slice(b"secret");
        block.push(0x80 | 62);
        let (f, e) = d.decode(&block);
        assert_eq!(e, None);
        assert!(f.iter().all(|f| f.value.is_none()));
        assert_eq!(d.table_bytes(), "authorization".len());
        assert_eq!(d.size, 32 + 13 + 6);
    }

    #[test]
    fn integers() {
        let mut p = 0;
        assert_eq!(integer(&[31, 154, 10], &mut p, 5), Ok(1337));
        assert_eq!(p, 3);
        let mut p = 0;
        assert_eq!(
            integer(&[31, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut p, 5),
            Err(Error::IntegerOverflow)
        );
        let mut p = 0;
        assert_eq!(integer(&[31, 0x80], &mut p, 5), Err(Error::Truncated));
    }
}
