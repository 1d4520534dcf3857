//! The `Backend` trait, keys, scripts, codecs and errors every redtail crate is written against.
#![doc = include_str!("../README.md")]

mod backend;
mod batch;
mod clock;
mod cmd;
mod codec;
pub mod contract;
mod error;
mod key;
pub mod metrics;
mod script;
mod ttl;
mod value;

pub use async_trait::async_trait;
pub use backend::{Backend, Cursor, Event, Feed, Message, ScanPage, Subscription, TRACKING_CHANNEL, same_slot};
pub use batch::{BatchedGet, BatchedScript, BatchedTransaction, Batcher, batch_group};
pub use bytes::Bytes;
pub use clock::{Clock, unix_ms};
pub use cmd::{Arg, Cmd};
pub use codec::{Codec, JsonCodec};
pub use error::{BoxError, Error, Result, ServerError};
pub use key::{Key, Namespace, Pattern, SLOTS, Tagged, hash_tag, unescape};
pub use script::Script;
pub use ttl::{MAX_TTL, check_ttl};
pub use value::Value;
