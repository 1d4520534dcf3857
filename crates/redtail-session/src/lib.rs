//! Session storage on Redis: hashed tokens, an exact per-user index, sliding and absolute lifetimes.
#![doc = include_str!("../README.md")]

mod config;
mod error;
mod header;
mod jwt;
#[cfg(feature = "http")]
mod layer;
mod legacy;
mod script;
mod store;
mod token;
#[cfg(feature = "tower-sessions")]
mod tower;

pub use config::SessionConfig;
pub use error::{Error, Result};
pub use jwt::JwtDenylist;
#[cfg(feature = "http")]
pub use layer::{CurrentSession, SameSite, SessionCookie, SessionLayer, SessionService};
pub use legacy::{Legacy, LegacySession};
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Codec, JsonCodec, Namespace};
pub use store::{Device, NewSession, Session, SessionStore};
pub use token::{TOKEN_LEN, Token};
#[cfg(feature = "tower-sessions")]
pub use tower::TowerSessionStore;
