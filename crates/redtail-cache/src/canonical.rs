//! Canonical keys: one key for requests that differ only in the order of their parameters.

use std::fmt::Write as _;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// Keys longer than this are replaced by a digest.
const MAX_KEY: usize = 200;

/// A cache key for a request: `prefix`, `:`, then the parameters as canonical JSON (object
/// fields sorted at every depth), so equal requests always share a key whatever their field
/// order; past 200 bytes the parameters are replaced by `#` and their SHA-256.
///
/// ```
/// use redtail_cache::canonical_key;
/// use serde_json::json;
///
/// let a = canonical_key("api:/search", &json!({"q": "dune", "page": 2}));
/// let b = canonical_key("api:/search", &json!({"page": 2, "q": "dune"}));
/// assert_eq!(a, b);
/// assert_eq!(a, r#"api:/search:{"page":2,"q":"dune"}"#);
/// ```
pub fn canonical_key(prefix: &str, params: &Json) -> String {
    let mut canonical = String::new();
    write_canonical(params, &mut canonical);
    let key = format!("{prefix}:{canonical}");
    if key.len() <= MAX_KEY {
        return key;
    }
    format!("{prefix}:#{}", URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_field_order_does_not_change_the_key() {
        let a = canonical_key("/x", &json!({"b": {"y": 1, "x": [ {"d": 1, "c": 2} ]}, "a": null}));
        let b = canonical_key("/x", &json!({"a": null, "b": {"x": [ {"c": 2, "d": 1} ], "y": 1}}));
        assert_eq!(a, b);
        assert_ne!(a, canonical_key("/y", &json!({"a": null})));
    }

    #[test]
    fn long_keys_are_hashed_and_stay_distinct() {
        let long = |n: u32| canonical_key("/search", &json!({"q": "x".repeat(300), "n": n}));
        assert!(long(1).len() < 100);
        assert_ne!(long(1), long(2));
        assert_eq!(long(1), long(1));
    }

    #[test]
    fn strings_that_look_alike_do_not_collide() {
        assert_ne!(canonical_key("/a", &json!({"k": "1"})), canonical_key("/a", &json!({"k": 1})));
        assert_ne!(canonical_key("/a", &json!(["a,b"])), canonical_key("/a", &json!(["a", "b"])));
    }
}
