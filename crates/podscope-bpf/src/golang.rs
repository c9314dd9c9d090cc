//! Go executables for the tls probe: whether a file is a Go program that
//! links crypto/tls, where its `(*Conn).Read` and `(*Conn).Write` start and
//! where Read returns. Go does not use libssl; its TLS is in the executable, and a
//! uretprobe there breaks the program (Go moves goroutine stacks and checks
//! return addresses), so each `RET` of the two functions is probed instead,
//! found by disassembling them.
//!
//! Supported: Go >= 1.18 (the build info format that names the version
//! directly; the register ABI started in 1.17); the functions are found in
//! the symbol table, or, in a stripped executable (`-ldflags=-s`), in the
//! runtime's own function table (`.gopclntab`); x86_64 (and arm64, by its
//! fixed-size `RET`, untested here).

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

/// The two functions' symbols.
pub(crate) const READ: &str = "crypto/tls.(*Conn).Read";
pub(crate) const WRITE: &str = "crypto/tls.(*Conn).Write";

/// What the tls probe needs of a Go executable: file offsets (what a
/// uprobe is placed by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoTls {
    /// `go1.22.3`.
    pub version: String,
    /// The two functions' first instructions.
    pub read: u64,
    pub write: u64,
    /// Read's `RET` instructions (Write is reported at its entry).
    pub read_rets: Vec<u64>,
    /// Found through `.gopclntab` (a stripped executable), not `.symtab`.
    pub from_pclntab: bool,
}

/// What a look at an executable found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Look {
    /// Not a Go program.
    NotGo,
    /// A Go program without crypto/tls.
    NoTls,
    /// A Go program whose TLS can be probed.
    Tls(GoTls),
    /// A Go program with TLS that cannot be: why.
    Unsupported(String),
}

/// Looks at the executable at `path`.
pub(crate) fn look(path: &Path) -> Look {
    let Ok(file) = std::fs::File::open(path) else {
        return Look::NotGo;
    };
    // SAFETY: a private read-only mapping of an executable file; a program
    // being replaced under us gives wrong bytes at worst, which the ELF
    // parser and the decoder reject or read as garbage, never unsafety in
    // our code (the mapping is only read as a byte slice).
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return Look::NotGo;
    };
    look_bytes(&map)
}

/// [`look`] on the file's bytes.
pub(crate) fn look_bytes(data: &[u8]) -> Look {
    let Ok(elf) = object::File::parse(data) else {
        return Look::NotGo;
    };
    let Some(info) = elf.section_by_name(".go.buildinfo") else {
        return Look::NotGo;
    };
    let version = match info.data().ok().map(build_version) {
        Some(Ok(v)) => v,
        Some(Err(why)) => return Look::Unsupported(why),
        None => return Look::Unsupported("unreadable .go.buildinfo".into()),
    };
    let mut read = None;
    let mut write = None;
    let mut symbols = 0usize;
    for sym in elf.symbols() {
        symbols += 1;
        match sym.name() {
            Ok(READ) => read = Some((sym.address(), sym.size())),
            Ok(WRITE) => write = Some((sym.address(), sym.size())),
            _ => {}
        }
    }
    let from_pclntab = symbols == 0;
    if from_pclntab {
        // Stripped (`-ldflags=-s`): the runtime's own function table still
        // names every function.
        let Some(tab) = elf
            .section_by_name(".gopclntab")
            .and_then(|s| s.data().ok())
        else {
            return Look::Unsupported(format!("{version}, stripped, without .gopclntab"));
        };
        match pclntab_funcs(tab, &[READ, WRITE]) {
            Ok(found) => {
                read = found[0];
                write = found[1];
            }
            Err(why) => return Look::Unsupported(format!("{version}, stripped: {why}")),
        }
    }
    let (Some(read), Some(write)) = (read, write) else {
        return Look::NoTls;
    };
    let arch = elf.architecture();
    // (file offset of the function, file offsets of its RETs)
    let place = |(addr, size): (u64, u64)| -> Result<(u64, Vec<u64>), String> {
        let sec = elf
            .sections()
            .find(|s| s.address() <= addr && addr + size <= s.address() + s.size())
            .ok_or_else(|| format!("{version}: no section holds {addr:#x}"))?;
        let code = sec
            .data_range(addr, size)
            .ok()
            .flatten()
            .ok_or_else(|| format!("{version}: no code at {addr:#x}"))?;
        let (file_start, _) = sec
            .file_range()
            .ok_or_else(|| format!("{version}: {addr:#x} is not in the file"))?;
        let at = file_start + (addr - sec.address());
        let r = ret_offsets(arch, code, addr)?;
        if r.is_empty() {
            return Err(format!("{version}: no RET found at {addr:#x}"));
        }
        Ok((at, r.into_iter().map(|o| at + o).collect()))
    };
    match (place(read), place(write)) {
        (Ok((read, read_rets)), Ok((write, _))) => Look::Tls(GoTls {
            version,
            read,
            write,
            read_rets,
            from_pclntab,
        }),
        (Err(e), _) | (_, Err(e)) => Look::Unsupported(e),
    }
}

/// The (address, size) of each named function in a Go >= 1.18 `.gopclntab`
/// (the layout Go's debug/gosym reads as ver118 and ver120): a header of
/// magic, pad, min instruction size, pointer size, then pointer-sized
/// words: nfunc, nfiles, textStart, and the offsets of funcnametab, cutab,
/// filetab, pctab and pclntab; pclntab starts with nfunc+1 pairs of u32
/// (entry offset from textStart, offset of the function's `_func`), each
/// `_func` starting with its entry offset and its name's offset in
/// funcnametab. A function ends where the next begins.
fn pclntab_funcs(t: &[u8], names: &[&str]) -> Result<Vec<Option<(u64, u64)>>, String> {
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(t.get(o..o + 4)?.try_into().ok()?)) };
    let magic = u32_at(0).ok_or("short .gopclntab")?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return Err(format!(
            ".gopclntab magic {magic:#x} is not Go 1.18's or 1.20's"
        ));
    }
    let ptr = *t.get(7).ok_or("short .gopclntab")? as usize;
    if ptr != 8 && ptr != 4 {
        return Err(format!(".gopclntab pointer size {ptr}"));
    }
    let word = |i: usize| -> Option<u64> {
        let o = 8 + i * ptr;
        let b = t.get(o..o + ptr)?;
        Some(if ptr == 8 {
            u64::from_le_bytes(b.try_into().ok()?)
        } else {
            u64::from(u32::from_le_bytes(b.try_into().ok()?))
        })
    };
    let bad = || ".gopclntab header out of range".to_string();
    let nfunc = word(0).ok_or_else(bad)? as usize;
    let text_start = word(2).ok_or_else(bad)?;
    let funcnametab = word(3).ok_or_else(bad)? as usize;
    let pcln = word(7).ok_or_else(bad)? as usize;
    let mut out = vec![None; names.len()];
    for i in 0..nfunc {
        let e = pcln + i * 8;
        let (Some(entry), Some(funcoff), Some(next)) = (u32_at(e), u32_at(e + 4), u32_at(e + 8))
        else {
            return Err(".gopclntab function table out of range".into());
        };
        let Some(name_off) = u32_at(pcln + funcoff as usize + 4) else {
            continue;
        };
        let n = funcnametab + name_off as usize;
        let Some(rest) = t.get(n..) else {
            continue;
        };
        let name = &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())];
        if let Some(k) = names.iter().position(|w| w.as_bytes() == name) {
            out[k] = Some((
                text_start + u64::from(entry),
                u64::from(next.saturating_sub(entry)),
            ));
        }
    }
    Ok(out)
}

/// The Go version in a `.go.buildinfo` section: 14 bytes of magic, the
/// pointer size, flags; with flag 2 (Go >= 1.18) the version follows at 32
/// as a varint-prefixed string.
fn build_version(b: &[u8]) -> Result<String, String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if b.len() < 33 || &b[..14] != MAGIC {
        return Err("unreadable .go.buildinfo".into());
    }
    if b[15] & 2 == 0 {
        return Err("Go before 1.18 (its register ABI is not assumed)".into());
    }
    let (len, n) = uvarint(&b[32..]).ok_or("unreadable .go.buildinfo version")?;
    let v = b
        .get(32 + n..32 + n + len as usize)
        .ok_or("unreadable .go.buildinfo version")?;
    Ok(String::from_utf8_lossy(v).into_owned())
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

/// Offsets of the return instructions in a function's code.
fn ret_offsets(arch: object::Architecture, code: &[u8], addr: u64) -> Result<Vec<u64>, String> {
    match arch {
        #[cfg(target_arch = "x86_64")]
        object::Architecture::X86_64 => {
            use iced_x86::{Decoder, DecoderOptions, Mnemonic};
            let mut d = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
            let mut out = Vec::new();
            while d.can_decode() {
                let i = d.decode();
                if i.is_invalid() {
                    return Err(format!("undecodable instruction at {:#x}", i.ip()));
                }
                if i.mnemonic() == Mnemonic::Ret {
                    out.push(i.ip() - addr);
                }
            }
            Ok(out)
        }
        object::Architecture::Aarch64 => Ok(code
            .chunks_exact(4)
            .enumerate()
            .filter(|(_, w)| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) == 0xd65f_03c0)
            .map(|(i, _)| 4 * i as u64)
            .collect()),
        a => Err(format!("{a:?} executables are not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_version() {
        let mut b = b"\xff Go buildinf:".to_vec();
        b.extend_from_slice(&[8, 2]);
        b.resize(32, 0);
        b.push(9);
        b.extend_from_slice(b"go1.22.3x");
        assert_eq!(build_version(&b), Ok("go1.22.3x".into()));
        b[15] = 0;
        assert!(build_version(&b).unwrap_err().contains("before 1.18"));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rets_are_found_at_instruction_boundaries() {
        // mov eax, 0xc3c3c3c3 (C3 bytes inside an immediate); ret; nop; ret
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x90, 0xc3];
        assert_eq!(
            ret_offsets(object::Architecture::X86_64, &code, 0x1000),
            Ok(vec![5, 7])
        );
    }

    #[test]
    fn this_test_binary_is_not_go() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(look(&exe), Look::NotGo);
    }
}
