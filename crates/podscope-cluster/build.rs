//! Generates the agent <-> hub gRPC code from proto/cluster.proto.

fn main() {
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    println!("cargo:rerun-if-changed=proto/events.proto");
    if let Err(e) =
        tonic_prost_build::configure().compile_protos(&["proto/cluster.proto"], &["proto"])
    {
        panic!("generating the cluster gRPC code from proto/cluster.proto failed: {e}\n(protoc comes from the Debian package protobuf-compiler: apt-get install protobuf-compiler)");
    }
}
