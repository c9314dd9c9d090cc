//! The drain thread: empties every kernel ring as fast as records arrive into
//! a bounded user-space queue, so a busy machine or a slow consumer (decode,
//! enrichment, output) cannot let the kernel rings overflow.
//!
//! Why a thread that does nothing else: the kernel drops a record the moment
//! its ring is full, and a ring holds only tens of milliseconds at a storm's
//! rate. The consumer's thread also enriches, formats and writes; any stall
//! there (a slow pipe, a CRI call, being descheduled on a busy node) used to
//! stall reading too. The drain thread only copies bytes, so it gets back to
//! the rings within microseconds of each wakeup, and a stall downstream fills
//! the user-space queue (bounded, counted per probe as `queue_full`) instead
//! of the kernel ring.
//!
//! Records are copied raw into one buffer per batch (one allocation per
//! batch, not per record) and decoded on the consumer's thread: copying is
//! the cheapest thing the drain thread can do, which keeps it quick to react.
//! `PODSCOPE_DRAIN_DECODE=1` decodes on the drain thread instead (to compare
//! the two; docs/benchmarks.md has the figures).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::{MapHandle, RingBufferBuilder};
use podscope_model::Event;

use crate::decode::Clock;
use crate::load::DecodeFn;
use crate::Error;

/// How long the drain thread waits for a kernel wakeup before reading the
/// rings anyway (probes wake it only once a quarter of a ring is pending).
/// After a pass that found nothing the wait doubles, up to DRAIN_IDLE_MAX,
/// so an idle tracer does not wake 200 times a second; data brings it back
/// to DRAIN_INTERVAL. (A ring holds its budget, 50 ms by default, at the
/// probe's peak rate, and a quarter-full ring wakes the thread anyway.)
const DRAIN_INTERVAL: Duration = Duration::from_millis(5);
const DRAIN_IDLE_MAX: Duration = Duration::from_millis(40);

/// A batch is handed over once it holds this many records (or at the end of
/// each pass over the rings), so the consumer never waits for a full pass.
const BATCH_RECORDS: usize = 4096;
/// Records one poll takes off the queue at most: what is left stays in the
/// queue as compact raw records (bounded by its bytes) rather than becoming
/// decoded events all at once (400+ bytes each) when the consumer is behind.
const TAKE_RECORDS: usize = 4 * BATCH_RECORDS;

/// Where records come from: a probe (with its slot in the tracer's probe
/// list), or the cgroup watcher, whose records are never dropped (a handful
/// per pod; losing one would lose a pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Probe(usize),
    Watcher,
}

/// One ring to drain: a duplicate of the ring map's fd, so the map and its
/// memory stay alive as long as the drain thread reads it, whatever order
/// the tracer's parts drop in.
pub(crate) struct Ring {
    pub source: Source,
    pub map: MapHandle,
    pub decode: Option<DecodeFn>,
}

/// A record as the consumer receives it.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "passed by value once per record, never stored"
)]
pub(crate) enum Record<'a> {
    Raw(&'a [u8]),
    /// Decoded on the drain thread (PODSCOPE_DRAIN_DECODE=1); None: undecodable.
    Decoded(Option<Event>),
}

/// Records read in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    /// (source, start, len) into `bytes`.
    raw: Vec<(Source, usize, usize)>,
    decoded: Vec<(Source, Option<Event>)>,
    /// Record bytes this batch accounts for in the queue bound.
    size: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.decoded.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len() + self.decoded.len()
    }

    /// Calls `f` for every record, raw ones first.
    pub(crate) fn for_each(self, mut f: impl FnMut(Source, Record<'_>)) {
        for (src, start, len) in &self.raw {
            f(*src, Record::Raw(&self.bytes[*start..*start + *len]));
        }
        for (src, ev) in self.decoded {
            f(src, Record::Decoded(ev));
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<Batch>,
    /// The last flush request the drain thread has answered.
    flushed: u64,
    /// A ring read failed: the errno; the thread has stopped.
    failed: Option<i32>,
    /// The thread has ended (after its last pass).
    ended: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a batch is queued, a flush answered or the thread ends.
    ready: Condvar,
    stop: AtomicBool,
    flush_req: AtomicU64,
    /// Record bytes queued and not yet taken by the consumer.
    queued_bytes: AtomicUsize,
    /// The bound on `queued_bytes`.
    capacity: usize,
    /// Records dropped because the queue was full, by probe slot.
    dropped: Vec<AtomicU64>,
}

/// The running drain thread. Dropping it stops the thread after one last
/// pass over the rings and joins it; what it read stays in the queue until
/// [`Drain::take`] (or is dropped with it).
#[derive(Debug)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    /// Starts draining `rings` into a queue of at most `capacity` record bytes.
    /// `slots` is the number of probe slots (for the per-probe drop counts).
    pub(crate) fn start(
        rings: Vec<Ring>,
        slots: usize,
        capacity: usize,
        clock: Clock,
    ) -> Result<Drain, Error> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            flush_req: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            capacity,
            dropped: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        });
        let decode_here = std::env::var_os("PODSCOPE_DRAIN_DECODE").is_some_and(|v| v == "1");
        // The ring reader is built on the thread that uses it (its callbacks
        // share a batch through an Rc); the build result comes back here.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("podscope-drain".into())
            .spawn(move || run(sh, rings, decode_here, clock, tx))
            .map_err(|e| Error::Io {
                what: "starting the ring drain thread".into(),
                source: e,
            })?;
        let drain = Drain {
            shared,
            thread: Some(thread),
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(drain),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Io {
                what: "starting the ring drain thread".into(),
                source: std::io::Error::other("the thread ended before reading a ring"),
            }),
        }
    }

    /// Waits up to `timeout` for at least one batch, then takes every batch
    /// queued. Fails if reading a ring failed (after what was read before).
    pub(crate) fn take(&self, timeout: Duration) -> Result<Vec<Batch>, Error> {
        let mut q = self.wait(timeout, |q| !q.batches.is_empty());
        self.take_locked(&mut q, TAKE_RECORDS)
    }

    /// The queue, once `done` holds, reading failed or the thread ended, or
    /// after `timeout`.
    fn wait(
        &self,
        timeout: Duration,
        done: impl Fn(&Queue) -> bool,
    ) -> std::sync::MutexGuard<'_, Queue> {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&q) && q.failed.is_none() && !q.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = self
                .shared
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q
    }

    /// Takes queued batches, whole, until `max` records are taken (at least
    /// one batch when there is one).
    fn take_locked(&self, q: &mut Queue, max: usize) -> Result<Vec<Batch>, Error> {
        let mut out: Vec<Batch> = Vec::new();
        let mut records = 0;
        while records < max {
            let Some(b) = q.batches.pop_front() else {
                break;
            };
            records += b.len();
            out.push(b);
        }
        let bytes: usize = out.iter().map(|b| b.size).sum();
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if out.is_empty() {
            if let Some(errno) = q.failed {
                return Err(Error::Io {
                    what: "reading the ring buffers".into(),
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
        }
        Ok(out)
    }

    /// Has the drain thread read every ring to its end once more (everything
    /// the kernel had written before this call is then queued), and takes the
    /// queue. Waits at most a second.
    pub(crate) fn flush(&self) -> Result<Vec<Batch>, Error> {
        let want = self.shared.flush_req.fetch_add(1, Ordering::AcqRel) + 1;
        let mut q = self.wait(Duration::from_secs(1), |q| q.flushed >= want);
        self.take_locked(&mut q, usize::MAX)
    }

    /// Records dropped because the queue was full, per probe slot, so far.
    pub(crate) fn dropped(&self) -> Vec<u64> {
        self.shared
            .dropped
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops the thread after a last pass over the rings, joins it, and
    /// returns what is queued.
    pub(crate) fn stop(mut self) -> Vec<Batch> {
        self.join();
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.take_locked(&mut q, usize::MAX).unwrap_or_default()
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.join();
    }
}

/// Appends a record to the batch being filled, or counts it as dropped when
/// the queue bound would be exceeded.
fn add(
    sh: &Shared,
    batch: &mut Batch,
    src: Source,
    data: &[u8],
    decode: Option<(DecodeFn, Clock)>,
) {
    let full = sh.queued_bytes.load(Ordering::Acquire) + batch.size + data.len() > sh.capacity;
    match src {
        Source::Probe(slot) if full => {
            sh.dropped[slot].fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => {}
    }
    batch.size += data.len();
    match decode {
        Some((f, clock)) => batch.decoded.push((src, f(data, &clock))),
        None => {
            let start = batch.bytes.len();
            batch.bytes.extend_from_slice(data);
            batch.raw.push((src, start, data.len()));
        }
    }
}

/// Hands a batch to the consumer; `flushed` answers flush requests up to it.
fn ship(sh: &Shared, batch: &RefCell<Batch>, flushed: Option<u64>) {
    let b = std::mem::take(&mut *batch.borrow_mut());
    if b.is_empty() && flushed.is_none() {
        return;
    }
    let mut q = sh.queue.lock().unwrap_or_else(|p| p.into_inner());
    if !b.is_empty() {
        sh.queued_bytes.fetch_add(b.size, Ordering::AcqRel);
        q.batches.push_back(b);
    }
    if let Some(f) = flushed {
        q.flushed = q.flushed.max(f);
    }
    drop(q);
    sh.ready.notify_all();
}

fn run(
    sh: Arc<Shared>,
    rings: Vec<Ring>,
    decode_here: bool,
    clock: Clock,
    started: std::sync::mpsc::SyncSender<Result<(), Error>>,
) {
    let batch = Rc::new(RefCell::new(Batch::default()));
    // Records seen by the callbacks (shipped or dropped), to tell idle passes.
    let seen = Rc::new(std::cell::Cell::new(0u64));
    let mut builder = RingBufferBuilder::new();
    for ring in &rings {
        let (src, decode) = (ring.source, ring.decode.filter(|_| decode_here));
        let (sh, batch, seen) = (sh.clone(), batch.clone(), seen.clone());
        let added = builder.add(&ring.map, move |data: &[u8]| {
            seen.set(seen.get() + 1);
            let mut b = batch.borrow_mut();
            add(&sh, &mut b, src, data, decode.map(|f| (f, clock)));
            if b.len() >= BATCH_RECORDS {
                drop(b);
                ship(&sh, &batch, None);
            }
            0
        });
        if let Err(e) = added {
            let _ = started.send(Err(Error::runtime("setting up the ring buffer")(e)));
            return;
        }
    }
    let reader = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            let _ = started.send(Err(Error::runtime("creating the ring buffer reader")(e)));
            return;
        }
    };
    let _ = started.send(Ok(()));
    drop(started);

    let fail = |errno: i32| {
        let mut q = sh.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.failed = Some(errno);
        q.ended = true;
        drop(q);
        sh.ready.notify_all();
    };
    // Only this thread answers flush requests.
    let mut answered = 0;
    let mut wait = DRAIN_INTERVAL;
    loop {
        let seen_before = seen.get();
        let stopping = sh.stop.load(Ordering::Acquire);
        // Read before the pass: everything written before a flush request
        // is then read in this pass.
        let want = sh.flush_req.load(Ordering::Acquire);
        if !stopping {
            let rc = reader.poll_raw(wait);
            if rc < 0 && rc != -libc::EINTR {
                ship(&sh, &batch, None);
                return fail(-rc);
            }
        }
        // Wakeups are batched in the kernel: read every ring, signalled or not.
        let rc = reader.consume_raw();
        if rc < 0 && rc != -libc::EINTR {
            ship(&sh, &batch, None);
            return fail(-rc);
        }
        ship(&sh, &batch, (want > answered).then_some(want));
        answered = answered.max(want);
        wait = if seen.get() == seen_before {
            (wait * 2).min(DRAIN_IDLE_MAX)
        } else {
            DRAIN_INTERVAL
        };
        if stopping {
            break;
        }
    }
    // The reader goes before the map fds it read (declared after them).
    drop(reader);
    let mut q = sh.queue.lock().unwrap_or_else(|p| p.into_inner());
    q.ended = true;
    drop(q);
    sh.ready.notify_all();
    drop(rings);
}
