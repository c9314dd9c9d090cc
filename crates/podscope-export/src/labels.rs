//! The label sets of podscope's metric families.

use prometheus_client::encoding::EncodeLabelSet;

/// Who a series belongs to. Empty `namespace`/`pod`/`container` mean a process
/// outside any pod (host processes, traced with `--all`); Prometheus shows
/// empty labels as absent.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name (`POD` for the sandbox).
    pub container: String,
    /// Node name.
    pub node: String,
}

/// [`PodLabels`] plus the disk and the operation of a block I/O.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Node name.
    pub node: String,
    /// Disk name (`vda`).
    pub disk: String,
    /// `read`, `write`, `flush`, `discard`, ...
    pub op: String,
}

impl DiskLabels {
    /// The pod part of the labels.
    pub fn pod_labels(&self) -> PodLabels {
        PodLabels {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
            node: self.node.clone(),
        }
    }
}

/// One probe (`tcp`, `open`, ...), for podscope's own metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// Probe name.
    pub probe: String,
}
