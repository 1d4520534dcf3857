//! Redis URLs: parsing any text is a configuration or an error, and a password given in the
//! text never appears in the error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use redtail_connection::Config;

fuzz_target!(|text: &str| {
    let _ = Config::from_url(text);
    for scheme in ["redis://", "rediss://", "redis-cluster://", "redis-sentinel://", "redis+unix://", ""] {
        let url = format!("{scheme}user:s3cr3t-pw@{text}");
        if let Err(e) = Config::from_url(&url) {
            assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
        }
    }
});
