//! The parsers' regression corpus: real recordings of the http probe's raw
//! socket records (tests/corpus/NAME.rec, made by scripts/record-corpus.sh
//! from Debian's nginx driven by curl and h2load, and a grpcio server and
//! client) replayed through the
//! parser stage; what comes out must be byte for byte what NAME.out holds
//! (every request event as JSON, then the stage's counts). A change in what
//! the parsers make of real traffic shows here as a diff.
//! `PODSCOPE_UPDATE_CORPUS=1` writes NAME.out anew (review it against the
//! access log the recording script printed).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use podscope_model::{Event, EventData, Identity, SockDataEvent, SockDataKind, Timestamp};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn undash(s: &str) -> String {
    if s == "-" {
        String::new()
    } else {
        s.to_string()
    }
}

/// One corpus line back into the record the probe delivered.
fn record(line: &str) -> Event {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 16, "a corpus line has 16 fields: {line}");
    let data = SockDataEvent {
        kind: match f[3] {
            "data" => SockDataKind::Data,
            "close" => SockDataKind::Close,
            k => panic!("kind {k}"),
        },
        protocol: Cow::Owned(f[4].to_string()),
        tls: f[5] == "1",
        sock: u64::from_str_radix(f[2], 16).unwrap(),
        fd: 0,
        direction: Cow::Owned(undash(f[6])),
        syscall: Cow::Owned(f[7].to_string()),
        len: f[8].parse().unwrap(),
        seq: f[9].parse().unwrap(),
        family: Cow::Owned(f[10].to_string()),
        saddr: undash(f[11]),
        sport: f[12].parse().unwrap(),
        daddr: undash(f[13]),
        dport: f[14].parse().unwrap(),
        payload: unhex(f[15]),
    };
    let pid = f[1].parse().unwrap();
    Event {
        // Replayed from a fixed origin: the output is the same every run.
        timestamp: Timestamp(1_000_000_000 + f[0].parse::<u64>().unwrap()),
        identity: Identity::default(),
        pid,
        tid: pid,
        uid: 0,
        comm: String::new(),
        cgroup_id: 0,
        data: EventData::SockData(data),
    }
}

/// What the stage makes of a recording: each request event's JSON, one per
/// line, in the order they come, then the counts.
fn replay(rec: &str, batch: usize) -> String {
    let mut stage = podscope_proto::Stage::new();
    let events: Vec<Event> = rec.lines().filter(|l| !l.is_empty()).map(record).collect();
    let mut out = Vec::new();
    for chunk in events.chunks(batch) {
        out.extend(stage.process(chunk.to_vec()));
    }
    out.extend(stage.finish());
    let mut text = String::new();
    for e in &out {
        text.push_str(&serde_json::to_string(&e.data).unwrap());
        text.push('\n');
    }
    text.push_str(&format!("{:?}\n", stage.stats()));
    text
}

#[test]
fn recordings_of_real_servers_replay_byte_exactly() {
    let update = std::env::var_os("PODSCOPE_UPDATE_CORPUS").is_some();
    let mut recs: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rec"))
        .collect();
    recs.sort();
    assert!(recs.len() >= 3, "the corpus is missing: {recs:?}");
    for rec in recs {
        let text = std::fs::read_to_string(&rec).unwrap();
        // In batches as a poll gives them (records of a few ms together).
        let got = replay(&text, 16);
        let want_path = rec.with_extension("out");
        if update {
            std::fs::write(&want_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&want_path).unwrap_or_else(|_| {
            panic!(
                "{} has no {}: run PODSCOPE_UPDATE_CORPUS=1 cargo test -p podscope-proto --test corpus",
                rec.display(),
                want_path.display()
            )
        });
        if got != want {
            let first = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            panic!(
                "{} no longer replays as {}: first difference at line {}:\n got: {}\nwant: {}",
                rec.display(),
                want_path.display(),
                first + 1,
                got.lines().nth(first).unwrap_or("(end)"),
                want.lines().nth(first).unwrap_or("(end)")
            );
        }
        // One record at a time, or all at once: the same.
        assert_eq!(replay(&text, 1), got, "{}", rec.display());
        assert_eq!(replay(&text, usize::MAX), got, "{}", rec.display());
    }
}
