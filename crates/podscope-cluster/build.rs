//! Generates the agent <-> hub gRPC code from proto/cluster.proto.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    println!("cargo:rerun-if-changed=proto/events.proto");
    // Each probe's event data is boxed: inline, the largest would make every
    // record (most are small open or tcp events) about 800 bytes in the
    // agent's queues and the hub's buffers.
    if let Err(e) = tonic_prost_build::configure()
        .boxed(".podscope.cluster.v1.Event.data")
        .compile_protos(&["proto/cluster.proto"], &["proto"])
    {
        panic!("generating the cluster gRPC code from proto/cluster.proto failed: {e}\n(protoc comes from the Debian package protobuf-compiler: apt-get install protobuf-compiler)");
    }
}
