//! tracepoint probe: any tracepoint under tracefs `events/` by name
//! (`tp:SUBSYSTEM:EVENT`, several at once). One BPF program is attached to
//! each; it copies the raw record after the pod filter and the `--filter`
//! predicates, and user space decodes the fields from the event's `format`.

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tracepoint.skel.rs"));
}

pub mod filter;
pub mod format;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use libbpf_rs::{MapCore, MapFlags, TracepointCategory};
use podscope_model::{Event, EventData, ProbeKind, TracepointEvent};
use skel::{types, TracepointProbeSkel, TracepointProbeSkelBuilder};

use crate::decode::{header, read_record, Clock};
use crate::load::{
    common_accessors, load_skeleton, read_stat, DecodeFn, LoadSettings, LoadedProbe,
};
use crate::Error;
pub use format::{Field, FieldKind, Format};

// SAFETY: generated from the C structs: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::tp_event {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tp_conf {}

/// The largest record this probe writes to its ring, in bytes.
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<types::tp_event>();
/// Bytes of a record copied at most (`TP_DATA_MAX`).
pub const DATA_MAX: usize = 1024;
const LOC_MAX: usize = 4;
const HEADER_BYTES: usize = RECORD_BYTES - DATA_MAX;

/// Which tracepoints, and the filter applied to each that has its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TracepointOptions {
    /// `SUBSYSTEM:EVENT` names (a leading `tp:` is accepted).
    pub names: Vec<String>,
    /// `--filter`: `FIELD OP VALUE` joined by `&&`.
    pub filter: Option<String>,
}

/// Tracepoints found and their kernel predicates.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The formats, in the order asked for.
    pub formats: Vec<Arc<Format>>,
    /// Per format: the predicates, or None where the filter does not apply.
    preds: Vec<Option<Vec<filter::Pred>>>,
}

impl Resolved {
    /// Whether the filter cuts records of the `i`th format (it has a
    /// clause for it and every field the clause compares).
    pub fn filtered(&self, i: usize) -> bool {
        self.preds
            .get(i)
            .is_some_and(|p| p.as_ref().is_some_and(|p| !p.is_empty()))
    }

    /// What the user should know: tracepoints the filter does not apply to.
    pub fn warnings(&self, opts: &TracepointOptions) -> Vec<String> {
        let Some(f) = &opts.filter else {
            return Vec::new();
        };
        self.formats
            .iter()
            .zip(&self.preds)
            .filter(|(_, p)| p.is_none())
            .map(|(fmt, _)| {
                format!(
                    "--filter '{f}' does not apply to {}: it lacks a field the filter names (its fields: {})",
                    fmt.name,
                    field_names(fmt)
                )
            })
            .collect()
    }
}

fn field_names(f: &Format) -> String {
    f.fields
        .iter()
        .map(|x| x.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn tracing_dir() -> Result<PathBuf, Error> {
    let events = crate::sys::tracefs_events()?;
    Ok(events.parent().unwrap_or(events).to_path_buf())
}

/// Every tracepoint this kernel has, as `SUBSYSTEM:EVENT`, sorted.
pub fn available() -> Result<Vec<String>, Error> {
    let path = tracing_dir()?.join("available_events");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::InvalidOption(format!("reading {}: {e}", path.display())))?;
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// `tp:sched:sched_switch`, `sched:sched_switch` or `sched/sched_switch` to
/// (`sched`, `sched_switch`).
fn split_name(name: &str) -> Result<(String, String), Error> {
    let n = name.trim();
    let n = n.strip_prefix("tp:").unwrap_or(n);
    let n = n.strip_prefix("tracepoint:").unwrap_or(n);
    let (sys, ev) = n
        .split_once(':')
        .or_else(|| n.split_once('/'))
        .ok_or_else(|| {
            Error::InvalidOption(format!(
                "tracepoint '{name}': write it as tp:SUBSYSTEM:EVENT (e.g. tp:sched:sched_process_fork; \
                 podscope probes --tracepoints 'sched:*' lists them)"
            ))
        })?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !ok(sys) || !ok(ev) {
        return Err(Error::InvalidOption(format!(
            "tracepoint '{name}': SUBSYSTEM and EVENT are names of letters, digits and _ (e.g. tp:net:net_dev_xmit)"
        )));
    }
    Ok((sys.to_string(), ev.to_string()))
}

/// The parsed format of one tracepoint; an unknown one is an error listing
/// the closest names this kernel has.
pub fn format_of(name: &str) -> Result<Format, Error> {
    let (sys, ev) = split_name(name)?;
    let path = crate::sys::tracefs_events()?
        .join(&sys)
        .join(&ev)
        .join("format");
    let full = format!("{sys}:{ev}");
    match std::fs::read_to_string(&path) {
        Ok(text) => Format::parse(&full, &text).map_err(Error::InvalidOption),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let all = available().unwrap_or_default();
            let close = crate::syscalls::closest(&full, all.iter().map(String::as_str), 6);
            let close = if close.is_empty() {
                // The event part alone often finds it in another subsystem.
                crate::syscalls::closest(
                    &ev,
                    all.iter().map(|n| n.split(':').nth(1).unwrap_or(n)),
                    6,
                )
                .into_iter()
                .filter_map(|e| all.iter().find(|n| n.ends_with(&format!(":{e}"))).cloned())
                .collect()
            } else {
                close
            };
            let hint = if close.is_empty() {
                format!(
                    "podscope probes --tracepoints '{sys}:*' lists what {sys} has ({} tracepoints on this kernel)",
                    all.len()
                )
            } else {
                format!("did you mean {}?", close.join(", "))
            };
            Err(Error::InvalidOption(format!(
                "unknown tracepoint '{full}' on this kernel: {hint}"
            )))
        }
        Err(e) => Err(Error::InvalidOption(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// Finds every tracepoint and compiles the filter for each: unknown names,
/// unknown fields (with close matches) and bad comparisons are errors here,
/// before anything loads.
pub fn resolve(opts: &TracepointOptions) -> Result<Resolved, Error> {
    if opts.names.is_empty() {
        return Err(Error::InvalidOption(
            "no tracepoint given: name one as tp:SUBSYSTEM:EVENT (e.g. podscope trace tp:sched:sched_process_fork --all)".into(),
        ));
    }
    let mut formats: Vec<Arc<Format>> = Vec::new();
    for n in &opts.names {
        let f = format_of(n)?;
        if !formats.iter().any(|x| x.id == f.id) {
            formats.push(Arc::new(f));
        }
    }
    let expr = match &opts.filter {
        Some(f) => filter::parse(f).map_err(Error::InvalidOption)?,
        None => filter::Expr::default(),
    };
    let fields_of = |fs: &[&Arc<Format>]| -> String {
        fs.iter()
            .map(|f| format!("{}: {}", f.name, field_names(f)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    for clause in &expr.clauses {
        // A clause for one tracepoint must name a traced one, and its fields.
        let own: Vec<&Arc<Format>> = formats.iter().filter(|f| clause.is_for(&f.name)).collect();
        let scope: Vec<&Arc<Format>> = match &clause.scope {
            Some(sc) if own.is_empty() => {
                let traced: Vec<&str> = formats.iter().map(|f| f.name.as_str()).collect();
                return Err(Error::InvalidOption(format!(
                    "--filter: '{sc}:' names no traced tracepoint (traced: {}); name one as EVENT: or SUBSYSTEM:EVENT:",
                    traced.join(", ")
                )));
            }
            Some(_) => own,
            None => formats.iter().collect(),
        };
        for c in &clause.cmps {
            if scope.iter().all(|f| f.field(&c.field).is_none()) {
                let names: Vec<&str> = scope
                    .iter()
                    .flat_map(|f| f.fields.iter().map(|x| x.name.as_str()))
                    .collect();
                let close = crate::syscalls::closest(&c.field, names.iter().copied(), 4);
                let hint = if close.is_empty() {
                    String::new()
                } else {
                    format!("did you mean {}? ", close.join(", "))
                };
                let which = match &clause.scope {
                    Some(sc) => format!("{sc} has no field"),
                    None => "no traced tracepoint has a field".to_string(),
                };
                return Err(Error::InvalidOption(format!(
                    "--filter: {which} '{}'; {hint}fields: {}",
                    c.field,
                    fields_of(&scope)
                )));
            }
        }
    }
    let mut preds = Vec::new();
    for f in &formats {
        let cmps = expr.for_tracepoint(&f.name);
        preds.push(if cmps.is_empty() {
            Some(Vec::new())
        } else {
            filter::compile(f, cmps).map_err(Error::InvalidOption)?
        });
    }
    Ok(Resolved { formats, preds })
}

/// Formats by event id, for decoding (ids are the kernel's, so one map
/// serves every tracer in the process).
fn registry() -> &'static RwLock<HashMap<u32, Arc<Format>>> {
    static R: OnceLock<RwLock<HashMap<u32, Arc<Format>>>> = OnceLock::new();
    R.get_or_init(|| RwLock::new(HashMap::new()))
}

fn conf_of(f: &Format, preds: &[filter::Pred]) -> types::tp_conf {
    let mut c = types::tp_conf {
        fixed_bytes: f.fixed_bytes as u32,
        npreds: preds.len() as u32,
        ..Default::default()
    };
    let locs: Vec<&Field> = f
        .fields
        .iter()
        .filter(|x| matches!(x.kind, FieldKind::DataLoc { .. } | FieldKind::RelLoc { .. }))
        .take(LOC_MAX)
        .collect();
    c.nlocs = locs.len() as u32;
    for (i, l) in locs.iter().enumerate() {
        c.loc_offset[i] = l.offset as u16;
        c.loc_rel[i] = u8::from(matches!(l.kind, FieldKind::RelLoc { .. }));
    }
    for (d, p) in c.preds.iter_mut().zip(preds) {
        d.offset = p.offset;
        d.size = p.size;
        d.field = p.field;
        d.op = p.op;
        d.group = p.group;
        d.value = p.value;
        for (o, b) in d.str.iter_mut().zip(p.str) {
            *o = b as _;
        }
    }
    c
}

pub(crate) struct Probe {
    // Links first: detached before the skeletons close their programs.
    /// The attached tracepoints by event id.
    links: Vec<(u32, libbpf_rs::Link)>,
    /// The first instance owns the shared maps (ring, settings, counters).
    skel: crate::load::Owned<TracepointProbeSkel<'static>>,
    /// The other instances by event id (the first's is `first_id`).
    more: Vec<(u32, crate::load::Owned<TracepointProbeSkel<'static>>)>,
    first_id: u32,
    /// The settings running now.
    opts: TracepointOptions,
}

/// Writes a tracepoint's settings (record layout, filter) into `tp_conf`
/// and remembers its format for decoding.
fn configure(
    skel: &TracepointProbeSkel<'static>,
    f: &Arc<Format>,
    preds: &Option<Vec<filter::Pred>>,
) -> Result<(), Error> {
    let conf = conf_of(f, preds.as_deref().unwrap_or(&[]));
    // SAFETY: tp_conf is Plain (see above).
    let bytes = unsafe { plain::as_bytes(&conf) };
    skel.maps
        .tp_conf
        .update(&f.id.to_ne_bytes(), bytes, MapFlags::ANY)
        .map_err(Error::runtime(format!("configuring tracepoint {}", f.name)))?;
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(f.id, f.clone());
    Ok(())
}

fn attach(prog: &libbpf_rs::ProgramMut<'static>, f: &Format) -> Result<libbpf_rs::Link, Error> {
    let (sys, ev) = f.name.split_once(':').unwrap_or((&f.name, ""));
    prog.attach_tracepoint(TracepointCategory::Custom(sys.to_string()), ev)
        .map_err(|source| Error::Load {
            probe: "tracepoint",
            stage: "attached",
            source,
            log: crate::load::take_log(),
        })
}

fn load_one(
    settings: &LoadSettings,
    id: u32,
    first: Option<&TracepointProbeSkel<'static>>,
) -> Result<crate::load::Owned<TracepointProbeSkel<'static>>, Error> {
    let fail = |source: libbpf_rs::Error| Error::Load {
        probe: "tracepoint",
        stage: "opened",
        source,
        log: crate::load::take_log(),
    };
    let mut shared = Ok(());
    let skel = load_skeleton!(
        TracepointProbeSkelBuilder,
        ProbeKind::Tracepoint.name(),
        settings,
        |open: &mut skel::OpenTracepointProbeSkel| {
            if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                ro.tp_type = id;
            }
            if let Some(f) = first {
                let m = &mut open.maps;
                shared = m
                    .events
                    .reuse_fd(f.maps.events.as_fd())
                    .and_then(|_| m.tp_conf.reuse_fd(f.maps.tp_conf.as_fd()))
                    .and_then(|_| m.tp_counts.reuse_fd(f.maps.tp_counts.as_fd()))
                    .and_then(|_| m.probe_stats.reuse_fd(f.maps.probe_stats.as_fd()))
                    .and_then(|_| m.scratch.reuse_fd(f.maps.scratch.as_fd()))
                    // The first instance's filter maps are the tracer's
                    // (shared, or created by it when it loaded first).
                    .and_then(|_| m.filter_cgroups.reuse_fd(f.maps.filter_cgroups.as_fd()))
                    .and_then(|_| m.filter_pids.reuse_fd(f.maps.filter_pids.as_fd()));
            }
        }
    );
    shared.map_err(fail)?;
    Ok(skel)
}

/// Each tracepoint's format with its predicates (none for no tracepoint).
type Pairs = Vec<(Arc<Format>, Option<Vec<filter::Pred>>)>;

fn resolve_pairs(opts: &TracepointOptions) -> Result<Pairs, Error> {
    if opts.names.is_empty() {
        return Ok(Vec::new());
    }
    let r = resolve(opts)?;
    Ok(r.formats.into_iter().zip(r.preds).collect())
}

pub(crate) fn load(
    settings: &LoadSettings,
    opts: &TracepointOptions,
) -> Result<Box<dyn LoadedProbe>, Error> {
    // `podscope probes` loads with no tracepoint to see that the program loads.
    let pairs = resolve_pairs(opts)?;
    let first_id = pairs.first().map_or(0, |(f, _)| f.id);
    let skel = load_one(settings, first_id, None)?;
    let mut more = Vec::new();
    for (f, _) in pairs.iter().skip(1) {
        more.push((f.id, load_one(settings, f.id, Some(&skel))?));
    }
    let mut links = Vec::new();
    for (i, (f, preds)) in pairs.iter().enumerate() {
        configure(&skel, f, preds)?;
        let prog = if i == 0 {
            &skel.progs.tp_record
        } else {
            &more[i - 1].1.progs.tp_record
        };
        links.push((f.id, attach(prog, f)?));
    }
    Ok(Box::new(Probe {
        links,
        skel,
        more,
        first_id,
        opts: opts.clone(),
    }))
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Tracepoint
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> DecodeFn {
        decode
    }
    common_accessors!();

    fn set_hook_options(
        &mut self,
        settings: &LoadSettings,
        _syscalls: &crate::SyscallOptions,
        opts: &TracepointOptions,
    ) -> Result<bool, Error> {
        if *opts == self.opts {
            return Ok(true);
        }
        let pairs = resolve_pairs(opts)?;
        // New filters first, then new tracepoints attached, then the ones no
        // longer asked for detached.
        for (f, preds) in &pairs {
            configure(&self.skel, f, preds)?;
        }
        for (f, _) in &pairs {
            if self.links.iter().any(|(id, _)| *id == f.id) {
                continue;
            }
            let link = if f.id == self.first_id {
                attach(&self.skel.progs.tp_record, f)?
            } else {
                if !self.more.iter().any(|(id, _)| *id == f.id) {
                    let inst = load_one(settings, f.id, Some(&self.skel))?;
                    self.more.push((f.id, inst));
                }
                let inst = &self
                    .more
                    .iter()
                    .find(|(id, _)| *id == f.id)
                    .expect("added")
                    .1;
                attach(&inst.progs.tp_record, f)?
            };
            self.links.push((f.id, link));
        }
        let keep: Vec<u32> = pairs.iter().map(|(f, _)| f.id).collect();
        self.links.retain(|(id, _)| keep.contains(id));
        self.more.retain(|(id, _)| keep.contains(id));
        self.opts = opts.clone();
        Ok(true)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let m: &dyn MapCore = &self.skel.maps.tp_counts;
        vec![
            ("tracepoint_seen", read_stat(m, 0)),
            ("tracepoint_filtered", read_stat(m, 1)),
            ("tracepoint_truncated", read_stat(m, 3)),
            ("tracepoint_unknown", read_stat(m, 2)),
        ]
    }
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < HEADER_BYTES {
        return None;
    }
    let raw: types::tp_event = read_record(&data[..HEADER_BYTES]);
    let size = (raw.size as usize).min(data.len() - HEADER_BYTES);
    let rec = &data[HEADER_BYTES..HEADER_BYTES + size];
    let fmt = registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&raw.r#type)
        .cloned()?;
    let (fields, truncated) = fmt.decode(rec);
    let h = header!(raw.hdr);
    Some(h.into_event(
        clock,
        EventData::Tracepoint(TracepointEvent {
            kind: "record".into(),
            tracepoint: fmt.name.clone(),
            fields,
            truncated,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split() {
        assert_eq!(
            split_name("tp:sched:sched_switch").unwrap(),
            ("sched".into(), "sched_switch".into())
        );
        assert_eq!(
            split_name("net/net_dev_xmit").unwrap(),
            ("net".into(), "net_dev_xmit".into())
        );
        assert!(split_name("sched_switch")
            .unwrap_err()
            .to_string()
            .contains("tp:SUBSYSTEM:EVENT"));
        assert!(split_name("tp:a:b c").is_err());
        assert_eq!(HEADER_BYTES, std::mem::size_of::<types::event_header>() + 8);
    }
}
