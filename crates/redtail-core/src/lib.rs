//! The foundation of redtail: the [`Backend`] trait every redtail crate is written against, and
//! the pieces they share: [`Value`] replies, [`Cmd`] commands, Lua [`Script`]s, [`Namespace`]
//! keys with hash tags and escaping, the [`Codec`] for stored values, and the core [`Error`].
//! [`BatchedGet`] and [`BatchedScript`] send the requests many tasks make at once as one `MGET`
//! or one script call ([`Batcher`] is the general tool under them).
//!
//! Feature crates (`redtail-session`, `redtail-ratelimit`, ...) depend on this crate only.
//! `redtail-connection` implements [`Backend`] on a real Redis (standalone, cluster or sentinel);
//! `redtail-testkit` provides servers for tests.
//!
//! # A whole worked use
//! A visit counter that works the same on one Redis and on a cluster:
//!
//! ```
//! use std::sync::{Arc, LazyLock};
//! use redtail_core::{Backend, Cmd, Namespace, Result, Script};
//!
//! // In a real crate the source is `include_str!("../lua/count_visit.lua")`.
//! static COUNT_VISIT: LazyLock<Script> = LazyLock::new(|| Script::new(
//!     "count_visit",
//!     "local n = redis.call('INCR', KEYS[1])
//!      if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
//!      return n",
//! ));
//!
//! /// Counts a visit by `user_id` (any string, even `a}b:*{c`) and returns the day's total.
//! async fn count_visit(redis: &Arc<dyn Backend>, user_id: &str) -> Result<i64> {
//!     let visits = Namespace::new("app")?.tagged(user_id).key(["visits"]);
//!     // One atomic script: the counter can never be left without its TTL.
//!     redis.eval(&COUNT_VISIT, &[visits], vec![86_400.into()]).await?.as_int()
//! }
//!
//! async fn last_visits(redis: &Arc<dyn Backend>, user_id: &str) -> Result<Option<i64>> {
//!     let visits = Namespace::new("app")?.tagged(user_id).key(["visits"]);
//!     redis.call(Cmd::new("GET").key(&visits)).await?.as_opt_int()
//! }
//! ```

mod backend;
mod batch;
mod cmd;
mod codec;
mod error;
mod key;
mod script;
mod value;

pub use async_trait::async_trait;
pub use backend::{Backend, Cursor, Event, Feed, Message, ScanPage, Subscription, same_slot};
pub use batch::{BatchedGet, BatchedScript, Batcher, batch_group};
pub use bytes::Bytes;
pub use cmd::{Arg, Cmd};
pub use codec::{Codec, JsonCodec};
pub use error::{BoxError, Error, Result, ServerError};
pub use key::{Key, Namespace, Pattern, SLOTS, Tagged, hash_tag, unescape};
pub use script::Script;
pub use value::Value;
