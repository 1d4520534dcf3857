//! The cache's scripts and their contracts (see `redtail_core::contract`): each script's keys
//! and arguments by name, handed to its `.lua` file in a generated prelude.

use std::sync::LazyLock;

use redtail_core::{Script, contract, lua_numbers};

/// A script's source: the prelude of `consts`, then `body`.
fn source(consts: impl IntoIterator<Item = (&'static str, String)>, body: &str) -> String {
    format!("{}{body}", contract::prelude("crates/redtail-cache/src/script.rs", consts))
}

lua_numbers! {
    /// The release script's keys.
    ReleaseKey {
        /// The load lock.
        Lock = 1 => "K_LOCK",
    }
}

lua_numbers! {
    /// The release script's arguments.
    ReleaseArg {
        /// The holder's token.
        Token = 1 => "ARG_TOKEN",
    }
}

/// `lua/release.lua`: releases a load lock if the caller still holds it.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    let consts = ReleaseKey::consts().chain(ReleaseArg::consts());
    Script::new("cache_release", source(consts, include_str!("../lua/release.lua")))
});

lua_numbers! {
    /// The write script's arguments: for each entry (its key is the same position in `KEYS`)
    /// `ENTRY_FIELDS` values from `(i - 1) * ENTRY_FIELDS`.
    WriteArg {
        /// The stored value (the envelope, then the encoded value).
        Value = 1 => "ENTRY_VALUE",
        /// Its life in milliseconds.
        LifeMs = 2 => "ENTRY_LIFE_MS",
    }
}

/// `lua/write.lua`: writes a batch of entries in one call.
pub(crate) static WRITE: LazyLock<Script> = LazyLock::new(|| {
    let consts = WriteArg::consts().chain([("ENTRY_FIELDS", WriteArg::ALL.len().to_string())]);
    Script::new("cache_write", source(consts, include_str!("../lua/write.lua"))).across_slots()
});

#[cfg(test)]
mod tests {
    #[test]
    fn every_script_names_its_positions_and_declares_every_name_it_uses() {
        for (name, file, script) in [
            ("release", include_str!("../lua/release.lua"), &super::RELEASE),
            ("write", include_str!("../lua/write.lua"), &super::WRITE),
        ] {
            let checked =
                redtail_core::contract::check_script(name, file, script.source(), file, &["K_", "ARG_", "ENTRY_"]);
            assert_eq!(checked, Ok(()));
        }
    }
}
