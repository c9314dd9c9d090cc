//! Prints the exposition after a few synthetic events (`--openmetrics` for OpenMetrics).

use std::time::Duration;

use podscope_export::{Format, Metrics};
use podscope_model::{Event, EventData, Identity, OpenEvent, Timestamp};

fn main() {
    let m = Metrics::new("node-1", Duration::from_secs(60));
    let mut o = m.observer();
    o.observe(&Event {
        timestamp: Timestamp::now(),
        identity: Identity {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "nginx".into(),
            ..Identity::default()
        },
        pid: 1,
        tid: 1,
        uid: 0,
        comm: "nginx".into(),
        cgroup_id: 1,
        data: EventData::Open(OpenEvent {
            kind: "open".into(),
            path: "/etc/nginx.conf".into(),
            dirfd: None,
            flags: 0,
            flags_str: "O_RDONLY".into(),
            mode: 0,
            fd: Some(3),
            errno: None,
            error: None,
        }),
    });
    m.probe_stats(podscope_model::ProbeKind::Open, 1, 0);
    let format = if std::env::args().any(|a| a == "--openmetrics") {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    print!("{}", m.render(format).expect("render"));
}
