//! One 64-bit hash for everything the state machine persists a hash of: SipHash-2-4 with a
//! fixed key per use.
//!
//! Why not the standard library's `DefaultHasher`: its algorithm may change between Rust
//! releases, and these hashes are stored in the database and compared across replicas, so
//! they must never change. SipHash-2-4 is specified (Aumasson and Bernstein, 2012); the
//! `siphasher` crate implements it, and the tests below pin it to the paper's test vectors.
//!
//! The keys are not secrets: they only separate the uses (a command hash can never be
//! mistaken for a row hash).

/// Key for [`super::Command`] hashes (exactly-once: the command a write id carried).
pub(crate) const COMMAND_KEY: (u64, u64) = (0x7465_6c65_6772_6166, 0x636f_6d6d_616e_6473);
/// Key for row hashes in the running state digest.
pub(crate) const ROW_KEY: (u64, u64) = (0x7465_6c65_6772_6166, 0x7374_6174_6572_6f77);

/// SipHash-2-4 of `data` under `key`.
pub(crate) fn siphash24(key: (u64, u64), data: &[u8]) -> u64 {
    siphasher::sip::SipHasher24::new_with_keys(key.0, key.1).hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key 00 01 .. 0f of the SipHash paper's test vectors.
    const PAPER_KEY: (u64, u64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    #[test]
    fn matches_the_papers_test_vectors() {
        let message: Vec<u8> = (0u8..15).collect();
        // Appendix A of the paper: the 15-byte message 00 01 .. 0e.
        assert_eq!(siphash24(PAPER_KEY, &message), 0xa129_ca61_49be_45e5);
        // The first line of the reference implementation's vectors.h: the empty message.
        assert_eq!(siphash24(PAPER_KEY, &[]), 0x726f_db47_dd0e_0e31);
    }

    /// The standard library's (deprecated, but frozen) `SipHasher` is SipHash-2-4 too.
    #[test]
    #[allow(deprecated)]
    fn agrees_with_the_standard_librarys_siphasher_at_every_length() {
        use std::hash::Hasher;
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            let mut std = std::hash::SipHasher::new_with_keys(COMMAND_KEY.0, COMMAND_KEY.1);
            std.write(&data[..len]);
            assert_eq!(siphash24(COMMAND_KEY, &data[..len]), std.finish(), "{len}");
        }
    }
}
