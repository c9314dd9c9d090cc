//! The web view (`podscope ui`, and `/ui/` on a hub): its login and CSRF
//! rules against a real hub, and the pages driven in a real headless
//! Chromium through chromedriver (WebDriver) against `podscope ui` tracing
//! real pods on the test bed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{pod, root_or_skip, suffix, wait_for};
use podscope_cluster::http::request;
use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token_file(tag: &str) -> (PathBuf, String) {
    let token = format!("ui-token-{tag}-{}", suffix());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("ui-token-{tag}-{}", std::process::id()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &token).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    (path, token)
}

fn header<'a>(r: &'a podscope_cluster::http::Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `podscope_ui=...` pair of a Set-Cookie header.
fn cookie(r: &podscope_cluster::http::Response) -> String {
    let set = header(r, "set-cookie").expect("a Set-Cookie header");
    set.split(';').next().unwrap().trim().to_string()
}

#[test]
fn login_cookie_and_csrf_guard_the_view_and_its_api() {
    let port = common::free_port();
    let (tf, token) = token_file("auth");
    let _hub = Proc(
        Command::new(env!("CARGO_BIN_EXE_podscope"))
            .args(["--token-file", tf.to_str().unwrap(), "hub", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for("the hub", Duration::from_secs(10), || {
        request(&base, "GET", "/healthz", None, None, &[]).is_ok()
    });
    let get = |path: &str, headers: &[(&str, &str)]| {
        request(&base, "GET", path, None, None, headers).unwrap()
    };

    // Without a login: the page sends to the login form, the API says 401.
    let r = get("/ui/", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(header(&r, "location"), Some("login"));
    let r = get("/ui/api/snapshot", &[]);
    assert_eq!(r.status, 401);
    assert!(r.json().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("not logged in"));
    assert_eq!(get("/ui/api/v1/sessions", &[]).status, 401);
    let r = get("/ui/login", &[]);
    assert_eq!(r.status, 200);
    let page = r.text().unwrap();
    assert!(page.contains("name=\"token\""), "{page}");

    // A wrong token: 401 and the form again, no cookie.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = request(&base, "POST", "/ui/login", None, Some("token=nope"), &form).unwrap();
    assert_eq!(r.status, 401);
    assert!(header(&r, "set-cookie").is_none());
    assert!(r.text().unwrap().contains("Wrong token"));
    let r = get("/ui/login?token=nope", &[]);
    assert_eq!(r.status, 401);

    // The right token: a session cookie that scripts cannot read and other
    // sites cannot send.
    let body = format!("token={token}");
    let r = request(&base, "POST", "/ui/login", None, Some(&body), &form).unwrap();
    assert_eq!(r.status, 303);
    let set = header(&r, "set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let c = cookie(&r);
    let with = [("cookie", c.as_str())];
    let r = get("/ui/", &with);
    assert_eq!(r.status, 200);
    let csp = header(&r, "content-security-policy").unwrap().to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = r.text().unwrap();
    let csrf = page
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    assert_eq!(csrf.len(), 64, "{csrf}");
    let r = get("/ui/api/snapshot", &with);
    assert_eq!(r.status, 200);
    let snap = r.json().unwrap();
    assert!(
        snap["pods"].is_array() && snap["map"]["edges"].is_array(),
        "{snap}"
    );

    // State changes with the cookie need the page's CSRF token.
    let create = json!({"all_namespaces": true, "probes": ["exec"]}).to_string();
    let jsonct = ("content-type", "application/json");
    let create_with = |headers: &[(&str, &str)]| {
        let r = request(
            &base,
            "POST",
            "/ui/api/v1/sessions",
            None,
            Some(&create),
            headers,
        )
        .unwrap();
        (r.status, r.text().unwrap_or_default())
    };
    assert_eq!(create_with(&[with[0], jsonct]).0, 403, "no CSRF header");
    let bad = [with[0], jsonct, ("x-csrf-token", "0000")];
    assert_eq!(create_with(&bad).0, 403, "a wrong CSRF token");
    let good = [with[0], jsonct, ("x-csrf-token", csrf.as_str())];
    let (status, text) = create_with(&good);
    assert_eq!(status, 201, "{text}");
    // The cookie is not a bearer token: /v1 still wants the token.
    assert_eq!(get("/v1/sessions", &with).status, 401);
    // The view's own observer session and the one made above are listed.
    let r = request(&base, "GET", "/v1/sessions", Some(&token), None, &[]).unwrap();
    let list = r.json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // Log out: the cookie stops working.
    let r = request(&base, "POST", "/ui/api/logout", None, None, &good).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(get("/ui/api/snapshot", &with).status, 401);
    assert_eq!(get("/ui/", &with).status, 303);
    // The link `podscope ui` prints logs in too.
    let r = get(&format!("/ui/login?token={token}"), &[]);
    assert_eq!(r.status, 303);
    assert!(header(&r, "set-cookie")
        .unwrap()
        .starts_with("podscope_ui="));
}

/// Every session on the hub runs on a node (its trace attached).
fn sessions_running(base: &str, token: &str) -> bool {
    let Some(list) = request(base, "GET", "/v1/sessions", Some(token), None, &[])
        .ok()
        .and_then(|r| r.json().ok())
    else {
        return false;
    };
    list.as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter().all(|s| {
                s["nodes"]
                    .as_object()
                    .is_some_and(|n| !n.is_empty() && n.values().all(|x| x["state"] == "running"))
            })
    })
}

// ---- the pages in Chromium ----

/// A WebDriver session on a headless Chromium.
struct Browser {
    base: String,
    sid: String,
    _driver: Proc,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        let port = common::free_port();
        let driver = Proc(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (Debian chromium-driver; scripts/setup.sh installs it)"),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(15), || {
            request(&base, "GET", "/status", None, None, &[]).is_ok()
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        }}});
        let v = Self::call(&base, "POST", "/session", Some(caps));
        let sid = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Browser {
            base,
            sid,
            _driver: driver,
        }
    }

    fn call(base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let b = body.map(|b| b.to_string());
        let r = request(
            base,
            method,
            path,
            None,
            b.as_deref(),
            &[("content-type", "application/json")],
        )
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v = r.json().unwrap_or(Value::Null);
        v["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        Self::call(
            &self.base,
            method,
            &format!("/session/{}{path}", self.sid),
            body,
        )
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs a script in the page; its return value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Clicks the element `css` names once it exists (pages re-render
    /// every snapshot, so a stale element is looked up again).
    fn click(&self, css: &str) {
        wait_for(&format!("clicking {css}"), Duration::from_secs(15), || {
            let Some(e) = self.find(css) else {
                return false;
            };
            let v = self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
            v.is_null()
        });
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).unwrap_or_else(|| panic!("no {css}"));
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// A screenshot of the page as PNG.
    fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        base64_decode(b64.as_str().expect("a screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            &self.base,
            "DELETE",
            &format!("/session/{}", self.sid),
            None,
            None,
            &[],
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Saves a screenshot as a test artifact and checks that it is not blank:
/// a PNG of a page with content compresses far worse than the PNG of an
/// empty page of the same size (`blank`).
fn artifact(b: &Browser, name: &str, blank: usize) {
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ui-{name}.png"));
    std::fs::write(&path, &png).unwrap();
    eprintln!(
        "ui: screenshot {} ({} bytes; a blank page is {blank})",
        path.display(),
        png.len()
    );
    assert!(
        png.len() > 3 * blank,
        "{name}: the screenshot looks blank ({} bytes against {blank} for an empty page): {}",
        png.len(),
        path.display()
    );
}

fn chromium_or_skip() -> bool {
    let ok = ["chromium", "chromedriver"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("chromium and chromedriver are needed (scripts/setup.sh installs them)");
        }
        eprintln!(
            "SKIP: chromium or chromedriver missing (apt-get install chromium chromium-driver)"
        );
    }
    ok
}

#[test]
fn pages_in_chromium_show_pods_the_service_map_and_a_live_session() {
    if !root_or_skip() || !chromium_or_skip() {
        return;
    }
    const N: usize = 4;
    let s = suffix();
    let ns = format!("ui-{s}");
    let server = pod(
        "server",
        &ns,
        &[],
        &[(
            "httpd",
            "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
        )],
    );
    let ip = server
        .pod
        .ip
        .clone()
        .expect("the server pod has an address");
    // N requests to the server, the last to a path with HTML in it; then,
    // on a second signal, one marker exec whose arguments hold HTML too.
    let client_script = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; \
         i=1; while [ $i -lt {N} ]; do wget -q -O /dev/null http://{ip}:8080/index.html; i=$((i+1)); done; \
         wget -q -O /dev/null 'http://{ip}:8080/a<b>bold</b>'; : > /tmp/done; \
         while [ ! -e /tmp/go2 ]; do sleep 0.2; done; \
         /bin/echo ui-marker-{s} '<img src=x onerror=window.pwned=1>'; exec sleep 3600"
    );
    let client = pod("client", &ns, &[], &[("app", &client_script)]);
    // A pod whose name is HTML (the CRI takes any name; Kubernetes would not).
    let html_name = "esc<b>bold<i>x";
    let html_pod = pod(html_name, &ns, &[], &[("app", "exec sleep 3600")]);
    // Busy until told to stop: its CPU % is about one CPU's.
    let burner = pod(
        "burner",
        &ns,
        &[],
        &[(
            "app",
            "while [ ! -e /tmp/stop ]; do :; done; exec sleep 3600",
        )],
    );

    let port = common::free_port();
    let (tf, token) = token_file("chromium");
    let mut ui = Proc(
        Command::new(env!("CARGO_BIN_EXE_podscope"))
            .args(["--token-file", tf.to_str().unwrap(), "ui", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--runtime-endpoint", &common::endpoint()])
            // open too: the file busybox httpd serves is a kernel child span.
            .args(["--ui-probes", "exec,tcp,http,open"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = BufReader::new(ui.0.stderr.take().unwrap());
    let (tx, said) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("podscope ui: {l}");
            let _ = tx.send(l);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let link = said
        .recv_timeout(Duration::from_secs(20))
        .expect("podscope ui says where it serves");
    assert!(link.contains(&format!("{base}/ui/login?token=")), "{link}");
    // The in-process agent registers with the in-process hub.
    wait_for("the in-process agent", Duration::from_secs(30), || {
        request(&base, "GET", "/v1/nodes", Some(&token), None, &[])
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().any(|n| n["state"] == "up"))
            })
    });

    let b = Browser::start();
    b.go("about:blank");
    let blank = b.screenshot().len();

    // Log in through the form.
    b.go(&format!("{base}/ui/"));
    wait_for("the login page", Duration::from_secs(10), || {
        b.url().ends_with("/ui/login")
    });
    b.type_into("#token", &token);
    b.click("#login");
    wait_for("the pods page", Duration::from_secs(10), || {
        b.url().ends_with("/ui/")
    });

    // The pods page lists the test pods.
    let pod_cell = |name: &str| {
        b.js(
            "const r = [...document.querySelectorAll('#pods-body tr')].find(t => t.dataset.pod === arguments[0]);
             return r ? r.children[2].textContent : null;",
            json!([format!("{ns}/{name}")]),
        )
    };
    wait_for(
        "the test pods on the pods page",
        Duration::from_secs(30),
        || {
            pod_cell("server").as_str() == Some("server")
                && pod_cell("client").as_str() == Some("client")
                && pod_cell(html_name).as_str() == Some(html_name)
        },
    );
    // The HTML pod name is text: no element was made from it.
    let tags = b.js(
        "return document.querySelectorAll('#pods-body b, #pods-body i').length",
        json!([]),
    );
    assert_eq!(tags, json!(0), "a pod name was rendered as HTML");
    // CPU and memory from the agent's usage reports. Witnesses: the busy
    // loop takes about one CPU, a sleeping pod next to none, and the
    // sleeping pod's memory is what its cgroup says (memory.current less
    // inactive_file, the working set).
    let cell = |name: &str, class: &str| -> String {
        b.js(
            "const r = [...document.querySelectorAll('#pods-body tr')].find(t => t.dataset.pod === arguments[0]);
             const c = r && r.querySelector('td.' + arguments[1]);
             return c ? c.textContent : '';",
            json!([format!("{ns}/{name}"), class]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    };
    wait_for("the CPU and MEM columns", Duration::from_secs(20), || {
        !cell("burner", "cpu").is_empty() && !cell(html_name, "mem").is_empty()
    });
    // The shown figures are the node's last usage report (every few
    // seconds); a sleeping pod's working set can still move a little
    // (the kernel ages its file pages), so the page is read again, for
    // at most 20 s, until a report agrees with the cgroup read right after
    // it.
    let cg = html_pod.pod.containers[0].cgroup_path.clone().unwrap();
    let fetch_row = |snapshot: &Value, name: &str| -> Value {
        snapshot["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pod"] == name)
            .cloned()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let (snapshot, shown, witness) = loop {
        let snapshot: Value = b.js(
            "return fetch('api/snapshot', {credentials: 'same-origin'}).then(r => r.json())",
            json!([]),
        );
        let shown = fetch_row(&snapshot, html_name)["memory_bytes"]
            .as_f64()
            .unwrap();
        let witness = common::cgroup_working_set(&cg) as f64;
        if (shown - witness).abs() <= witness * 0.1 + 65536.0
            || started.elapsed() > Duration::from_secs(20)
        {
            break (snapshot, shown, witness);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let row = |name: &str| fetch_row(&snapshot, name);
    // (On a loaded 2-core machine the loop gets less than a whole CPU.)
    let busy = row("burner")["cpu_percent"].as_f64().unwrap();
    let idle = row(html_name)["cpu_percent"].as_f64().unwrap_or(0.0);
    assert!((20.0..=110.0).contains(&busy), "burner CPU {busy}%");
    assert!(
        idle < 5.0 && busy > 10.0 * idle,
        "a sleeping pod at {idle}% CPU, the loop at {busy}%"
    );
    assert!(
        (shown - witness).abs() <= witness * 0.1 + 65536.0,
        "memory {shown} shown, {witness} in the cgroup"
    );
    std::fs::write(burner.path_in("app", "/tmp/stop"), "").unwrap();
    artifact(&b, "pods", blank);

    // The client's requests, once the observer session traces the node:
    // an edge client -> server with N requests.
    wait_for(
        "the observer session running",
        Duration::from_secs(20),
        || sessions_running(&base, &token),
    );
    std::fs::write(client.path_in("app", "/tmp/go"), "").unwrap();
    let done = client.path_in("app", "/tmp/done");
    wait_for("the client's requests", Duration::from_secs(20), || {
        done.exists()
    });
    b.go(&format!("{base}/ui/#map"));
    let (src, dst) = (format!("pod:{ns}/client"), format!("pod:{ns}/server"));
    let edge_requests = || {
        b.js(
            "const r = [...document.querySelectorAll('#edges-body tr')]
                 .find(t => t.dataset.source === arguments[0] && t.dataset.target === arguments[1]);
             return r ? Number(r.querySelector('td.req').textContent) : null;",
            json!([src, dst]),
        )
    };
    let t0 = Instant::now();
    while edge_requests().as_u64() != Some(N as u64) {
        if t0.elapsed() > Duration::from_secs(30) {
            let shown = b.js(
                "return document.querySelector('#edges-body').innerText + ' / ' + document.querySelector('#status').textContent",
                json!([]),
            );
            panic!(
                "no client -> server edge with {N} requests after 30 s; the page shows: {shown}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // It stays at N: one side counted, not both.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        edge_requests().as_u64(),
        Some(N as u64),
        "the edge's count after one more snapshot"
    );
    eprintln!("ui: edge shown {:?} after the requests", t0.elapsed());
    let drawn = b.js(
        "return [...document.querySelectorAll('#map g.edge')].filter(g => g.dataset.source === arguments[0] && g.dataset.target === arguments[1]).length",
        json!([src, dst]),
    );
    assert_eq!(drawn, json!(1), "the edge is drawn on the map");
    artifact(&b, "map", blank);

    // Click it: its recent requests, the HTML path as text.
    b.click(&format!(
        "#edges-body tr[data-source=\"{src}\"][data-target=\"{dst}\"]"
    ));
    let paths = || {
        b.js(
            "return [...document.querySelectorAll('#recent td.path')].map(t => t.textContent)",
            json!([]),
        )
    };
    wait_for(
        "the edge's recent requests",
        Duration::from_secs(10),
        || paths().as_array().is_some_and(|a| a.len() == N),
    );
    let p = paths();
    let p: Vec<&str> = p
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(p[0], "/a<b>bold</b>", "newest first, shown as text: {p:?}");
    assert!(p[1..].iter().all(|x| *x == "/index.html"), "{p:?}");
    let bold = b.js(
        "return document.querySelectorAll('#recent b').length",
        json!([]),
    );
    assert_eq!(bold, json!(0), "a request path was rendered as HTML");

    // Traces: a request of the client is a trace of the client's CLIENT
    // span, the server's SERVER span under it (joined by their connection)
    // and the server's open of the file it served under that (busybox httpd
    // opens it relative to its -h directory).
    b.go(&format!("{base}/ui/#traces"));
    let mut trace = String::new();
    wait_for(
        "a trace of a client request",
        Duration::from_secs(20),
        || {
            let t = b.js(
            "const r = [...document.querySelectorAll('#traces-body tr')].find(t =>
                 t.querySelector('td.root') && t.querySelector('td.root').textContent === 'GET /index.html'
                 && t.children[2].textContent === arguments[0] && Number(t.children[4].textContent) > 0);
             return r ? r.dataset.trace : null;",
            json!([format!("{ns}/client")]),
        );
            match t.as_str() {
                Some(id) => {
                    trace = id.to_string();
                    true
                }
                None => false,
            }
        },
    );
    b.click(&format!("#traces-body tr[data-trace=\"{trace}\"]"));
    let spans = || {
        b.js(
            "return [...document.querySelectorAll('#waterfall tr.span')].map(t => [t.classList[1], t.dataset.span, t.dataset.parent, t.querySelector('td.span-name').textContent.trim(), t.children[2].textContent])",
            json!([]),
        )
    };
    wait_for("the trace's waterfall", Duration::from_secs(10), || {
        spans().as_array().is_some_and(|a| a.len() >= 3)
    });
    let sp = spans();
    let sp = sp.as_array().unwrap();
    let find = |kind: &str| {
        sp.iter()
            .find(|r| r[0] == kind)
            .unwrap_or_else(|| panic!("no {kind} span in {sp:?}"))
    };
    let (cli, srv) = (find("client"), find("server"));
    assert_eq!(cli[3], "GET /index.html", "{sp:?}");
    assert_eq!(cli[4], format!("{ns}/client"), "{sp:?}");
    assert_eq!(srv[3], "GET /index.html", "{sp:?}");
    assert_eq!(srv[4], format!("{ns}/server"), "{sp:?}");
    assert_eq!(
        srv[2], cli[1],
        "the server span's parent is the client span: {sp:?}"
    );
    let open = sp
        .iter()
        .find(|r| r[0] == "kernel" && r[3].as_str().is_some_and(|n| n == "open index.html"))
        .unwrap_or_else(|| panic!("no kernel span for the served file in {sp:?}"));
    assert_eq!(
        open[2], srv[1],
        "the open is a child of the server span: {sp:?}"
    );
    let shown = b.js(
        "return document.querySelector('#trace-box').innerText",
        json!([]),
    );
    assert!(
        !shown.as_str().unwrap_or("").contains("null"),
        "stray text under the waterfall: {shown}"
    );
    artifact(&b, "trace", blank);

    // A session made from the page streams the client's marker exec.
    b.go(&format!("{base}/ui/#sessions"));
    wait_for("the sessions form", Duration::from_secs(10), || {
        b.find("#s-probes").is_some()
    });
    b.type_into("#s-probes", "exec");
    b.type_into("#s-namespace", &ns);
    b.type_into("#s-pod", "client");
    b.click("#s-create");
    let mut id = String::new();
    wait_for("the session's creation", Duration::from_secs(10), || {
        let m = b.js(
            "return document.querySelector('#s-msg').textContent",
            json!([]),
        );
        match m.as_str().and_then(|m| m.strip_prefix("session ")) {
            Some(rest) => {
                id = rest.split(' ').next().unwrap_or("").to_string();
                true
            }
            None => false,
        }
    });
    artifact(&b, "sessions", blank);
    b.click(&format!("tr[data-session=\"{id}\"] button.watch"));
    wait_for("the session page", Duration::from_secs(10), || {
        b.find("#events").is_some()
    });
    // The session is running on the node before the marker runs.
    wait_for("the session running", Duration::from_secs(20), || {
        sessions_running(&base, &token)
    });
    std::fs::write(client.path_in("app", "/tmp/go2"), "").unwrap();
    let marker = format!("ui-marker-{s}");
    wait_for(
        "the marker exec on the session page",
        Duration::from_secs(20),
        || {
            b.js(
            "return [...document.querySelectorAll('#events .ev')].some(d => d.textContent.includes(arguments[0]))",
            json!([marker]),
        ) == json!(true)
        },
    );
    let line = b.js(
        "return [...document.querySelectorAll('#events .ev')].map(d => d.textContent).find(t => t.includes(arguments[0]))",
        json!([marker]),
    );
    let line = line.as_str().unwrap();
    assert!(
        line.contains(&format!("{ns}/client"))
            && line.contains("<img src=x onerror=window.pwned=1>"),
        "{line}"
    );
    let injected = b.js(
        "return [document.querySelectorAll('#events img').length, typeof window.pwned]",
        json!([]),
    );
    assert_eq!(injected, json!([0, "undefined"]), "event data ran as HTML");
    artifact(&b, "session", blank);
}
