//! The session data of the original media-server design, as an example data type.

use serde::{Deserialize, Serialize};

/// What the original design kept in a session: who, with which role, and how they logged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct UserSession {
    /// The user's id.
    pub user_id: String,
    /// `user` or `admin`.
    pub role: String,
    /// The user's email, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's Plex account id, when linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_id: Option<String>,
    /// When the user logged in, in Unix milliseconds.
    pub created_at: u64,
    /// Whether the user asked to be remembered.
    pub remember_me: bool,
}

impl UserSession {
    /// A session for `user_id` with `role`, created now.
    pub fn new(user_id: impl Into<String>, role: impl Into<String>) -> Self {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        UserSession {
            user_id: user_id.into(),
            role: role.into(),
            email: None,
            plex_id: None,
            created_at,
            remember_me: false,
        }
    }
}
