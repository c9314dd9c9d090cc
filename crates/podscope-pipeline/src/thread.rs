//! The node tracer on a thread of its own, driven by commands: how the agent
//! (and anything else with several sessions, e.g. an async server) runs one
//! [`Node`] for all of them.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use podscope_model::ProbeKind;

use crate::format::Sink;
use crate::node::{Ended, Node, NodeConfig, SessionId, SessionSpec, Started};

/// How long one step waits for events at most (event latency when idle).
const STEP: Duration = Duration::from_millis(20);

/// Told when a session ends (stopped, its limit reached, or its sink broke).
pub type OnEnd = Box<dyn FnOnce(Ended) + Send>;

enum Command {
    Start {
        id: SessionId,
        spec: Box<SessionSpec>,
        sink: Box<dyn Sink + Send>,
        on_end: OnEnd,
        reply: Sender<Result<Started, String>>,
    },
    Stop {
        id: SessionId,
    },
    Probes {
        reply: Sender<(Vec<ProbeKind>, Vec<SessionId>, Vec<u64>)>,
    },
}

/// A handle on the node thread; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Sender<Command>,
    store: crate::store::PodStore,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeHandle")
    }
}

impl NodeHandle {
    /// Starts the node thread (nothing is loaded until a session starts).
    pub fn spawn(cfg: NodeConfig) -> NodeHandle {
        let (tx, rx) = mpsc::channel();
        let store = crate::store::PodStore::new(cfg.runtime_endpoint.clone());
        let s = store.clone();
        std::thread::Builder::new()
            .name("podscope-node".into())
            .spawn(move || run(Node::with_store(cfg, s), rx))
            .expect("spawning the node tracer thread");
        NodeHandle { tx, store }
    }

    /// The node's pod store, shared by the sessions.
    pub fn pods(&self) -> &crate::store::PodStore {
        &self.store
    }

    /// Starts a session; blocks until its probes are loaded (or refused).
    /// `on_end` runs on the node thread when the session ends, after its
    /// sink got the summary and was dropped.
    pub fn start(
        &self,
        id: SessionId,
        spec: SessionSpec,
        sink: Box<dyn Sink + Send>,
        on_end: OnEnd,
    ) -> Result<Started, String> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Command::Start {
                id,
                spec: Box::new(spec),
                sink,
                on_end,
                reply,
            })
            .map_err(|_| "the node tracer has stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the node tracer has stopped".to_string())?
    }

    /// Ends a session (its summary is written, `on_end` runs).
    pub fn stop(&self, id: SessionId) {
        let _ = self.tx.send(Command::Stop { id });
    }

    /// The probes loaded, the running sessions, and the cgroups in the
    /// kernel filter.
    pub fn state(&self) -> Option<(Vec<ProbeKind>, Vec<SessionId>, Vec<u64>)> {
        let (reply, rx) = mpsc::channel();
        self.tx.send(Command::Probes { reply }).ok()?;
        rx.recv().ok()
    }
}

fn run(mut node: Node, rx: Receiver<Command>) {
    let mut ends: Vec<(SessionId, OnEnd)> = Vec::new();
    loop {
        // Idle: block on the next command; busy: take what is queued.
        let first = if node.sessions().is_empty() {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    for id in node.sessions() {
                        finish(&mut node, &mut ends, id);
                    }
                    return;
                }
            }
        };
        let mut next = first;
        while let Some(cmd) = next {
            match cmd {
                Command::Start {
                    id,
                    spec,
                    sink,
                    on_end,
                    reply,
                } => {
                    let r = node.start(id, *spec, sink).map_err(|e| format!("{e:#}"));
                    if r.is_ok() {
                        ends.push((id, on_end));
                    }
                    let _ = reply.send(r);
                }
                Command::Stop { id } => finish(&mut node, &mut ends, id),
                Command::Probes { reply } => {
                    let _ = reply.send((node.probes(), node.sessions(), node.filtered_cgroups()));
                }
            }
            next = rx.try_recv().ok();
        }
        if node.sessions().is_empty() {
            continue;
        }
        if let Err(e) = node.step(STEP) {
            eprintln!("podscope: reading the probes failed: {e:#}; ending every session");
            for id in node.sessions() {
                finish(&mut node, &mut ends, id);
            }
            continue;
        }
        for id in node.done() {
            finish(&mut node, &mut ends, id);
        }
    }
}

fn finish(node: &mut Node, ends: &mut Vec<(SessionId, OnEnd)>, id: SessionId) {
    let ended = match node.finish(id) {
        Ok(e) => e,
        Err(e) => Ended {
            error: Some(format!("{e:#}")),
            ..Ended::default()
        },
    };
    if let Some(pos) = ends.iter().position(|(i, _)| *i == id) {
        let (_, on_end) = ends.remove(pos);
        on_end(ended);
    }
}
