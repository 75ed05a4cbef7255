//! Generates the gRPC code from `proto/` with protox (pure Rust: no system `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/chat.proto", "proto/raft.proto", "proto/admin.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("telegraft_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Small per-call buffers: see `SmallBufferCodec` in src/proto.rs.
    tonic_prost_build::configure()
        .codec_path("crate::proto::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
