//! podscope cluster mode: node agents run `podscope trace` for the hub's
//! sessions and forward the events; the hub keeps the registry of agents and
//! pods, manages sessions, and serves REST (axum) and the agents' gRPC link on
//! one port, plain or TLS; the CLI talks to the hub over REST, directly or
//! (`kubectl podscope`) through the Kubernetes API server's service proxy.
//! See docs/cluster.md.

pub mod agent;
mod agent_api;
pub mod api;
pub mod auth;
pub mod client;
mod grpc_client;
pub mod http;
pub mod hub;
pub mod kubeproxy;
pub mod records;
pub mod tls;
pub mod wire;

/// The agent <-> hub link's version (`Hello.link_version`): 2 since events
/// travel typed (proto/events.proto) instead of as JSON lines.
pub const LINK_VERSION: u32 = 2;

/// The generated agent <-> hub gRPC code (proto/cluster.proto, proto/events.proto).
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("podscope.cluster.v1");
}
