//! Lua scripts on the in-memory backend: a real Lua 5.1 (vendored through mlua) with the
//! `redis` and `cjson` libraries and Redis's reply conversion rules.

use mlua::{Lua, LuaOptions, MultiValue, StdLib, Table, Value as LuaValue, Variadic};
use redtail_core::{Bytes, Key, contract::SLOT_GUARD};

use super::{
    commands,
    store::{Audit, CmdResult, Reply, Store},
};

/// The Lua interpreter shared by every script run on one backend.
#[derive(Debug)]
pub(crate) struct Scripting {
    lua: Lua,
    /// Compiled scripts by SHA-1, so a script is parsed once, as Redis caches it.
    functions: std::collections::HashMap<String, mlua::Function>,
}

/// An error reply raised by `redis.call`, kept distinct from Lua runtime errors.
#[derive(Debug)]
struct ReplyError(String);

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReplyError {}

impl Scripting {
    pub(crate) fn new() -> Result<Scripting, String> {
        let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())
            .map_err(|e| format!("ERR cannot start Lua: {e}"))?;
        setup(&lua).map_err(|e| format!("ERR cannot set up Lua: {e}"))?;
        Ok(Scripting { lua, functions: std::collections::HashMap::new() })
    }

    /// Runs `source` with `KEYS` and `ARGV`, atomically with respect to the store (the caller
    /// holds it for the whole run); with `audit`, checks the keys it touched (see
    /// [`MemoryBackend::auditing_script_keys`](super::MemoryBackend::auditing_script_keys)).
    pub(crate) fn run(
        &mut self,
        store: &mut Store,
        sha: &str,
        source: &str,
        keys: &[Bytes],
        args: &[Bytes],
        audit: bool,
    ) -> CmdResult {
        if !audit {
            return self.execute(store, sha, source, keys, args);
        }
        // Keys in the slot of a declared guard that is missing are safe to reach (see
        // `SLOT_GUARD`): Redis refuses the call whole while that slot migrates.
        let is_guard = |k: &Bytes| k.rsplit(|b| *b == b':').next() == Some(SLOT_GUARD.as_bytes());
        let guarded: Vec<u16> = if keys.len() > 1 {
            keys.iter().filter(|k| is_guard(k) && !store.exists(k)).map(|k| Key::from_raw(k.clone()).slot()).collect()
        } else {
            Vec::new()
        };
        store.audit = Some(Audit::default());
        let reply = self.execute(store, sha, source, keys, args);
        let late = store.audit.take().map(|a| a.late).unwrap_or_default();
        let unsafe_key =
            late.into_iter().find(|key| !keys.contains(key) && !guarded.contains(&Key::from_raw(key.clone()).slot()));
        match unsafe_key {
            Some(key) => Err(format!(
                "ERR script {sha} touched {:?}, a key it did not declare in KEYS, after its first write: on a \
                 cluster while that key's slot migrates it would fail there with part of its work done",
                String::from_utf8_lossy(&key)
            )),
            None => reply,
        }
    }

    fn execute(&mut self, store: &mut Store, sha: &str, source: &str, keys: &[Bytes], args: &[Bytes]) -> CmdResult {
        let function = match self.functions.get(sha) {
            Some(function) => function.clone(),
            None => {
                let compiled = self.lua.load(source).set_name("@user_script").into_function();
                let function = compiled.map_err(|e| format!("ERR Error compiling script: {}", describe(&e)))?;
                self.functions.insert(sha.to_owned(), function.clone());
                function
            }
        };
        let lua = &self.lua;
        let store = std::cell::RefCell::new(store);
        let store = &store;
        let result = lua.scope(|scope| {
            let globals = lua.globals();
            globals.raw_set("KEYS", string_table(lua, keys)?)?;
            globals.raw_set("ARGV", string_table(lua, args)?)?;
            let redis: Table = globals.raw_get("redis")?;
            let call = scope.create_function(move |lua, args: Variadic<LuaValue>| {
                let reply = run_command(lua, &mut store.borrow_mut(), args)?;
                match reply {
                    Reply::Error(e) => Err(mlua::Error::external(ReplyError(e))),
                    other => to_lua(lua, other),
                }
            })?;
            let pcall = scope.create_function(move |lua, args: Variadic<LuaValue>| {
                let reply = match run_command(lua, &mut store.borrow_mut(), args) {
                    Ok(reply) => reply,
                    Err(e) => Reply::Error(describe(&e)),
                };
                to_lua(lua, reply)
            })?;
            redis.raw_set("call", call)?;
            redis.raw_set("pcall", pcall)?;
            function.call::<LuaValue>(())
        });
        match result {
            Ok(value) => Ok(from_lua(value)),
            Err(e) => Err(script_error(&e, sha)),
        }
    }
}

/// The error reply for a failed script, in the shape Redis 7.0 gives it.
fn script_error(error: &mlua::Error, sha: &str) -> String {
    let message = describe(error);
    if message.starts_with(|c: char| c.is_ascii_uppercase()) && reply_error(error).is_some() {
        format!("{message} script: {sha}, on @user_script.")
    } else {
        format!("ERR {message} script: {sha}, on @user_script.")
    }
}

fn reply_error(error: &mlua::Error) -> Option<&ReplyError> {
    match error {
        mlua::Error::CallbackError { cause, .. } => reply_error(cause),
        mlua::Error::ExternalError(e) => e.downcast_ref::<ReplyError>(),
        _ => None,
    }
}

/// The message of an error without mlua's tracebacks.
fn describe(error: &mlua::Error) -> String {
    if let Some(reply) = reply_error(error) {
        return reply.0.clone();
    }
    match error {
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => {
            m.lines().next().unwrap_or_default().to_owned()
        }
        other => other.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}

fn string_table(lua: &Lua, items: &[Bytes]) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        table.raw_set(i + 1, lua.create_string(item.as_ref())?)?;
    }
    Ok(table)
}

/// Runs one `redis.call`/`redis.pcall`; an error reply comes back as `Reply::Error`.
fn run_command(lua: &Lua, store: &mut Store, args: Variadic<LuaValue>) -> mlua::Result<Reply> {
    if args.is_empty() {
        return Ok(Reply::Error("ERR Please specify at least one argument for this redis lib call".to_owned()));
    }
    let mut argv = Vec::with_capacity(args.len());
    for arg in args.iter() {
        match arg {
            LuaValue::String(s) => argv.push(Bytes::copy_from_slice(&s.as_bytes())),
            LuaValue::Integer(_) | LuaValue::Number(_) => match lua.coerce_string(arg.clone())? {
                Some(s) => argv.push(Bytes::copy_from_slice(&s.as_bytes())),
                None => return Ok(Reply::Error(ARG_TYPES.to_owned())),
            },
            _ => return Ok(Reply::Error(ARG_TYPES.to_owned())),
        }
    }
    Ok(commands::execute(store, &argv).unwrap_or_else(Reply::Error))
}

const ARG_TYPES: &str = "ERR Lua redis lib command arguments must be strings or integers";

/// A reply as Lua sees it: nil becomes false, status and error replies become tables.
fn to_lua(lua: &Lua, reply: Reply) -> mlua::Result<LuaValue> {
    Ok(match reply {
        Reply::Nil => LuaValue::Boolean(false),
        Reply::Int(i) => LuaValue::Integer(i),
        Reply::Bulk(b) => LuaValue::String(lua.create_string(b.as_ref())?),
        Reply::Status(s) => LuaValue::Table(reply_table(lua, "ok", s)?),
        Reply::Error(e) => LuaValue::Table(reply_table(lua, "err", e)?),
        Reply::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
    })
}

/// `{ok = text}` or `{err = text}`: how Lua sees status and error replies.
fn reply_table(lua: &Lua, field: &'static str, text: impl mlua::IntoLua) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(field, text)?;
    Ok(table)
}

/// A script's return value as a reply: numbers truncate to integers, false is nil, true is 1,
/// arrays stop at the first nil, `{err=}` and `{ok=}` tables are error and status replies.
fn from_lua(value: LuaValue) -> Reply {
    match value {
        LuaValue::Nil | LuaValue::Boolean(false) => Reply::Nil,
        LuaValue::Boolean(true) => Reply::Int(1),
        LuaValue::Integer(i) => Reply::Int(i),
        LuaValue::Number(n) => Reply::Int(truncate(n)),
        LuaValue::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        LuaValue::Table(t) => {
            if let Ok(LuaValue::String(e)) = t.raw_get::<LuaValue>("err") {
                return Reply::Error(e.to_string_lossy());
            }
            if let Ok(LuaValue::String(s)) = t.raw_get::<LuaValue>("ok") {
                return Reply::Status(s.to_string_lossy());
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<LuaValue>(i) {
                    Ok(LuaValue::Nil) | Err(_) => break,
                    Ok(v) => items.push(from_lua(v)),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    }
}

/// A Lua number as Redis's `(long long)` cast gives it on x86-64: truncated toward zero, and
/// the "integer indefinite" `i64::MIN` for NaN and values out of range.
fn truncate(n: f64) -> i64 {
    // 2^63 is exactly representable; everything in [-2^63, 2^63) truncates into range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if n.is_nan() || !(-LIMIT..LIMIT).contains(&n) {
        return i64::MIN;
    }
    #[allow(clippy::cast_possible_truncation)] // in range, checked above; truncation is the rule
    let truncated = n.trunc() as i64;
    truncated
}

/// Installs `redis` (without `call`/`pcall`, bound per run), `cjson`, and global protection.
fn setup(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    for unsafe_global in ["dofile", "loadfile", "print"] {
        globals.raw_set(unsafe_global, LuaValue::Nil)?;
    }
    let redis = lua.create_table()?;
    for (name, field) in [("error_reply", "err"), ("status_reply", "ok")] {
        redis.raw_set(name, lua.create_function(move |lua, msg: mlua::LuaString| reply_table(lua, field, msg))?)?;
    }
    redis.raw_set(
        "sha1hex",
        lua.create_function(|_, s: mlua::LuaString| Ok(sha1_smol::Sha1::from(&*s.as_bytes()).digest().to_string()))?,
    )?;
    redis.raw_set("log", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    for (i, level) in ["LOG_DEBUG", "LOG_VERBOSE", "LOG_NOTICE", "LOG_WARNING"].iter().enumerate() {
        redis.raw_set(*level, i)?;
    }
    let unsupported = |name: &'static str| {
        lua.create_function(move |_, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::runtime(format!("redis.{name} is not supported by MemoryBackend")))
        })
    };
    for name in ["replicate_commands", "set_repl", "breakpoint", "debug", "setresp", "acl_check_cmd"] {
        redis.raw_set(name, unsupported(name)?)?;
    }
    globals.raw_set("redis", redis)?;

    let cjson = lua.create_table()?;
    cjson.raw_set("null", LuaValue::LightUserData(mlua::LightUserData(std::ptr::null_mut())))?;
    cjson.raw_set(
        "encode",
        lua.create_function(|_, value: LuaValue| {
            let json = to_json(&value, 0)?;
            serde_json::to_string(&json).map_err(mlua::Error::external)
        })?,
    )?;
    cjson.raw_set(
        "decode",
        lua.create_function(|lua, text: mlua::LuaString| {
            let json: serde_json::Value = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("Expected value but found invalid JSON: {e}")))?;
            from_json(lua, json)
        })?,
    )?;
    globals.raw_set("cjson", cjson)?;

    // As in Redis, an error reply raised by `redis.call` reaches a Lua `pcall` as its message.
    let clean = lua.create_function(|lua, value: LuaValue| match value {
        LuaValue::Error(e) => Ok(LuaValue::String(lua.create_string(describe(&e))?)),
        other => Ok(other),
    })?;
    let pcall: mlua::Function = lua
        .load(
            "local raw, clean = ... return function(f, ...) \
               local r = {raw(f, ...)} if not r[1] then r[2] = clean(r[2]) end \
               return unpack(r, 1, table.maxn(r)) end",
        )
        .call((globals.raw_get::<mlua::Function>("pcall")?, clean))?;
    globals.raw_set("pcall", pcall)?;

    // As in Redis: scripts may neither create nor read undeclared globals.
    let guard = lua.create_table()?;
    for (metamethod, attempt) in [("__newindex", "create global"), ("__index", "access nonexistent global")] {
        let refuse = lua.create_function(move |_, (_, name): (Table, mlua::LuaString)| -> mlua::Result<()> {
            Err(mlua::Error::runtime(format!("Script attempted to {attempt} variable '{}'", name.to_string_lossy())))
        })?;
        guard.raw_set(metamethod, refuse)?;
    }
    globals.set_metatable(Some(guard))?;
    Ok(())
}

fn to_json(value: &LuaValue, depth: usize) -> mlua::Result<serde_json::Value> {
    use serde_json::Value as J;
    if depth > 1000 {
        return Err(mlua::Error::runtime("Cannot serialise, excessive nesting (1001)"));
    }
    Ok(match value {
        LuaValue::Nil => J::Null,
        LuaValue::LightUserData(p) if p.0.is_null() => J::Null,
        LuaValue::Boolean(b) => J::Bool(*b),
        LuaValue::Integer(i) => J::from(*i),
        LuaValue::Number(n) => {
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)] // exact integers print without a fraction
            if n.fract() == 0.0 && n.abs() < 1e15 {
                J::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(J::Number)
                    .ok_or_else(|| mlua::Error::runtime("Cannot serialise number: must not be NaN or Infinity"))?
            }
        }
        LuaValue::String(s) => J::String(s.to_string_lossy()),
        LuaValue::Table(t) => {
            let len = t.raw_len();
            let pairs: Vec<(LuaValue, LuaValue)> = t.pairs::<LuaValue, LuaValue>().collect::<mlua::Result<_>>()?;
            if len > 0 && pairs.len() == len {
                let items = (1..=len).map(|i| t.raw_get::<LuaValue>(i).and_then(|v| to_json(&v, depth + 1)));
                J::Array(items.collect::<mlua::Result<_>>()?)
            } else {
                let mut map = serde_json::Map::new();
                for (k, v) in pairs {
                    let key = match k {
                        LuaValue::String(s) => s.to_string_lossy(),
                        LuaValue::Integer(i) => i.to_string(),
                        LuaValue::Number(n) => n.to_string(),
                        _ => {
                            return Err(mlua::Error::runtime(
                                "Cannot serialise table: table key must be a number or string",
                            ));
                        }
                    };
                    map.insert(key, to_json(&v, depth + 1)?);
                }
                J::Object(map)
            }
        }
        _ => return Err(mlua::Error::runtime("Cannot serialise: type not supported")),
    })
}

fn from_json(lua: &Lua, json: serde_json::Value) -> mlua::Result<LuaValue> {
    use serde_json::Value as J;
    Ok(match json {
        J::Null => LuaValue::LightUserData(mlua::LightUserData(std::ptr::null_mut())),
        J::Bool(b) => LuaValue::Boolean(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => LuaValue::String(lua.create_string(&s)?),
        J::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, from_json(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        J::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, v) in map {
                t.raw_set(k, from_json(lua, v)?)?;
            }
            LuaValue::Table(t)
        }
    })
}
