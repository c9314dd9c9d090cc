//! The enrich and filter stages: which pod and container every event belongs
//! to, kept current as pods come and go, and whether a pod-selected trace
//! wants it. Runs in the tracing thread; runtime lookups are rate-limited.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use podscope_bpf::{CgroupChange, Tracer};

use podscope_model::{Event, EventData};
use podscope_runtime::cgroup::CgroupMount;
use podscope_runtime::engine::container_id_of_cgroup;
use podscope_runtime::layout::parse_kube_cgroup;
use podscope_runtime::{Discovery, Pod};

use crate::select::PodSelection;
use crate::store::{PodStore, Snapshot};

/// The in-kernel cgroup filter as enrichment sees it: the tracer itself for
/// one trace, or a session's share of the node tracer's filter.
pub trait KernelFilter {
    /// Let this cgroup's (and its descendants') events through.
    fn allow_cgroup(&self, id: u64) -> Result<(), podscope_bpf::Error>;
    /// Stop letting them through.
    fn deny_cgroup(&self, id: u64) -> Result<(), podscope_bpf::Error>;
}

impl KernelFilter for Tracer {
    fn allow_cgroup(&self, id: u64) -> Result<(), podscope_bpf::Error> {
        Tracer::allow_cgroup(self, id)
    }
    fn deny_cgroup(&self, id: u64) -> Result<(), podscope_bpf::Error> {
        Tracer::deny_cgroup(self, id)
    }
}

/// How long an exited pod's names stay known, so its last events still resolve.
const GRACE: Duration = Duration::from_secs(30);
/// How long events of a new pod wait for the runtime to name it.
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Minimum gap between runtime lookups triggered by unknown cgroups.
const REFRESH_GAP: Duration = Duration::from_millis(100);
/// Periodic re-discovery, for changes the cgroup watcher cannot see.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Selected,
    Rejected,
    /// Seen in the kernel, not yet named by the runtime.
    Pending(Instant),
}

#[derive(Debug, Clone)]
struct PodEntry {
    pod: Option<Pod>,
    decision: Decision,
    removed: Option<Instant>,
}

/// cgroup id -> pod uid and container id (None for the pod cgroup itself).
#[derive(Debug, Clone)]
struct CgroupEntry {
    pod_uid: String,
    container_id: Option<String>,
}

/// What the index decided about one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it (identity filled in where known).
    Emit,
    /// Not wanted (another pod, or another container).
    Drop,
    /// Its pod is not named yet; ask again after the next refresh.
    Hold,
}

/// The node's pods indexed by cgroup id.
#[derive(Debug)]
pub struct PodIndex {
    /// The node's pods, shared with the other sessions.
    store: PodStore,
    /// The store listing last merged.
    applied: u64,
    /// How often to ask for a full listing (changes the cgroup watcher
    /// cannot see: labels, restarts of engine containers).
    period: Duration,
    selection: Option<PodSelection>,
    node: String,
    mount: Option<CgroupMount>,
    pods: HashMap<String, PodEntry>,
    /// (Looked up per event: a fast hasher.)
    cgroups: foldhash::HashMap<u64, CgroupEntry>,
    last_refresh: Instant,
    refresh_wanted: bool,
    held: VecDeque<Event>,
    /// Pod cgroups the kernel admitted as pending, until user space decides.
    kernel_pending: std::collections::HashSet<u64>,
    /// cgroup ids known not to be pods' (host cgroups), so /proc is read once.
    host_cgroups: foldhash::HashSet<u64>,
    /// Events dropped because their pod could not be named in time.
    pub unnamed_dropped: u64,
    /// Warning from discovery (e.g. fell back to /proc), shown once.
    pub warning: Option<String>,
    /// Known pods with a container the runtime has not described to us yet.
    stale: std::collections::HashSet<String>,
    /// A Docker or podman engine answered discovery: cgroups named like
    /// theirs are containers to name, not host processes.
    engines: bool,
    /// Engine containers seen in the kernel before the engine named them
    /// (their pseudo-pod uid is the container id).
    engine_pending: std::collections::HashSet<String>,
    /// An engine container's cgroup appeared: the next lookup must ask the
    /// engines (a full refresh), not only CRI's sandboxes.
    engine_refresh: bool,
    /// Pod address -> (namespace, pod), for naming the peers of requests.
    /// Every pod of the node, selected or not; an address two known pods
    /// claim (one being replaced by the other) names the newer listing's.
    peers: HashMap<String, (String, String)>,
}

impl PodIndex {
    /// Starts from a fresh listing of the node's pods (shared through the
    /// store with every other session's).
    pub fn new(
        store: PodStore,
        selection: Option<PodSelection>,
        node: String,
        period: Duration,
    ) -> Result<(PodIndex, Discovery)> {
        let snap = store.refresh_now();
        let discovery = snap.discovery.clone().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut index = PodIndex {
            store,
            applied: snap.version,
            period,
            selection,
            node,
            mount: podscope_runtime::cgroup::cgroup2_mount().ok(),
            pods: HashMap::new(),
            cgroups: foldhash::HashMapExt::new(),
            last_refresh: Instant::now(),
            refresh_wanted: false,
            held: VecDeque::new(),
            host_cgroups: foldhash::HashSetExt::new(),
            kernel_pending: std::collections::HashSet::new(),
            unnamed_dropped: 0,
            warning: discovery.warning.clone(),
            stale: std::collections::HashSet::new(),
            engines: !discovery.engines.is_empty(),
            engine_pending: std::collections::HashSet::new(),
            engine_refresh: false,
            peers: HashMap::new(),
        };
        index.apply(&discovery.pods, None);
        Ok((index, discovery))
    }

    /// The pod cgroup ids the kernel filter should admit now.
    pub fn selected_cgroups(&self) -> Vec<u64> {
        self.pods
            .values()
            .filter(|p| p.decision == Decision::Selected)
            .filter_map(|p| p.pod.as_ref())
            .flat_map(pod_filter_ids)
            .collect()
    }

    /// Whether an event of this cgroup is surely not wanted (its pod is
    /// known and not selected, or it is a host cgroup under a selection):
    /// the node tracer skips such events for this session without copying
    /// them. False when unsure (enrichment decides).
    pub fn rejects(&self, cgroup_id: u64) -> bool {
        if self.selection.is_none() {
            return false;
        }
        match self.cgroups.get(&cgroup_id) {
            Some(cg) => self
                .pods
                .get(&cg.pod_uid)
                .is_some_and(|p| p.decision == Decision::Rejected),
            None => self.host_cgroups.contains(&cgroup_id),
        }
    }

    /// The selected pods the runtime has named (every pod without a
    /// selection), including pods gone within the grace period: the drop
    /// probe recognises their packets by netns and address.
    pub fn selected_pod_list(&self) -> impl Iterator<Item = &Pod> {
        self.pods
            .values()
            .filter(|p| p.decision == Decision::Selected)
            .filter_map(|p| p.pod.as_ref())
    }

    /// Whether a pod selection was given (else every process is wanted).
    pub fn has_selection(&self) -> bool {
        self.selection.is_some()
    }

    /// How many pods are selected (or all pods, without a selection).
    pub fn selected_pods(&self) -> usize {
        self.pods
            .values()
            .filter(|p| p.decision == Decision::Selected)
            .count()
    }

    /// The cgroups below which kubelet creates pods, for the kernel watcher:
    /// the v2 root and whichever kubepods cgroups exist already.
    pub fn watch_parents(&self) -> Vec<PathBuf> {
        let Some(m) = &self.mount else {
            return Vec::new();
        };
        let root = m.mount_point.clone();
        let mut out = vec![root.clone()];
        for rel in [
            "kubepods",
            "kubepods/besteffort",
            "kubepods/burstable",
            "kubepods.slice",
            "kubepods.slice/kubepods-besteffort.slice",
            "kubepods.slice/kubepods-burstable.slice",
            // Docker and podman: their new containers are admitted in the
            // kernel too (bpf/cgroup.bpf.c), so a container's entrypoint is
            // traced before the engine has named it.
            "docker",
            "system.slice",
            "machine.slice",
            "libpod_parent",
        ] {
            let p = root.join(rel);
            if p.is_dir() {
                out.push(p);
            }
        }
        out
    }

    fn decide(&self, pod: &Pod) -> Decision {
        match &self.selection {
            None => Decision::Selected,
            Some(s) if s.matches_pod(pod) => Decision::Selected,
            Some(_) => Decision::Rejected,
        }
    }

    /// Merges a discovery result; updates the kernel filter when given.
    fn apply(&mut self, pods: &[Pod], tracer: Option<&dyn KernelFilter>) {
        self.merge(pods, tracer, true)
    }

    /// Merges pods; with `complete`, pods missing from `pods` are marked removed.
    fn merge(&mut self, pods: &[Pod], tracer: Option<&dyn KernelFilter>, complete: bool) {
        let now = Instant::now();
        let seen: std::collections::HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        for pod in pods {
            let decision = self.decide(pod);
            let before = self.pods.get(&pod.uid).map(|e| e.decision);
            if let Some(id) = pod.cgroup_id {
                self.cgroups.insert(
                    id,
                    CgroupEntry {
                        pod_uid: pod.uid.clone(),
                        container_id: None,
                    },
                );
            }
            for c in &pod.containers {
                if let Some(id) = c.cgroup_id {
                    self.cgroups.insert(
                        id,
                        CgroupEntry {
                            pod_uid: pod.uid.clone(),
                            container_id: Some(c.id.clone()),
                        },
                    );
                }
            }
            if let Some(t) = tracer {
                if self.selection.is_some() && before != Some(decision) {
                    for id in pod_filter_ids(pod) {
                        let r = match decision {
                            Decision::Selected => t.allow_cgroup(id),
                            _ => t.deny_cgroup(id),
                        };
                        if let Err(e) = r {
                            eprintln!("podscope: warning: {e}");
                        }
                    }
                } else if self.selection.is_some() && decision == Decision::Selected {
                    // Without a pod cgroup (a Docker/podman container) the
                    // filter holds container cgroups: a restarted container
                    // has a new one.
                    let old: Vec<u64> = self
                        .pods
                        .get(&pod.uid)
                        .and_then(|e| e.pod.as_ref())
                        .map(pod_filter_ids)
                        .unwrap_or_default();
                    for id in pod_filter_ids(pod).into_iter().filter(|i| !old.contains(i)) {
                        if let Err(e) = t.allow_cgroup(id) {
                            eprintln!("podscope: warning: {e}");
                        }
                    }
                }
            }
            self.engine_pending.remove(&pod.uid);
            self.pods.insert(
                pod.uid.clone(),
                PodEntry {
                    pod: Some(pod.clone()),
                    decision,
                    removed: None,
                },
            );
        }
        if complete {
            // Pods the runtime no longer lists: keep their names a while.
            for (uid, e) in self.pods.iter_mut() {
                if e.pod.is_some() && !seen.contains(uid.as_str()) && e.removed.is_none() {
                    e.removed = Some(now);
                }
            }
        }
        self.index_peers(pods);
    }

    /// Rebuilds the address -> pod map: removed pods first, so a live pod
    /// that took over a removed one's address wins; then the pods just
    /// listed, which win over older entries.
    fn index_peers(&mut self, listed: &[Pod]) {
        let mut peers = HashMap::with_capacity(self.pods.len());
        let mut put = |p: &Pod| {
            if let Some(ip) = &p.ip {
                peers.insert(ip.clone(), (p.namespace.clone(), p.name.clone()));
            }
        };
        let mut entries: Vec<&PodEntry> = self.pods.values().collect();
        entries.sort_by_key(|e| e.removed.is_none());
        for p in entries.iter().filter_map(|e| e.pod.as_ref()) {
            put(p);
        }
        for p in listed {
            put(p);
        }
        self.peers = peers;
    }

    /// The pod a peer address belongs to, if the node knows one.
    pub fn peer(&self, addr: &str) -> Option<(&str, &str)> {
        let addr = addr.strip_prefix("::ffff:").unwrap_or(addr);
        self.peers
            .get(addr)
            .map(|(ns, pod)| (ns.as_str(), pod.as_str()))
    }

    /// A peer address NAT cannot have rewritten: loopback, or a pod of the
    /// node (connections are translated to pods, not from them).
    pub fn is_local(&self, addr: &str) -> bool {
        is_loopback(addr) || self.peer(addr).is_some()
    }

    /// Names the peer pod of each request and DNS event: by the peer
    /// address, or, for loopback, the event's own pod (loopback never
    /// leaves the pod's network namespace).
    pub fn name_peers(&self, events: &mut [Event]) {
        for ev in events {
            let (daddr, ns, pod) = match &mut ev.data {
                EventData::Http(h) => (&h.daddr, &mut h.peer_namespace, &mut h.peer_pod),
                EventData::Dns(d) => (&d.daddr, &mut d.peer_namespace, &mut d.peer_pod),
                _ => continue,
            };
            if is_loopback(daddr) {
                if !ev.identity.pod.is_empty() {
                    ns.clone_from(&ev.identity.namespace);
                    pod.clone_from(&ev.identity.pod);
                }
            } else if let Some((n, p)) = self.peer(daddr) {
                *ns = n.to_owned();
                *pod = p.to_owned();
            }
        }
    }

    /// Asks the runtime again now, on this thread, and merges what it says
    /// (a session's last flush; everything else asks the store off-thread).
    pub fn refresh(&mut self, tracer: &dyn KernelFilter) {
        self.last_refresh = Instant::now();
        self.refresh_wanted = false;
        self.engine_refresh = false;
        let snap = self.store.refresh_now();
        self.apply_snapshot(&snap, tracer);
    }

    /// Asks the store for a listing (merged with other sessions' asks).
    fn request_refresh(&mut self) {
        self.last_refresh = Instant::now();
        self.refresh_wanted = false;
        self.engine_refresh = false;
        self.store.request();
    }

    /// Merges the store's latest listing, if newer than the last merged.
    fn apply_latest(&mut self, tracer: &dyn KernelFilter) {
        if let Some(snap) = self.store.latest() {
            if snap.version > self.applied {
                self.apply_snapshot(&snap, tracer);
            }
        }
    }

    fn apply_snapshot(&mut self, snap: &Snapshot, tracer: &dyn KernelFilter) {
        self.applied = self.applied.max(snap.version);
        match &snap.discovery {
            Ok(d) => self.apply(&d.pods, Some(tracer)),
            Err(e) => eprintln!("podscope: warning: refreshing pods: {e}"),
        }
    }

    /// Names pending pods by asking the runtime about their sandboxes only,
    /// which is much cheaper than listing every pod's containers. Without a
    /// runtime connection (or for Docker/podman containers) the store lists.
    fn name_pending(&mut self, tracer: &dyn KernelFilter) {
        let pending: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| matches!(e.decision, Decision::Pending(_)) || e.pod.is_none())
            .map(|(uid, _)| uid.clone())
            .chain(self.stale.drain())
            .collect();
        let engines = std::mem::take(&mut self.engine_refresh);
        if engines {
            self.request_refresh();
            return;
        }
        self.last_refresh = Instant::now();
        self.refresh_wanted = false;
        match self.store.name_sandboxes(&pending) {
            None => self.request_refresh(),
            Some(Err(e)) => eprintln!("podscope: warning: {e}"),
            Some(Ok(named)) => self.merge(&named, Some(tracer), false),
        }
    }

    /// Takes in cgroups created and removed since the last poll.
    pub fn on_cgroup_changes(&mut self, changes: &[CgroupChange], tracer: &dyn KernelFilter) {
        let now = Instant::now();
        for ch in changes {
            let kube = parse_kube_cgroup(&ch.path);
            if ch.created && ch.admitted {
                if kube.is_some() || (self.engines && container_id_of_cgroup(&ch.path).is_some()) {
                    self.kernel_pending.insert(ch.id);
                } else if let Err(e) = tracer.deny_cgroup(ch.id) {
                    // Named like a pod's cgroup but not one: out of the filter again.
                    eprintln!("podscope: warning: {e}");
                }
            }
            let Some(k) = kube else {
                // A new Docker or podman container: named by the next refresh
                // (100 ms), which also admits it when the selection wants it;
                // a removed one keeps its names for the grace period.
                match container_id_of_cgroup(&ch.path) {
                    Some(cid) if self.engines && ch.created => {
                        self.engine_container_seen(ch.id, cid);
                    }
                    Some(cid) if self.engines => {
                        if let Some(e) = self.pods.get_mut(&cid) {
                            e.removed.get_or_insert(now);
                        }
                    }
                    _ => {}
                }
                continue;
            };
            if ch.created {
                self.cgroups.insert(
                    ch.id,
                    CgroupEntry {
                        pod_uid: k.pod_uid.clone(),
                        container_id: k.container_id.clone(),
                    },
                );
                let entry = self.pods.entry(k.pod_uid.clone()).or_insert(PodEntry {
                    pod: None,
                    decision: Decision::Pending(now),
                    removed: None,
                });
                entry.removed = None;
                let new_container = k.container_id.as_ref().is_some_and(|cid| {
                    entry
                        .pod
                        .as_ref()
                        .is_none_or(|p| !p.containers.iter().any(|c| &c.id == cid))
                });
                if new_container {
                    self.stale.insert(k.pod_uid.clone());
                }
                if matches!(entry.decision, Decision::Pending(_)) || new_container {
                    self.refresh_wanted = true;
                }
            } else if k.container_id.is_none() {
                if let Some(e) = self.pods.get_mut(&k.pod_uid) {
                    e.removed.get_or_insert(now);
                }
            }
        }
        if self.refresh_wanted && self.last_refresh.elapsed() >= REFRESH_GAP {
            self.name_pending(tracer);
        }
        self.settle_pending(tracer);
    }

    /// Turns the kernel's pending admissions into decisions: kept for pods
    /// the selection wants, removed for the others. Done from the pending set
    /// rather than on decision changes, because a pod can be named before its
    /// cgroup's creation has been read from the ring.
    fn settle_pending(&mut self, tracer: &dyn KernelFilter) {
        if self.kernel_pending.is_empty() {
            return;
        }
        let mut settled = Vec::new();
        for id in &self.kernel_pending {
            let decision = self
                .cgroups
                .get(id)
                .and_then(|c| self.pods.get(&c.pod_uid))
                .map(|p| p.decision);
            let r = match decision {
                Some(Decision::Selected) => tracer.allow_cgroup(*id),
                Some(Decision::Rejected) => tracer.deny_cgroup(*id),
                _ => continue,
            };
            if let Err(e) = r {
                eprintln!("podscope: warning: {e}");
            }
            settled.push(*id);
        }
        for id in settled {
            self.kernel_pending.remove(&id);
        }
    }

    /// Regular upkeep: retries for pending pods, periodic refresh, grace expiry.
    pub fn tick(&mut self, tracer: &dyn KernelFilter) {
        let pending = self
            .pods
            .values()
            .any(|p| matches!(p.decision, Decision::Pending(_)));
        let quick = pending || self.refresh_wanted;
        let due = self.last_refresh.elapsed() >= if quick { REFRESH_GAP } else { self.period };
        if due && quick {
            // New pods (the kernel saw their cgroups): named by their
            // sandboxes alone, no full listing.
            self.name_pending(tracer);
        } else if due {
            self.request_refresh();
        }
        self.apply_latest(tracer);
        let now = Instant::now();
        // Pending too long: nobody will name it; reject it rather than leak it.
        for (uid, e) in self.pods.iter_mut() {
            if let Decision::Pending(since) = e.decision {
                if now.duration_since(since) > PENDING_TIMEOUT {
                    e.decision = if self.selection.is_some() {
                        Decision::Rejected
                    } else {
                        Decision::Selected
                    };
                    // An engine container never named is gone: forget it after the grace.
                    if e.pod.is_none() && self.engine_pending.contains(uid) {
                        e.removed.get_or_insert(now);
                    }
                }
            }
        }
        self.settle_pending(tracer);
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| e.removed.is_some_and(|t| now.duration_since(t) > GRACE))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in expired {
            self.engine_pending.remove(&uid);
            if let Some(e) = self.pods.remove(&uid) {
                if let Some(p) = &e.pod {
                    for id in pod_filter_ids(p) {
                        let _ = tracer.deny_cgroup(id);
                    }
                }
            }
            self.cgroups.retain(|_, c| c.pod_uid != uid);
        }
    }

    /// Fills in the event's identity and decides whether it is wanted.
    pub fn enrich(&mut self, ev: &mut Event) -> Verdict {
        ev.identity.node.clone_from(&self.node);
        if !self.cgroups.contains_key(&ev.cgroup_id) && !self.host_cgroups.contains(&ev.cgroup_id) {
            self.learn_cgroup(ev.cgroup_id, ev.pid);
        }
        let Some(cg) = self.cgroups.get(&ev.cgroup_id) else {
            if self.selection.is_none() {
                // Not a pod's cgroup: a host process.
                return Verdict::Emit;
            }
            if self.host_cgroups.contains(&ev.cgroup_id) {
                // With a pod selection the kernel passes only pods' cgroups
                // (and new cgroups named like them, until they are read).
                return Verdict::Drop;
            }
            // The task exited before its cgroup could be read, so nothing
            // shows it belongs to a selected pod (the kernel also lets
            // through new pods' cgroups until they are named): held until a
            // refresh maps the cgroup, else dropped and counted.
            self.refresh_wanted = true;
            return Verdict::Hold;
        };
        let Some(entry) = self.pods.get(&cg.pod_uid) else {
            if self.selection.is_none() {
                return Verdict::Emit;
            }
            self.refresh_wanted = true;
            return Verdict::Hold;
        };
        match entry.decision {
            Decision::Rejected => return Verdict::Drop,
            Decision::Pending(_) => return Verdict::Hold,
            Decision::Selected => {}
        }
        let Some(pod) = &entry.pod else {
            if self.selection.is_none() && self.engine_pending.contains(&cg.pod_uid) {
                // An engine container that was gone before the engine could
                // name it (its pending time is over): without a selection it
                // is shown as it was before engines were asked, by cgroup.
                ev.identity.container_id.clone_from(&cg.pod_uid);
                return Verdict::Emit;
            }
            return Verdict::Hold;
        };
        let id = &mut ev.identity;
        id.namespace.clone_from(&pod.namespace);
        id.pod.clone_from(&pod.name);
        id.pod_uid.clone_from(&pod.uid);
        if let Some(cid) = &cg.container_id {
            id.container_id.clone_from(cid);
            match pod.containers.iter().find(|c| &c.id == cid) {
                Some(c) => {
                    id.container.clone_from(&c.name);
                    id.image.clone_from(&c.image);
                }
                // The sandbox (pause) container, named as Docker names it for kubelet.
                None if pod.sandbox_id.as_ref() == Some(cid) => id.container = "POD".into(),
                None => {
                    // A container the runtime has not told us about yet.
                    self.stale.insert(pod.uid.clone());
                    self.refresh_wanted = true;
                    return Verdict::Hold;
                }
            }
        }
        if let Some(sel) = &self.selection {
            if sel.container.is_some() {
                let chosen = pod
                    .containers
                    .iter()
                    .any(|c| Some(&c.id) == cg.container_id.as_ref() && sel.matches_container(c));
                if !chosen {
                    return Verdict::Drop;
                }
            }
        }
        Verdict::Emit
    }

    /// Maps a cgroup we have not seen (e.g. a pod's sandbox, or a container
    /// that started before the watcher) by reading the task's cgroup path.
    fn learn_cgroup(&mut self, id: u64, pid: u32) {
        // No task to read (events the kernel attributed without one: drops).
        if pid == 0 {
            return;
        }
        let path = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            });
        match path.as_deref().and_then(parse_kube_cgroup) {
            Some(k) => {
                self.cgroups.insert(
                    id,
                    CgroupEntry {
                        pod_uid: k.pod_uid.clone(),
                        container_id: k.container_id.clone(),
                    },
                );
                if let std::collections::hash_map::Entry::Vacant(e) = self.pods.entry(k.pod_uid) {
                    e.insert(PodEntry {
                        pod: None,
                        decision: Decision::Pending(Instant::now()),
                        removed: None,
                    });
                    self.refresh_wanted = true;
                }
            }
            // A Docker or podman container that started after the last
            // refresh: held until the engine names it (its pseudo-pod's uid
            // is the container id), like a new pod.
            None if self.engines && path.as_deref().and_then(container_id_of_cgroup).is_some() => {
                let cid = path.as_deref().and_then(container_id_of_cgroup);
                self.engine_container_seen(id, cid.unwrap_or_default());
            }
            // The task already exited, or it is not in a pod.
            None if path.is_some() => {
                self.host_cgroups.insert(id);
            }
            None => {}
        }
    }

    /// A Docker or podman container's cgroup that the engine has not named
    /// yet: mapped to its pseudo-pod (uid = container id), pending until the
    /// next refresh names it, as a new pod is.
    ///
    /// A cgroup new to a known container (it restarted) asks for a refresh
    /// too, so that a selected container's new cgroup enters the filter.
    fn engine_container_seen(&mut self, cgroup_id: u64, cid: String) {
        let known = self.cgroups.insert(
            cgroup_id,
            CgroupEntry {
                pod_uid: cid.clone(),
                container_id: Some(cid.clone()),
            },
        );
        if known.is_none() {
            self.refresh_wanted = true;
            self.engine_refresh = true;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.pods.entry(cid.clone()) {
            self.engine_pending.insert(cid);
            e.insert(PodEntry {
                pod: None,
                decision: Decision::Pending(Instant::now()),
                removed: None,
            });
        }
    }

    /// Runs `events` through [`enrich`](Self::enrich), oldest held ones first;
    /// returns what to deliver, in order.
    pub fn process(&mut self, mut events: Vec<Event>) -> Vec<Event> {
        if self.held.is_empty() {
            // In place: the events that stay are not moved (an event is
            // hundreds of bytes; a copy of each showed in the per-event cost).
            let mut verdicts = VecDeque::new();
            let gone: Vec<Event> = events
                .extract_if(.., |ev| match self.enrich(ev) {
                    Verdict::Emit => false,
                    v => {
                        verdicts.push_back(v);
                        true
                    }
                })
                .collect();
            for ev in gone {
                if verdicts.pop_front() != Some(Verdict::Hold) {
                    continue;
                }
                if Instant::now().duration_since(ev_age_anchor(&ev)) > PENDING_TIMEOUT {
                    self.unnamed_dropped += 1;
                } else {
                    self.held.push_back(ev);
                }
            }
            return events;
        }
        let mut out = Vec::with_capacity(events.len());
        let mut still_held = VecDeque::new();
        let held = std::mem::take(&mut self.held);
        for mut ev in held.into_iter().chain(events) {
            match self.enrich(&mut ev) {
                Verdict::Emit => out.push(ev),
                Verdict::Drop => {}
                Verdict::Hold => {
                    if Instant::now().duration_since(ev_age_anchor(&ev)) > PENDING_TIMEOUT {
                        self.unnamed_dropped += 1;
                    } else {
                        still_held.push_back(ev);
                    }
                }
            }
        }
        self.held = still_held;
        out
    }

    /// Events still waiting for their pod's name.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// At exit: delivers what is still held. Without a pod selection that is
    /// everything (with whatever identity is known); with one, events whose
    /// pod was never named cannot be shown to match, so they are counted in
    /// `unnamed_dropped` instead.
    pub fn release_held(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for mut ev in std::mem::take(&mut self.held) {
            match self.enrich(&mut ev) {
                Verdict::Emit => out.push(ev),
                Verdict::Drop => {}
                Verdict::Hold if self.selection.is_none() => out.push(ev),
                Verdict::Hold => self.unnamed_dropped += 1,
            }
        }
        out
    }
}

/// The ids to put in the kernel filter for a pod: its pod-level cgroup (which
/// covers containers created later), else each container's.
fn is_loopback(addr: &str) -> bool {
    let addr = addr.strip_prefix("::ffff:").unwrap_or(addr);
    addr.parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

fn pod_filter_ids(pod: &Pod) -> Vec<u64> {
    match pod.cgroup_id {
        Some(id) => vec![id],
        None => pod.containers.iter().filter_map(|c| c.cgroup_id).collect(),
    }
}

/// Held events are timed from when they happened (wall clock).
fn ev_age_anchor(ev: &Event) -> Instant {
    let now_wall = podscope_model::Timestamp::now().0;
    let age = Duration::from_nanos(now_wall.saturating_sub(ev.timestamp.0));
    Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
}
