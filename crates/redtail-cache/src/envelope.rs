//! The stored form of a cache entry: a small binary header, then the encoded value.
//!
//! ```text
//! byte 0      layout version (1)
//! byte 1      codec format byte
//! bytes 2..10 fresh until, ms since the Unix epoch (big endian)
//! bytes 10..14 how long the loader took, ms (for early refresh)
//! byte 14     number of tags n
//! n times     tag length (1 byte), tag, tag version (8 bytes)
//! rest        the value, as the codec wrote it
//! ```

use redtail_core::Bytes;

const LAYOUT: u8 = 1;
const FIXED: usize = 15;

/// The version of a tag: random bytes, replaced on every invalidation of the tag.
pub(crate) type TagVersion = [u8; 8];

/// A decoded entry header and its value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) format: u8,
    pub(crate) fresh_until_ms: u64,
    pub(crate) load_ms: u32,
    /// Tag names (UTF-8) and versions; names share the stored bytes.
    pub(crate) tags: Vec<(Bytes, TagVersion)>,
    pub(crate) value: Bytes,
}

impl Envelope {
    /// The stored bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let tag_bytes: usize = self.tags.iter().map(|(t, _)| 9 + t.len()).sum();
        let mut out = Vec::with_capacity(FIXED + tag_bytes + self.value.len());
        out.push(LAYOUT);
        out.push(self.format);
        out.extend_from_slice(&self.fresh_until_ms.to_be_bytes());
        out.extend_from_slice(&self.load_ms.to_be_bytes());
        // Tag count and lengths are checked by the options that carry them (at most 255 tags
        // of at most 255 bytes).
        out.push(u8::try_from(self.tags.len()).unwrap_or(u8::MAX));
        for (tag, version) in &self.tags {
            out.push(u8::try_from(tag.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(tag);
            out.extend_from_slice(version);
        }
        out.extend_from_slice(&self.value);
        out
    }

    /// Parses stored bytes; `None` for anything this layout did not write.
    pub(crate) fn decode(bytes: Bytes) -> Option<Envelope> {
        let header = bytes.get(..FIXED)?;
        if header[0] != LAYOUT {
            return None;
        }
        let fresh_until_ms = u64::from_be_bytes(header[2..10].try_into().ok()?);
        let load_ms = u32::from_be_bytes(header[10..14].try_into().ok()?);
        let mut at = FIXED;
        let mut tags = Vec::with_capacity(usize::from(header[14]));
        for _ in 0..header[14] {
            let len = usize::from(*bytes.get(at)?);
            std::str::from_utf8(bytes.get(at + 1..at + 1 + len)?).ok()?;
            let tag = bytes.slice(at + 1..at + 1 + len);
            let version = bytes.get(at + 1 + len..at + 9 + len)?.try_into().ok()?;
            tags.push((tag, version));
            at += 9 + len;
        }
        Some(Envelope { format: header[1], fresh_until_ms, load_ms, tags, value: bytes.slice(at..) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let e = Envelope {
            format: b'j',
            fresh_until_ms: 1_700_000_000_123,
            load_ms: 42,
            tags: vec![("api-response".into(), [1; 8]), ("ep3".into(), [2; 8])],
            value: Bytes::from_static(b"{\"a\":1}"),
        };
        assert_eq!(Envelope::decode(Bytes::from(e.encode())), Some(e));
    }

    #[test]
    fn every_truncation_and_garbage_is_refused_without_panic() {
        let e = Envelope {
            format: b'j',
            fresh_until_ms: 1,
            load_ms: 0,
            tags: vec![("t".into(), [9; 8])],
            value: Bytes::new(),
        };
        let bytes = e.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Envelope::decode(Bytes::copy_from_slice(&bytes[..cut])), None, "cut at {cut}");
        }
        for seed in 0..2000u32 {
            let garbage: Vec<u8> =
                (0..seed % 64).map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8).collect();
            let _ = Envelope::decode(Bytes::from(garbage));
        }
        assert_eq!(Envelope::decode(Bytes::from_static(b"{\"json\":true}")), None);
    }
}
