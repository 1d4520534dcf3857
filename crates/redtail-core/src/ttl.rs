//! `MAX_TTL`: the longest time any redtail crate asks Redis to keep something, checked once here.

use std::time::Duration;

/// The longest expiry, period, delay or retention a redtail crate accepts: ten years. Each
/// becomes an expiry or a score in Redis, which must stay a number Redis can keep, or a deadline
/// in this process, which must not overflow; longer ones are refused before anything is sent.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Refuses `value` when it is longer than [`MAX_TTL`], with a message naming `setting`.
///
/// ```
/// use std::time::Duration;
/// assert!(redtail_core::check_ttl("a delay", Duration::from_secs(60)).is_ok());
/// let refused = redtail_core::check_ttl("a delay", Duration::MAX);
/// assert!(refused.is_err_and(|message| message.starts_with("a delay must be at most 10 years")));
/// ```
pub fn check_ttl(setting: &str, value: Duration) -> Result<(), String> {
    if value > MAX_TTL {
        return Err(format!("{setting} must be at most 10 years, got {value:?}"));
    }
    Ok(())
}
