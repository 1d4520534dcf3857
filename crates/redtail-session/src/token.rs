//! Session tokens: 256 random bits plus a routing tag, and the digest that stands for them in Redis.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const SECRET_BYTES: usize = 32;
const TAG_BYTES: usize = 8;
/// Length of a token's text: base64url of 40 bytes, without padding.
pub const TOKEN_LEN: usize = 54;

/// A session token, as given to the client (in a cookie or a header).
///
/// It is 32 bytes from the OS random generator followed by an 8-byte tag derived from the user id,
/// encoded as 54 URL-safe characters. Redis only ever sees a SHA-256 digest of it, so a dump of
/// Redis yields no usable token; the tag puts all of one user's keys in one cluster slot.
/// `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// A new token for `user_id`, as [`SessionStore::create`](crate::SessionStore::create)
    /// issues them: 256 bits from the OS generator and the user's routing tag. A token alone
    /// opens nothing; only `create` stores a session for one.
    pub fn generate(user_id: &str) -> Result<Token> {
        Self::with_tag(user_tag(user_id))
    }

    /// A new token with the same routing tag as this one, for rotation.
    pub(crate) fn sibling(&self) -> Result<Token> {
        // Every token was checked when it was made or parsed.
        let bytes = decode(&self.0).unwrap_or([0; SECRET_BYTES + TAG_BYTES]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&bytes[SECRET_BYTES..]);
        Self::with_tag(tag)
    }

    fn with_tag(tag: [u8; TAG_BYTES]) -> Result<Token> {
        let mut bytes = [0u8; SECRET_BYTES + TAG_BYTES];
        getrandom::fill(&mut bytes[..SECRET_BYTES]).map_err(|e| Error::Random(e.to_string()))?;
        bytes[SECRET_BYTES..].copy_from_slice(&tag);
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Checks the shape of a token from a client, without any Redis round trip.
    /// `None` for anything that cannot be a token: wrong length, alphabet or padding.
    pub fn parse(text: &str) -> Option<Token> {
        decode(text).map(|_| Token(text.to_owned()))
    }

    /// The id the token's session is stored under, as [`Session::id`](crate::Session::id)
    /// shows it: a SHA-256 digest, safe to log.
    pub fn session_id(&self) -> String {
        self.locate().id().to_owned()
    }

    /// The token's text, for the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the token's session lives.
    pub(crate) fn locate(&self) -> Location {
        // Every token was checked when it was made or parsed; a default location finds nothing.
        locate(&self.0).unwrap_or(Location { tag: [b'%'; TAG_TEXT], id: [b'%'; ID_TEXT] })
    }
}

/// Length of a routing tag's text: base64url of 8 bytes.
const TAG_TEXT: usize = 11;
/// Length of a session id: base64url of 12 bytes.
const ID_TEXT: usize = 16;

/// Where a token's session lives: its routing tag and its id (a digest of the whole token), as
/// they appear in keys. Held on the stack: a read computes one for every request.
#[derive(Clone, Copy)]
pub(crate) struct Location {
    tag: [u8; TAG_TEXT],
    id: [u8; ID_TEXT],
}

impl Location {
    /// The routing tag's text.
    pub(crate) fn tag(&self) -> &[u8] {
        &self.tag
    }

    /// The session id's text.
    pub(crate) fn id(&self) -> &str {
        // base64url text is ASCII.
        std::str::from_utf8(&self.id).unwrap_or_default()
    }
}

/// The bytes of a token's text; `None` for anything that cannot be a token: wrong length,
/// alphabet or padding.
fn decode(text: &str) -> Option<[u8; SECRET_BYTES + TAG_BYTES]> {
    if text.len() != TOKEN_LEN || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    // Rejects non-canonical trailing bits, so one token has exactly one spelling. (The decoder
    // wants room for the 42 bytes 56 characters could hold.)
    let mut bytes = [0u8; SECRET_BYTES + TAG_BYTES + 2];
    if URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok()? != SECRET_BYTES + TAG_BYTES {
        return None;
    }
    let mut token = [0u8; SECRET_BYTES + TAG_BYTES];
    token.copy_from_slice(&bytes[..SECRET_BYTES + TAG_BYTES]);
    Some(token)
}

/// Checks the shape of a token's text (as [`Token::parse`]) and finds where its session lives.
pub(crate) fn locate(text: &str) -> Option<Location> {
    let bytes = decode(text)?;
    let mut tag = [0; TAG_TEXT];
    URL_SAFE_NO_PAD.encode_slice(&bytes[SECRET_BYTES..], &mut tag).ok()?;
    Some(Location { tag, id: id_of(text.as_bytes()) })
}

/// Where the session `id` of `user_id` lives (as [`Session::id`](crate::Session) shows it);
/// `None` when `id` cannot be a session id.
pub(crate) fn locate_by_user(user_id: &str, id: &str) -> Option<Location> {
    let id: [u8; ID_TEXT] = id.as_bytes().try_into().ok()?;
    if !id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
        return None;
    }
    let mut tag = [0; TAG_TEXT];
    URL_SAFE_NO_PAD.encode_slice(user_tag(user_id), &mut tag).ok()?;
    Some(Location { tag, id })
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The routing tag of a user: the first 8 bytes of SHA-256 of the user id.
pub(crate) fn user_tag(user_id: &str) -> [u8; TAG_BYTES] {
    let hash = Sha256::digest(format!("redtail-session-user:{user_id}").as_bytes());
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&hash[..TAG_BYTES]);
    tag
}

/// The routing tag of a user as it appears in keys.
pub(crate) fn user_tag_text(user_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(user_tag(user_id))
}

/// The id a session is stored under: 96 bits of SHA-256 of the token, base64url (16 characters).
/// 96 bits keep ids unique among any number of sessions a Redis can hold, and finding a token
/// for an id is a preimage search over 2^256 tokens.
pub(crate) fn id_of(token: &[u8]) -> [u8; ID_TEXT] {
    let mut id = [b'%'; ID_TEXT];
    // 12 bytes always fit in 16 characters.
    let _ = URL_SAFE_NO_PAD.encode_slice(&Sha256::digest(token)[..12], &mut id);
    id
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_parse_back_and_carry_their_user_tag() -> Result<()> {
        let token = Token::generate("user-1")?;
        assert_eq!(token.as_str().len(), TOKEN_LEN);
        assert_eq!(Token::parse(token.as_str()), Some(token.clone()));
        assert_eq!(token.locate().tag(), user_tag_text("user-1").as_bytes());
        assert!(!format!("{token:?}").contains(token.as_str()));
        Ok(())
    }

    #[test]
    fn malformed_tokens_are_refused() -> Result<()> {
        let good = Token::generate("u")?;
        let mut wrong_alphabet = good.as_str().to_owned();
        wrong_alphabet.replace_range(0..1, "+");
        for bad in ["", "abc", &good.as_str()[1..], &format!("{good}A"), &wrong_alphabet, &"é".repeat(27)] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn a_million_tokens_are_unique() -> Result<()> {
        let mut seen = HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            assert!(seen.insert(Token::generate("u")?.0), "duplicate token");
        }
        Ok(())
    }
}
