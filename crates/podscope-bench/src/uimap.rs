//! `--ui-map`: the web view's service-map endpoint (`GET /ui/api/map`) of a
//! real hub over HTTP, its map seeded with a synthetic load of N pods and M
//! edges (no BPF, no root): latency per answer and its size.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Figures {
    pub pods: usize,
    pub edges: usize,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub bytes: usize,
}

pub fn run(pods: usize, edges: usize, requests: usize) -> Result<Figures> {
    let (addr, cookie, _rt) = podscope_cluster::hub::bench_map_server(pods, edges)?;
    let base = format!("http://{addr}");
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    // One answer first: the check that the map is what was asked for.
    for i in 0..=requests {
        let t = Instant::now();
        let r = podscope_cluster::http::request(
            &base,
            "GET",
            "/ui/api/map",
            None,
            None,
            &[("cookie", &cookie)],
        )
        .context("GET /ui/api/map")?;
        if r.status != 200 {
            bail!("GET /ui/api/map answered {}", r.status);
        }
        let body = r.text()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let (n, e) = (
                v["nodes"].as_array().map_or(0, Vec::len),
                v["edges"].as_array().map_or(0, Vec::len),
            );
            if n != pods || e != edges {
                bail!("the map has {n} nodes and {e} edges, not {pods} and {edges}");
            }
            bytes = body.len();
            continue;
        }
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    let q = |f: f64| times[((times.len() as f64 * f).ceil() as usize).clamp(1, times.len()) - 1];
    Ok(Figures {
        pods,
        edges,
        requests,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: *times.last().unwrap_or(&0.0),
        bytes,
    })
}
