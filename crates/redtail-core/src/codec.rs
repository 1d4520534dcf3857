//! `Codec`: how typed values become bytes in Redis.

use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// Turns values into bytes and back.
///
/// Generic methods keep the hot path free of dynamic dispatch; crates take a codec as a type
/// parameter that defaults to [`JsonCodec`].
pub trait Codec: Send + Sync + Clone + std::fmt::Debug + 'static {
    /// One byte naming the format, stored beside values where the format may change over time,
    /// so that values of another format are recognised rather than misread. Distinct codecs need
    /// distinct bytes; `b'j'` is JSON.
    fn format(&self) -> u8;
    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>>;
    /// Decodes bytes written by [`Codec::encode`]; arbitrary bytes give an error, never a panic.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T>;
}

/// JSON through `serde_json`, readable with `redis-cli`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn format(&self) -> u8 {
        b'j'
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| Error::Codec { action: "encode", source: e.into() })
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::Codec { action: "decode", source: e.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let out: Result<Vec<u32>> = JsonCodec.decode(&[0xff, 0x00, b'{']);
        assert!(matches!(out, Err(Error::Codec { action: "decode", .. })));
    }

    #[test]
    fn values_round_trip() -> Result<()> {
        let bytes = JsonCodec.encode(&vec![1u32, 2, 3])?;
        assert_eq!(JsonCodec.decode::<Vec<u32>>(&bytes)?, vec![1, 2, 3]);
        Ok(())
    }
}
