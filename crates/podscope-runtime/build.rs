//! Generates the CRI runtime.v1 client from proto/api.proto.

fn main() {
    println!("cargo:rerun-if-changed=proto/api.proto");
    if let Err(e) = tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/api.proto"], &["proto"])
    {
        panic!("generating the CRI client from proto/api.proto failed: {e}\n(protoc comes from the Debian package protobuf-compiler: apt-get install protobuf-compiler)");
    }
}
