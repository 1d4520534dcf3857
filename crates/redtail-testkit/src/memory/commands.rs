//! The commands the in-memory backend supports, with Redis 7.0's replies and error messages.

use std::collections::VecDeque;

use redtail_core::Bytes;

use super::{
    glob,
    store::{CmdResult, Data, Reply, SYNTAX, Score, Store, StreamId, WRONGTYPE, format_score, parse_float, parse_int},
};

/// Runs the commands of one family (strings, hashes, ...), named in upper case.
type Family = fn(&mut Store, &str, &[Bytes]) -> CmdResult;

/// Name, arity (Redis convention: negative means "at least") and family of every supported
/// command.
const COMMANDS: &[(&str, i32, Family)] = &[
    ("PING", -1, server),
    ("ECHO", 2, server),
    ("TIME", 1, server),
    ("DBSIZE", 1, server),
    ("FLUSHALL", -1, server),
    ("FLUSHDB", -1, server),
    ("DEL", -2, keyspace),
    ("UNLINK", -2, keyspace),
    ("EXISTS", -2, keyspace),
    ("TYPE", 2, keyspace),
    ("EXPIRE", -3, keyspace),
    ("PEXPIRE", -3, keyspace),
    ("EXPIREAT", -3, keyspace),
    ("PEXPIREAT", -3, keyspace),
    ("TTL", 2, keyspace),
    ("PTTL", 2, keyspace),
    ("EXPIRETIME", 2, keyspace),
    ("PEXPIRETIME", 2, keyspace),
    ("PERSIST", 2, keyspace),
    ("RENAME", 3, keyspace),
    ("GET", 2, strings),
    ("SET", -3, strings),
    ("SETNX", 3, strings),
    ("SETEX", 4, strings),
    ("PSETEX", 4, strings),
    ("GETDEL", 2, strings),
    ("GETSET", 3, strings),
    ("MGET", -2, strings),
    ("MSET", -3, strings),
    ("INCR", 2, strings),
    ("DECR", 2, strings),
    ("INCRBY", 3, strings),
    ("DECRBY", 3, strings),
    ("APPEND", 3, strings),
    ("STRLEN", 2, strings),
    ("HSET", -4, hashes),
    ("HSETNX", 4, hashes),
    ("HGET", 3, hashes),
    ("HMGET", -3, hashes),
    ("HGETALL", 2, hashes),
    ("HDEL", -3, hashes),
    ("HEXISTS", 3, hashes),
    ("HLEN", 2, hashes),
    ("HINCRBY", 4, hashes),
    ("HKEYS", 2, hashes),
    ("HVALS", 2, hashes),
    ("LPUSH", -3, lists),
    ("RPUSH", -3, lists),
    ("LPOP", -2, lists),
    ("RPOP", -2, lists),
    ("LRANGE", 4, lists),
    ("LLEN", 2, lists),
    ("LINDEX", 3, lists),
    ("LREM", 4, lists),
    ("LTRIM", 4, lists),
    ("LMOVE", 5, lists),
    ("RPOPLPUSH", 3, lists),
    ("SADD", -3, sets),
    ("SREM", -3, sets),
    ("SMEMBERS", 2, sets),
    ("SISMEMBER", 3, sets),
    ("SCARD", 2, sets),
    ("ZADD", -4, sorted_sets),
    ("ZREM", -3, sorted_sets),
    ("ZSCORE", 3, sorted_sets),
    ("ZINCRBY", 4, sorted_sets),
    ("ZCARD", 2, sorted_sets),
    ("ZCOUNT", 4, sorted_sets),
    ("ZRANK", 3, sorted_sets),
    ("ZRANGE", -4, sorted_sets),
    ("ZRANGEBYSCORE", -4, sorted_sets),
    ("ZREMRANGEBYSCORE", 4, sorted_sets),
    ("ZREMRANGEBYRANK", 4, sorted_sets),
    ("ZPOPMIN", -2, sorted_sets),
    ("ZPOPMAX", -2, sorted_sets),
    ("XADD", -5, streams),
    ("XLEN", 2, streams),
    ("XRANGE", -4, streams),
    ("XREVRANGE", -4, streams),
    ("XDEL", -3, streams),
    ("XTRIM", -4, streams),
    ("XREAD", -4, streams),
];

/// Checks that the command exists and has a valid number of arguments, as Redis does before
/// running or queueing it.
pub(crate) fn check(args: &[Bytes]) -> Result<String, String> {
    let Some(name) = args.first() else { return Err("ERR empty command".to_owned()) };
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    let Some((_, arity, _)) = COMMANDS.iter().find(|(n, _, _)| *n == upper) else {
        return Err(format!(
            "ERR unknown command '{}', with args beginning with: (MemoryBackend does not support it)",
            String::from_utf8_lossy(name)
        ));
    };
    let n = i32::try_from(args.len()).unwrap_or(i32::MAX);
    if (*arity > 0 && n != *arity) || (*arity < 0 && n < -arity) {
        return Err(format!("ERR wrong number of arguments for '{}' command", upper.to_ascii_lowercase()));
    }
    Ok(upper)
}

/// Runs one command against the store. The caller has set `store.now`.
pub(crate) fn execute(store: &mut Store, args: &[Bytes]) -> CmdResult {
    let name = check(args)?;
    let (_, _, family) = COMMANDS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| not_implemented(&name))?;
    family(store, &name, &args[1..])
}

fn not_implemented(name: &str) -> String {
    format!("ERR command '{name}' is known but not implemented by MemoryBackend")
}

/// The commands on the server (PING, ECHO, TIME, DBSIZE, FLUSHALL).
fn server(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "PING" => Ok(match a.first() {
            Some(msg) => Reply::Bulk(msg.clone()),
            None => Reply::Status("PONG".to_owned()),
        }),
        "ECHO" => Ok(Reply::Bulk(a[0].clone())),
        "TIME" => Ok(Reply::Array(vec![
            Reply::bulk((store.now / 1000).to_string()),
            Reply::bulk(((store.now % 1000) * 1000).to_string()),
        ])),
        "DBSIZE" => Ok(Reply::Int(count(store.live_keys().count()))),
        "FLUSHALL" | "FLUSHDB" => {
            store.keys.clear();
            store.flushed();
            Ok(Reply::ok())
        }
        _ => Err(not_implemented(name)),
    }
}

/// The commands on keys of any type: existence, type, expiry, renaming.
fn keyspace(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "DEL" | "UNLINK" => Ok(Reply::Int(count(a.iter().filter(|k| store.remove(k).is_some()).count()))),
        "EXISTS" => Ok(Reply::Int(count(a.iter().filter(|k| store.exists(k)).count()))),
        "TYPE" => Ok(Reply::Status(store.get(&a[0]).map_or("none", |e| e.data.type_name()).to_owned())),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => expire(store, name, a),
        "TTL" | "PTTL" => Ok(Reply::Int(match store.get(&a[0]) {
            None => -2,
            Some(e) => match e.expires_at {
                None => -1,
                Some(at) => {
                    let ms = at.saturating_sub(store.now);
                    i64::try_from(if name == "TTL" { (ms + 500) / 1000 } else { ms }).unwrap_or(i64::MAX)
                }
            },
        })),
        "EXPIRETIME" | "PEXPIRETIME" => Ok(Reply::Int(match store.get(&a[0]) {
            None => -2,
            Some(e) => match e.expires_at {
                None => -1,
                Some(at) => i64::try_from(if name == "EXPIRETIME" { at / 1000 } else { at }).unwrap_or(i64::MAX),
            },
        })),
        "PERSIST" => {
            let persisted = store.get_mut(&a[0]).is_some_and(|e| e.expires_at.take().is_some());
            if persisted {
                store.touch(&a[0]);
            }
            Ok(Reply::from_bool(persisted))
        }
        "RENAME" => {
            let entry = store.remove(&a[0]).ok_or_else(|| "ERR no such key".to_owned())?;
            store.set(&a[1], entry.data, entry.expires_at);
            Ok(Reply::ok())
        }
        _ => Err(not_implemented(name)),
    }
}

/// The commands on strings and counters.
fn strings(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "GET" => Ok(string(store, &a[0])?.map_or(Reply::Nil, Reply::Bulk)),
        "SET" => set(store, a),
        "SETNX" => {
            let new = !store.exists(&a[0]);
            if new {
                store.set(&a[0], Data::Str(a[1].clone()), None);
            }
            Ok(Reply::from_bool(new))
        }
        "SETEX" | "PSETEX" => {
            let n = parse_int(&a[1])?;
            let ms = if name == "SETEX" { n.checked_mul(1000) } else { Some(n) };
            let at = ms.filter(|ms| *ms > 0).and_then(|ms| store.now.checked_add(u64::try_from(ms).ok()?));
            let Some(at) = at else {
                return Err(format!("ERR invalid expire time in '{}' command", name.to_ascii_lowercase()));
            };
            store.set(&a[0], Data::Str(a[2].clone()), Some(at));
            Ok(Reply::ok())
        }
        "GETDEL" => {
            let value = string(store, &a[0])?;
            if value.is_some() {
                store.remove(&a[0]);
            }
            Ok(value.map_or(Reply::Nil, Reply::Bulk))
        }
        "GETSET" => {
            let old = string(store, &a[0])?;
            store.set(&a[0], Data::Str(a[1].clone()), None);
            Ok(old.map_or(Reply::Nil, Reply::Bulk))
        }
        "MGET" => Ok(Reply::Array(
            a.iter().map(|k| string(store, k).ok().flatten().map_or(Reply::Nil, Reply::Bulk)).collect(),
        )),
        "MSET" => {
            if !a.len().is_multiple_of(2) {
                return Err("ERR wrong number of arguments for 'mset' command".to_owned());
            }
            for pair in a.chunks(2) {
                store.set(&pair[0], Data::Str(pair[1].clone()), None);
            }
            Ok(Reply::ok())
        }
        "INCR" => incr_by(store, &a[0], 1),
        "DECR" => incr_by(store, &a[0], -1),
        "INCRBY" => incr_by(store, &a[0], parse_int(&a[1])?),
        "DECRBY" => {
            let by = parse_int(&a[1])?;
            incr_by(store, &a[0], by.checked_neg().ok_or_else(|| "ERR decrement would overflow".to_owned())?)
        }
        "APPEND" => {
            let mut value = string(store, &a[0])?.map(|b| b.to_vec()).unwrap_or_default();
            value.extend_from_slice(&a[1]);
            let len = value.len();
            write_string(store, &a[0], Bytes::from(value));
            Ok(Reply::Int(count(len)))
        }
        "STRLEN" => Ok(Reply::Int(count(string(store, &a[0])?.map_or(0, |b| b.len())))),
        _ => Err(not_implemented(name)),
    }
}

/// The commands on hashes.
fn hashes(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "HSET" => {
            if a.len().is_multiple_of(2) {
                return Err("ERR wrong number of arguments for 'hset' command".to_owned());
            }
            let hash = store.hash_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
            let added = a[1..].chunks(2).filter(|p| hash.insert(p[0].clone(), p[1].clone()).is_none()).count();
            Ok(Reply::Int(count(added)))
        }
        "HSETNX" => {
            let hash = store.hash_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
            let new = !hash.contains_key(&a[1]);
            if new {
                hash.insert(a[1].clone(), a[2].clone());
            }
            Ok(Reply::from_bool(new))
        }
        "HGET" => Ok(store.hash(&a[0])?.and_then(|h| h.get(&a[1]).cloned()).map_or(Reply::Nil, Reply::Bulk)),
        "HMGET" => {
            let hash = store.hash(&a[0])?;
            Ok(Reply::Array(
                a[1..].iter().map(|f| hash.and_then(|h| h.get(f).cloned()).map_or(Reply::Nil, Reply::Bulk)).collect(),
            ))
        }
        "HGETALL" => Ok(Reply::Array(
            store
                .hash(&a[0])?
                .into_iter()
                .flatten()
                .flat_map(|(f, v)| [Reply::Bulk(f.clone()), Reply::Bulk(v.clone())])
                .collect(),
        )),
        "HKEYS" => {
            Ok(Reply::Array(store.hash(&a[0])?.into_iter().flatten().map(|(f, _)| Reply::Bulk(f.clone())).collect()))
        }
        "HVALS" => {
            Ok(Reply::Array(store.hash(&a[0])?.into_iter().flatten().map(|(_, v)| Reply::Bulk(v.clone())).collect()))
        }
        "HDEL" => {
            let removed = match store.hash_mut(&a[0], false)? {
                Some(hash) => a[1..].iter().filter(|f| hash.remove(*f).is_some()).count(),
                None => 0,
            };
            store.drop_if_empty(&a[0]);
            Ok(Reply::Int(count(removed)))
        }
        "HEXISTS" => Ok(Reply::from_bool(store.hash(&a[0])?.is_some_and(|h| h.contains_key(&a[1])))),
        "HLEN" => Ok(Reply::Int(count(store.hash(&a[0])?.map_or(0, |h| h.len())))),
        "HINCRBY" => {
            let by = parse_int(&a[2])?;
            let hash = store.hash_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
            let current = match hash.get(&a[1]) {
                Some(v) => parse_int(v).map_err(|_| "ERR hash value is not an integer".to_owned())?,
                None => 0,
            };
            let next = current.checked_add(by).ok_or_else(|| "ERR increment or decrement would overflow".to_owned())?;
            hash.insert(a[1].clone(), Bytes::from(next.to_string()));
            Ok(Reply::Int(next))
        }
        _ => Err(not_implemented(name)),
    }
}

/// The commands on lists.
fn lists(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "LPUSH" | "RPUSH" => {
            let list = store.list_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
            for value in &a[1..] {
                if name == "LPUSH" { list.push_front(value.clone()) } else { list.push_back(value.clone()) }
            }
            Ok(Reply::Int(count(list.len())))
        }
        "LPOP" | "RPOP" => {
            let n = optional_count(a)?;
            let Some(list) = store.list_mut(&a[0], false)? else { return Ok(Reply::Nil) };
            let mut pop = || if name == "LPOP" { list.pop_front() } else { list.pop_back() };
            let reply = match n {
                None => pop().map_or(Reply::Nil, Reply::Bulk),
                Some(n) => Reply::Array((0..n).map_while(|_| pop()).map(Reply::Bulk).collect()),
            };
            store.drop_if_empty(&a[0]);
            Ok(reply)
        }
        "LRANGE" => {
            let (start, stop) = (parse_int(&a[1])?, parse_int(&a[2])?);
            let Some(list) = store.list(&a[0])? else { return Ok(Reply::Array(Vec::new())) };
            let range = index_range(list.len(), start, stop);
            Ok(Reply::Array(range.map(|i| Reply::Bulk(list[i].clone())).collect()))
        }
        "LLEN" => Ok(Reply::Int(count(store.list(&a[0])?.map_or(0, VecDeque::len)))),
        "LINDEX" => {
            let index = parse_int(&a[1])?;
            let Some(list) = store.list(&a[0])? else { return Ok(Reply::Nil) };
            Ok(resolve_index(list.len(), index).and_then(|i| list.get(i).cloned()).map_or(Reply::Nil, Reply::Bulk))
        }
        "LREM" => {
            let n = parse_int(&a[1])?;
            let Some(list) = store.list_mut(&a[0], false)? else { return Ok(Reply::Int(0)) };
            let limit = if n == 0 { usize::MAX } else { usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX) };
            let mut removed = 0;
            if n >= 0 {
                let mut i = 0;
                while i < list.len() && removed < limit {
                    if list[i] == a[2] {
                        list.remove(i);
                        removed += 1;
                    } else {
                        i += 1;
                    }
                }
            } else {
                let mut i = list.len();
                while i > 0 && removed < limit {
                    i -= 1;
                    if list[i] == a[2] {
                        list.remove(i);
                        removed += 1;
                    }
                }
            }
            store.drop_if_empty(&a[0]);
            Ok(Reply::Int(count(removed)))
        }
        "LTRIM" => {
            let (start, stop) = (parse_int(&a[1])?, parse_int(&a[2])?);
            if let Some(list) = store.list_mut(&a[0], false)? {
                let range = index_range(list.len(), start, stop);
                let kept: VecDeque<Bytes> = range.map(|i| list[i].clone()).collect();
                *list = kept;
            }
            store.drop_if_empty(&a[0]);
            Ok(Reply::ok())
        }
        "LMOVE" => {
            let from_left = side(&a[2])?;
            let to_left = side(&a[3])?;
            lmove(store, &a[0], &a[1], from_left, to_left)
        }
        "RPOPLPUSH" => lmove(store, &a[0], &a[1], false, true),
        _ => Err(not_implemented(name)),
    }
}

/// The commands on sets.
fn sets(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "SADD" => {
            let set = store.set_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
            Ok(Reply::Int(count(a[1..].iter().filter(|m| set.insert((*m).clone())).count())))
        }
        "SREM" => {
            let removed = match store.set_mut(&a[0], false)? {
                Some(set) => a[1..].iter().filter(|m| set.remove(*m)).count(),
                None => 0,
            };
            store.drop_if_empty(&a[0]);
            Ok(Reply::Int(count(removed)))
        }
        "SMEMBERS" => {
            Ok(Reply::Array(store.set_of(&a[0])?.into_iter().flatten().map(|m| Reply::Bulk(m.clone())).collect()))
        }
        "SISMEMBER" => Ok(Reply::from_bool(store.set_of(&a[0])?.is_some_and(|s| s.contains(&a[1])))),
        "SCARD" => Ok(Reply::Int(count(store.set_of(&a[0])?.map_or(0, |s| s.len())))),
        _ => Err(not_implemented(name)),
    }
}

/// The commands on sorted sets.
fn sorted_sets(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "ZADD" => zadd(store, a),
        "ZREM" => {
            let removed = match store.zset_mut(&a[0], false)? {
                Some(z) => a[1..].iter().filter(|m| z.remove(m)).count(),
                None => 0,
            };
            store.drop_if_empty(&a[0]);
            Ok(Reply::Int(count(removed)))
        }
        "ZSCORE" => Ok(store
            .zset(&a[0])?
            .and_then(|z| z.scores.get(&a[1]).copied())
            .map_or(Reply::Nil, |s| Reply::bulk(format_score(s)))),
        "ZINCRBY" => {
            let by = parse_float(&a[1])?;
            let z = store.zset_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
            let score = z.scores.get(&a[2]).copied().unwrap_or(0.0) + by;
            if score.is_nan() {
                return Err("ERR resulting score is not a number (NaN)".to_owned());
            }
            z.insert(a[2].clone(), score);
            Ok(Reply::bulk(format_score(score)))
        }
        "ZCARD" => Ok(Reply::Int(count(store.zset(&a[0])?.map_or(0, |z| z.len())))),
        "ZCOUNT" => {
            let (min, max) = (ScoreBound::parse(&a[1])?, ScoreBound::parse(&a[2])?);
            let Some(z) = store.zset(&a[0])? else { return Ok(Reply::Int(0)) };
            Ok(Reply::Int(count(z.by_score.iter().filter(|(s, _)| min.below(s.0) && max.above(s.0)).count())))
        }
        "ZRANK" => {
            let Some(z) = store.zset(&a[0])? else { return Ok(Reply::Nil) };
            Ok(z.by_score.iter().position(|(_, m)| *m == a[1]).map_or(Reply::Nil, |i| Reply::Int(count(i))))
        }
        "ZRANGE" => zrange(store, a, false),
        "ZRANGEBYSCORE" => zrange(store, a, true),
        "ZREMRANGEBYSCORE" => {
            let (min, max) = (ScoreBound::parse(&a[1])?, ScoreBound::parse(&a[2])?);
            let Some(z) = store.zset_mut(&a[0], false)? else { return Ok(Reply::Int(0)) };
            let doomed: Vec<Bytes> =
                z.by_score.iter().filter(|(s, _)| min.below(s.0) && max.above(s.0)).map(|(_, m)| m.clone()).collect();
            Ok(remove_members(store, &a[0], &doomed))
        }
        "ZREMRANGEBYRANK" => {
            let (start, stop) = (parse_int(&a[1])?, parse_int(&a[2])?);
            let Some(z) = store.zset_mut(&a[0], false)? else { return Ok(Reply::Int(0)) };
            let range = index_range(z.len(), start, stop);
            let doomed: Vec<Bytes> =
                z.by_score.iter().enumerate().filter(|(i, _)| range.contains(i)).map(|(_, (_, m))| m.clone()).collect();
            Ok(remove_members(store, &a[0], &doomed))
        }
        "ZPOPMIN" | "ZPOPMAX" => {
            let n = optional_count(a)?;
            let mut out = Vec::new();
            if let Some(z) = store.zset_mut(&a[0], false)? {
                for _ in 0..n.unwrap_or(1) {
                    let next = if name == "ZPOPMIN" { z.by_score.first().cloned() } else { z.by_score.last().cloned() };
                    let Some((score, member)) = next else { break };
                    z.remove(&member);
                    out.push(Reply::Bulk(member));
                    out.push(Reply::bulk(format_score(score.0)));
                }
            }
            store.drop_if_empty(&a[0]);
            Ok(Reply::Array(out))
        }
        _ => Err(not_implemented(name)),
    }
}

/// The commands on streams.
fn streams(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    match name {
        "XADD" => xadd(store, a),
        "XLEN" => Ok(Reply::Int(count(store.stream(&a[0])?.map_or(0, |s| s.entries.len())))),
        "XRANGE" | "XREVRANGE" => {
            let reverse = name == "XREVRANGE";
            let (lo_arg, hi_arg) = if reverse { (&a[2], &a[1]) } else { (&a[1], &a[2]) };
            let lo = parse_range_id(lo_arg, false)?;
            let hi = parse_range_id(hi_arg, true)?;
            let limit = match a.get(3) {
                Some(word) if word.eq_ignore_ascii_case(b"COUNT") && a.len() == 5 => {
                    usize::try_from(parse_int(&a[4])?).unwrap_or(0)
                }
                Some(_) => return Err(SYNTAX.to_owned()),
                None => usize::MAX,
            };
            let Some(stream) = store.stream(&a[0])? else { return Ok(Reply::Array(Vec::new())) };
            if lo > hi {
                return Ok(Reply::Array(Vec::new()));
            }
            let range = stream.entries.range(lo..=hi);
            let entries: Vec<Reply> = if reverse {
                range.rev().take(limit).map(stream_entry).collect()
            } else {
                range.take(limit).map(stream_entry).collect()
            };
            Ok(Reply::Array(entries))
        }
        "XDEL" => {
            // Redis answers 0 for a missing stream before it reads the ids.
            if store.stream(&a[0])?.is_none() {
                return Ok(Reply::Int(0));
            }
            let ids = a[1..].iter().map(|id| parse_id(id)).collect::<Result<Vec<_>, _>>()?;
            let Some(stream) = store.stream_mut(&a[0], false)? else { return Ok(Reply::Int(0)) };
            Ok(Reply::Int(count(ids.iter().filter(|id| stream.entries.remove(id).is_some()).count())))
        }
        "XTRIM" => {
            if !a[1].eq_ignore_ascii_case(b"MAXLEN") {
                return Err(SYNTAX.to_owned());
            }
            let rest = &a[2..];
            let n = match rest {
                [op, n] if op.as_ref() == b"~" || op.as_ref() == b"=" => n,
                [n] => n,
                _ => return Err(SYNTAX.to_owned()),
            };
            let max = usize::try_from(parse_int(n)?).map_err(|_| "ERR The MAXLEN argument must be >= 0.".to_owned())?;
            let Some(stream) = store.stream_mut(&a[0], false)? else { return Ok(Reply::Int(0)) };
            Ok(Reply::Int(count(trim(stream, max))))
        }
        "XREAD" => xread(store, a),
        _ => Err(not_implemented(name)),
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The optional count of `LPOP`/`RPOP`/`ZPOPMIN`/`ZPOPMAX` (`a[1]`); nothing may follow it.
fn optional_count(a: &[Bytes]) -> Result<Option<usize>, String> {
    let n = a.get(1).map(|n| parse_positive(n)).transpose()?;
    if a.len() > 2 {
        return Err(SYNTAX.to_owned());
    }
    Ok(n)
}

/// Removes `members` from the sorted set at `key` (which holds them) and replies their count.
fn remove_members(store: &mut Store, key: &[u8], members: &[Bytes]) -> Reply {
    if let Ok(Some(z)) = store.zset_mut(key, false) {
        for member in members {
            z.remove(member);
        }
    }
    store.drop_if_empty(key);
    Reply::Int(count(members.len()))
}

fn parse_positive(arg: &[u8]) -> Result<usize, String> {
    parse_int(arg)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "ERR value is out of range, must be positive".to_owned())
}

fn string(store: &mut Store, key: &[u8]) -> Result<Option<Bytes>, String> {
    match store.get(key) {
        None => Ok(None),
        Some(entry) => match &entry.data {
            Data::Str(b) => Ok(Some(b.clone())),
            _ => Err(WRONGTYPE.to_owned()),
        },
    }
}

/// Replaces a string's value and keeps its TTL.
fn write_string(store: &mut Store, key: &[u8], value: Bytes) {
    let expires_at = store.get(key).and_then(|e| e.expires_at);
    store.set(key, Data::Str(value), expires_at);
}

fn incr_by(store: &mut Store, key: &[u8], by: i64) -> CmdResult {
    let current = match string(store, key)? {
        Some(b) => parse_int(&b)?,
        None => 0,
    };
    let next = current.checked_add(by).ok_or_else(|| "ERR increment or decrement would overflow".to_owned())?;
    write_string(store, key, Bytes::from(next.to_string()));
    Ok(Reply::Int(next))
}

fn set(store: &mut Store, a: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut expires_at = None;
    let mut i = 2;
    while i < a.len() {
        let word = String::from_utf8_lossy(&a[i]).to_ascii_uppercase();
        match word.as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "KEEPTTL" if expires_at.is_none() => keep_ttl = true,
            "EX" | "PX" | "EXAT" | "PXAT" if expires_at.is_none() && !keep_ttl => {
                let Some(n) = a.get(i + 1) else { return Err(SYNTAX.to_owned()) };
                let n = parse_int(n)?;
                let invalid = || "ERR invalid expire time in 'set' command".to_owned();
                if n <= 0 {
                    return Err(invalid());
                }
                let n = u64::try_from(n).map_err(|_| invalid())?;
                let at = match word.as_str() {
                    "EX" => n.checked_mul(1000).and_then(|ms| store.now.checked_add(ms)),
                    "PX" => store.now.checked_add(n),
                    "EXAT" => n.checked_mul(1000),
                    _ => Some(n),
                };
                expires_at = Some(at.ok_or_else(invalid)?);
                i += 1;
            }
            _ => return Err(SYNTAX.to_owned()),
        }
        i += 1;
    }
    let old = if get { string(store, &a[0])? } else { None };
    let exists = store.exists(&a[0]);
    if (nx && exists) || (xx && !exists) {
        return Ok(if get { old.map_or(Reply::Nil, Reply::Bulk) } else { Reply::Nil });
    }
    let expires_at = if keep_ttl { store.get(&a[0]).and_then(|e| e.expires_at) } else { expires_at };
    store.set(&a[0], Data::Str(a[1].clone()), expires_at);
    Ok(if get { old.map_or(Reply::Nil, Reply::Bulk) } else { Reply::ok() })
}

fn expire(store: &mut Store, name: &str, a: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for flag in &a[2..] {
        match String::from_utf8_lossy(flag).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            other => return Err(format!("ERR Unsupported option {other}")),
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".to_owned());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".to_owned());
    }
    // Redis reads the flags before the time.
    let n = parse_int(&a[1])?;
    let invalid = || format!("ERR invalid expire time in '{}' command", name.to_ascii_lowercase());
    let at: i64 = match name {
        "EXPIRE" => n.checked_mul(1000).and_then(|ms| ms.checked_add(i64::try_from(store.now).ok()?)),
        "PEXPIRE" => n.checked_add(i64::try_from(store.now).map_err(|_| invalid())?),
        "EXPIREAT" => n.checked_mul(1000),
        _ => Some(n),
    }
    .ok_or_else(invalid)?;
    let now = store.now;
    let Some(entry) = store.get_mut(&a[0]) else { return Ok(Reply::Int(0)) };
    let current = entry.expires_at;
    let allowed = match current {
        // No TTL counts as an infinite one: GT never applies, LT always does.
        None => !xx && !gt,
        Some(cur) => {
            !nx && (!gt || u64::try_from(at).is_ok_and(|at| at > cur))
                && (!lt || at < i64::try_from(cur).unwrap_or(i64::MAX))
        }
    };
    if !allowed {
        return Ok(Reply::Int(0));
    }
    match u64::try_from(at) {
        Ok(at) if at > now => {
            entry.expires_at = Some(at);
            store.touch(&a[0]);
        }
        _ => {
            store.remove(&a[0]);
        }
    }
    Ok(Reply::Int(1))
}

/// Start/stop indexes (negative from the end) clamped to a collection of `len` items.
fn index_range(len: usize, start: i64, stop: i64) -> std::ops::Range<usize> {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 { (len_i + start).max(0) } else { start };
    let stop = if stop < 0 { len_i + stop } else { stop.min(len_i - 1) };
    if start > stop || start >= len_i {
        return 0..0;
    }
    usize::try_from(start).unwrap_or(0)..usize::try_from(stop + 1).unwrap_or(0)
}

fn resolve_index(len: usize, index: i64) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if index < 0 { len + index } else { index };
    if (0..len).contains(&i) { usize::try_from(i).ok() } else { None }
}

fn side(arg: &[u8]) -> Result<bool, String> {
    if arg.eq_ignore_ascii_case(b"LEFT") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"RIGHT") {
        Ok(false)
    } else {
        Err(SYNTAX.to_owned())
    }
}

pub(crate) fn lmove(store: &mut Store, from: &[u8], to: &[u8], from_left: bool, to_left: bool) -> CmdResult {
    // A missing source answers nil; otherwise the destination's type is checked before anything moves.
    if store.list(from)?.is_none() {
        return Ok(Reply::Nil);
    }
    store.list(to)?;
    let Some(list) = store.list_mut(from, false)? else { return Ok(Reply::Nil) };
    let Some(value) = (if from_left { list.pop_front() } else { list.pop_back() }) else { return Ok(Reply::Nil) };
    store.drop_if_empty(from);
    let target = store.list_mut(to, true)?.ok_or(WRONGTYPE)?;
    if to_left {
        target.push_front(value.clone())
    } else {
        target.push_back(value.clone())
    }
    Ok(Reply::Bulk(value))
}

fn zadd(store: &mut Store, a: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) = (false, false, false, false, false, false);
    let mut i = 1;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            "CH" => ch = true,
            "INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &a[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(SYNTAX.to_owned());
    }
    if nx && xx {
        return Err("ERR XX and NX options at the same time are not compatible".to_owned());
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err("ERR GT, LT, and/or NX options at the same time are not compatible".to_owned());
    }
    if incr && pairs.len() > 2 {
        return Err("ERR INCR option supports a single increment-element pair".to_owned());
    }
    let scores = pairs.chunks(2).map(|p| parse_float(&p[0])).collect::<Result<Vec<_>, _>>()?;
    let z = store.zset_mut(&a[0], !xx)?;
    let Some(z) = z else { return Ok(if incr { Reply::Nil } else { Reply::Int(0) }) };
    let (mut added, mut changed) = (0, 0);
    let mut last = None;
    for (pair, score) in pairs.chunks(2).zip(scores) {
        let member = &pair[1];
        let old = z.scores.get(member).copied();
        let new = if incr { old.unwrap_or(0.0) + score } else { score };
        if new.is_nan() {
            return Err("ERR resulting score is not a number (NaN)".to_owned());
        }
        let skip = match old {
            Some(old) => nx || (gt && new <= old) || (lt && new >= old),
            None => xx,
        };
        if skip {
            last = None;
            continue;
        }
        if old.is_none() {
            added += 1;
        } else if old != Some(new) {
            changed += 1;
        }
        z.insert(member.clone(), new);
        last = Some(new);
    }
    store.drop_if_empty(&a[0]);
    if incr {
        return Ok(last.map_or(Reply::Nil, |s| Reply::bulk(format_score(s))));
    }
    Ok(Reply::Int(if ch { added + changed } else { added }))
}

/// A `ZRANGEBYSCORE` bound: `(1.5` is exclusive, `-inf`/`+inf` unbounded.
#[derive(Clone, Copy)]
struct ScoreBound {
    value: f64,
    exclusive: bool,
}

impl ScoreBound {
    fn parse(arg: &[u8]) -> Result<ScoreBound, String> {
        let (exclusive, rest) = match arg.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, arg),
        };
        let value = parse_float(rest).map_err(|_| "ERR min or max is not a float".to_owned())?;
        Ok(ScoreBound { value, exclusive })
    }

    fn below(self, score: f64) -> bool {
        if self.exclusive { self.value < score } else { self.value <= score }
    }

    fn above(self, score: f64) -> bool {
        if self.exclusive { self.value > score } else { self.value >= score }
    }
}

fn zrange(store: &mut Store, a: &[Bytes], legacy_by_score: bool) -> CmdResult {
    let (mut by_score, mut rev, mut with_scores) = (legacy_by_score, false, false);
    let mut limit: Option<(i64, i64)> = None;
    let mut i = 3;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_uppercase().as_str() {
            "BYSCORE" if !legacy_by_score => by_score = true,
            "REV" if !legacy_by_score => rev = true,
            "WITHSCORES" => with_scores = true,
            "LIMIT" if i + 2 < a.len() => {
                limit = Some((parse_int(&a[i + 1])?, parse_int(&a[i + 2])?));
                i += 2;
            }
            _ => return Err(SYNTAX.to_owned()),
        }
        i += 1;
    }
    if limit.is_some() && !by_score {
        return Err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX".to_owned());
    }
    // Redis parses the range before it looks at the key.
    enum Range {
        Scores(ScoreBound, ScoreBound),
        Ranks(i64, i64),
    }
    let range = if by_score {
        // With REV the first bound is the maximum.
        let (min, max) = if rev { (&a[2], &a[1]) } else { (&a[1], &a[2]) };
        Range::Scores(ScoreBound::parse(min)?, ScoreBound::parse(max)?)
    } else {
        Range::Ranks(parse_int(&a[1])?, parse_int(&a[2])?)
    };
    let Some(z) = store.zset(&a[0])? else { return Ok(Reply::Array(Vec::new())) };
    let items: Vec<&(Score, Bytes)> = match range {
        Range::Scores(min, max) => {
            let matching = z.by_score.iter().filter(|(s, _)| min.below(s.0) && max.above(s.0));
            let ordered: Vec<_> = if rev { matching.rev().collect() } else { matching.collect() };
            match limit {
                Some((offset, _)) if offset < 0 => Vec::new(),
                Some((offset, n)) => {
                    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    ordered.into_iter().skip(offset).take(n).collect()
                }
                None => ordered,
            }
        }
        Range::Ranks(start, stop) => {
            let range = index_range(z.len(), start, stop);
            if rev {
                z.by_score.iter().rev().skip(range.start).take(range.len()).collect()
            } else {
                z.by_score.iter().skip(range.start).take(range.len()).collect()
            }
        }
    };
    let mut out = Vec::with_capacity(items.len() * if with_scores { 2 } else { 1 });
    for (score, member) in items {
        out.push(Reply::Bulk(member.clone()));
        if with_scores {
            out.push(Reply::bulk(format_score(score.0)));
        }
    }
    Ok(Reply::Array(out))
}

const BAD_ID: &str = "ERR Invalid stream ID specified as stream command argument";

fn parse_id(arg: &[u8]) -> Result<StreamId, String> {
    let text = std::str::from_utf8(arg).map_err(|_| BAD_ID.to_owned())?;
    let (ms, seq) = match text.split_once('-') {
        Some((ms, seq)) => (ms, Some(seq)),
        None => (text, None),
    };
    let ms = ms.parse().map_err(|_| BAD_ID.to_owned())?;
    let seq = seq.map_or(Ok(0), |s| s.parse().map_err(|_| BAD_ID.to_owned()))?;
    Ok((ms, seq))
}

/// A range bound of `XRANGE`: `-`, `+`, or an id whose missing sequence is 0 or the maximum.
fn parse_range_id(arg: &[u8], upper: bool) -> Result<StreamId, String> {
    match arg {
        b"-" => Ok((0, 0)),
        b"+" => Ok((u64::MAX, u64::MAX)),
        _ if !arg.contains(&b'-') && upper => parse_id(arg).map(|(ms, _)| (ms, u64::MAX)),
        _ => parse_id(arg),
    }
}

fn stream_entry((id, fields): (&StreamId, &Vec<(Bytes, Bytes)>)) -> Reply {
    Reply::Array(vec![
        Reply::bulk(format!("{}-{}", id.0, id.1)),
        Reply::Array(fields.iter().flat_map(|(f, v)| [Reply::Bulk(f.clone()), Reply::Bulk(v.clone())]).collect()),
    ])
}

fn trim(stream: &mut super::store::Stream, max: usize) -> usize {
    let mut removed = 0;
    while stream.entries.len() > max {
        stream.entries.pop_first();
        removed += 1;
    }
    removed
}

fn xadd(store: &mut Store, a: &[Bytes]) -> CmdResult {
    let mut i = 1;
    let mut max_len = None;
    let mut no_create = false;
    loop {
        let word = a.get(i).map(|w| String::from_utf8_lossy(w).to_ascii_uppercase()).unwrap_or_default();
        match word.as_str() {
            "NOMKSTREAM" => {
                no_create = true;
                i += 1;
            }
            "MAXLEN" => {
                let mut j = i + 1;
                if a.get(j).is_some_and(|op| op.as_ref() == b"~" || op.as_ref() == b"=") {
                    j += 1;
                }
                let n = a.get(j).ok_or(SYNTAX)?;
                max_len = Some(
                    usize::try_from(parse_int(n)?).map_err(|_| "ERR The MAXLEN argument must be >= 0.".to_owned())?,
                );
                i = j + 1;
            }
            _ => break,
        }
    }
    let fields = a.get(i + 1..).unwrap_or_default();
    if fields.is_empty() || !fields.len().is_multiple_of(2) {
        return Err("ERR wrong number of arguments for 'xadd' command".to_owned());
    }
    // The id is read, and 0-0 refused, before the key is looked at, as Redis does.
    enum NewId {
        Auto,
        AutoSeq(u64),
        Exact(StreamId),
    }
    let id_arg = &a[i];
    let wanted = if id_arg.as_ref() == b"*" {
        NewId::Auto
    } else {
        let text = String::from_utf8_lossy(id_arg);
        match text.strip_suffix("-*") {
            Some(ms) => NewId::AutoSeq(ms.parse().map_err(|_| BAD_ID.to_owned())?),
            None => NewId::Exact(parse_id(id_arg)?),
        }
    };
    if matches!(wanted, NewId::Exact((0, 0))) {
        return Err("ERR The ID specified in XADD must be greater than 0-0".to_owned());
    }
    let now = store.now;
    // The stream is created only once the id is known to be valid.
    let last = match store.stream(&a[0])? {
        Some(stream) => stream.last_id,
        None if no_create => return Ok(Reply::Nil),
        None => (0, 0),
    };
    let id = match wanted {
        NewId::Auto if now > last.0 => (now, 0),
        NewId::Auto => (last.0, last.1 + 1),
        NewId::AutoSeq(ms) if ms == last.0 => (ms, last.1 + 1),
        NewId::AutoSeq(ms) => (ms, 0),
        NewId::Exact(id) => id,
    };
    if id <= last {
        return Err("ERR The ID specified in XADD is equal or smaller than the target stream top item".to_owned());
    }
    let stream = store.stream_mut(&a[0], true)?.ok_or(WRONGTYPE)?;
    stream.entries.insert(id, fields.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect());
    stream.last_id = id;
    if let Some(max) = max_len {
        trim(stream, max);
    }
    Ok(Reply::bulk(format!("{}-{}", id.0, id.1)))
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS key... id...` without waiting: the caller handles `BLOCK`.
/// `$` is resolved to each stream's last id at the time of the call.
pub(crate) fn xread(store: &mut Store, a: &[Bytes]) -> CmdResult {
    let mut limit = usize::MAX;
    let mut i = 0;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_uppercase().as_str() {
            "COUNT" => {
                limit = usize::try_from(parse_int(a.get(i + 1).ok_or(SYNTAX)?)?).unwrap_or(0);
                i += 2;
            }
            "BLOCK" => {
                parse_int(a.get(i + 1).ok_or(SYNTAX)?)?;
                i += 2;
            }
            "STREAMS" => break,
            _ => return Err(SYNTAX.to_owned()),
        }
    }
    let rest = a.get(i + 1..).unwrap_or_default();
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(
            "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.".to_owned()
        );
    }
    let (keys, ids) = rest.split_at(rest.len() / 2);
    let mut out = Vec::new();
    for (key, id) in keys.iter().zip(ids) {
        let Some(stream) = store.stream(key)? else { continue };
        let after = if id.as_ref() == b"$" { stream.last_id } else { parse_id(id)? };
        let entries: Vec<Reply> = stream
            .entries
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(limit)
            .map(stream_entry)
            .collect();
        if !entries.is_empty() {
            out.push(Reply::Array(vec![Reply::Bulk(key.clone()), Reply::Array(entries)]));
        }
    }
    Ok(if out.is_empty() { Reply::Nil } else { Reply::Array(out) })
}

/// Runs `SCAN cursor MATCH pattern COUNT count` over the live keys in order.
pub(crate) fn scan(store: &Store, cursor: u64, pattern: &[u8], count: u32) -> (u64, Vec<Bytes>) {
    // Keys are visited in the order of a hash of their name, and the cursor is the next hash to
    // visit: keys present for the whole scan are returned whatever is added or deleted meanwhile,
    // as Redis guarantees.
    let count = usize::try_from(count.max(1)).unwrap_or(1);
    let mut live: Vec<(u64, &Bytes)> = store.live_keys().map(|k| (fnv1a(k), k)).filter(|(h, _)| *h >= cursor).collect();
    live.sort_unstable();
    let mut end = live.len().min(count);
    // A page never ends between keys of one hash, or the next would skip the rest of them.
    while end > 0 && end < live.len() && live[end].0 == live[end - 1].0 {
        end += 1;
    }
    let keys = live[..end].iter().filter(|(_, k)| glob::matches(pattern, k)).map(|(_, k)| (*k).clone()).collect();
    (live.get(end).map_or(0, |(h, _)| *h), keys)
}

/// FNV-1a, 64 bits: a stable order for `SCAN`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
