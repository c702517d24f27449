//! Arbitrary text as a MediaAgent job token (what a stranger puts in
//! `Authorization: Bearer`), and minted tokens with arbitrary fields.
//!
//! Nothing may panic; a token the agent's key did not mint is never
//! accepted; a minted token is accepted for its own job and operation and
//! names its own client.
#![no_main]

use keybridge_proto::api::agent_token::{AgentKey, AgentOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = AgentKey::from_hex(&"5a".repeat(32)).unwrap();
    let text = String::from_utf8_lossy(data);
    for op in [AgentOp::Put, AgentOp::Get] {
        // Stranger's text: accepted only if it happens to be a token this
        // key minted for that job, which random input cannot be.
        if let Ok(client) = key.verify(&text, op, "job", 0) {
            assert_eq!(key.mint(op, "job", &client, text.rsplit('.').nth(1).and_then(|e| e.parse().ok()).unwrap_or(0)), text, "a token nobody minted was accepted");
        }
    }
    // Minted from arbitrary fields: verifies for its job and names its client.
    let mut parts = text.splitn(2, '\u{0}');
    let (job, client) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let token = key.mint(AgentOp::Get, job, client, 100);
    assert_eq!(key.verify(&token, AgentOp::Get, job, 100).as_deref(), Ok(client));
    assert!(key.verify(&token, AgentOp::Put, job, 100).is_err());
});
