//! The node's pod store with real probes and a real containerd (the test bed
//! at PODBED_SOCKET, testbed/podbed.sh): sessions share its listings, and a
//! pod created while they run is named from the kernel's cgroup event and
//! its sandbox alone, without a full re-listing. Needs root.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podscope_bpf::ProbeStats;
use podscope_model::{Event, EventData, ProbeKind};
use podscope_pipeline::{Node, NodeConfig, PodSelection, PodStore, SessionSpec, Sink};
use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::cri::{ContainerSpec, PodSpec};

const IMAGE: &str = "localhost/busybox:latest";

fn socket() -> PathBuf {
    let Some(s) = std::env::var_os("PODBED_SOCKET") else {
        panic!(
            "PODBED_SOCKET is not set. This test needs root and the containerd test bed:\n  \
             bash testbed/podbed.sh install && export PODBED_SOCKET=$(bash testbed/podbed.sh up)"
        );
    };
    PathBuf::from(s)
}

/// Keeps what it is given.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.0.lock().unwrap().push(ev.clone());
        Ok(())
    }
    fn lost(&mut self, _: ProbeKind, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: u64, _: &[ProbeStats]) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn namespace(ns: &str) -> Option<PodSelection> {
    Some(PodSelection {
        namespace: Some(ns.into()),
        ..PodSelection::default()
    })
}

#[test]
fn sessions_share_listings_and_a_new_pod_is_named_without_one() {
    assert!(
        nix_is_root(),
        "this test loads BPF programs: run it as root (scripts/test.sh does)"
    );
    let sock = socket();
    let endpoint = format!("unix://{}", sock.display());
    let store = PodStore::new(Some(endpoint.clone()));
    let mut node = Node::with_store(
        NodeConfig {
            node: "store-test".into(),
            runtime_endpoint: Some(endpoint),
            ring_buffer_bytes: 1 << 20,
            interval: Duration::from_secs(1),
            host_filter: None,
            implementations: Vec::new(),
            http_capture_bytes: 1024,
            ring_budget: podscope_bpf::DEFAULT_RING_BUDGET,
            // Long enough that no periodic listing happens during the test.
            pod_refresh: Duration::from_secs(600),
        },
        store.clone(),
    );
    let ns = format!("store-{}", std::process::id());
    let spec = |wait| SessionSpec {
        probes: vec![ProbeKind::Exec],
        selection: namespace(&ns),
        wait,
        max_events: None,
        hooks: Default::default(),
    };
    let (a, b) = (Collect::default(), Collect::default());
    node.start(1, spec(true), Box::new(a.clone())).unwrap();
    assert_eq!(node.probes(), vec![ProbeKind::Exec]);
    // The second session needs one more probe: loaded into the running
    // tracer (Tracer::add_probes), exec shared.
    let mut two = spec(true);
    two.probes.push(ProbeKind::Open);
    node.start(2, two, Box::new(b.clone())).unwrap();
    assert_eq!(node.probes(), vec![ProbeKind::Exec, ProbeKind::Open]);
    // One listing for each session's start, none since.
    let listings = store.listings();
    assert_eq!(listings, 2, "each session start lists once");

    let name = format!("new-{}", std::process::id());
    let pspec = PodSpec::new(&name, &ns).unwrap();
    let script = "while true; do cat /marker-new 2>/dev/null; sleep 0.1; done";
    let cs = [ContainerSpec::new("main", IMAGE, &["sh", "-c", script])];
    let mut client = BlockingCriClient::connect(&sock).unwrap();
    let pod = client.run_pod(&pspec, &cs).unwrap();
    let named = |c: &Collect| {
        c.0.lock().unwrap().iter().any(|e| {
            e.identity.pod == name
                && matches!(&e.data, EventData::Exec(x) if x.args.iter().any(|a| a == "/marker-new"))
        })
    };
    let t = Instant::now();
    while !(named(&a) && named(&b)) && t.elapsed() < Duration::from_secs(30) {
        node.step(Duration::from_millis(20)).unwrap();
    }
    let during = store.listings();
    node.finish(2).unwrap();
    // Nobody needs open any more: unloaded; exec stays for session 1.
    assert_eq!(node.probes(), vec![ProbeKind::Exec]);
    node.finish(1).unwrap();
    assert!(
        node.probes().is_empty(),
        "probes left after the last session"
    );
    let _ = client.remove_pod(
        pod.sandbox_id.as_deref().unwrap(),
        Some(&pspec.cgroup_parent()),
    );
    assert!(
        named(&a),
        "session 1 never saw the new pod's marker exec, named"
    );
    assert!(
        named(&b),
        "session 2 never saw the new pod's marker exec, named"
    );
    assert_eq!(
        during, listings,
        "the new pod was named by a full listing, not from its sandbox"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}
