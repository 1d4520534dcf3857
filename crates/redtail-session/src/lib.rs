//! Session storage on Redis, safer than the stores it replaces.
//!
//! - **Tokens** are 256 bits from the OS generator; Redis stores only a SHA-256 digest, so a dump
//!   of Redis yields no usable token. Malformed tokens are refused without a round trip.
//! - **Lifetimes**: 24 h idle (90 days with "remember me"), sliding on [`SessionStore::extend`]
//!   but never past an absolute deadline (OWASP), all configurable in [`SessionConfig`].
//! - **Exact per-user index**: a sorted set scored by expiry, pruned on every read and write, that
//!   lives exactly as long as its longest session, so "log out everywhere" never misses one.
//! - **Atomic and cluster-safe**: every multi-key change is one Lua script (`lua/*.lua`), and all
//!   keys of a user share a hash tag carried in the token.
//! - **No resurrection**: [`SessionStore::update`] writes only to a live session.
//! - **JWT revocation** by `jti` until `exp` with [`JwtDenylist`].
//! - **tower-sessions**: with the `tower-sessions` feature, `TowerSessionStore` plugs redtail into
//!   `tower_sessions::SessionManagerLayer` like any other store.
//!
//! ```
//! use redtail_session::{NewSession, SessionConfig, SessionStore};
//! use redtail_testkit::MemoryBackend;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct UserSession {
//!     role: String,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = SessionStore::new(MemoryBackend::new(), SessionConfig::default());
//! let data = UserSession { role: "admin".to_owned() };
//! let (token, _) = store.create("user-1", data, NewSession::remember_me()).await?;
//! // Give `token.as_str()` to the client; later:
//! let session = store.get(token.as_str()).await?.expect("live");
//! assert_eq!(session.data.role, "admin");
//! store.invalidate_all("user-1").await?;
//! assert!(store.get(token.as_str()).await?.is_none());
//! # Ok::<(), redtail_session::Error>(()) }).unwrap();
//! ```

mod config;
mod error;
mod jwt;
mod store;
mod token;
#[cfg(feature = "tower-sessions")]
mod tower;

pub use config::SessionConfig;
pub use error::{Error, Result};
pub use jwt::JwtDenylist;
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Codec, JsonCodec, Namespace};
pub use store::{Device, NewSession, Session, SessionStore};
pub use token::{TOKEN_LEN, Token};
#[cfg(feature = "tower-sessions")]
pub use tower::TowerSessionStore;
