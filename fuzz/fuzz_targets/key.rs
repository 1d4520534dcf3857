//! Key escaping: any bytes as a hash tag and a key part stay in their place (one pair of braces,
//! no glob or separator characters), the key's slot is the tag's, and escaping reverses exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use redtail_core::{Namespace, hash_tag, unescape};

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (tag, part) = input;
    let Ok(ns) = Namespace::new("rt:fuzz") else { return };
    let tagged = ns.tagged(&tag);
    let key = tagged.key([&part]);
    let text = key.as_bytes();
    let rest = &text["rt:fuzz:".len()..];
    assert_eq!(text.iter().filter(|&&b| b == b'{').count(), 1);
    assert_eq!(text.iter().filter(|&&b| b == b'}').count(), 1);
    assert!(!rest.iter().any(|b| b"*?[] \r\n\t".contains(b)));
    assert_eq!(key.slot(), tagged.slot());
    assert_eq!(unescape(hash_tag(text)), Some(tag));
    assert_eq!(unescape(text.rsplit(|&b| b == b':').next().unwrap_or_default()), Some(part));
});
