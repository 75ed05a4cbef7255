//! Generated gRPC code for the three services one replica port serves, and what every
//! caller shares: timestamp conversions and the escaping of untrusted text.
//!
//! `chat` and `admin` are public (clients, the load generator); `raft`, the peer transport,
//! is only the replica's own business.

pub mod chat {
    tonic::include_proto!("telegraft.chat.v1");
}

pub(crate) mod raft {
    tonic::include_proto!("telegraft.raft.v1");
}

pub mod admin {
    tonic::include_proto!("telegraft.admin.v1");
}

/// The largest encoded chat request a replica accepts, and a client or a forwarding replica
/// sends: a `SendMessage` holds at most 64 KiB of content and a few ids, so 1 MiB is ample,
/// and a request never costs a replica more than this to decode. (A Raft entry holds one
/// such request's command, so a peer batch limit must allow at least this per entry.)
pub const MAX_CHAT_REQUEST_BYTES: usize = 1 << 20;

/// The largest encoded chat response a replica sends and a client accepts. A page of
/// messages stops after about 4 MiB of content plus one message (`GetMessagesRequest.limit`
/// and the page byte budget); the rest is headroom for `GetChatUsers` (about 200,000
/// members of 64-byte names).
pub const MAX_CHAT_RESPONSE_BYTES: usize = 16 << 20;

/// The buffer every gRPC call starts with to decode its request and to encode its answer
/// (each grows as a larger message needs). tonic's default is 8 KiB each way, allocated
/// for every call as soon as its stream is read, admitted or not: under overload a leader
/// holds up to 16 connections x 1,024 streams of them (about 128 MiB of mostly empty
/// buffers for requests of a few hundred bytes), and their number follows the load, not
/// `--max-inflight`. 512 bytes holds a `SendMessage` with a short text and any small
/// answer; a larger message grows its buffer once or twice.
pub const CALL_BUFFER_BYTES: usize = 512;

/// The codec of every generated client and server (`build.rs`): prost, with
/// [`CALL_BUFFER_BYTES`] buffers instead of tonic's 8 KiB. Streams (snapshot chunks) still
/// send in batches of up to tonic's default 32 KiB.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(std::marker::PhantomData)
    }
}

impl<T, U> SmallBufferCodec<T, U> {
    fn settings() -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(CALL_BUFFER_BYTES, 32 * 1024)
    }
}

impl<T, U> tonic::codec::Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(Self::settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(Self::settings())
    }
}

/// Untrusted text from the API (names, message content) on a terminal: which characters a
/// name refuses, and the escaping every printer uses (the CLI, the load generator).
pub mod text {
    pub use crate::chat::{escape_hidden, is_hidden};
}

/// The encoded descriptors of every service, for gRPC server reflection.
pub(crate) const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/telegraft_descriptor.bin"));

impl From<crate::raft::Role> for admin::RoleKind {
    fn from(role: crate::raft::Role) -> Self {
        match role {
            crate::raft::Role::Follower => admin::RoleKind::Follower,
            crate::raft::Role::Candidate => admin::RoleKind::Candidate,
            crate::raft::Role::Leader => admin::RoleKind::Leader,
        }
    }
}

/// Conversions between protobuf `Timestamp`s, microseconds since the Unix epoch (what the
/// state machine stores and the load generator records) and `SystemTime`: one definition for
/// the server, the CLI and the load generator.
pub mod time {
    use std::time::{SystemTime, UNIX_EPOCH};

    use prost_types::Timestamp;

    /// Microseconds since the epoch; saturates rather than overflowing on absurd input.
    pub fn micros(ts: &Timestamp) -> i64 {
        ts.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(ts.nanos / 1000))
    }

    /// The timestamp `us` microseconds after the epoch (negative is before it).
    pub fn from_micros(us: i64) -> Timestamp {
        Timestamp {
            seconds: us.div_euclid(1_000_000),
            nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
        }
    }

    /// Microseconds since the epoch of a wall-clock time (0 before the epoch).
    pub fn unix_micros(t: SystemTime) -> i64 {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// A wall-clock time as a timestamp.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        from_micros(unix_micros(t))
    }

    /// Now, as a timestamp.
    pub fn now() -> Timestamp {
        from_system_time(SystemTime::now())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn micros_round_trip_on_both_sides_of_the_epoch() {
            for us in [
                0,
                1,
                999_999,
                1_000_000,
                1_700_000_000_123_456,
                -1,
                -1_500_000,
            ] {
                assert_eq!(micros(&from_micros(us)), us, "{us}");
            }
            assert_eq!(
                micros(&Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                }),
                i64::MAX
            );
        }
    }
}
