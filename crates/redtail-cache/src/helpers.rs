//! The original design's helpers: service status and API responses, with canonical keys.

use std::{fmt::Write as _, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use redtail_core::Codec;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::{Cache, EntryOptions, Result};

/// The tag of every service status entry.
pub const SERVICE_STATUS_TAG: &str = "service-status";
/// The tag of every API response entry (each also carries its endpoint as a tag).
pub const API_RESPONSE_TAG: &str = "api-response";
/// Keys longer than this are replaced by a digest.
const MAX_KEY: usize = 200;

/// Options of service status entries: 60 s, tagged [`SERVICE_STATUS_TAG`].
pub fn service_status_options() -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(60)).tag(SERVICE_STATUS_TAG)
}

/// Options of API response entries: 300 s, tagged [`API_RESPONSE_TAG`] and `endpoint`.
pub fn api_response_options(endpoint: &str) -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(300)).tag(API_RESPONSE_TAG).tag(endpoint)
}

/// The key of a service's status.
pub fn service_status_key(service: &str) -> String {
    format!("service-status:{service}")
}

/// The key of an API response: the endpoint and the parameters as canonical JSON (object
/// fields sorted at every depth), so equal requests always share a key whatever their field
/// order; past 200 bytes the parameters are replaced by their SHA-256.
///
/// ```
/// use redtail_cache::api_response_key;
/// use serde_json::json;
///
/// let a = api_response_key("/search", &json!({"q": "dune", "page": 2}));
/// let b = api_response_key("/search", &json!({"page": 2, "q": "dune"}));
/// assert_eq!(a, b);
/// assert_eq!(a, r#"api:/search:{"page":2,"q":"dune"}"#);
/// ```
pub fn api_response_key(endpoint: &str, params: &Json) -> String {
    let mut canonical = String::new();
    write_canonical(params, &mut canonical);
    let key = format!("api:{endpoint}:{canonical}");
    if key.len() <= MAX_KEY {
        return key;
    }
    format!("api:{endpoint}:#{}", URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Json::String(name.clone()));
                write_canonical(value, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

impl<C: Codec> Cache<C> {
    /// The cached status of `service`, if fresh.
    pub async fn service_status<T: DeserializeOwned>(&self, service: &str) -> Option<T> {
        self.get_with_tags(&service_status_key(service), &[SERVICE_STATUS_TAG]).await
    }

    /// Caches the status of `service` for 60 s.
    pub async fn set_service_status<T: Serialize>(&self, service: &str, status: &T) -> Result<()> {
        self.set(&service_status_key(service), status, &service_status_options()).await
    }

    /// The cached response of `endpoint` for `params`, if fresh: one round trip.
    pub async fn api_response<T: DeserializeOwned>(&self, endpoint: &str, params: &Json) -> Option<T> {
        self.get_with_tags(&api_response_key(endpoint, params), &[API_RESPONSE_TAG, endpoint]).await
    }

    /// Caches the response of `endpoint` for `params` for 300 s.
    pub async fn set_api_response<T: Serialize>(&self, endpoint: &str, params: &Json, response: &T) -> Result<()> {
        self.set(&api_response_key(endpoint, params), response, &api_response_options(endpoint)).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_field_order_does_not_change_the_key() {
        let a = api_response_key("/x", &json!({"b": {"y": 1, "x": [ {"d": 1, "c": 2} ]}, "a": null}));
        let b = api_response_key("/x", &json!({"a": null, "b": {"x": [ {"c": 2, "d": 1} ], "y": 1}}));
        assert_eq!(a, b);
        assert_ne!(a, api_response_key("/y", &json!({"a": null})));
    }

    #[test]
    fn long_keys_are_hashed_and_stay_distinct() {
        let long = |n: u32| api_response_key("/search", &json!({"q": "x".repeat(300), "n": n}));
        assert!(long(1).len() < 100);
        assert_ne!(long(1), long(2));
        assert_eq!(long(1), long(1));
    }

    #[test]
    fn strings_that_look_alike_do_not_collide() {
        assert_ne!(api_response_key("/a", &json!({"k": "1"})), api_response_key("/a", &json!({"k": 1})));
        assert_ne!(api_response_key("/a", &json!(["a,b"])), api_response_key("/a", &json!(["a", "b"])));
    }
}
