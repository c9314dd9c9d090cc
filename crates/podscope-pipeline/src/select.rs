//! Choosing pods and containers the way kubectl does: name globs, namespaces,
//! label selectors, container names; and errors that show what does exist.

use anyhow::{anyhow, Result};
use podscope_runtime::names::{closest_names, glob_match};
use podscope_runtime::{Container, Discovery, Pod, Selector, Source};

/// The namespace kubectl uses when neither -n nor -A is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The pod flags as given (kubectl's --pod, -n, -A, -l, --container), before
/// validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFlags {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub selector: Option<String>,
    pub container: Option<String>,
}

/// A validated pod/container selection.
#[derive(Debug, Clone, Default)]
pub struct PodSelection {
    /// Pod name or glob.
    pub pod: Option<String>,
    /// Namespace; None with `all_namespaces`.
    pub namespace: Option<String>,
    /// -A.
    pub all_namespaces: bool,
    /// -l.
    pub selector: Option<Selector>,
    /// Container name or glob.
    pub container: Option<String>,
}

impl PodSelection {
    /// From the flags; None when no pod flag was given (host-level tracing).
    pub fn from_flags(args: &PodFlags) -> Result<Option<PodSelection>> {
        let any = args.pod.is_some()
            || args.namespace.is_some()
            || args.all_namespaces
            || args.selector.is_some()
            || args.container.is_some();
        if !any {
            return Ok(None);
        }
        let selector = match &args.selector {
            Some(s) => {
                Some(Selector::parse(s).map_err(|e| anyhow!("bad label selector '{s}': {e}"))?)
            }
            None => None,
        };
        Ok(Some(PodSelection {
            pod: args.pod.clone(),
            namespace: if args.all_namespaces {
                None
            } else {
                Some(
                    args.namespace
                        .clone()
                        .unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
                )
            },
            all_namespaces: args.all_namespaces,
            selector,
            container: args.container.clone(),
        }))
    }

    /// Whether a pod is chosen (its containers may still be narrowed by name).
    pub fn matches_pod(&self, pod: &Pod) -> bool {
        // Pods found through /proc have no namespace or labels: match on what is known.
        let known = pod.source != Source::Proc;
        if let Some(ns) = &self.namespace {
            if known && &pod.namespace != ns {
                return false;
            }
        }
        if let Some(p) = &self.pod {
            if !glob_match(p, &pod.name) && !glob_match(p, &pod.uid) {
                return false;
            }
        }
        if let Some(sel) = &self.selector {
            if !sel.matches(&pod.labels) {
                return false;
            }
        }
        true
    }

    /// Whether a container of a chosen pod is chosen.
    pub fn matches_container(&self, c: &Container) -> bool {
        self.container
            .as_ref()
            .is_none_or(|n| glob_match(n, &c.name))
    }

    /// The pods chosen, with their containers narrowed to the chosen ones;
    /// pods left with no container are dropped when a container was named.
    pub fn select(&self, pods: &[Pod]) -> Vec<Pod> {
        pods.iter()
            .filter(|p| self.matches_pod(p))
            .filter_map(|p| {
                let mut p = p.clone();
                if self.container.is_some() {
                    p.containers.retain(|c| self.matches_container(c));
                    if p.containers.is_empty() {
                        return None;
                    }
                }
                Some(p)
            })
            .collect()
    }

    /// What the user asked for, in words.
    pub fn describe(&self) -> String {
        let selector = self.selector.as_ref().map(|s| s.to_string());
        podscope_runtime::names::describe_selection(
            self.pod.as_deref(),
            self.namespace.as_deref(),
            selector.as_deref(),
            self.container.as_deref(),
        )
    }

    /// The error for a selection that matches nothing: what was asked, what
    /// exists, and the closest names.
    pub fn no_match(&self, discovery: &Discovery) -> anyhow::Error {
        let mut msg = format!("no {} on this node", self.describe());
        if let Some(w) = &discovery.warning {
            msg.push_str(&format!(" ({w})"));
        }
        let pods = &discovery.pods;
        if pods.is_empty() {
            msg.push_str("; no pods run on this node at all");
            return anyhow!(msg);
        }
        if let Some(p) = &self.pod {
            let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            let close = closest_names(p, names.iter().map(String::as_str), 3);
            if !close.is_empty() {
                let full: Vec<String> = pods
                    .iter()
                    .filter(|q| close.contains(&q.name))
                    .map(|q| q.qualified_name())
                    .collect();
                msg.push_str(&format!("; did you mean {}?", full.join(", ")));
            }
        }
        if let Some(c) = &self.container {
            let names: Vec<String> = pods
                .iter()
                .filter(|p| self.matches_pod(p))
                .flat_map(|p| p.containers.iter().map(|c| c.name.clone()))
                .collect();
            if !names.is_empty() {
                msg.push_str(&format!(
                    "; containers in the matching pods: {} (not {c})",
                    names.join(", ")
                ));
            }
        }
        let listed: Vec<String> = pods.iter().take(20).map(|p| p.qualified_name()).collect();
        msg.push_str(&format!(
            "\npods on this node ({}): {}{}",
            pods.len(),
            listed.join(", "),
            if pods.len() > 20 { ", ..." } else { "" }
        ));
        if self.namespace.is_some() && !self.all_namespaces {
            msg.push_str("\n(use -A to look in every namespace, or -n NAMESPACE)");
        }
        anyhow!(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], containers: &[&str]) -> Pod {
        Pod {
            uid: format!("uid-{name}"),
            name: name.into(),
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            runtime: "containerd".into(),
            sandbox_id: None,
            state: podscope_runtime::PodState::Ready,
            ip: None,
            sandbox_pid: None,
            cgroup_path: None,
            cgroup_id: Some(10),
            source: Source::Cri,
            containers: containers
                .iter()
                .map(|c| Container {
                    id: format!("id-{c}"),
                    name: c.to_string(),
                    image: "img".into(),
                    pid: None,
                    cgroup_path: None,
                    cgroup_id: None,
                    state: podscope_runtime::ContainerState::Running,
                })
                .collect(),
        }
    }

    fn sel(
        pod: Option<&str>,
        ns: Option<&str>,
        all: bool,
        l: Option<&str>,
        c: Option<&str>,
    ) -> PodSelection {
        PodSelection::from_flags(&PodFlags {
            pod: pod.map(Into::into),
            namespace: ns.map(Into::into),
            all_namespaces: all,
            selector: l.map(Into::into),
            container: c.map(Into::into),
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn kubectl_like_selection() {
        let pods = vec![
            pod("shop", "web-0", &[("app", "web")], &["nginx"]),
            pod("shop", "db-0", &[("app", "db")], &["postgres", "exporter"]),
            pod("default", "web-1", &[("app", "web")], &["nginx"]),
        ];
        let names = |s: &PodSelection| {
            s.select(&pods)
                .iter()
                .map(|p| p.qualified_name())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&sel(Some("web-*"), Some("shop"), false, None, None)),
            ["shop/web-0"]
        );
        assert_eq!(
            names(&sel(Some("web-*"), None, false, None, None)),
            ["default/web-1"]
        );
        assert_eq!(
            names(&sel(None, None, true, Some("app=web"), None)),
            ["shop/web-0", "default/web-1"]
        );
        let db = sel(None, Some("shop"), false, None, Some("exporter"));
        let chosen = db.select(&pods);
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].containers.len(), 1);
        assert_eq!(chosen[0].containers[0].name, "exporter");
    }

    #[test]
    fn no_match_lists_real_pods_and_close_names() {
        let pods = vec![
            pod("shop", "web-0", &[], &["nginx"]),
            pod("shop", "db-0", &[], &["pg"]),
        ];
        let d = Discovery {
            pods,
            source: Source::Cri,
            endpoint: None,
            runtime: None,
            warning: None,
            engines: Vec::new(),
        };
        let msg = sel(Some("wbe-0"), Some("shop"), false, None, None)
            .no_match(&d)
            .to_string();
        assert!(
            msg.contains("no pod wbe-0 in namespace shop on this node"),
            "{msg}"
        );
        assert!(msg.contains("did you mean shop/web-0"), "{msg}");
        assert!(msg.contains("shop/db-0"), "{msg}");
    }

    #[test]
    fn bad_selector_is_explained() {
        let err = PodSelection::from_flags(&PodFlags {
            selector: Some("app in (web".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad label selector"), "{err}");
    }
}
