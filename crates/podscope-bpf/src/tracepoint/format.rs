//! A tracepoint's tracefs `format` file: its id and fields, and decoding a raw
//! record with them (names, signedness, sizes, arrays, `__data_loc` strings,
//! pointers) the way perf and bpftrace present them.

use podscope_model::{TpFields, TpValue};

/// How a field's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An integer of `size` bytes (1, 2, 4 or 8).
    Int,
    /// A pointer: shown as hex.
    Pointer,
    /// `char name[N]`: a NUL-terminated string in place.
    Chars,
    /// `type name[N]` of other element types: a list of `elem` byte integers.
    Array {
        /// Bytes per element.
        elem: usize,
    },
    /// `__data_loc char[] name`: a u32 (length << 16 | offset from the record start).
    DataLoc {
        /// A string (`char[]`) rather than a list of elements.
        chars: bool,
        /// Bytes per element (`u64[]`: 8; `cpumask_t`: a bitmap of unsigned longs).
        elem: u8,
        /// The elements are signed (`int[]`, `s32[]`).
        signed: bool,
    },
    /// `__rel_loc char[] name` (5.18+): like DataLoc, offset from the end of the u32.
    RelLoc {
        /// A string (`char[]`) rather than a list of elements.
        chars: bool,
        /// Bytes per element.
        elem: u8,
        /// The elements are signed.
        signed: bool,
    },
}

/// One field of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name as the format file (and perf, bpftrace) has it.
    pub name: String,
    /// The declared C type (`unsigned int`, `__data_loc char[]`, `void *`).
    pub ctype: String,
    /// Byte offset in the record.
    pub offset: usize,
    /// Bytes the field takes in the fixed part.
    pub size: usize,
    /// The format's `signed:` flag.
    pub signed: bool,
    /// How it is read.
    pub kind: FieldKind,
}

impl Field {
    /// A string field (`char[N]`, `__data_loc char[]`).
    pub fn is_string(&self) -> bool {
        matches!(
            self.kind,
            FieldKind::Chars
                | FieldKind::DataLoc { chars: true, .. }
                | FieldKind::RelLoc { chars: true, .. }
        )
    }

    /// What `podscope probes --tracepoints` shows: `unsigned int len`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.ctype, self.name)
    }
}

/// A parsed format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// `SUBSYSTEM:EVENT`.
    pub name: String,
    /// The event id (`ID:`), which every record starts with (common_type).
    pub id: u32,
    /// The event's fields, `common_*` left out.
    pub fields: Vec<Field>,
    /// Bytes of the fixed part of a record (common fields included).
    pub fixed_bytes: usize,
}

impl Format {
    /// Parses the text of `events/SUBSYS/EVENT/format`.
    pub fn parse(name: &str, text: &str) -> Result<Format, String> {
        let mut id = None;
        let mut fields = Vec::new();
        let mut fixed = 0usize;
        for line in text.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("ID:") {
                id = v.trim().parse().ok();
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            let mut signed = false;
            for part in rest.split(';').map(str::trim) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<usize>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<usize>().ok();
                } else if let Some(v) = part.strip_prefix("signed:") {
                    signed = v == "1";
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(format!("{name}: cannot read the format line '{line}'"));
            };
            fixed = fixed.max(offset + size);
            let (ctype, fname, count) = split_decl(decl);
            if fname.starts_with("common_") {
                continue;
            }
            let is_char = |t: &str| {
                let t = t.trim_start_matches("const ").trim();
                t == "char" || t == "unsigned char" || t == "signed char"
            };
            let kind = if let Some(t) = ctype.strip_prefix("__data_loc ") {
                let (chars, elem, signed) = dynamic_elements(t);
                FieldKind::DataLoc {
                    chars,
                    elem,
                    signed,
                }
            } else if let Some(t) = ctype.strip_prefix("__rel_loc ") {
                let (chars, elem, signed) = dynamic_elements(t);
                FieldKind::RelLoc {
                    chars,
                    elem,
                    signed,
                }
            } else if ctype.ends_with('*') {
                FieldKind::Pointer
            } else if count.is_some() && is_char(&ctype) && !ctype.contains("unsigned") {
                FieldKind::Chars
            } else if let Some(n) = count {
                let elem = if n > 0 && size % n == 0 { size / n } else { 1 };
                FieldKind::Array { elem }
            } else if matches!(size, 1 | 2 | 4 | 8) {
                FieldKind::Int
            } else {
                FieldKind::Array { elem: 1 }
            };
            fields.push(Field {
                name: fname,
                ctype,
                offset,
                size,
                signed,
                kind,
            });
        }
        let id = id.ok_or_else(|| format!("{name}: the format file has no ID line"))?;
        Ok(Format {
            name: name.to_string(),
            id,
            fields,
            fixed_bytes: fixed,
        })
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Decodes one raw record (from its first byte, common_type). Returns the
    /// fields and whether a variable-length field ran past the bytes copied.
    pub fn decode(&self, data: &[u8]) -> (TpFields, bool) {
        let mut out = Vec::with_capacity(self.fields.len());
        let mut truncated = false;
        for f in &self.fields {
            let v = match f.kind {
                FieldKind::Int => int(data, f.offset, f.size, f.signed),
                FieldKind::Pointer => {
                    let v = uint(data, f.offset, f.size.min(8));
                    TpValue::Str(format!("{v:#x}"))
                }
                FieldKind::Chars => {
                    let end = (f.offset + f.size).min(data.len());
                    TpValue::Str(c_string(data.get(f.offset..end).unwrap_or(&[])))
                }
                FieldKind::Array { elem } => {
                    let elem = if matches!(elem, 1 | 2 | 4 | 8) {
                        elem
                    } else {
                        1
                    };
                    TpValue::List(
                        (0..f.size / elem)
                            .map(|i| int(data, f.offset + i * elem, elem, f.signed))
                            .collect(),
                    )
                }
                FieldKind::DataLoc {
                    chars,
                    elem,
                    signed,
                }
                | FieldKind::RelLoc {
                    chars,
                    elem,
                    signed,
                } => {
                    let loc = uint(data, f.offset, 4) as usize;
                    let mut start = loc & 0xffff;
                    if matches!(f.kind, FieldKind::RelLoc { .. }) {
                        start += f.offset + 4;
                    }
                    let len = loc >> 16;
                    let end = start + len;
                    if end > data.len() {
                        truncated = true;
                    }
                    let bytes = data
                        .get(start.min(data.len())..end.min(data.len()))
                        .unwrap_or(&[]);
                    let elem = usize::from(elem);
                    if chars {
                        TpValue::Str(c_string(bytes))
                    } else if elem > 1 && bytes.len() % elem == 0 {
                        TpValue::List(
                            (0..bytes.len() / elem)
                                .map(|i| int(bytes, i * elem, elem, signed))
                                .collect(),
                        )
                    } else {
                        // Elements of an unknown size, or a cut array: bytes.
                        TpValue::List(bytes.iter().map(|b| TpValue::Uint(*b as u64)).collect())
                    }
                }
            };
            out.push((f.name.clone(), v));
        }
        (TpFields(out), truncated)
    }
}

/// A dynamic array's element type (`char[]`, `u64[]`, `unsigned int[]`,
/// `cpumask_t`): (a string, bytes per element, signed). Types it does not
/// know are bytes.
fn dynamic_elements(t: &str) -> (bool, u8, bool) {
    let t = t.trim().trim_end_matches("[]").trim();
    let t = t.strip_prefix("const ").unwrap_or(t).trim();
    if t == "char" {
        return (true, 1, false);
    }
    if t.ends_with('*') {
        return (false, 8, false);
    }
    let (elem, signed) = match t {
        "u8" | "__u8" | "unsigned char" | "uint8_t" => (1, false),
        "s8" | "__s8" | "signed char" | "int8_t" => (1, true),
        "u16" | "__u16" | "unsigned short" | "uint16_t" | "__be16" | "__le16" => (2, false),
        "s16" | "__s16" | "short" | "int16_t" => (2, true),
        "u32" | "__u32" | "unsigned int" | "unsigned" | "uint32_t" | "__be32" | "__le32"
        | "pid_t" => (4, matches!(t, "pid_t")),
        "s32" | "__s32" | "int" | "int32_t" => (4, true),
        "u64" | "__u64" | "unsigned long" | "unsigned long long" | "uint64_t" | "size_t"
        | "dma_addr_t" | "phys_addr_t" | "__be64" | "__le64"
        // A cpumask is a bitmap of unsigned longs.
        | "cpumask_t" | "struct cpumask" => (8, false),
        "s64" | "__s64" | "long" | "long long" | "int64_t" | "ssize_t" | "loff_t" => (8, true),
        _ => (1, false),
    };
    (false, elem, signed)
}

/// `unsigned int len` -> ("unsigned int", "len", None); `char comm[16]` ->
/// ("char", "comm", Some(16)); `__data_loc char[] name` -> ("__data_loc char[]", "name", None).
fn split_decl(decl: &str) -> (String, String, Option<usize>) {
    let decl = decl.trim();
    let (head, count) = match decl.strip_suffix(']') {
        Some(d) if !d.ends_with('[') => match d.rfind('[') {
            Some(i) => (&d[..i], d[i + 1..].trim().parse::<usize>().ok().or(Some(0))),
            None => (decl, None),
        },
        _ => (decl, None),
    };
    let head = head.trim_end();
    let split = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = head[split..].to_string();
    let ctype = head[..split].trim().to_string();
    (ctype, name, count)
}

fn uint(data: &[u8], off: usize, size: usize) -> u64 {
    let mut b = [0u8; 8];
    let end = (off + size).min(data.len());
    if off < end {
        b[..end - off].copy_from_slice(&data[off..end]);
    }
    u64::from_ne_bytes(b)
}

fn int(data: &[u8], off: usize, size: usize, signed: bool) -> TpValue {
    let v = uint(data, off, size);
    if !signed {
        return TpValue::Uint(v);
    }
    let bits = (size.clamp(1, 8) * 8) as u32;
    let shift = 64 - bits;
    TpValue::Int(((v << shift) as i64) >> shift)
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: sched_process_fork\nID: 366\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:char child_comm[16];\toffset:16;\tsize:16;\tsigned:0;\n\
\tfield:void * skbaddr;\toffset:32;\tsize:8;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:40;\tsize:4;\tsigned:0;\n\
\tfield:short delta;\toffset:44;\tsize:2;\tsigned:1;\n\n\
print fmt: \"...\"\n";

    #[test]
    fn parses_and_decodes_every_kind() {
        let f = Format::parse("sched:sched_process_fork", FORK).unwrap();
        assert_eq!(f.id, 366);
        assert_eq!(f.fixed_bytes, 46);
        let names: Vec<&str> = f.fields.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "parent_comm",
                "parent_pid",
                "child_comm",
                "skbaddr",
                "saddr",
                "delta"
            ]
        );
        assert_eq!(
            f.fields[0].kind,
            FieldKind::DataLoc {
                chars: true,
                elem: 1,
                signed: false
            }
        );
        assert_eq!(f.fields[2].kind, FieldKind::Chars);
        assert_eq!(f.fields[3].kind, FieldKind::Pointer);
        assert_eq!(f.fields[4].kind, FieldKind::Array { elem: 1 });
        assert_eq!(f.fields[4].ctype, "__u8");

        let mut rec = vec![0u8; 46];
        rec[0..2].copy_from_slice(&366u16.to_ne_bytes());
        // parent_comm: 3 bytes ("sh\0") at offset 46.
        rec[8..12].copy_from_slice(&((3u32 << 16) | 46).to_ne_bytes());
        rec[12..16].copy_from_slice(&(-5i32).to_ne_bytes());
        rec[16..21].copy_from_slice(b"bash\0");
        rec[32..40].copy_from_slice(&0xffff_8880_1234_5678u64.to_ne_bytes());
        rec[40..44].copy_from_slice(&[10, 0, 0, 1]);
        rec[44..46].copy_from_slice(&(-2i16).to_ne_bytes());
        rec.extend_from_slice(b"sh\0");
        let (v, truncated) = f.decode(&rec);
        assert!(!truncated);
        assert_eq!(v.get("parent_comm"), Some(&TpValue::Str("sh".into())));
        assert_eq!(v.get("parent_pid"), Some(&TpValue::Int(-5)));
        assert_eq!(v.get("child_comm"), Some(&TpValue::Str("bash".into())));
        assert_eq!(
            v.get("skbaddr"),
            Some(&TpValue::Str("0xffff888012345678".into()))
        );
        assert_eq!(v.get("delta"), Some(&TpValue::Int(-2)));
        assert_eq!(
            serde_json_like(&v),
            r#"{"parent_comm":"sh","parent_pid":-5,"child_comm":"bash","skbaddr":"0xffff888012345678","saddr":[10,0,0,1],"delta":-2}"#
        );
        // A string past the copied bytes is cut and said so.
        let (_, truncated) = f.decode(&rec[..47]);
        assert!(truncated);
    }

    fn serde_json_like(v: &TpFields) -> String {
        let parts: Vec<String> =
            v.0.iter()
                .map(|(k, v)| match v {
                    TpValue::Str(s) => format!("\"{k}\":\"{s}\""),
                    other => format!("\"{k}\":{other}"),
                })
                .collect();
        format!("{{{}}}", parts.join(","))
    }

    #[test]
    fn declarations_split() {
        assert_eq!(
            split_decl("unsigned int len"),
            ("unsigned int".into(), "len".into(), None)
        );
        assert_eq!(
            split_decl("char comm[16]"),
            ("char".into(), "comm".into(), Some(16))
        );
        assert_eq!(
            split_decl("__data_loc char[] name"),
            ("__data_loc char[]".into(), "name".into(), None)
        );
        assert_eq!(
            split_decl("const void * location"),
            ("const void *".into(), "location".into(), None)
        );
        assert_eq!(
            split_decl("char comm[TASK_COMM_LEN]"),
            ("char".into(), "comm".into(), Some(0))
        );
    }

    /// This kernel's (6.18) dma:dma_map_sg and ipi:ipi_send_cpumask formats,
    /// as tracefs has them (print fmt left out): dynamic arrays of u64,
    /// unsigned int and a cpumask decode element by element.
    #[test]
    fn dynamic_arrays_decode_by_their_element_type() {
        let dma = "name: dma_map_sg\nID: 431\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__data_loc char[] device;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:int full_nents;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:int full_ents;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:bool truncated;\toffset:20;\tsize:1;\tsigned:0;\n\
\tfield:__data_loc u64[] phys_addrs;\toffset:24;\tsize:4;\tsigned:0;\n\
\tfield:__data_loc u64[] dma_addrs;\toffset:28;\tsize:4;\tsigned:0;\n\
\tfield:__data_loc unsigned int[] lengths;\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:enum dma_data_direction dir;\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:unsigned long attrs;\toffset:40;\tsize:8;\tsigned:0;\n\n\
print fmt: \"...\"\n";
        let f = Format::parse("dma:dma_map_sg", dma).unwrap();
        let kind = |n: &str| f.field(n).unwrap().kind;
        let loc = |elem, signed| FieldKind::DataLoc {
            chars: false,
            elem,
            signed,
        };
        assert_eq!(kind("phys_addrs"), loc(8, false));
        assert_eq!(kind("lengths"), loc(4, false));
        // A record: the fixed part (48 bytes), then "sda\0", two phys
        // addresses, one dma address (cut: 4 of its 8 bytes) and two lengths.
        let mut r = vec![0u8; 48];
        let put_loc = |r: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            let off = r.len() as u32;
            r[at..at + 4].copy_from_slice(&((bytes.len() as u32) << 16 | off).to_ne_bytes());
            r.extend_from_slice(bytes);
        };
        put_loc(&mut r, 8, b"sda\0");
        let phys: Vec<u8> = [0x1000u64, 0xdead_beef_0000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        put_loc(&mut r, 24, &phys);
        put_loc(&mut r, 28, &0x2000u64.to_ne_bytes()[..4]);
        let lens: Vec<u8> = [4096u32, 512]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        put_loc(&mut r, 32, &lens);
        let (fields, truncated) = f.decode(&r);
        assert!(!truncated);
        let get = |n: &str| fields.0.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("device"), TpValue::Str("sda".into()));
        assert_eq!(
            get("phys_addrs"),
            TpValue::List(vec![TpValue::Uint(0x1000), TpValue::Uint(0xdead_beef_0000)])
        );
        assert_eq!(
            get("lengths"),
            TpValue::List(vec![TpValue::Uint(4096), TpValue::Uint(512)])
        );
        // Not a whole element: its bytes, as before.
        assert_eq!(
            get("dma_addrs"),
            TpValue::List(
                0x2000u64.to_ne_bytes()[..4]
                    .iter()
                    .map(|b| TpValue::Uint(*b as u64))
                    .collect()
            )
        );
        let ipi = "name: ipi_send_cpumask\nID: 12\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__data_loc cpumask_t cpumask;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:void * callsite;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:void * callback;\toffset:24;\tsize:8;\tsigned:0;\n\n\
print fmt: \"...\"\n";
        let f = Format::parse("ipi:ipi_send_cpumask", ipi).unwrap();
        assert_eq!(f.field("cpumask").unwrap().kind, loc(8, false));
        assert_eq!(dynamic_elements("s32[]"), (false, 4, true));
        assert_eq!(dynamic_elements("struct foo[]"), (false, 1, false));
        assert_eq!(dynamic_elements("char[]"), (true, 1, false));
    }
}
