//! `X-Forwarded-For`: from an untrusted peer the header is ignored; from a trusted proxy the
//! client is the peer or an address the header names.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use redtail_ratelimit::ClientIp;

fuzz_target!(|header: &str| {
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(ClientIp::new().client(peer, Some(header)), peer);
    let Ok(trusted) = ClientIp::new().with_trusted_proxies(["10.0.0.0/8", "::1/128"]) else { return };
    let client = trusted.client(peer, Some(header));
    let named = header.split(',').any(|t| t.trim().parse::<IpAddr>().ok() == Some(client));
    assert!(client == peer || named || header.contains(&client.to_string()), "{client} from {header:?}");
});
