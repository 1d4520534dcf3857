//! What the fuzz targets share: one Tokio runtime per process for the targets that drive async
//! APIs, built on first use so each input costs no runtime start-up, and the session data they
//! store.

use std::sync::OnceLock;

/// The process's runtime for driving a target's async calls with `block_on`.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}

/// Session data as the demo service keeps it (`examples/media-api/src/presets.rs`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSession {
    /// The user's id.
    pub user_id: String,
    /// `user` or `admin`.
    pub role: String,
    /// The user's email, when known.
    #[serde(default)]
    pub email: Option<String>,
    /// The user's Plex account id, when linked.
    #[serde(default)]
    pub plex_id: Option<String>,
    /// When the user logged in, in Unix milliseconds.
    pub created_at: u64,
    /// Whether the user asked to be remembered.
    pub remember_me: bool,
}

impl UserSession {
    /// A session of `user_id` with `role`, created at 0.
    pub fn new(user_id: &str, role: &str) -> Self {
        UserSession {
            user_id: user_id.to_owned(),
            role: role.to_owned(),
            email: None,
            plex_id: None,
            created_at: 0,
            remember_me: false,
        }
    }
}
