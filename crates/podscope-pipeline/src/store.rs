//! The node's pod store: one kept CRI connection, one listing at a time,
//! shared by every session's enrichment and by the agent's reports to the
//! hub. Listings run on a thread of their own when asked for (a new cgroup,
//! a pending pod) or every period, so the event thread never waits for the
//! runtime except when it must (a session's start, its final flush).
//!
//! Why polling: the CRI's `GetContainerEvents` stream exists from
//! containerd 1.7; containerd 1.6 (Debian 12, our test bed) answers it
//! `Unimplemented`. New pods are noticed without a listing anyway: the
//! kernel's cgroup watcher reports the pod's cgroup the moment kubelet makes
//! it, and a pending pod is named by asking for its sandbox alone
//! ([`PodStore::name_sandboxes`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::{Discovery, Pod};

/// Listings asked for within this gap of the last one are merged into one.
const GAP: Duration = Duration::from_millis(100);

/// One listing of the node's pods.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with each listing.
    pub version: u64,
    /// When it was taken.
    pub taken: Instant,
    /// What the runtime said.
    pub discovery: Result<Discovery, String>,
}

#[derive(Debug, Default)]
struct State {
    latest: Option<Arc<Snapshot>>,
    wanted: bool,
    thread: bool,
    stop: bool,
}

#[derive(Debug)]
struct Inner {
    endpoint: Option<String>,
    state: Mutex<State>,
    wake: Condvar,
    /// The kept connection (None until the first listing, or without CRI).
    client: Mutex<Option<BlockingCriClient>>,
    listings: AtomicU64,
}

/// Stops the listing thread when the last handle goes.
#[derive(Debug)]
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.0.state).stop = true;
        self.0.wake.notify_all();
    }
}

/// A handle on the node's pod store; cheap to clone, usable from any thread.
/// Asks that come within 100 ms of a listing are merged into the next one.
#[derive(Debug, Clone)]
pub struct PodStore {
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodStore {
    /// A store for this runtime endpoint (found by itself when None).
    /// Nothing is listed until someone asks.
    pub fn new(endpoint: Option<String>) -> PodStore {
        let inner = Arc::new(Inner {
            endpoint,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            client: Mutex::new(None),
            listings: AtomicU64::new(0),
        });
        PodStore {
            _guard: Arc::new(Guard(inner.clone())),
            inner,
        }
    }

    /// Lists now, on this thread, and returns the listing (shared with
    /// everyone else's next look).
    pub fn refresh_now(&self) -> Arc<Snapshot> {
        list(&self.inner)
    }

    /// The latest listing, if any.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        lock(&self.inner.state).latest.clone()
    }

    /// The latest listing if it is younger than `age`, else a new one.
    pub fn fresh(&self, age: Duration) -> Arc<Snapshot> {
        match self.latest() {
            Some(s) if s.taken.elapsed() < age => s,
            _ => self.refresh_now(),
        }
    }

    /// Asks for a listing soon, off this thread; the result shows up in
    /// [`latest`](Self::latest).
    pub fn request(&self) {
        let mut st = lock(&self.inner.state);
        st.wanted = true;
        if !st.thread {
            st.thread = true;
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name("podscope-pods".into())
                .spawn(move || lister(inner))
                .expect("spawning the pod store thread");
        }
        self.inner.wake.notify_all();
    }

    /// How many listings were made (all callers together).
    pub fn listings(&self) -> u64 {
        self.inner.listings.load(Ordering::Relaxed)
    }

    /// Names pods by asking the runtime about their sandboxes only (much
    /// cheaper than a listing). None without a CRI connection.
    pub fn name_sandboxes(&self, uids: &[String]) -> Option<Result<Vec<Pod>, String>> {
        let mut client = lock(&self.inner.client);
        if client.is_none() {
            *client = BlockingCriClient::connect_endpoint(self.inner.endpoint.as_deref()).ok();
        }
        let c = client.as_mut()?;
        let sandboxes = match c.list_pod_sandboxes() {
            Ok(s) => s,
            Err(e) => {
                *client = None;
                return Some(Err(format!("listing pod sandboxes: {e}")));
            }
        };
        let mut named = Vec::new();
        for sb in sandboxes {
            let uid = sb.metadata.as_ref().map(|m| m.uid.as_str()).unwrap_or("");
            if uids.iter().any(|p| p == uid) {
                match c.pod(&sb.id) {
                    Ok(pod) => named.push(pod),
                    Err(e) => eprintln!("podscope: warning: asking about sandbox {}: {e}", sb.id),
                }
            }
        }
        Some(Ok(named))
    }
}

/// One listing, published. Through the kept connection when there is one;
/// a connection that failed is made again next time.
fn list(inner: &Inner) -> Arc<Snapshot> {
    let discovery = {
        let mut client = lock(&inner.client);
        if client.is_none() {
            *client = BlockingCriClient::connect_endpoint(inner.endpoint.as_deref()).ok();
        }
        match client.as_mut() {
            Some(c) => match c.discover() {
                Ok(d) => Ok(d),
                Err(e) => {
                    *client = None;
                    // The runtime may have restarted: the general path says why.
                    podscope_runtime::discover_detailed(inner.endpoint.as_deref())
                        .map_err(|e2| format!("{e2} (after {e})"))
                }
            },
            // No CRI: the general path (explicit endpoint errors, or /proc).
            None => podscope_runtime::discover_detailed(inner.endpoint.as_deref())
                .map_err(|e| e.to_string()),
        }
    };
    let mut st = lock(&inner.state);
    let version = st.latest.as_ref().map_or(0, |s| s.version) + 1;
    let snap = Arc::new(Snapshot {
        version,
        taken: Instant::now(),
        discovery,
    });
    inner.listings.fetch_add(1, Ordering::Relaxed);
    st.latest = Some(snap.clone());
    snap
}

fn lister(inner: Arc<Inner>) {
    loop {
        {
            let mut st = lock(&inner.state);
            loop {
                if st.stop {
                    return;
                }
                let age = st.latest.as_ref().map(|s| s.taken.elapsed());
                if st.wanted && age.is_none_or(|a| a >= GAP) {
                    st.wanted = false;
                    break;
                }
                let wait = if st.wanted {
                    GAP.saturating_sub(age.unwrap_or_default())
                } else {
                    // Idle: woken by the next ask (or, at the latest, to
                    // check whether the store is still used).
                    Duration::from_secs(1)
                };
                st = inner
                    .wake
                    .wait_timeout(st, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        list(&inner);
    }
}
