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

/// [`PodLabels`] plus what a served HTTP request was (bounded: no path).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpServerLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Node name.
    pub node: String,
    /// Request method (`GET`; `_OTHER` for methods outside RFC 9110 and PATCH).
    pub method: String,
    /// `2xx` .. `5xx`, or `none` when no response came.
    pub status_class: String,
}

/// [`HttpServerLabels`] plus the pod the request went to: the edges of a
/// service map (empty peer labels: the server is not a known pod).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpClientLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Node name.
    pub node: String,
    /// Request method.
    pub method: String,
    /// `2xx` .. `5xx`, or `none` when no response came.
    pub status_class: String,
    /// The server pod's namespace.
    pub peer_namespace: String,
    /// The server pod's name.
    pub peer_pod: String,
}

/// [`PodLabels`] plus a DNS response code.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Node name.
    pub node: String,
    /// `NOERROR`, `NXDOMAIN`, ..., or `none` when no response came.
    pub rcode: String,
}

/// What a dropped packet's series is keyed by: the pod (no container: a
/// packet without a socket has none), the node, and the kernel's drop reason.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Node name.
    pub node: String,
    /// The drop reason (`NO_SOCKET`, `NETFILTER_DROP`, ..., `unknown`).
    pub reason: String,
}

/// [`PodLabels`] plus what a gRPC call was: service, method and status
/// (code names: `OK`, `NOT_FOUND`, ...; `none` when the call did not finish).
/// `peer_namespace`/`peer_pod` are set on client calls only.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Node name.
    pub node: String,
    /// Fully qualified service (`helloworld.Greeter`), `_OTHER` past the cap.
    pub service: String,
    /// Method (`SayHello`), `_OTHER` past the cap.
    pub method: String,
    /// Status code name.
    pub grpc_status: String,
    /// The server's pod namespace (client calls).
    pub peer_namespace: String,
    /// The server's pod name (client calls).
    pub peer_pod: String,
}
