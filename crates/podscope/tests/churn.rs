//! No mis-attribution under churn (issue 15): 100 containers created and
//! destroyed on the test bed while one trace runs, each running a command of
//! its own. Every container's marker exec must carry exactly that
//! container's identity as the runtime reported it, and nothing may be held
//! back or dropped unnamed. Needs root and PODBED_SOCKET (testbed/podbed.sh).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{endpoint, pod, suffix, wait_attached, PodGuard};
use serde_json::Value;

const PODS: usize = 20;
const CONTAINERS: usize = 5;

#[test]
fn hundred_containers_created_and_destroyed_keep_their_own_identity() {
    let ns = format!("churn-{}", suffix());
    let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(["trace", "exec,exit", "-n", &ns, "--wait", "-o", "json"])
        .arg("--runtime-endpoint")
        .arg(endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    wait_attached(&mut stderr);
    let err_rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let reader = {
        let events = events.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                events
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        })
    };

    // Pods are made one after another and each is removed once the next one
    // exists, so creation and destruction overlap the whole trace. Each
    // container runs its own marker command and exits.
    let started = Instant::now();
    let mut expected = Vec::new(); // (marker, pod name, pod uid, container name, container id)
    let mut previous: Option<PodGuard> = None;
    for p in 0..PODS {
        let name = format!("p{p}");
        let scripts: Vec<(String, String)> = (0..CONTAINERS)
            .map(|c| (format!("c{c}"), format!("cat /marker-{p}-{c}")))
            .collect();
        let refs: Vec<(&str, &str)> = scripts
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        let g = pod(&name, &ns, &[], &refs);
        for (cname, _) in &scripts {
            let c = g.container(cname);
            expected.push((
                format!("/marker-{p}-{}", &cname[1..]),
                name.clone(),
                g.pod.uid.clone(),
                cname.clone(),
                c.id.clone(),
            ));
        }
        if let Some(old) = previous.replace(g) {
            old.remove();
        }
    }
    drop(previous);
    let made = started.elapsed();

    // Every marker must come out (the trace follows pods it has never seen).
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = |evs: &[Value], marker: &str| {
        evs.iter()
            .filter(|e| {
                e["probe"] == "exec"
                    && e["args"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == marker))
            })
            .count()
    };
    loop {
        let evs = events.lock().unwrap().clone();
        let missing = expected.iter().filter(|x| seen(&evs, &x.0) == 0).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} markers never came out",
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let stderr = err_rest.join().unwrap();
    assert!(status.success(), "the trace failed: {stderr}");
    let evs = events.lock().unwrap().clone();

    let mut wrong = Vec::new();
    for (marker, pod_name, uid, cname, cid) in &expected {
        let hits: Vec<&Value> = evs
            .iter()
            .filter(|e| {
                e["probe"] == "exec"
                    && e["args"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == marker.as_str()))
            })
            .collect();
        if hits.len() != 1 {
            wrong.push(format!("{marker}: {} exec events", hits.len()));
            continue;
        }
        let e = hits[0];
        let got = (
            e["namespace"].as_str().unwrap_or(""),
            e["pod"].as_str().unwrap_or(""),
            e["pod_uid"].as_str().unwrap_or(""),
            e["container"].as_str().unwrap_or(""),
            e["container_id"].as_str().unwrap_or(""),
        );
        let want = (
            ns.as_str(),
            pod_name.as_str(),
            uid.as_str(),
            cname.as_str(),
            cid.as_str(),
        );
        if got != want {
            wrong.push(format!(
                "{marker}: expected {ns}/{pod_name}/{cname} ({cid}), got {got:?}"
            ));
        }
        // The marker process's exit carries the same identity.
        let exit = evs
            .iter()
            .find(|x| x["probe"] == "exit" && x["pid"] == e["pid"] && x["pod_uid"] == e["pod_uid"]);
        match exit {
            Some(x)
                if x["container_id"] == e["container_id"] && x["container"] == e["container"] => {}
            Some(x) => wrong.push(format!(
                "{marker}: its exit is attributed to {}",
                x["container"]
            )),
            None => wrong.push(format!("{marker}: no exit for pid {} in its pod", e["pid"])),
        }
    }
    // Every event of the namespace is one of ours and carries a known pod.
    let uids: Vec<&str> = expected.iter().map(|x| x.2.as_str()).collect();
    let strays: Vec<&Value> = evs
        .iter()
        .filter(|e| e["probe"] == "exec" || e["probe"] == "exit")
        .filter(|e| !uids.contains(&e["pod_uid"].as_str().unwrap_or("")))
        .collect();
    let execs = evs.iter().filter(|e| e["probe"] == "exec").count();
    let exits = evs.iter().filter(|e| e["probe"] == "exit").count();
    eprintln!(
        "churn: {} containers in {PODS} pods made and removed in {:.1}s; {execs} execs, {exits} exits traced; {} misattributed, {} strays",
        expected.len(),
        made.as_secs_f64(),
        wrong.len(),
        strays.len()
    );
    assert!(wrong.is_empty(), "misattributed: {wrong:#?}");
    assert!(strays.is_empty(), "events of unknown pods: {strays:#?}");
    assert!(
        !stderr.contains("left out because the runtime had not named their pod"),
        "events held and then dropped unnamed: {stderr}"
    );
}
