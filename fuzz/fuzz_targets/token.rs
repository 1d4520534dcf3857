//! Session tokens: only text of a token's shape parses, and a parsed token is that text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use redtail_session::Token;

fuzz_target!(|text: &str| {
    if let Some(token) = Token::parse(text) {
        assert_eq!(token.as_str(), text);
        assert_eq!(token.session_id(), Token::parse(text).map(|t| t.session_id()).unwrap_or_default());
    }
});
