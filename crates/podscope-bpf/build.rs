//! Compiles every `bpf/<probe>.bpf.c` with clang and generates its libbpf-rs
//! skeleton (and the Rust types of its event structs) into OUT_DIR.

use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

/// The probes, by file stem. Adding a probe adds one name here.
const PROBES: &[&str] = &[
    "exec",
    "exit",
    "tcp",
    "bio",
    "cache",
    "open",
    "cgroup",
    "http",
    "dns",
    "tls",
    "syscalls",
    "tracepoint",
    "drop",
    "net",
    "accel",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let bpf_dir = manifest.join("../../bpf");
    let include = bpf_dir.join("include");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let clang = find_clang();
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap().as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        "s390x" => "s390",
        other => panic!("podscope: no BPF target mapping for architecture {other}"),
    };

    syscall_table(&out);
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    for probe in PROBES {
        let src = bpf_dir.join(format!("{probe}.bpf.c"));
        let header = bpf_dir.join(format!("{probe}.h"));
        println!("cargo:rerun-if-changed={}", src.display());
        println!("cargo:rerun-if-changed={}", header.display());
        let skel = out.join(format!("{probe}.skel.rs"));
        // The object name becomes the skeleton's type names (`ExecProbeSkel`);
        // the suffix keeps `open` from clashing with libbpf-rs's `OpenSkel`.
        SkeletonBuilder::new()
            .source(&src)
            .obj(out.join(format!("{probe}_probe.o")))
            .clang(&clang)
            .clang_args([
                format!("-I{}", include.display()),
                format!("-I{}", bpf_dir.display()),
                format!("-D__TARGET_ARCH_{arch}"),
                "-Wall".to_string(),
                "-Wno-unused-variable".to_string(),
                "-O2".to_string(),
                "-g".to_string(),
            ])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("compiling {}: {e:#}", src.display()));
    }
}

/// Debian ships versioned clang binaries; prefer the newest BPF-capable one.
fn find_clang() -> PathBuf {
    if let Some(c) = std::env::var_os("CLANG") {
        return PathBuf::from(c);
    }
    for name in [
        "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang",
    ] {
        if Command::new(name)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return PathBuf::from(name);
        }
    }
    if Path::new("/usr/bin/clang").exists() {
        return PathBuf::from("/usr/bin/clang");
    }
    panic!("podscope: no clang found to compile the BPF programs; install clang (Debian: apt-get install clang-19) or set CLANG=/path/to/clang");
}

/// The target architecture's syscall numbers, from its uapi header
/// (linux-libc-dev), as `syscall_table.rs`: `&[(name, nr)]`. The running
/// kernel exports syscall names (tracefs `events/syscalls`) but not their
/// numbers, and they differ per architecture (x86_64 has its own table,
/// arm64 and riscv use the generic one); strace and perf carry tables too.
fn syscall_table(out: &Path) {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let multiarch = format!("{arch}-linux-gnu");
    let candidates: Vec<PathBuf> = match arch.as_str() {
        "x86_64" => vec![
            PathBuf::from(format!("/usr/include/{multiarch}/asm/unistd_64.h")),
            PathBuf::from("/usr/include/asm/unistd_64.h"),
        ],
        _ => vec![
            PathBuf::from(format!("/usr/include/{multiarch}/asm/unistd.h")),
            PathBuf::from("/usr/include/asm-generic/unistd.h"),
        ],
    };
    let header = candidates.iter().find(|p| p.exists()).unwrap_or_else(|| {
        panic!(
            "podscope: no syscall number header for {arch} (looked at {candidates:?}); \
                 install linux-libc-dev"
        )
    });
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(header).unwrap();
    let mut table: Vec<(String, u32)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(name) = name.strip_prefix("__NR_") else {
            continue;
        };
        // asm-generic: `#define __NR_openat 56`; also `__NR3264_fcntl 25`
        // aliases (`#define __NR_fcntl __NR3264_fcntl`) resolved below.
        let nr = match value.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match value
                .strip_prefix("__NR3264_")
                .and_then(|alias| find_define(&text, &format!("__NR3264_{alias}")))
            {
                Some(n) => n,
                None => continue,
            },
        };
        if name == "syscalls" || name.starts_with("arch_specific") {
            continue;
        }
        if !table.iter().any(|(n, _)| n == name) {
            table.push((name.to_string(), nr));
        }
    }
    assert!(
        table.len() > 200,
        "podscope: only {} syscalls in {}",
        table.len(),
        header.display()
    );
    let mut src = String::from("&[\n");
    for (name, nr) in &table {
        src.push_str(&format!("    (\"{name}\", {nr}),\n"));
    }
    src.push_str("]\n");
    std::fs::write(out.join("syscall_table.rs"), src).unwrap();
}

fn find_define(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("#define") && w.next() == Some(name))
            .then(|| w.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}
