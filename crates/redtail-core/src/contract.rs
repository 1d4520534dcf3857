//! The contract between a crate's Rust and its Lua scripts, kept in one place: each script's
//! positions in `KEYS`, `ARGV` and its reply, and its operation codes, are declared in Rust with
//! [`lua_numbers!`](crate::lua_numbers) and [`lua_codes!`](crate::lua_codes), and handed to the
//! script as a generated [`prelude`] of Lua constants (`local K_SESSION, ARG_ID = 1, 4`), so
//! the `.lua` file names them and never counts. The Rust side builds arguments by matching over
//! the enum (the compiler checks that every position is filled) and reads replies by it.
//!
//! [`literal_positions`] and [`undeclared_names`] are the tests each crate runs over its `.lua`
//! files: no `KEYS[1]`, and no contract name the prelude does not declare.

/// Declares an enum whose variants stand for Lua constants: positions in `KEYS`, `ARGV` or a
/// reply, strides, flags. Each variant names its Lua constant and its number; the enum gets
/// `ALL` (every variant in order), `at()` (its number) and `lua()` (the constant and its value,
/// for [`prelude`]).
///
/// ```
/// redtail_core::lua_numbers! {
///     /// The script's keys.
///     Keys {
///         /// The session.
///         Session = 1 => "K_SESSION",
///     }
/// }
/// assert_eq!(Keys::Session.at(), 1);
/// assert_eq!(redtail_core::contract::prelude("example", Keys::consts()), "-- Generated from example: the script's contract.\nlocal K_SESSION = 1\n");
/// ```
#[macro_export]
macro_rules! lua_numbers {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:literal => $lua:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(dead_code, reason = "a contract declares every position; code reads some")]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant = $value),+
        }

        #[allow(dead_code, reason = "the prelude and the tests read every table; code reads some")]
        impl $name {
            /// Every variant, in order.
            pub(crate) const ALL: &[$name] = &[$($name::$variant),+];

            /// The variant's number.
            pub(crate) const fn at(self) -> usize {
                self as usize
            }

            /// The Lua constant that stands for it, and its value.
            pub(crate) fn lua(self) -> (&'static str, String) {
                match self {
                    $($name::$variant => ($lua, $value.to_string())),+
                }
            }

            /// Every variant's constant, for [`prelude`](redtail_core::contract::prelude).
            pub(crate) fn consts() -> impl Iterator<Item = (&'static str, String)> {
                Self::ALL.iter().map(|v| v.lua())
            }
        }
    };
}

/// Declares an enum of operation codes: each variant names its Lua constant and the string the
/// script receives (`code()`); `lua()` gives the constant and its quoted value, for [`prelude`].
#[macro_export]
macro_rules! lua_codes {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $lua:literal = $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant),+
        }

        #[allow(dead_code, reason = "the prelude and the tests read every table; code reads some")]
        impl $name {
            /// Every variant, in order.
            pub(crate) const ALL: &[$name] = &[$($name::$variant),+];

            /// The code the script receives.
            pub(crate) const fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code),+
                }
            }

            /// The Lua constant that stands for it, and its value (a quoted string).
            pub(crate) fn lua(self) -> (&'static str, String) {
                match self {
                    $($name::$variant => ($lua, format!("'{}'", $code))),+
                }
            }

            /// Every variant's constant, for [`prelude`](redtail_core::contract::prelude).
            pub(crate) fn consts() -> impl Iterator<Item = (&'static str, String)> {
                Self::ALL.iter().map(|v| v.lua())
            }
        }
    };
}

/// The last part of a slot's guard key (`<prefix>:{<tag>}:migrating`): a key that never
/// exists, declared by a script that reaches keys it cannot declare (built from a prefix and an
/// id it reads), all in the guard's slot. While that slot migrates between cluster nodes, Redis
/// refuses a call of several keys whole (`TRYAGAIN`) when one of them is missing, so the script
/// never runs on a half-moved slot and never fails after its first writes. The in-memory
/// backend's key audit (`redtail_testkit::MemoryBackend::auditing_script_keys`) knows it.
pub const SLOT_GUARD: &str = "migrating";

/// A Lua prelude declaring `consts` (`local NAME = value` a line), headed by a comment naming
/// `origin`, the Rust module the contract lives in.
pub fn prelude<'a>(origin: &str, consts: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut prelude = format!("-- Generated from {origin}: the script's contract.\n");
    for (name, value) in consts {
        prelude.push_str(&format!("local {name} = {value}\n"));
    }
    prelude
}

/// Checks one script, for a crate's tests: its `.lua` `file` indexes `KEYS` and `ARGV` by name
/// only, and uses no contract name (a word starting with one of `prefixes`) that the prelude of
/// the script's `source` (everything before `first`, the first file after the prelude) does not
/// declare. The error says which script and what.
pub fn check_script(name: &str, file: &str, source: &str, first: &str, prefixes: &[&str]) -> Result<(), String> {
    let literal = literal_positions(file);
    if !literal.is_empty() {
        return Err(format!(
            "{name}.lua indexes KEYS or ARGV by a literal: {literal:?}; name the position in its contract"
        ));
    }
    let prelude = &source[..source.find(first).unwrap_or(0)];
    let missing = undeclared_names(prelude, file, prefixes);
    if !missing.is_empty() {
        return Err(format!("{name}.lua uses {missing:?}, which its contract does not declare"));
    }
    Ok(())
}

/// The lines of `lua` (comments left out) that index `KEYS` or `ARGV` by a literal number.
pub fn literal_positions(lua: &str) -> Vec<String> {
    code(lua)
        .filter(|line| {
            ["KEYS[", "ARGV["].iter().any(|array| {
                line.match_indices(array)
                    .any(|(at, _)| line[at + array.len()..].starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .map(|line| line.trim().to_owned())
        .collect()
}

/// The contract names `lua` uses (upper-case words starting with one of `prefixes`, such as
/// `K_` or `ARG_`) that neither the generated `prelude` nor a `local` of `lua` itself declares.
pub fn undeclared_names(prelude: &str, lua: &str, prefixes: &[&str]) -> Vec<String> {
    let declared = |text: &str| -> Vec<String> {
        code(text)
            .filter_map(|line| line.trim_start().strip_prefix("local "))
            .flat_map(|rest| rest.split('=').next().unwrap_or("").split(',').map(|n| n.trim().to_owned()))
            .collect()
    };
    let (known, own) = (declared(prelude), declared(lua));
    let mut missing: Vec<String> =
        contract_names(lua, prefixes).into_iter().filter(|name| !known.contains(name) && !own.contains(name)).collect();
    missing.dedup();
    missing
}

/// Upper-case names with one of `prefixes`, as Lua code uses them, sorted.
fn contract_names(lua: &str, prefixes: &[&str]) -> Vec<String> {
    let text = code(lua).collect::<Vec<_>>().join("\n");
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && bytes[i].is_ascii_uppercase() {
            let end = (i..bytes.len())
                .find(|&j| !(bytes[j].is_ascii_uppercase() || bytes[j].is_ascii_digit() || bytes[j] == b'_'))
                .unwrap_or(bytes.len());
            let word = &text[i..end];
            let lower_follows = bytes.get(end).is_some_and(|b| b.is_ascii_lowercase());
            if !lower_follows && prefixes.iter().any(|p| word.starts_with(p)) {
                names.push(word.to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names.sort();
    names
}

/// Lines of Lua code, without comments.
fn code(lua: &str) -> impl Iterator<Item = &str> {
    lua.lines().map(|line| line.split("--").next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_position_and_an_undeclared_name_are_found() {
        let lua = "local K_OWN = 3 -- KEYS[9] in a comment is fine\nredis.call('GET', KEYS[1])\nreturn ARGV[ARG_ID] .. K_OWN .. ARG_GONE\n";
        assert_eq!(literal_positions(lua), ["redis.call('GET', KEYS[1])"]);
        let prelude = prelude("tests", [("ARG_ID", "4".to_owned())]);
        assert_eq!(undeclared_names(&prelude, lua, &["K_", "ARG_"]), ["ARG_GONE"]);
        assert!(undeclared_names(&prelude, "return ARGV[ARG_ID]", &["ARG_"]).is_empty());
    }
}
