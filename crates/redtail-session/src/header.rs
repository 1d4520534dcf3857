//! A stored session's format, read and written here only, beside `lua/header.lua` (which reads
//! it in the scripts): a JSON header, a newline, then the data as the codec wrote it.
//!
//! The header is small on purpose (it is stored once per session): `u` the user id, `c` when the
//! session was created (Unix seconds, the server's clock), then as seconds after `c`: `s` last
//! seen, `e` expiry, `a` the absolute deadline (absent: none); `r` is 1 for "remember me" (absent
//! otherwise) and `v` the device (optional). `lua/extend.lua` rewrites `s` and `e`.

use serde::{Deserialize, Serialize};

use crate::Device;

/// A session's header, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Header {
    #[serde(rename = "u")]
    pub(crate) user_id: String,
    #[serde(rename = "c")]
    pub(crate) created: i64,
    #[serde(rename = "s")]
    pub(crate) last_seen: i64,
    #[serde(rename = "a", default)]
    pub(crate) absolute: Option<i64>,
    #[serde(rename = "e")]
    pub(crate) expires: i64,
    #[serde(rename = "r", default)]
    pub(crate) remember_me: Option<u8>,
    #[serde(rename = "v", default)]
    pub(crate) device: Option<Device>,
}

/// What a new session's header holds after its creation time, as written (the fields of
/// [`Header`] after `c`, in the same order).
#[derive(Debug, Serialize)]
pub(crate) struct Times<'a> {
    #[serde(rename = "s")]
    pub(crate) last_seen: i64,
    #[serde(rename = "a", skip_serializing_if = "Option::is_none")]
    pub(crate) absolute: Option<i64>,
    #[serde(rename = "e")]
    pub(crate) expires: i64,
    #[serde(rename = "r", skip_serializing_if = "Option::is_none")]
    pub(crate) remember_me: Option<u8>,
    #[serde(rename = "v", skip_serializing_if = "Option::is_none")]
    pub(crate) device: Option<&'a Device>,
}

/// A new session's stored value in two parts, for `lua/create.lua` to put the server's time
/// (the creation time) between: `{"u":<user>,"c":` and `,"s":0,...}` with a newline and `data`.
pub(crate) fn around_created(user_id: &str, rest: &Times<'_>, data: &[u8]) -> serde_json::Result<(String, Vec<u8>)> {
    let before = format!("{{\"u\":{},\"c\":", serde_json::to_string(user_id)?);
    let rest = serde_json::to_vec(rest)?;
    let mut after = Vec::with_capacity(rest.len() + 1 + data.len());
    // `rest` is an object with at least `s` and `e`: its fields continue the header's.
    after.push(b',');
    after.extend_from_slice(&rest[1..]);
    after.push(b'\n');
    after.extend_from_slice(data);
    Ok((before, after))
}

/// Splits a stored value into its header and its data.
pub(crate) fn split(value: &[u8]) -> Result<(Header, &[u8]), String> {
    let newline = value.iter().position(|&b| b == b'\n').ok_or("no header")?;
    let header = serde_json::from_slice(&value[..newline]).map_err(|e| format!("header: {e}"))?;
    Ok((header, &value[newline + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_written_in_two_parts_reads_back_whole() {
        let device = Device { user_agent: Some("curl".to_owned()), ip: None };
        let rest = Times {
            last_seen: 0,
            absolute: Some(604_800),
            expires: 86_400,
            remember_me: Some(1),
            device: Some(&device),
        };
        let (before, after) =
            around_created("ada \"x\"", &rest, b"{\"role\":\"admin\"}").unwrap_or_else(|e| panic!("{e}"));
        // The server puts its time between the parts, as lua/create.lua does.
        let mut stored = before.into_bytes();
        stored.extend_from_slice(b"1764670000");
        stored.extend_from_slice(&after);
        let (header, data) = split(&stored).unwrap_or_else(|e| panic!("{e}"));
        let expected = Header {
            user_id: "ada \"x\"".to_owned(),
            created: 1_764_670_000,
            last_seen: 0,
            absolute: Some(604_800),
            expires: 86_400,
            remember_me: Some(1),
            device: Some(device.clone()),
        };
        assert_eq!(header, expected);
        assert_eq!(data, b"{\"role\":\"admin\"}");
        let plain = Times { last_seen: 0, absolute: None, expires: 60, remember_me: None, device: None };
        let (before, after) = around_created("u", &plain, b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{before}7{}", String::from_utf8_lossy(&after)), "{\"u\":\"u\",\"c\":7,\"s\":0,\"e\":60}\n");
        assert!(split(b"no newline").is_err() && split(b"[1]\ndata").is_err());
    }
}
