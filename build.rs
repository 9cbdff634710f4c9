//! Compiles the protocol definitions in `proto/` (the CRI, imaged's own service, containerd's snapshot API)
//! into Rust.
//!
//! `protox` parses the `.proto` files in pure Rust, so building imaged needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/runtime/v1/api.proto",
        "proto/imaged/v1/imaged.proto",
        "proto/containerd/types/mount.proto",
        "proto/containerd/services/snapshots/v1/snapshots.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // AuthConfig carries passwords and tokens (`debug_redact` upstream, which prost ignores): its Debug
        // is written by hand in src/lib.rs and redacts them.
        .skip_debug(["runtime.v1.AuthConfig"])
        // Written by hand (src/wire.rs) so the server can send a cached, pre-encoded list, whole or in slices;
        // same wire format.
        .extern_path(".runtime.v1.ListImagesResponse", "crate::wire::ListImagesResponse")
        .extern_path(".runtime.v1.StreamImagesResponse", "crate::wire::StreamImagesResponse")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
