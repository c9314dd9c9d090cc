//! Compiles every `bpf/<probe>.bpf.c` with clang and generates its libbpf-rs
//! skeleton (and the Rust types of its event structs) into OUT_DIR.

use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

/// The probes, by file stem. Adding a probe adds one name here.
const PROBES: &[&str] = &[
    "exec", "exit", "tcp", "bio", "cache", "open", "cgroup", "http", "dns", "tls",
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
