//! Compiles the pinned OTLP `.proto` files (see `proto/README.md`) with a vendored
//! `protoc`, so a fresh machine needs no system protobuf compiler.

// `set_var` is unsafe from edition 2024: build scripts are single-threaded.
#[allow(unsafe_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; PROTOC is read by prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .bytes(".")
        .compile_protos(
            &["proto/opentelemetry/proto/collector/trace/v1/trace_service.proto"],
            &["proto"],
        )?;
    Ok(())
}
