//! deploy/ and the Dockerfile checked without a cluster, a helm binary or a docker daemon.
//!
//! Three sets of objects go through the same checks:
//! - `deploy/kubernetes/*.yaml`, the plain manifests (and the kustomization
//!   that lists them), plus the `tls/` overlay with its JSON patches applied;
//! - the Helm chart `deploy/helm/podscope` rendered with its default values;
//! - the chart rendered with `ci/tls-values.yaml` merged over them (TLS,
//!   exec, OTLP, a Secret made from a token value).
//!
//! Every YAML document becomes a `serde_json::Value` (serde-saphyr), then the
//! k8s-openapi type of its apiVersion and kind through `serde_ignored`, so a
//! key the Kubernetes API does not know at that place (a typo such as
//! `hostPid`, a key one level too deep) fails with its path, as
//! `kubectl apply --validate=strict` would. The checks after that are the
//! ones a cluster only reports at run time, if at all: a selector that
//! selects nothing, a Secret that does not exist, a flag the binary does not
//! take, a capability too many.
//!
//! There is no helm binary on our machines or in CI, so the chart is rendered
//! with gtmpl (Go's text/template in Rust) plus the few Helm functions the
//! chart uses, implemented below. The templates keep to that subset: no
//! `include`/`define`/`tpl`/`lookup`, no `range` over maps (gtmpl does not
//! sort map keys as Go does). A value a template reads but the values do not
//! have renders as `<no value>` in gtmpl (Helm prints nothing); the test fails
//! on it rather than hide a chart bug.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gtmpl::{Context, Func, FuncError, Value as Tv};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Probe, ResourceQuota, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value as Json};

/// Every namespaced object lives here; the kubectl plugin looks for the hub in it.
const NAMESPACE: &str = "podscope";
/// Exactly the capabilities the agent gets (docs/deploy.md says why each).
const AGENT_CAPS: [&str; 5] = ["BPF", "PERFMON", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"];
/// Added only with `--enable-exec`: the tools exec runs (tcpdump needs raw
/// sockets) and joining a pod's mount namespace (setns needs SYS_CHROOT).
const EXEC_CAPS: [&str; 2] = ["NET_RAW", "SYS_CHROOT"];
/// Flags whose value is a file the pod must get from a mounted Secret.
const SECRET_FILE_FLAGS: [&str; 4] = ["--token-file", "--tls-cert", "--tls-key", "--tls-ca"];
/// Host paths the agent must see at the same place (cgroups, BTF, tracefs).
const AGENT_HOST_PATHS: [&str; 3] = ["/sys/fs/cgroup", "/sys/kernel/btf", "/sys/kernel/tracing"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// YAML -> JSON -> strict Kubernetes types

/// One YAML document and where it came from.
#[derive(Debug, Clone)]
struct Doc {
    origin: String,
    json: Json,
}

/// The non-empty documents of a YAML stream (comment-only documents, as
/// templates that render nothing leave, are dropped).
fn yaml_docs(origin: &str, text: &str) -> Result<Vec<Doc>, String> {
    let docs: Vec<Json> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: not valid YAML: {e}"))?;
    Ok(docs
        .into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(i, json)| Doc {
            origin: format!("{origin} (document {})", i + 1),
            json,
        })
        .collect())
}

/// A typed Kubernetes object.
#[derive(Debug, Clone)]
enum Kind {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    DaemonSet(DaemonSet),
    Deployment(Deployment),
    Service(Service),
    Secret(Secret),
    ConfigMap(ConfigMap),
    ResourceQuota(ResourceQuota),
}

#[derive(Debug, Clone)]
struct Obj {
    origin: String,
    kind: Kind,
}

impl Obj {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Namespace(_) => "Namespace",
            Kind::ServiceAccount(_) => "ServiceAccount",
            Kind::ClusterRole(_) => "ClusterRole",
            Kind::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Kind::Role(_) => "Role",
            Kind::RoleBinding(_) => "RoleBinding",
            Kind::DaemonSet(_) => "DaemonSet",
            Kind::Deployment(_) => "Deployment",
            Kind::Service(_) => "Service",
            Kind::Secret(_) => "Secret",
            Kind::ConfigMap(_) => "ConfigMap",
            Kind::ResourceQuota(_) => "ResourceQuota",
        }
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.kind {
            Kind::Namespace(o) => &o.metadata,
            Kind::ServiceAccount(o) => &o.metadata,
            Kind::ClusterRole(o) => &o.metadata,
            Kind::ClusterRoleBinding(o) => &o.metadata,
            Kind::Role(o) => &o.metadata,
            Kind::RoleBinding(o) => &o.metadata,
            Kind::DaemonSet(o) => &o.metadata,
            Kind::Deployment(o) => &o.metadata,
            Kind::Service(o) => &o.metadata,
            Kind::Secret(o) => &o.metadata,
            Kind::ConfigMap(o) => &o.metadata,
            Kind::ResourceQuota(o) => &o.metadata,
        }
    }

    fn cluster_scoped(&self) -> bool {
        matches!(
            self.kind,
            Kind::Namespace(_) | Kind::ClusterRole(_) | Kind::ClusterRoleBinding(_)
        )
    }

    fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    fn namespace(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or("")
    }

    /// "file (document n): Kind name", for error messages.
    fn what(&self) -> String {
        format!("{}: {} {}", self.origin, self.kind_name(), self.name())
    }
}

/// A dotted key path as serde_ignored reports it, without its markers for
/// options and newtypes: `spec.template.spec.containers[0].securityContext.privilged`.
fn key_path(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        P::Map { parent, key } => match key_path(parent) {
            s if s.is_empty() => key.clone(),
            s => format!("{s}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

/// Deserializes `json` as `T`, failing on any key `T` does not know.
fn strict<T: DeserializeOwned>(json: &Json, what: &str) -> Result<T, String> {
    let mut unknown = Vec::new();
    let t = serde_ignored::deserialize(json.clone(), |p| unknown.push(key_path(&p)))
        .map_err(|e| format!("{what}: does not fit the Kubernetes API type: {e}"))?;
    if unknown.is_empty() {
        Ok(t)
    } else {
        Err(format!(
            "{what}: unknown field {} (not in the Kubernetes API there: a typo or a key at the wrong level)",
            unknown.join(", ")
        ))
    }
}

/// The document as the k8s-openapi type its apiVersion and kind name.
fn typed(doc: &Doc) -> Result<Obj, String> {
    let s = |p: &str| doc.json.pointer(p).and_then(Json::as_str).unwrap_or("");
    let (api_version, kind, name) = (s("/apiVersion"), s("/kind"), s("/metadata/name"));
    let what = format!("{}: {kind} {name}", doc.origin);
    let j = &doc.json;
    let kind = match (api_version, kind) {
        ("v1", "Namespace") => Kind::Namespace(strict(j, &what)?),
        ("v1", "ServiceAccount") => Kind::ServiceAccount(strict(j, &what)?),
        ("v1", "Service") => Kind::Service(strict(j, &what)?),
        ("v1", "Secret") => Kind::Secret(strict(j, &what)?),
        ("v1", "ConfigMap") => Kind::ConfigMap(strict(j, &what)?),
        ("v1", "ResourceQuota") => Kind::ResourceQuota(strict(j, &what)?),
        ("apps/v1", "DaemonSet") => Kind::DaemonSet(strict(j, &what)?),
        ("apps/v1", "Deployment") => Kind::Deployment(strict(j, &what)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Kind::ClusterRole(strict(j, &what)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Kind::ClusterRoleBinding(strict(j, &what)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Kind::Role(strict(j, &what)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Kind::RoleBinding(strict(j, &what)?),
        _ => {
            return Err(format!(
                "{what}: unknown kind {kind:?} of apiVersion {api_version:?}: deploy/ holds only \
                 Namespace, ServiceAccount, Service, Secret, ConfigMap, ResourceQuota, DaemonSet, \
                 Deployment, ClusterRole(Binding), Role(Binding) (add a new kind to typed() in this test)"
            ))
        }
    };
    Ok(Obj {
        origin: doc.origin.clone(),
        kind,
    })
}

/// Types every document; the errors of all of them.
fn type_all(docs: &[Doc]) -> (Vec<Obj>, Vec<String>) {
    let mut objs = Vec::new();
    let mut errs = Vec::new();
    for d in docs {
        match typed(d) {
            Ok(o) => objs.push(o),
            Err(e) => errs.push(e),
        }
    }
    (objs, errs)
}

// ---------------------------------------------------------------------------
// The binary's flags

/// `podscope agent --help` and `podscope hub --help` of the binary this test was built with.
fn helps() -> &'static (String, String) {
    static HELPS: OnceLock<(String, String)> = OnceLock::new();
    HELPS.get_or_init(|| {
        let help = |sub: &str| {
            let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
                .args([sub, "--help"])
                .output()
                .unwrap_or_else(|e| panic!("running podscope {sub} --help: {e}"));
            assert!(
                out.status.success(),
                "podscope {sub} --help failed: {out:?}"
            );
            String::from_utf8(out.stdout).expect("help is UTF-8")
        };
        (help("agent"), help("hub"))
    })
}

/// Whether `flag` (e.g. `--hub`) appears in a help text as a whole flag.
fn help_has(help: &str, flag: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    help.match_indices(flag).any(|(i, _)| {
        !word(help[..i].chars().next_back()) && !word(help[i + flag.len()..].chars().next())
    })
}

/// The podscope arguments of a container: `command` (after the binary) then `args`.
fn podscope_args(c: &Container) -> Vec<String> {
    let mut v: Vec<String> = c.command.clone().unwrap_or_default();
    if v.first().is_some_and(|b| b.ends_with("podscope")) {
        v.remove(0);
    }
    v.extend(c.args.clone().unwrap_or_default());
    v
}

/// The value of `--flag V` or `--flag=V`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(flag).and_then(|r| r.strip_prefix('='))
        }
    })
}

fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

// ---------------------------------------------------------------------------
// The checks

/// What a set of objects may refer to without containing it.
#[derive(Debug, Default, Clone)]
struct Expect {
    /// Secrets made outside the set (Helm's existingSecret values).
    external_secrets: BTreeSet<String>,
}

/// A Deployment or DaemonSet: its selector and pod template.
#[derive(Clone, Copy)]
struct Workload<'a> {
    obj: &'a Obj,
    selector: &'a LabelSelector,
    template: &'a PodTemplateSpec,
}

impl Workload<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    fn component(&self) -> Option<String> {
        self.labels().get("app.kubernetes.io/component").cloned()
    }

    fn spec(&self) -> Option<&PodSpec> {
        self.template.spec.as_ref()
    }
}

fn workloads(objs: &[Obj]) -> Vec<Workload<'_>> {
    objs.iter()
        .filter_map(|o| match &o.kind {
            Kind::DaemonSet(d) => d.spec.as_ref().map(|s| Workload {
                obj: o,
                selector: &s.selector,
                template: &s.template,
            }),
            Kind::Deployment(d) => d.spec.as_ref().map(|s| Workload {
                obj: o,
                selector: &s.selector,
                template: &s.template,
            }),
            _ => None,
        })
        .collect()
}

/// Whether a label selector selects these labels (an empty selector selects nothing here:
/// the API server rejects it for workloads, and a Service without one gets no endpoints).
fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.clone().unwrap_or_default();
    let me = sel.match_expressions.clone().unwrap_or_default();
    if ml.is_empty() && me.is_empty() {
        return false;
    }
    ml.iter().all(|(k, v)| labels.get(k) == Some(v))
        && me.iter().all(|e| {
            let vals = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
}

fn find<'a>(objs: &'a [Obj], kind: &str, ns: &str, name: &str) -> Option<&'a Obj> {
    objs.iter().find(|o| {
        o.kind_name() == kind && o.name() == name && (o.cluster_scoped() || o.namespace() == ns)
    })
}

/// Whether a container declares this port (by number or by name).
fn declares_port(c: &Container, port: &IntOrString) -> bool {
    c.ports.iter().flatten().any(|p| match port {
        IntOrString::Int(n) => p.container_port == *n,
        IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
    })
}

fn port_text(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// Every check on one set of objects; an empty list when all pass.
fn check(objs: &[Obj], expect: &Expect) -> Vec<String> {
    let mut errs = Vec::new();
    check_objects(objs, &mut errs);
    check_rbac(objs, &mut errs);
    check_workloads(objs, &mut errs);
    check_services(objs, &mut errs);
    for w in workloads(objs) {
        check_pod(objs, &w, expect, &mut errs);
    }
    check_cluster_wiring(objs, &mut errs);
    errs
}

/// Namespaces, labels, duplicates, the fixed names.
fn check_objects(objs: &[Obj], errs: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for o in objs {
        if !seen.insert((
            o.kind_name(),
            o.namespace().to_string(),
            o.name().to_string(),
        )) {
            errs.push(format!("{}: defined twice", o.what()));
        }
        if o.name().is_empty() {
            errs.push(format!("{}: has no metadata.name", o.what()));
        }
        if o.cluster_scoped() {
            if o.meta().namespace.is_some() {
                errs.push(format!(
                    "{}: is cluster-scoped and must not name a namespace",
                    o.what()
                ));
            }
        } else if o.namespace() != NAMESPACE {
            errs.push(format!(
                "{}: namespace is {:?}, must be {NAMESPACE:?} (set metadata.namespace explicitly)",
                o.what(),
                o.namespace()
            ));
        }
        let labels = o.meta().labels.clone().unwrap_or_default();
        for (k, v) in [
            ("app.kubernetes.io/name", "podscope"),
            ("app.kubernetes.io/part-of", "podscope"),
        ] {
            if labels.get(k).map(String::as_str) != Some(v) {
                errs.push(format!("{}: label {k} must be {v:?}", o.what()));
            }
        }
    }
    match find(objs, "Service", NAMESPACE, "podscope-hub") {
        Some(Obj {
            kind: Kind::Service(s),
            ..
        }) => {
            let ok = s.spec.iter().flat_map(|s| s.ports.iter().flatten()).any(|p| {
                p.port == 7700 && p.name.as_deref() == Some("http")
            });
            if !ok {
                errs.push("Service podscope-hub: needs port 7700 named \"http\" (the agents and the kubectl plugin use it)".into());
            }
        }
        _ => errs.push(format!(
            "no Service podscope-hub in namespace {NAMESPACE}: the agents and the kubectl plugin look for the hub there"
        )),
    }
    // The agent needs hostPID, hostPath and capabilities: the Pod Security
    // Standard must be "privileged" in its namespace, or no agent pod starts.
    for o in objs {
        if let Kind::Namespace(n) = &o.kind {
            let enforce = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-security.kubernetes.io/enforce"));
            if enforce.map(String::as_str) != Some("privileged") {
                errs.push(format!(
                    "{}: label pod-security.kubernetes.io/enforce must be \"privileged\" (the agent uses hostPID, hostPath and capabilities)",
                    o.what()
                ));
            }
        }
    }
}

/// Read-only on pods and nodes; bindings point at roles and accounts that exist.
fn check_rbac(objs: &[Obj], errs: &mut Vec<String>) {
    let check_rules = |o: &Obj, rules: &Option<Vec<PolicyRule>>, errs: &mut Vec<String>| {
        for r in rules.iter().flatten() {
            let groups = r.api_groups.clone().unwrap_or_default();
            if groups != [""] {
                errs.push(format!(
                    "{}: rule apiGroups {groups:?}: only the core group [\"\"] (pods, nodes) is allowed",
                    o.what()
                ));
            }
            for res in r.resources.iter().flatten() {
                if res != "pods" && res != "nodes" {
                    errs.push(format!(
                        "{}: rule grants resource {res:?}: only pods and nodes are allowed",
                        o.what()
                    ));
                }
            }
            for v in &r.verbs {
                if !["get", "list", "watch"].contains(&v.as_str()) {
                    errs.push(format!(
                        "{}: rule grants verb {v:?}: only get, list and watch are allowed",
                        o.what()
                    ));
                }
            }
            if r.non_resource_urls.is_some() {
                errs.push(format!("{}: rule grants nonResourceURLs", o.what()));
            }
        }
    };
    for o in objs {
        let (role_ref, subjects, ns) = match &o.kind {
            Kind::ClusterRole(r) => {
                check_rules(o, &r.rules, errs);
                if r.aggregation_rule.is_some() {
                    errs.push(format!("{}: aggregationRule widens the role", o.what()));
                }
                continue;
            }
            Kind::Role(r) => {
                check_rules(o, &r.rules, errs);
                continue;
            }
            Kind::ClusterRoleBinding(b) => (&b.role_ref, &b.subjects, ""),
            Kind::RoleBinding(b) => (&b.role_ref, &b.subjects, o.namespace()),
            _ => continue,
        };
        if find(objs, &role_ref.kind, ns, &role_ref.name).is_none() {
            errs.push(format!(
                "{}: roleRef {} {} does not exist in this set",
                o.what(),
                role_ref.kind,
                role_ref.name
            ));
        }
        let subjects = subjects.clone().unwrap_or_default();
        if subjects.is_empty() {
            errs.push(format!("{}: binds no subject", o.what()));
        }
        for s in subjects {
            let sns = s.namespace.as_deref().unwrap_or(ns);
            if s.kind != "ServiceAccount" || find(objs, "ServiceAccount", sns, &s.name).is_none() {
                errs.push(format!(
                    "{}: subject {} {}/{} is not a ServiceAccount of this set",
                    o.what(),
                    s.kind,
                    sns,
                    s.name
                ));
            }
        }
    }
}

/// Selectors, components, the hub's and the agent's pod security.
fn check_workloads(objs: &[Obj], errs: &mut Vec<String>) {
    let ws = workloads(objs);
    for (component, kind) in [("hub", "Deployment"), ("agent", "DaemonSet")] {
        let n = ws
            .iter()
            .filter(|w| w.component().as_deref() == Some(component))
            .count();
        if n != 1 {
            errs.push(format!(
                "{n} workloads with label app.kubernetes.io/component={component}: want exactly one {kind}"
            ));
        }
    }
    for w in &ws {
        let labels = w.labels();
        if !selects(w.selector, &labels) {
            errs.push(format!(
                "{}: selector {:?} does not select its own pod template labels {:?}",
                w.obj.what(),
                w.selector.match_labels,
                labels
            ));
        }
        for k in ["app.kubernetes.io/name", "app.kubernetes.io/instance"] {
            if !labels.contains_key(k) {
                errs.push(format!("{}: pod template has no label {k}", w.obj.what()));
            }
        }
        match (w.component().as_deref(), &w.obj.kind) {
            (Some("hub"), Kind::Deployment(d)) => {
                let spec = d.spec.as_ref();
                if spec.and_then(|s| s.replicas) != Some(1) {
                    errs.push(format!(
                        "{}: replicas must be 1 (the hub keeps sessions and agents in memory)",
                        w.obj.what()
                    ));
                }
                let strategy = spec.and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref());
                if strategy != Some("Recreate") {
                    errs.push(format!(
                        "{}: strategy must be Recreate (two hubs at once split the agents)",
                        w.obj.what()
                    ));
                }
                check_hub_security(w, errs);
            }
            (Some("agent"), Kind::DaemonSet(_)) => check_agent_security(objs, w, errs),
            (c, _) => errs.push(format!(
                "{}: component label {c:?} does not fit: the hub is a Deployment, the agent a DaemonSet",
                w.obj.what()
            )),
        }
    }
}

fn check_hub_security(w: &Workload, errs: &mut Vec<String>) {
    let Some(spec) = w.spec() else { return };
    let psc = spec.security_context.clone().unwrap_or_default();
    for c in &spec.containers {
        let what = format!("{} container {}", w.obj.what(), c.name);
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
            errs.push(format!("{what}: runAsNonRoot must be true"));
        }
        if sc.run_as_user.or(psc.run_as_user).is_none_or(|u| u == 0) {
            errs.push(format!(
                "{what}: runAsUser must be a non-zero uid (the image does not set one)"
            ));
        }
        if sc.read_only_root_filesystem != Some(true) {
            errs.push(format!("{what}: readOnlyRootFilesystem must be true"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            errs.push(format!("{what}: allowPrivilegeEscalation must be false"));
        }
        if sc.privileged == Some(true) {
            errs.push(format!("{what}: must not be privileged"));
        }
        let caps = sc.capabilities.unwrap_or_default();
        if caps.drop.unwrap_or_default() != ["ALL"] {
            errs.push(format!("{what}: capabilities.drop must be [ALL]"));
        }
        if let Some(add) = caps.add.filter(|a| !a.is_empty()) {
            errs.push(format!(
                "{what}: the hub needs no capabilities, adds {add:?}"
            ));
        }
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        if path(&c.liveness_probe).as_deref() != Some("/healthz") {
            errs.push(format!("{what}: livenessProbe must GET /healthz"));
        }
        if path(&c.readiness_probe).as_deref() != Some("/readyz") {
            errs.push(format!("{what}: readinessProbe must GET /readyz"));
        }
    }
}

fn check_agent_security(objs: &[Obj], w: &Workload, errs: &mut Vec<String>) {
    let Some(spec) = w.spec() else { return };
    let what = w.obj.what();
    if spec.host_pid != Some(true) {
        errs.push(format!(
            "{what}: hostPID must be true (the agent reads /proc/PID of the pods' processes)"
        ));
    }
    let tolerates_all =
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
    if !tolerates_all {
        errs.push(format!(
            "{what}: needs a toleration {{operator: Exists}} (no key, no effect) to run on every node"
        ));
    }
    if let Some(pc) = spec.priority_class_name.as_deref() {
        if pc.starts_with("system-") && !quota_allows(objs, w.obj.namespace(), pc) {
            errs.push(format!(
                "{what}: priorityClassName {pc} is admitted outside kube-system only with a ResourceQuota whose scopeSelector has PriorityClass In [{pc}]"
            ));
        }
    }
    for c in &spec.containers {
        let what = format!("{what} container {}", c.name);
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            errs.push(format!(
                "{what}: must not be privileged; it gets {AGENT_CAPS:?} instead"
            ));
        }
        let caps = sc.capabilities.unwrap_or_default();
        if caps.drop.unwrap_or_default() != ["ALL"] {
            errs.push(format!("{what}: capabilities.drop must be [ALL]"));
        }
        let add: Vec<String> = caps.add.unwrap_or_default();
        let exec = has_flag(&podscope_args(c), "--enable-exec");
        let want: BTreeSet<&str> = AGENT_CAPS
            .into_iter()
            .chain(EXEC_CAPS.into_iter().filter(|_| exec))
            .collect();
        let got: BTreeSet<&str> = add.iter().map(String::as_str).collect();
        for extra in got.difference(&want) {
            errs.push(format!(
                "{what}: capability {extra} is added but not needed (exactly {AGENT_CAPS:?}, plus {EXEC_CAPS:?} with --enable-exec)"
            ));
        }
        for missing in want.difference(&got) {
            errs.push(format!(
                "{what}: capability {missing} is missing (exactly {AGENT_CAPS:?}, plus {EXEC_CAPS:?} with --enable-exec)"
            ));
        }
        if got.len() != add.len() {
            errs.push(format!("{what}: capability listed twice in {add:?}"));
        }
        if sc
            .run_as_user
            .or(spec.security_context.as_ref().and_then(|p| p.run_as_user))
            .is_some_and(|u| u != 0)
        {
            errs.push(format!(
                "{what}: must run as uid 0: added capabilities never reach a non-root process's effective set"
            ));
        }
        let node_name = c.env.iter().flatten().any(|e| {
            e.name == "NODE_NAME"
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == "spec.nodeName")
        });
        if !node_name {
            errs.push(format!(
                "{what}: env NODE_NAME must come from fieldRef spec.nodeName (the agent's node name)"
            ));
        }
        if c.liveness_probe.is_none() || c.readiness_probe.is_none() {
            errs.push(format!(
                "{what}: needs a livenessProbe and a readinessProbe"
            ));
        }
        for p in AGENT_HOST_PATHS {
            if !host_visible(spec, c, p) {
                errs.push(format!(
                    "{what}: the host's {p} must be mounted at {p} (hostPath)"
                ));
            }
        }
        let args = podscope_args(c);
        match flag_value(&args, "--runtime-endpoint").map(|e| e.strip_prefix("unix://")) {
            Some(Some(sock)) if host_visible(spec, c, sock) => {}
            Some(Some(sock)) => errs.push(format!(
                "{what}: --runtime-endpoint socket {sock} is not in a hostPath volume mounted at the same path"
            )),
            Some(None) => errs.push(format!("{what}: --runtime-endpoint must be unix://PATH")),
            None => errs.push(format!(
                "{what}: --runtime-endpoint is not given (the chart and manifests name the CRI socket they mount)"
            )),
        }
    }
}

/// Whether the host's `path` is visible at the same path in the container:
/// a mount at `path` or above it of a hostPath volume of that same host path.
fn host_visible(spec: &PodSpec, c: &Container, path: &str) -> bool {
    c.volume_mounts.iter().flatten().any(|m| {
        let mp = m.mount_path.trim_end_matches('/');
        (path == mp || path.starts_with(&format!("{mp}/")))
            && m.sub_path.is_none()
            && spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .and_then(|v| v.host_path.as_ref())
                .is_some_and(|h| h.path.trim_end_matches('/') == mp)
    })
}

/// Whether a ResourceQuota in `ns` lets pods of priority class `pc` in.
fn quota_allows(objs: &[Obj], ns: &str, pc: &str) -> bool {
    objs.iter().any(|o| match &o.kind {
        Kind::ResourceQuota(q) if o.namespace() == ns => q
            .spec
            .as_ref()
            .and_then(|s| s.scope_selector.as_ref())
            .and_then(|s| s.match_expressions.as_ref())
            .is_some_and(|es| {
                es.iter().any(|e| {
                    e.scope_name == "PriorityClass"
                        && e.operator == "In"
                        && e.values.iter().flatten().any(|v| v == pc)
                })
            }),
        _ => false,
    })
}

/// Each Service selects exactly one workload, on ports its containers declare.
fn check_services(objs: &[Obj], errs: &mut Vec<String>) {
    let ws = workloads(objs);
    for o in objs {
        let Kind::Service(s) = &o.kind else { continue };
        let Some(spec) = &s.spec else {
            errs.push(format!("{}: has no spec", o.what()));
            continue;
        };
        let sel = LabelSelector {
            match_labels: spec.selector.clone(),
            match_expressions: None,
        };
        let matched: Vec<&Workload> = ws
            .iter()
            .filter(|w| w.obj.namespace() == o.namespace() && selects(&sel, &w.labels()))
            .collect();
        let [w] = matched.as_slice() else {
            errs.push(format!(
                "{}: selector {:?} matches {} workloads' pods ({}); it must match exactly one",
                o.what(),
                spec.selector.clone().unwrap_or_default(),
                matched.len(),
                matched
                    .iter()
                    .map(|w| w.obj.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        };
        let containers = w
            .spec()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            if !containers.iter().any(|c| declares_port(c, &target)) {
                errs.push(format!(
                    "{}: port {} targets {}, which no container of {} declares",
                    o.what(),
                    p.port,
                    port_text(&target),
                    w.obj.what()
                ));
            }
        }
    }
}

/// Service accounts, Secrets, probes, flags and files of one pod template.
fn check_pod(objs: &[Obj], w: &Workload, expect: &Expect, errs: &mut Vec<String>) {
    let Some(spec) = w.spec() else {
        errs.push(format!("{}: pod template has no spec", w.obj.what()));
        return;
    };
    let ns = w.obj.namespace();
    let what = w.obj.what();
    match spec.service_account_name.as_deref() {
        Some(sa) if find(objs, "ServiceAccount", ns, sa).is_some() => {}
        Some(sa) => errs.push(format!(
            "{what}: serviceAccountName {sa} is not a ServiceAccount in namespace {ns}"
        )),
        None => errs.push(format!(
            "{what}: names no serviceAccountName (it would run as \"default\")"
        )),
    }
    let secret_ok = |name: &str, optional: Option<bool>| {
        optional == Some(true)
            || expect.external_secrets.contains(name)
            || find(objs, "Secret", ns, name).is_some()
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or("");
            if !secret_ok(name, s.optional) {
                errs.push(format!(
                    "{what}: volume {} uses Secret {name:?}, which is neither in this set nor an existing Secret the values name, nor optional",
                    v.name
                ));
            }
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &src.secret {
                if !secret_ok(&s.name, s.optional) {
                    errs.push(format!(
                        "{what}: projected volume {} uses Secret {:?}, which does not exist",
                        v.name, s.name
                    ));
                }
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        let cwhat = format!("{what} container {}", c.name);
        if c.image.as_deref().is_none_or(str::is_empty) {
            errs.push(format!("{cwhat}: has no image"));
        }
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                if !secret_ok(&r.name, r.optional) {
                    errs.push(format!(
                        "{cwhat}: env {} uses Secret {:?}, which does not exist",
                        e.name, r.name
                    ));
                }
            }
        }
        for m in c.volume_mounts.iter().flatten() {
            if !spec.volumes.iter().flatten().any(|v| v.name == m.name) {
                errs.push(format!("{cwhat}: volumeMount {} names no volume", m.name));
            }
        }
        for (which, p) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ] {
            let Some(p) = p else { continue };
            let port = p
                .http_get
                .as_ref()
                .map(|h| h.port.clone())
                .or_else(|| p.tcp_socket.as_ref().map(|t| t.port.clone()))
                .or_else(|| p.grpc.as_ref().map(|g| IntOrString::Int(g.port)));
            if let Some(port) = port {
                if !declares_port(c, &port) {
                    errs.push(format!(
                        "{cwhat}: {which} port {} is not a declared containerPort",
                        port_text(&port)
                    ));
                }
            }
        }
        check_args(&Pod { objs, spec, ns }, c, &cwhat, errs);
    }
}

/// A pod template and the set of objects around it.
struct Pod<'a> {
    objs: &'a [Obj],
    spec: &'a PodSpec,
    ns: &'a str,
}

/// The container's podscope command line: the subcommand and every flag
/// exist in the binary; files come from mounted Secrets; listen ports are
/// declared.
fn check_args(pod: &Pod, c: &Container, what: &str, errs: &mut Vec<String>) {
    let (agent_help, hub_help) = helps();
    let args = podscope_args(c);
    let help = match args.first().map(String::as_str) {
        Some("agent") => agent_help,
        Some("hub") => hub_help,
        other => {
            errs.push(format!(
                "{what}: the first argument must be the podscope subcommand (agent or hub), not {other:?}"
            ));
            return;
        }
    };
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap_or(a);
        if !help_has(help, flag) {
            errs.push(format!(
                "{what}: flag {flag} is not in `podscope {} --help`",
                args[0]
            ));
        }
    }
    if !has_flag(&args, "--token-file") {
        errs.push(format!(
            "{what}: needs --token-file (the token Secret mounted as a file)"
        ));
    }
    for flag in SECRET_FILE_FLAGS {
        if let Some(path) = flag_value(&args, flag) {
            check_secret_file(pod, c, (flag, path), what, errs);
        }
    }
    for (flag, default) in [
        ("--listen", (args[0] == "hub").then_some("0.0.0.0:7700")),
        ("--health-listen", None),
        ("--metrics-listen", None),
    ] {
        let Some(addr) = flag_value(&args, flag).or(default) else {
            continue;
        };
        match addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<i32>().ok())
        {
            Some(port) if declares_port(c, &IntOrString::Int(port)) => {}
            Some(port) => errs.push(format!(
                "{what}: {flag} {addr}: port {port} is not a declared containerPort"
            )),
            None => errs.push(format!("{what}: {flag} {addr} is not HOST:PORT")),
        }
    }
}

/// A file flag's path lies in a mounted Secret volume, and the Secret (when
/// in the set) has the key that becomes that file.
fn check_secret_file(
    pod: &Pod,
    c: &Container,
    (flag, path): (&str, &str),
    what: &str,
    errs: &mut Vec<String>,
) {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/'))))
        .max_by_key(|m| m.mount_path.len());
    let Some(mount) = mount else {
        errs.push(format!(
            "{what}: {flag} {path} is not inside any mounted volume (mount the Secret that holds it)"
        ));
        return;
    };
    let Some(secret) = pod
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.secret.as_ref())
    else {
        errs.push(format!(
            "{what}: {flag} {path} is in volume {}, which is not a Secret volume",
            mount.name
        ));
        return;
    };
    let file = &path[mount.mount_path.trim_end_matches('/').len() + 1..];
    let key = match &secret.items {
        Some(items) => match items.iter().find(|i| i.path == file) {
            Some(i) => i.key.clone(),
            None => {
                errs.push(format!(
                    "{what}: {flag} {path}: volume {} projects only {:?}",
                    mount.name,
                    items.iter().map(|i| &i.path).collect::<Vec<_>>()
                ));
                return;
            }
        },
        None => file.to_string(),
    };
    let name = secret.secret_name.as_deref().unwrap_or("");
    // A Secret made outside the set (existingSecret) cannot be looked into.
    if let Some(Obj {
        kind: Kind::Secret(s),
        ..
    }) = find(pod.objs, "Secret", pod.ns, name)
    {
        let has = s.data.iter().flat_map(|d| d.keys()).any(|k| *k == key)
            || s.string_data
                .iter()
                .flat_map(|d| d.keys())
                .any(|k| *k == key);
        if !has {
            errs.push(format!(
                "{what}: {flag} {path} reads key {key:?}, but Secret {name} has no key {key:?}"
            ));
        }
    }
}

/// The agents reach the hub: URL, scheme and CA agree with the hub's TLS
/// flags; probes and appProtocol too; exec on both or on neither.
fn check_cluster_wiring(objs: &[Obj], errs: &mut Vec<String>) {
    let ws = workloads(objs);
    let first = |component: &str| {
        ws.iter()
            .find(|w| w.component().as_deref() == Some(component))
            .and_then(|w| w.spec().and_then(|s| s.containers.first()).map(|c| (*w, c)))
    };
    let (Some((hub_w, hub)), Some((agent_w, agent))) = (first("hub"), first("agent")) else {
        return; // check_workloads reported it
    };
    let hub_args = podscope_args(hub);
    let agent_args = podscope_args(agent);
    let tls = has_flag(&hub_args, "--tls-cert");
    let what = format!("{} container {}", agent_w.obj.what(), agent.name);
    if tls != has_flag(&hub_args, "--tls-key") {
        errs.push(format!(
            "{} container {}: --tls-cert and --tls-key go together",
            hub_w.obj.what(),
            hub.name
        ));
    }
    for (which, p) in [
        ("livenessProbe", &hub.liveness_probe),
        ("readinessProbe", &hub.readiness_probe),
    ] {
        let scheme = p
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.scheme.as_deref())
            .unwrap_or("HTTP");
        if (scheme == "HTTPS") != tls {
            errs.push(format!(
                "{} container {}: {which} scheme is {scheme}, but the hub serves {}",
                hub_w.obj.what(),
                hub.name,
                if tls {
                    "HTTPS (--tls-cert)"
                } else {
                    "plain HTTP"
                }
            ));
        }
    }
    if has_flag(&hub_args, "--enable-exec") != has_flag(&agent_args, "--enable-exec") {
        errs.push(
            "--enable-exec must be given to both the hub and the agents, or to neither".into(),
        );
    }
    let Some(url) = flag_value(&agent_args, "--hub") else {
        errs.push(format!("{what}: needs --hub URL"));
        return;
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
    let want_scheme = if tls { "https" } else { "http" };
    if scheme != want_scheme {
        errs.push(format!(
            "{what}: --hub {url} must use {want_scheme}:// since the hub {}",
            if tls {
                "serves TLS"
            } else {
                "has no --tls-cert"
            }
        ));
    }
    if scheme == "https" && !has_flag(&agent_args, "--tls-ca") {
        errs.push(format!(
            "{what}: --hub {url} is https but no --tls-ca says which CA to trust"
        ));
    }
    let parts: Vec<&str> = host.split('.').collect();
    let (svc_name, svc_ns) = match parts.as_slice() {
        [s, n, "svc"] | [s, n, "svc", "cluster", "local"] => (*s, *n),
        _ => {
            errs.push(format!(
                "{what}: --hub {url}: host must be SERVICE.NAMESPACE.svc"
            ));
            return;
        }
    };
    let Some(Obj {
        kind: Kind::Service(svc),
        ..
    }) = find(objs, "Service", svc_ns, svc_name)
    else {
        errs.push(format!(
            "{what}: --hub {url}: there is no Service {svc_name} in namespace {svc_ns}"
        ));
        return;
    };
    let ports: Vec<_> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .collect();
    match ports.iter().find(|p| p.port.to_string() == port) {
        None => errs.push(format!(
            "{what}: --hub {url}: Service {svc_name} has no port {port:?}"
        )),
        Some(p) => {
            let want = if tls { "https" } else { "kubernetes.io/h2c" };
            if p.app_protocol.as_deref() != Some(want) {
                errs.push(format!(
                    "Service {svc_name}: port {} appProtocol must be {want:?} (REST and gRPC on one {} port)",
                    p.port,
                    if tls { "TLS" } else { "cleartext" }
                ));
            }
        }
    }
    if !selects(
        &LabelSelector {
            match_labels: svc.spec.as_ref().and_then(|s| s.selector.clone()),
            match_expressions: None,
        },
        &hub_w.labels(),
    ) {
        errs.push(format!(
            "{what}: --hub {url}: Service {svc_name} does not select the hub's pods"
        ));
    }
}

// ---------------------------------------------------------------------------
// Plain manifests and kustomize

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
    #[serde(default)]
    patches: Vec<KustomizePatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizePatch {
    target: KustomizeTarget,
    patch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizeTarget {
    kind: String,
    name: String,
}

/// Files of deploy/kubernetes, with optional edits (file, from, to) applied
/// to their text: how the tests below break a manifest on purpose.
type Files = BTreeMap<String, String>;

fn plain_files() -> Files {
    let dir = repo().join("deploy/kubernetes");
    let mut files = Files::new();
    for sub in ["", "tls/"] {
        for e in std::fs::read_dir(dir.join(sub)).expect("deploy/kubernetes") {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let name = format!("{sub}{}", p.file_name().unwrap().to_string_lossy());
                files.insert(name, read(&p));
            }
        }
    }
    files
}

fn parse_kustomization(files: &Files, name: &str) -> Result<Kustomization, String> {
    let text = files
        .get(name)
        .ok_or_else(|| format!("deploy/kubernetes/{name} is missing"))?;
    let json: Json = serde_saphyr::from_str(text)
        .map_err(|e| format!("deploy/kubernetes/{name}: not valid YAML: {e}"))?;
    let k: Kustomization =
        serde_json::from_value(json).map_err(|e| format!("deploy/kubernetes/{name}: {e}"))?;
    if k.api_version != "kustomize.config.k8s.io/v1beta1" || k.kind != "Kustomization" {
        return Err(format!(
            "deploy/kubernetes/{name}: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization"
        ));
    }
    Ok(k)
}

/// The base set (every top-level *.yaml but the kustomization), with the
/// kustomization's image overrides; errors for files it leaves out.
fn plain_base(files: &Files, errs: &mut Vec<String>) -> Vec<Doc> {
    let k = match parse_kustomization(files, "kustomization.yaml") {
        Ok(k) => k,
        Err(e) => {
            errs.push(e);
            return Vec::new();
        }
    };
    if !k.patches.is_empty() {
        errs.push("deploy/kubernetes/kustomization.yaml: the base has no patches".into());
    }
    // secret.yaml stays out of the kustomization so that re-applying it
    // cannot overwrite the real token; every other manifest must be in it.
    let top: BTreeSet<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|f| !f.contains('/') && *f != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<&str> = k.resources.iter().map(String::as_str).collect();
    for f in top.difference(&listed) {
        if *f != "secret.yaml" {
            errs.push(format!(
                "deploy/kubernetes/kustomization.yaml: resources leaves out {f}"
            ));
        }
    }
    if listed.contains("secret.yaml") {
        errs.push("deploy/kubernetes/kustomization.yaml: must not list secret.yaml (re-applying it would overwrite the real token)".into());
    }
    for f in listed.difference(&top) {
        errs.push(format!(
            "deploy/kubernetes/kustomization.yaml: resource {f} does not exist"
        ));
    }
    let mut docs = Vec::new();
    for f in &top {
        match yaml_docs(&format!("deploy/kubernetes/{f}"), &files[*f]) {
            Ok(d) => docs.extend(d),
            Err(e) => errs.push(e),
        }
    }
    for d in &mut docs {
        set_images(&mut d.json, &k.images);
    }
    docs
}

/// kustomize's `images:`: a container image NAME[:TAG] becomes newName:newTag.
fn set_images(doc: &mut Json, images: &[KustomizeImage]) {
    let Some(cs) = doc
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Json::as_array_mut)
    else {
        return;
    };
    for c in cs {
        let Some(image) = c.get("image").and_then(Json::as_str) else {
            continue;
        };
        let (name, tag) = image.rsplit_once(':').unwrap_or((image, ""));
        if let Some(i) = images.iter().find(|i| i.name == name) {
            let n = i.new_name.clone().unwrap_or_else(|| name.to_string());
            let t = i.new_tag.clone().unwrap_or_else(|| tag.to_string());
            c["image"] = json!(format!("{n}:{t}"));
        }
    }
}

/// The tls/ overlay: the base with its JSON 6902 patches applied.
fn plain_tls(files: &Files, base: &[Doc], errs: &mut Vec<String>) -> Vec<Doc> {
    let name = "tls/kustomization.yaml";
    let k = match parse_kustomization(files, name) {
        Ok(k) => k,
        Err(e) => {
            errs.push(e);
            return Vec::new();
        }
    };
    if k.resources != [".."] {
        errs.push(format!(
            "deploy/kubernetes/{name}: resources must be [\"..\"] (the base)"
        ));
    }
    let mut docs: Vec<Doc> = base.to_vec();
    for p in &k.patches {
        let target = docs.iter_mut().find(|d| {
            d.json["kind"] == p.target.kind.as_str()
                && d.json["metadata"]["name"] == p.target.name.as_str()
        });
        let Some(doc) = target else {
            errs.push(format!(
                "deploy/kubernetes/{name}: patch target {} {} is not in the base",
                p.target.kind, p.target.name
            ));
            continue;
        };
        let ops: Json = match serde_saphyr::from_str(&p.patch) {
            Ok(ops) => ops,
            Err(e) => {
                errs.push(format!("deploy/kubernetes/{name}: patch is not YAML: {e}"));
                continue;
            }
        };
        if let Err(e) = json_patch(&mut doc.json, &ops) {
            errs.push(format!(
                "deploy/kubernetes/{name}: patch of {} {}: {e}",
                p.target.kind, p.target.name
            ));
        }
        doc.origin = format!("{} patched by deploy/kubernetes/{name}", doc.origin);
    }
    docs
}

/// RFC 6902 add, replace, remove and test, as kustomize applies them.
fn json_patch(doc: &mut Json, ops: &Json) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("only JSON 6902 patches (a list of operations) are checked")?;
    for op in ops {
        let kind = op["op"].as_str().unwrap_or("");
        let path = op["path"].as_str().ok_or("an operation without path")?;
        let tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = tokens.split_last().ok_or("an operation on the root")?;
        let mut parent = &mut *doc;
        for t in parents {
            parent = match parent {
                Json::Object(m) => m.get_mut(t),
                Json::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| format!("{kind} {path}: {t} does not exist"))?;
        }
        let value = op.get("value").cloned();
        let missing = || format!("{kind} {path}: nothing there");
        match (kind, parent) {
            ("add", Json::Object(m)) => {
                m.insert(last.clone(), value.ok_or(missing())?);
            }
            ("add", Json::Array(a)) => {
                let v = value.ok_or(missing())?;
                match last.as_str() {
                    "-" => a.push(v),
                    i => match i.parse::<usize>() {
                        Ok(i) if i <= a.len() => a.insert(i, v),
                        _ => return Err(format!("add {path}: index out of range")),
                    },
                }
            }
            ("replace" | "remove" | "test", parent) => {
                let slot = match parent {
                    Json::Object(m) => m.get_mut(last),
                    Json::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                    _ => None,
                }
                .ok_or_else(missing)?;
                match kind {
                    "replace" => *slot = value.ok_or(missing())?,
                    "test" if Some(&*slot) != value.as_ref() => {
                        return Err(format!(
                            "test {path}: is {slot}, the patch expects {}",
                            value.unwrap_or_default()
                        ))
                    }
                    "test" => {}
                    _ => match parent {
                        Json::Object(m) => {
                            m.remove(last);
                        }
                        Json::Array(a) => {
                            a.remove(last.parse::<usize>().unwrap_or_default());
                        }
                        _ => {}
                    },
                }
            }
            (op, _) => return Err(format!("{op} {path}: unsupported operation or target")),
        }
    }
    Ok(())
}

/// Parses and checks the plain manifests (base and TLS overlay) after
/// `edits`; every problem found.
fn plain_problems(edits: &[(&str, &str, &str)]) -> Vec<String> {
    let mut files = plain_files();
    for (file, from, to) in edits {
        let text = files
            .get_mut(*file)
            .unwrap_or_else(|| panic!("no deploy/kubernetes/{file}"));
        assert!(
            text.contains(from),
            "deploy/kubernetes/{file} no longer contains {from:?}: update this test"
        );
        *text = text.replace(from, to);
    }
    let mut errs = Vec::new();
    let base = plain_base(&files, &mut errs);
    let tls = plain_tls(&files, &base, &mut errs);
    let (objs, e) = type_all(&base);
    errs.extend(e);
    errs.extend(check(&objs, &Expect::default()));
    let (objs, e) = type_all(&tls);
    errs.extend(e);
    let tls_expect = Expect {
        external_secrets: ["podscope-hub-tls".to_string()].into(),
    };
    errs.extend(
        check(&objs, &tls_expect)
            .into_iter()
            .map(|e| format!("[tls overlay] {e}")),
    );
    errs
}

// ---------------------------------------------------------------------------
// Helm chart rendering with gtmpl

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code, reason = "read for the strict parse of Chart.yaml")]
struct ChartYaml {
    api_version: String,
    name: String,
    version: String,
    app_version: Option<String>,
    description: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    kube_version: Option<String>,
    home: Option<String>,
    sources: Option<Vec<String>>,
    keywords: Option<Vec<String>>,
}

fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/podscope")
}

/// Helm's value merge: maps merge key by key, anything else replaces, and
/// null deletes the key.
fn merge_values(base: &mut Json, over: &Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match (b.get_mut(k), v) {
                    (_, Json::Null) => {
                        b.remove(k);
                    }
                    (Some(bv @ Json::Object(_)), Json::Object(_)) => merge_values(bv, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn to_tv(v: &Json) -> Tv {
    match v {
        Json::Null => Tv::Nil,
        Json::Bool(b) => Tv::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Tv::from(u),
            (_, Some(i)) => Tv::from(i),
            _ => Tv::from(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Tv::String(s.clone()),
        Json::Array(a) => Tv::Array(a.iter().map(to_tv).collect()),
        Json::Object(o) => Tv::Map(o.iter().map(|(k, v)| (k.clone(), to_tv(v))).collect()),
    }
}

fn from_tv(v: &Tv) -> Result<Json, FuncError> {
    Ok(match v {
        Tv::NoValue | Tv::Nil => Json::Null,
        Tv::Bool(b) => json!(b),
        Tv::String(s) => json!(s),
        Tv::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => json!(u),
            (_, Some(i), _) => json!(i),
            (_, _, Some(f)) => json!(f),
            _ => Json::Null,
        },
        Tv::Array(a) => Json::Array(a.iter().map(from_tv).collect::<Result<_, _>>()?),
        Tv::Map(m) | Tv::Object(m) => Json::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), from_tv(v)?)))
                .collect::<Result<_, FuncError>>()?,
        ),
        Tv::Function(_) => return Err(FuncError::Generic("toYaml of a function".into())),
    })
}

/// Go's fmt.Sprint of a value, as sprig's string functions see it.
fn go_string(v: &Tv) -> String {
    match v {
        Tv::NoValue | Tv::Nil => String::new(),
        v => v.to_string(),
    }
}

/// sprig's notion of empty, behind `default`.
fn is_empty(v: &Tv) -> bool {
    match v {
        Tv::NoValue | Tv::Nil => true,
        Tv::Bool(b) => !b,
        Tv::String(s) => s.is_empty(),
        Tv::Array(a) => a.is_empty(),
        Tv::Map(m) | Tv::Object(m) => m.is_empty(),
        Tv::Number(n) => n.as_f64() == Some(0.0),
        Tv::Function(_) => false,
    }
}

fn arg_count(name: &str, args: &[Tv], n: usize) -> Result<(), FuncError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(FuncError::ExactlyXArgs(name.into(), n))
    }
}

fn indent_by(args: &[Tv], name: &str) -> Result<String, FuncError> {
    arg_count(name, args, 2)?;
    let n = match &args[0] {
        Tv::Number(n) => n.as_u64().unwrap_or_default() as usize,
        _ => return Err(FuncError::Generic(format!("{name}: the width comes first"))),
    };
    let pad = " ".repeat(n);
    Ok(format!(
        "{pad}{}",
        go_string(&args[1]).replace('\n', &format!("\n{pad}"))
    ))
}

/// Helm's toYaml: the value as block YAML without the final newline.
fn f_to_yaml(args: &[Tv]) -> Result<Tv, FuncError> {
    arg_count("toYaml", args, 1)?;
    let yaml = serde_saphyr::to_string(&from_tv(&args[0])?)
        .map_err(|e| FuncError::Generic(format!("toYaml: {e}")))?;
    Ok(Tv::String(yaml.trim_end_matches('\n').to_string()))
}

fn f_indent(args: &[Tv]) -> Result<Tv, FuncError> {
    indent_by(args, "indent").map(Tv::String)
}

fn f_nindent(args: &[Tv]) -> Result<Tv, FuncError> {
    indent_by(args, "nindent").map(|s| Tv::String(format!("\n{s}")))
}

/// sprig's quote: each non-nil argument as a double-quoted string.
fn f_quote(args: &[Tv]) -> Result<Tv, FuncError> {
    let quoted: Vec<String> = args
        .iter()
        .filter(|a| !matches!(a, Tv::Nil | Tv::NoValue))
        .map(|a| json!(go_string(a)).to_string())
        .collect();
    Ok(Tv::String(quoted.join(" ")))
}

/// sprig's default: `default D V` is V unless V is empty.
fn f_default(args: &[Tv]) -> Result<Tv, FuncError> {
    match args {
        [d] => Ok(d.clone()),
        [d, v] => Ok(if is_empty(v) { d.clone() } else { v.clone() }),
        _ => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}

/// Helm's required: fails with the message when the value is nil or "".
fn f_required(args: &[Tv]) -> Result<Tv, FuncError> {
    arg_count("required", args, 2)?;
    match &args[1] {
        Tv::NoValue | Tv::Nil => Err(FuncError::Generic(go_string(&args[0]))),
        Tv::String(s) if s.is_empty() => Err(FuncError::Generic(go_string(&args[0]))),
        v => Ok(v.clone()),
    }
}

fn f_b64enc(args: &[Tv]) -> Result<Tv, FuncError> {
    arg_count("b64enc", args, 1)?;
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = go_string(&args[0]).into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    Ok(Tv::String(out))
}

/// sprig's dir (Go's path.Dir): the path without its last element.
fn f_dir(args: &[Tv]) -> Result<Tv, FuncError> {
    arg_count("dir", args, 1)?;
    let s = go_string(&args[0]);
    let d = match s.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((d, _)) => d.to_string(),
        None => ".".to_string(),
    };
    Ok(Tv::String(d))
}

/// The Helm functions the chart may use, on top of text/template's own.
const HELM_FUNCS: [(&str, Func); 8] = [
    ("toYaml", f_to_yaml),
    ("indent", f_indent),
    ("nindent", f_nindent),
    ("quote", f_quote),
    ("default", f_default),
    ("required", f_required),
    ("b64enc", f_b64enc),
    ("dir", f_dir),
];

/// Renders one template the way Helm does for one file.
fn render_template(name: &str, text: &str, root: &Tv) -> Result<String, String> {
    let mut t = gtmpl::Template::default();
    t.add_funcs(&HELM_FUNCS);
    t.parse(text)
        .map_err(|e| format!("{name}: does not parse: {e}"))?;
    let out = t
        .render(&Context::from(root.clone()))
        .map_err(|e| format!("{name}: does not render: {e}"))?;
    if let Some(line) = out.lines().find(|l| l.contains("<no value>")) {
        return Err(format!(
            "{name}: reads a value the values do not have (Helm would print nothing): {line:?}"
        ));
    }
    Ok(out)
}

/// `.` for the templates: Values, Release, Chart.
fn helm_root(values: &Json) -> Result<Tv, String> {
    let chart_yaml = chart_dir().join("Chart.yaml");
    let meta: Json = serde_saphyr::from_str(&read(&chart_yaml))
        .map_err(|e| format!("{}: {e}", chart_yaml.display()))?;
    let chart: ChartYaml = serde_json::from_value(meta)
        .map_err(|e| format!("deploy/helm/podscope/Chart.yaml: {e}"))?;
    if chart.api_version != "v2" || chart.name != "podscope" {
        return Err("deploy/helm/podscope/Chart.yaml: apiVersion must be v2, name podscope".into());
    }
    Ok(to_tv(&json!({
        "Values": values,
        "Release": {"Name": "podscope", "Namespace": NAMESPACE, "Service": "Helm",
                    "IsInstall": true, "IsUpgrade": false, "Revision": 1},
        "Chart": {"Name": chart.name, "Version": chart.version,
                  "AppVersion": chart.app_version.unwrap_or_default()},
    })))
}

/// Values whose keys are the user's (Kubernetes objects passed through toYaml).
const FREE_FORM_VALUES: [&str; 3] = ["resources", "nodeSelector", "tolerations"];

/// Keys of `over` that values.yaml does not have: a typo in an override
/// file would otherwise change nothing, silently (the chart has no
/// values.schema.json).
fn unknown_value_keys(base: &Json, over: &Json, path: &str, out: &mut Vec<String>) {
    let (Json::Object(b), Json::Object(o)) = (base, over) else {
        return;
    };
    for (k, v) in o {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match b.get(k) {
            None => out.push(p),
            Some(_) if FREE_FORM_VALUES.contains(&k.as_str()) => {}
            Some(bv) => unknown_value_keys(bv, v, &p, out),
        }
    }
}

/// values.yaml with the files given merged over it, in order.
fn chart_values(extra: &[Json]) -> Result<Json, String> {
    let mut values: Json = serde_saphyr::from_str(&read(&chart_dir().join("values.yaml")))
        .map_err(|e| format!("deploy/helm/podscope/values.yaml: {e}"))?;
    for v in extra {
        let mut unknown = Vec::new();
        unknown_value_keys(&values, v, "", &mut unknown);
        if !unknown.is_empty() {
            return Err(format!(
                "values {} are not in deploy/helm/podscope/values.yaml (a typo?)",
                unknown.join(", ")
            ));
        }
        merge_values(&mut values, v);
    }
    Ok(values)
}

/// Every template rendered and split into documents; NOTES.txt rendered
/// (it must not fail) but not parsed.
fn render_chart(values: &Json, label: &str) -> Result<Vec<Doc>, Vec<String>> {
    let root = helm_root(values).map_err(|e| vec![e])?;
    let mut docs = Vec::new();
    let mut errs = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("templates"))
        .expect("templates/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    for p in names {
        let file = p.file_name().unwrap().to_string_lossy().to_string();
        let origin = format!("deploy/helm/podscope/templates/{file} [{label}]");
        if file.starts_with('_') {
            errs.push(format!(
                "{origin}: partials (define/include) are outside what this test renders"
            ));
            continue;
        }
        match render_template(&origin, &read(&p), &root) {
            Ok(_) if file == "NOTES.txt" => {}
            // Objects are named by file alone: chart_problems prefixes the values.
            Ok(out) => match yaml_docs(&format!("deploy/helm/podscope/templates/{file}"), &out) {
                Ok(d) => docs.extend(d),
                Err(e) => errs.push(format!("[{label}] {e}\n--- rendered:\n{out}")),
            },
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Ok(docs)
    } else {
        Err(errs)
    }
}

/// Secrets the chart mounts without making them (existingSecret values).
fn chart_external_secrets(values: &Json) -> Expect {
    let mut ext = BTreeSet::new();
    let s = |p: &str| values.pointer(p).and_then(Json::as_str).unwrap_or("");
    if s("/token/value").is_empty() {
        ext.insert(s("/token/existingSecret").to_string());
    }
    if values.pointer("/tls/enabled") == Some(&json!(true)) {
        ext.insert(s("/tls/existingSecret").to_string());
    }
    Expect {
        external_secrets: ext,
    }
}

/// Renders, parses and checks the chart with these values over values.yaml.
fn chart_problems(extra: &[Json], label: &str) -> Vec<String> {
    let values = match chart_values(extra) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let docs = match render_chart(&values, label) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let (objs, errs) = type_all(&docs);
    errs.into_iter()
        .chain(check(&objs, &chart_external_secrets(&values)))
        .map(|e| format!("[helm {label}] {e}"))
        .collect()
}

fn ci_values() -> Json {
    let p = chart_dir().join("ci/tls-values.yaml");
    serde_saphyr::from_str(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile's instructions (continuation lines joined, comments dropped).
fn docker_instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

fn check_dockerfile(text: &str) -> Vec<String> {
    let mut errs = Vec::new();
    // (base, stage name, instructions)
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    for ins in docker_instructions(text) {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
        {
            let base = words.get(1).unwrap_or(&"").to_string();
            let name = match words.get(2..4) {
                Some([a, n]) if a.eq_ignore_ascii_case("AS") => n.to_string(),
                _ => String::new(),
            };
            stages.push((base, name, Vec::new()));
        } else if let Some(s) = stages.last_mut() {
            s.2.push(ins);
        }
    }
    if stages.len() < 2 {
        errs.push(format!(
            "Dockerfile: {} FROM stage(s); want a builder stage and a runtime stage",
            stages.len()
        ));
        return errs;
    }
    let (builder, runtime) = (&stages[0], &stages[stages.len() - 1]);
    let build = builder
        .2
        .iter()
        .find(|i| i.starts_with("RUN") && i.contains("cargo build"));
    match build {
        None => errs.push("Dockerfile: the builder stage has no RUN cargo build".into()),
        Some(b) => {
            for want in ["--release", "--locked", "-p podscope"] {
                if !b.contains(want) {
                    errs.push(format!("Dockerfile: cargo build without {want}: {b}"));
                }
            }
        }
    }
    if !builder.0.starts_with("rust:") {
        errs.push(format!(
            "Dockerfile: the builder stage starts from {}, want a rust: image",
            builder.0
        ));
    }
    if runtime.0.starts_with("rust:") {
        errs.push("Dockerfile: the runtime stage must not be the Rust toolchain image".into());
    }
    let from_builder = format!("--from={}", builder.1);
    let copies = runtime.2.iter().any(|i| {
        i.starts_with("COPY")
            && !builder.1.is_empty()
            && i.contains(&from_builder)
            && i.contains("podscope")
            && i.ends_with("/usr/local/bin/podscope")
    });
    if !copies {
        errs.push(format!(
            "Dockerfile: the runtime stage must COPY {from_builder} the podscope binary to /usr/local/bin/podscope"
        ));
    }
    if !runtime.2.iter().any(|i| i.contains("kubectl-podscope")) {
        errs.push(
            "Dockerfile: no /usr/local/bin/kubectl-podscope link for the kubectl plugin".into(),
        );
    }
    for pkg in ["libelf1", "zlib1g", "ca-certificates"] {
        if !runtime
            .2
            .iter()
            .any(|i| i.starts_with("RUN") && i.contains(pkg))
        {
            errs.push(format!(
                "Dockerfile: the runtime stage does not install {pkg}"
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------
// The tests

fn assert_clean(errs: Vec<String>) {
    assert!(
        errs.is_empty(),
        "{} problem(s):\n{}",
        errs.len(),
        errs.join("\n")
    );
}

#[test]
fn plain_manifests_parse_strictly_and_agree() {
    assert_clean(plain_problems(&[]));
}

#[test]
fn helm_chart_with_default_values_renders_and_agrees() {
    assert_clean(chart_problems(&[], "values.yaml"));
}

#[test]
fn helm_chart_with_ci_values_renders_and_agrees() {
    assert_clean(chart_problems(&[ci_values()], "ci/tls-values.yaml"));
}

#[test]
fn helm_ci_values_switch_on_what_they_claim() {
    let values = chart_values(&[ci_values()]).unwrap();
    let docs = render_chart(&values, "ci").unwrap();
    let (objs, errs) = type_all(&docs);
    assert_clean(errs);
    let args = |component: &str| {
        workloads(&objs)
            .iter()
            .find(|w| w.component().as_deref() == Some(component))
            .map(|w| podscope_args(&w.spec().unwrap().containers[0]))
            .unwrap()
    };
    let (hub, agent) = (args("hub"), args("agent"));
    assert!(
        has_flag(&hub, "--tls-cert") && has_flag(&hub, "--enable-exec"),
        "{hub:?}"
    );
    assert_eq!(
        flag_value(&agent, "--hub"),
        Some("https://podscope-hub.podscope.svc:7700")
    );
    assert_eq!(
        flag_value(&agent, "--runtime-endpoint"),
        Some("unix:///var/run/crio/crio.sock")
    );
    assert_eq!(
        flag_value(&agent, "--otlp-endpoint"),
        Some("http://otel-collector.observability.svc:4317")
    );
    let secret = objs
        .iter()
        .find_map(|o| match &o.kind {
            Kind::Secret(s) if o.name() == "podscope-token" => Some(s),
            _ => None,
        })
        .expect("token.value makes the Secret podscope-token");
    assert_eq!(
        secret.data.as_ref().unwrap()["token"].0,
        b"not-a-real-token"
    );
}

#[test]
fn dockerfile_builds_locked_and_copies_the_binary() {
    assert_clean(check_dockerfile(&read(&repo().join("Dockerfile"))));
    let ignore = read(&repo().join(".dockerignore"));
    for want in ["target/", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim().starts_with(want)),
            ".dockerignore does not leave out {want}"
        );
    }
}

// --- each check can fail: a broken copy of the real files must be caught

/// Asserts that the plain manifests with these edits fail with an error
/// containing every one of `want`.
fn assert_caught(edits: &[(&str, &str, &str)], want: &[&str]) {
    let errs = plain_problems(edits);
    assert!(
        errs.iter().any(|e| want.iter().all(|w| e.contains(w))),
        "edits {edits:?} should fail with an error naming {want:?}; got:\n{}",
        errs.join("\n")
    );
}

#[test]
fn catches_unknown_and_misplaced_fields() {
    assert_caught(
        &[("agent.yaml", "hostPID: true", "hostPid: true")],
        &[
            "DaemonSet podscope-agent",
            "unknown field",
            "spec.template.spec.hostPid",
        ],
    );
    // A pod-level key one level too high, in the Deployment's spec.
    assert_caught(
        &[(
            "hub.yaml",
            "  replicas: 1\n",
            "  replicas: 1\n  hostNetwork: false\n",
        )],
        &[
            "hub.yaml",
            "Deployment podscope-hub",
            "unknown field spec.hostNetwork",
        ],
    );
    assert_caught(
        &[(
            "hub.yaml",
            "            readOnlyRootFilesystem: true",
            "            readOnlyRootFileSystem: true",
        )],
        &[
            "unknown field",
            "containers[0].securityContext.readOnlyRootFileSystem",
        ],
    );
    assert_caught(
        &[(
            "rbac.yaml",
            "kind: ClusterRoleBinding",
            "kind: ClusterRoleBindings",
        )],
        &["unknown kind \"ClusterRoleBindings\""],
    );
    // A secret mode written as YAML 1.1 octal reads differently in Go and here.
    assert_caught(
        &[("agent.yaml", "defaultMode: 256 # 0400", "defaultMode: 0400")],
        &["DaemonSet podscope-agent", "does not fit"],
    );
    assert_caught(
        &[(
            "namespace.yaml",
            "  name: podscope\n  labels:",
            "  name: podscope\n  name: other\n  labels:",
        )],
        &["namespace.yaml", "duplicate"],
    );
}

#[test]
fn catches_selectors_that_do_not_match() {
    let agent_selector = "    matchLabels:\n      app.kubernetes.io/name: podscope\n      app.kubernetes.io/instance: podscope\n      app.kubernetes.io/component: agent\n";
    assert_caught(
        &[(
            "agent.yaml",
            agent_selector,
            &agent_selector.replace("component: agent", "component: agnt"),
        )],
        &[
            "DaemonSet podscope-agent",
            "selector",
            "agnt",
            "does not select",
        ],
    );
    assert_caught(
        &[("hub.yaml", "  selector:\n    app.kubernetes.io/name: podscope\n    app.kubernetes.io/instance: podscope\n    app.kubernetes.io/component: hub", "  selector:\n    app.kubernetes.io/name: podscope\n    app.kubernetes.io/instance: podscope\n    app.kubernetes.io/component: hubb")],
        &["Service podscope-hub", "matches 0 workloads"],
    );
    assert_caught(
        &[(
            "hub.yaml",
            "      targetPort: http",
            "      targetPort: web",
        )],
        &["Service podscope-hub", "targets web"],
    );
}

#[test]
fn catches_agent_privileges_beyond_the_set() {
    assert_caught(
        &[(
            "agent.yaml",
            "                - SYS_PTRACE\n",
            "                - SYS_PTRACE\n                - SYS_MODULE\n",
        )],
        &[
            "container agent",
            "capability SYS_MODULE is added but not needed",
        ],
    );
    assert_caught(
        &[("agent.yaml", "                - NET_ADMIN\n", "")],
        &["capability NET_ADMIN is missing"],
    );
    assert_caught(
        &[("agent.yaml", "privileged: false", "privileged: true")],
        &["container agent", "must not be privileged"],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "              drop: [\"ALL\"]\n              add:",
            "              add:",
        )],
        &["container agent", "capabilities.drop must be [ALL]"],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "        - operator: Exists",
            "        - operator: Equal\n          key: dedicated",
        )],
        &["DaemonSet podscope-agent", "toleration {operator: Exists}"],
    );
    assert_caught(
        &[(
            "namespace.yaml",
            "values: [\"system-node-critical\"]",
            "values: [\"system-cluster-critical\"]",
        )],
        &["priorityClassName system-node-critical", "ResourceQuota"],
    );
    assert_caught(
        &[(
            "namespace.yaml",
            "pod-security.kubernetes.io/enforce: privileged",
            "pod-security.kubernetes.io/enforce: baseline",
        )],
        &["Namespace podscope", "pod-security.kubernetes.io/enforce"],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "            - name: cri\n              mountPath: /run/containerd",
            "            - name: cri\n              mountPath: /run/cri",
        )],
        &["--runtime-endpoint socket /run/containerd/containerd.sock"],
    );
}

#[test]
fn catches_hub_running_as_root_or_writable() {
    assert_caught(
        &[("hub.yaml", "runAsNonRoot: true", "runAsNonRoot: false")],
        &[
            "Deployment podscope-hub container hub",
            "runAsNonRoot must be true",
        ],
    );
    assert_caught(
        &[(
            "hub.yaml",
            "            readOnlyRootFilesystem: true",
            "            readOnlyRootFilesystem: false",
        )],
        &["container hub", "readOnlyRootFilesystem"],
    );
    assert_caught(
        &[("hub.yaml", "  replicas: 1", "  replicas: 2")],
        &["Deployment podscope-hub", "replicas must be 1"],
    );
    assert_caught(
        &[("hub.yaml", "path: /readyz", "path: /ready")],
        &["container hub", "readinessProbe must GET /readyz"],
    );
}

#[test]
fn catches_rbac_beyond_reading_pods_and_nodes() {
    assert_caught(
        &[(
            "rbac.yaml",
            "verbs: [\"get\", \"list\", \"watch\"]",
            "verbs: [\"get\", \"list\", \"watch\", \"delete\"]",
        )],
        &["ClusterRole podscope", "verb \"delete\""],
    );
    assert_caught(
        &[(
            "rbac.yaml",
            "resources: [\"pods\", \"nodes\"]",
            "resources: [\"pods\", \"nodes\", \"secrets\"]",
        )],
        &["ClusterRole podscope", "resource \"secrets\""],
    );
    assert_caught(
        &[(
            "rbac.yaml",
            "  kind: ClusterRole\n  name: podscope\nsubjects",
            "  kind: ClusterRole\n  name: podscope-reader\nsubjects",
        )],
        &[
            "ClusterRoleBinding podscope",
            "roleRef ClusterRole podscope-reader does not exist",
        ],
    );
    assert_caught(
        &[(
            "rbac.yaml",
            "  - kind: ServiceAccount\n    name: podscope-agent",
            "  - kind: ServiceAccount\n    name: podscope-agnt",
        )],
        &["ClusterRoleBinding podscope", "podscope/podscope-agnt"],
    );
}

#[test]
fn catches_references_to_missing_objects() {
    assert_caught(
        &[(
            "agent.yaml",
            "serviceAccountName: podscope-agent",
            "serviceAccountName: podscope-agnt",
        )],
        &[
            "DaemonSet podscope-agent",
            "serviceAccountName podscope-agnt",
        ],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "secretName: podscope-token",
            "secretName: podscope-tokn",
        )],
        &["DaemonSet podscope-agent", "Secret \"podscope-tokn\""],
    );
    assert_caught(
        &[(
            "rbac.yaml",
            "  name: podscope-hub\n  namespace: podscope",
            "  name: podscope-hub\n  namespace: default",
        )],
        &["ServiceAccount podscope-hub", "namespace is \"default\""],
    );
    assert_caught(
        &[("kustomization.yaml", "  - agent.yaml\n", "")],
        &["kustomization.yaml", "leaves out agent.yaml"],
    );
    assert_caught(
        &[("agent.yaml", "port: health", "port: healthz")],
        &["container agent", "livenessProbe port healthz"],
    );
}

#[test]
fn catches_flags_and_files_that_do_not_fit() {
    assert_caught(
        &[("agent.yaml", "- --metrics-listen", "- --metric-listen")],
        &[
            "container agent",
            "flag --metric-listen is not in `podscope agent --help`",
        ],
    );
    assert_caught(
        &[("agent.yaml", "- 0.0.0.0:9464", "- 0.0.0.0:9465")],
        &["--metrics-listen 0.0.0.0:9465: port 9465 is not a declared containerPort"],
    );
    assert_caught(
        &[(
            "hub.yaml",
            "- /etc/podscope/token/token",
            "- /etc/podscope/tok/token",
        )],
        &[
            "container hub",
            "--token-file /etc/podscope/tok/token is not inside any mounted volume",
        ],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "- /etc/podscope/token/token",
            "- /etc/podscope/token/tokn",
        )],
        &[
            "container agent",
            "Secret podscope-token has no key \"tokn\"",
        ],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "http://podscope-hub.podscope.svc:7700",
            "http://podscope-hubb.podscope.svc:7700",
        )],
        &["no Service podscope-hubb in namespace podscope"],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "http://podscope-hub.podscope.svc:7700",
            "https://podscope-hub.podscope.svc:7700",
        )],
        &["--hub https://podscope-hub.podscope.svc:7700 must use http://"],
    );
    assert_caught(
        &[(
            "agent.yaml",
            "http://podscope-hub.podscope.svc:7700",
            "https://podscope-hub.podscope.svc:7700",
        )],
        &["is https but no --tls-ca says which CA to trust"],
    );
    assert_caught(
        &[(
            "hub.yaml",
            "            - /etc/podscope/token/token\n",
            "            - /etc/podscope/token/token\n            - --enable-exec\n",
        )],
        &["--enable-exec must be given to both"],
    );
    // The TLS overlay's patches are applied and checked too.
    assert_caught(
        &[(
            "tls/kustomization.yaml",
            "value: /etc/podscope/tls/ca.crt",
            "value: /etc/podscope/tls/tls.crt",
        )],
        &[
            "[tls overlay]",
            "--tls-ca /etc/podscope/tls/tls.crt: volume tls-ca projects only [\"ca.crt\"]",
        ],
    );
    assert_caught(
        &[(
            "tls/kustomization.yaml",
            "        path: /spec/template/spec/containers/0/readinessProbe/httpGet/scheme\n",
            "        path: /spec/template/spec/containers/0/readinessProbe/httpGet/port\n",
        )],
        &["[tls overlay]", "readinessProbe scheme is HTTP"],
    );
}

#[test]
fn catches_helm_chart_problems() {
    // `required` stops a chart that would mount no token.
    let errs = chart_problems(
        &[json!({"token": {"existingSecret": "", "value": ""}})],
        "no token",
    );
    assert!(
        errs.iter().any(|e| e.contains("set token.existingSecret")),
        "{errs:?}"
    );
    let errs = chart_problems(&[json!({"agent": {"tolerations": null}})], "no tolerations");
    assert!(
        errs.iter()
            .any(|e| e.contains("toleration {operator: Exists}")),
        "{errs:?}"
    );
    let errs = chart_problems(&[json!({"agent": {"healthPort": null}})], "no healthPort");
    assert!(
        errs.iter()
            .any(|e| e.contains("reads a value the values do not have")),
        "{errs:?}"
    );
    let errs = chart_problems(&[json!({"exporter": {"otlp": {"endpoint": "x"}}})], "typo");
    assert!(
        errs.iter()
            .any(|e| e.contains("values exporter are not in")),
        "{errs:?}"
    );
    // A value that is not a string lands where the API wants one.
    let errs = chart_problems(
        &[json!({"image": {"pullPolicy": ["Always"]}})],
        "bad pullPolicy",
    );
    assert!(errs.iter().any(|e| e.contains("does not fit")), "{errs:?}");
}

#[test]
fn catches_dockerfile_problems() {
    let good = read(&repo().join("Dockerfile"));
    let cases = [
        (
            "--release --locked",
            "--release",
            "cargo build without --locked",
        ),
        (
            "FROM debian:bookworm-slim AS runtime",
            "",
            "want a builder stage and a runtime stage",
        ),
        (
            "COPY --from=builder",
            "COPY --from=build",
            "must COPY --from=builder",
        ),
    ];
    for (from, to, want) in cases {
        assert!(
            good.contains(from),
            "Dockerfile no longer contains {from:?}"
        );
        let errs = check_dockerfile(&good.replace(from, to));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{from:?} -> {to:?} should fail with {want:?}: {errs:?}"
        );
    }
}

// --- the Helm function stand-ins behave as Helm's

fn render(text: &str, values: Json) -> Result<String, String> {
    render_template("t", text, &to_tv(&json!({ "Values": values })))
}

#[test]
fn to_yaml_round_trips_and_quotes_what_go_yaml_would_misread() {
    let v = json!({
        "strings": ["yes", "on", "0440", "1e3", "10%", "", "- x", "#c", "a: b", "null", "~", "true", "1", "multi\nline"],
        "empty": {}, "none": [], "nested": {"a": {"b": [1, -3, 2.5, false]}},
        "tolerations": [{"operator": "Exists"}]
    });
    let out = render("x:\n  {{- toYaml .Values | nindent 2 }}\n", v.clone()).unwrap();
    let back: Json = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(back["x"], v, "toYaml output:\n{out}");
    for s in [
        "\"yes\"", "\"on\"", "\"0440\"", "\"1e3\"", "\"true\"", "\"1\"",
    ] {
        assert!(out.contains(s), "toYaml must quote {s}:\n{out}");
    }
}

#[test]
fn helm_functions_behave_like_helms() {
    let v = json!({"s": "a\"b", "n": 9464, "e": "", "t": "tok"});
    let cases = [
        ("{{ .Values.s | quote }}", "\"a\\\"b\""),
        ("{{ .Values.n | quote }}", "\"9464\""),
        ("{{ .Values.e | default \"d\" }}", "d"),
        ("{{ .Values.s | default \"d\" }}", "a\"b"),
        ("{{ .Values.t | b64enc }}", "dG9r"),
        ("{{ \"ab\" | b64enc }}", "YWI="),
        ("{{ \"a\" | b64enc }}", "YQ=="),
        ("{{ \"x\\ny\" | indent 2 }}", "  x\n  y"),
        ("{{ \"x\" | nindent 4 }}", "\n    x"),
        (
            "{{ dir \"/run/containerd/containerd.sock\" }}",
            "/run/containerd",
        ),
        ("{{ dir \"/x.sock\" }}", "/"),
        ("{{ required \"need t\" .Values.t }}", "tok"),
        ("{{- if .Values.e }}yes{{ else }}no{{ end -}}", "no"),
        ("{{- /* a comment */ -}}ok", "ok"),
    ];
    for (t, want) in cases {
        assert_eq!(render(t, v.clone()).as_deref(), Ok(want), "{t}");
    }
    let err = render("{{ required \"need e\" .Values.e }}", v.clone()).unwrap_err();
    assert!(err.contains("need e"), "{err}");
    let err = render("{{ required \"need m\" .Values.missing }}", v).unwrap_err();
    assert!(err.contains("need m"), "{err}");
}

#[test]
fn merge_values_like_helm() {
    let mut base = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "d": {"x": 1}});
    merge_values(
        &mut base,
        &json!({"a": {"b": 3}, "l": [9], "d": null, "n": "new"}),
    );
    assert_eq!(base, json!({"a": {"b": 3, "c": 2}, "l": [9], "n": "new"}));
}

/// A map of label key -> value, for the selector unit test.
fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn selector_semantics() {
    let sel: LabelSelector = serde_json::from_value(json!({
        "matchLabels": {"a": "1"},
        "matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]},
                             {"key": "c", "operator": "DoesNotExist"}]
    }))
    .unwrap();
    assert!(selects(&sel, &labels(&[("a", "1"), ("b", "y")])));
    assert!(!selects(&sel, &labels(&[("a", "1"), ("b", "z")])));
    assert!(!selects(
        &sel,
        &labels(&[("a", "1"), ("b", "x"), ("c", "")])
    ));
    assert!(!selects(&LabelSelector::default(), &labels(&[("a", "1")])));
}
