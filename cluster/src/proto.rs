//! Generated gRPC code for the three services one replica port serves.

pub mod chat {
    tonic::include_proto!("telegraft.chat.v1");
}

pub mod raft {
    tonic::include_proto!("telegraft.raft.v1");
}

pub mod admin {
    tonic::include_proto!("telegraft.admin.v1");
}

/// The encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/telegraft_descriptor.bin"));
