//! The session scripts and their contracts (see `redtail_core::contract`): each script's keys,
//! arguments and reply positions by name, handed to its `.lua` file in a generated prelude
//! before `lua/header.lua` (the stored header's Lua reader) and the file itself.

use std::sync::LazyLock;

use redtail_core::{Script, contract, lua_numbers};

/// A script's source: the prelude of `consts`, `lua/header.lua`, then `body`.
fn source(consts: impl IntoIterator<Item = (&'static str, String)>, body: &str) -> String {
    let prelude = contract::prelude("crates/redtail-session/src/script.rs", consts);
    format!("{prelude}{}{body}", include_str!("../lua/header.lua"))
}

lua_numbers! {
    /// The keys of a script on one session and its index.
    SessionKey {
        /// The session.
        Session = 1 => "K_SESSION",
        /// The index of the sessions under the session's routing tag.
        Index = 2 => "K_INDEX",
    }
}

lua_numbers! {
    /// The create script's arguments (one caller's, in a batch).
    CreateArg {
        /// The stored value up to the creation time (`header::around_created`).
        Head = 1 => "ARG_HEAD",
        /// The stored value after the creation time.
        Tail = 2 => "ARG_TAIL",
        /// The lifetime in seconds (the idle lifetime, capped by the absolute one).
        LifetimeS = 3 => "ARG_LIFETIME_S",
        /// The session id.
        Id = 4 => "ARG_ID",
        /// The session key prefix: a session key is this and an id.
        Prefix = 5 => "ARG_PREFIX",
        /// The cap on the user's sessions (0: none).
        Cap = 6 => "ARG_CAP",
        /// The user id.
        User = 7 => "ARG_USER",
    }
}

lua_numbers! {
    /// The create script's reply, times in Unix seconds.
    CreateReply {
        /// The server's time: the creation time.
        Now = 1 => "REPLY_NOW",
        /// The expiry.
        Expires = 2 => "REPLY_EXPIRES",
        /// How many of the user's older sessions the cap ended.
        Evicted = 3 => "REPLY_EVICTED",
        // `lua/create.lua` replies with a constructor in this order (tested).
    }
}

/// `lua/create.lua`: creates sessions, several callers' in one call.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    let body = source(SessionKey::consts().chain(CreateArg::consts()), include_str!("../lua/create.lua"));
    Script::batched("session_create", body)
});

lua_numbers! {
    /// The update script's keys.
    UpdateKey {
        /// The session.
        Session = 1 => "K_SESSION",
    }
}

lua_numbers! {
    /// The update script's arguments.
    UpdateArg {
        /// The new data, as the codec wrote it.
        Data = 1 => "ARG_DATA",
    }
}

/// `lua/update.lua`: replaces a live session's data.
pub(crate) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "session_update",
        source(UpdateKey::consts().chain(UpdateArg::consts()), include_str!("../lua/update.lua")),
    )
});

lua_numbers! {
    /// The extend script's arguments.
    ExtendArg {
        /// The session id.
        Id = 1 => "ARG_ID",
        /// The fraction of the idle lifetime the expiry must move by to be written.
        Fraction = 2 => "ARG_FRACTION",
        /// The idle lifetime of standard sessions, in seconds.
        IdleS = 3 => "ARG_IDLE_S",
        /// The idle lifetime of remember-me sessions, in seconds.
        RememberIdleS = 4 => "ARG_REMEMBER_IDLE_S",
    }
}

/// `lua/extend.lua`: slides a session's expiry.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "session_extend",
        source(SessionKey::consts().chain(ExtendArg::consts()), include_str!("../lua/extend.lua")),
    )
});

lua_numbers! {
    /// The rotate script's keys.
    RotateKey {
        /// The session under its old id.
        Old = 1 => "K_OLD",
        /// The session under its new id.
        New = 2 => "K_NEW",
        /// The index of the sessions under their routing tag.
        Index = 3 => "K_INDEX",
    }
}

lua_numbers! {
    /// The rotate script's arguments.
    RotateArg {
        /// The old id.
        OldId = 1 => "ARG_OLD_ID",
        /// The new id.
        NewId = 2 => "ARG_NEW_ID",
    }
}

/// `lua/rotate.lua`: moves a session to a new id.
pub(crate) static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "session_rotate",
        source(RotateKey::consts().chain(RotateArg::consts()), include_str!("../lua/rotate.lua")),
    )
});

lua_numbers! {
    /// The invalidate script's arguments.
    InvalidateArg {
        /// The session id.
        Id = 1 => "ARG_ID",
    }
}

/// `lua/invalidate.lua`: ends one session.
pub(crate) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    let body = source(SessionKey::consts().chain(InvalidateArg::consts()), include_str!("../lua/invalidate.lua"));
    Script::new("session_invalidate", body)
});

lua_numbers! {
    /// The keys of a script on a user's sessions.
    UserKey {
        /// The index of the sessions under the user's routing tag.
        Index = 1 => "K_INDEX",
    }
}

lua_numbers! {
    /// The arguments of a script on a user's sessions.
    UserArg {
        /// The session key prefix: a session key is this and an id.
        Prefix = 1 => "ARG_PREFIX",
        /// The user id.
        User = 2 => "ARG_USER",
    }
}

/// `lua/invalidate_all.lua`: ends every session of a user.
pub(crate) static INVALIDATE_ALL: LazyLock<Script> = LazyLock::new(|| {
    let body = source(UserKey::consts().chain(UserArg::consts()), include_str!("../lua/invalidate_all.lua"));
    Script::new("session_invalidate_all", body)
});

/// `lua/list.lua`: a user's live sessions.
pub(crate) static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new("session_list", source(UserKey::consts().chain(UserArg::consts()), include_str!("../lua/list.lua")))
});

#[cfg(test)]
mod tests {
    #[test]
    fn every_script_names_its_positions_and_declares_every_name_it_uses() {
        let header = include_str!("../lua/header.lua");
        assert!(redtail_core::contract::literal_positions(header).is_empty());
        for (name, file, script) in [
            ("create", include_str!("../lua/create.lua"), &super::CREATE),
            ("update", include_str!("../lua/update.lua"), &super::UPDATE),
            ("extend", include_str!("../lua/extend.lua"), &super::EXTEND),
            ("rotate", include_str!("../lua/rotate.lua"), &super::ROTATE),
            ("invalidate", include_str!("../lua/invalidate.lua"), &super::INVALIDATE),
            ("invalidate_all", include_str!("../lua/invalidate_all.lua"), &super::INVALIDATE_ALL),
            ("list", include_str!("../lua/list.lua"), &super::LIST),
        ] {
            let checked =
                redtail_core::contract::check_script(name, file, script.source(), header, &["K_", "ARG_", "REPLY_"]);
            assert_eq!(checked, Ok(()));
        }
    }

    /// `lua/create.lua` builds its reply with a table constructor, in this order.
    #[test]
    fn the_create_reply_is_built_in_contract_order() {
        let order: Vec<usize> = super::CreateReply::ALL.iter().map(|f| f.at()).collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(include_str!("../lua/create.lua").contains("return {now, expires, evicted}"));
    }
}
