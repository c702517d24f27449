//! MediaAgent access tokens: the service's permission for one client to
//! upload, or to download, one job's stream, checked by the MediaAgent
//! without asking the service. The token names the client, so the agent
//! can hold each client to its own limits.
//!
//! The service and the agent share a 32-byte key (`keybridge init` writes it
//! to `[service] media_agent_key_file`; the agent reads the same file with
//! `--token-key`). A token is
//!
//! ```text
//! v2.<op>.<job>.<hex client>.<expires>.<hex HMAC-SHA256(key, "keybridge/v2/agent-token" 0 op 0 job 0 client 0 expires)>
//! ```
//!
//! with `op` `put` (store the stream) or `get` (read it or its index), `job`
//! the job id, `client` the name of the client the job belongs to (hex, so
//! no name can shift the fields) and `expires` Unix seconds. The service mints a `put` token
//! when it records a job for its client and a `get` token when the job's
//! owner reads it for a restore; the client sends it to the agent as
//! `Authorization: Bearer`. A token names one job and one operation, so a
//! leaked token cannot reach other jobs, and it is checked when a request
//! starts (an upload that began in time may run past `expires`).
//!
//! What it does not change: the stream is authenticated end to end by the
//! client's AEAD, so an agent (or anyone holding a token) can lose or damage
//! data but not read or forge it. The token stops strangers from filling
//! the agent's disk, claiming job ids before their owners, or downloading
//! ciphertext. No I/O here: the service and the agent load the key.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// How long a freshly minted token is accepted.
pub const TOKEN_TTL_SECS: u64 = 3600;

const DOMAIN: &[u8] = b"keybridge/v2/agent-token";
const VERSION: &str = "v2";
const FIELDS: &str = "expected six '.'-separated fields";

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOp {
    /// Upload the job's stream (once).
    Put,
    /// Download the job's stream or read its index.
    Get,
}

impl AgentOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentOp::Put => "put",
            AgentOp::Get => "get",
        }
    }
}

/// The key shared by the service and the MediaAgent.
#[derive(Clone)]
pub struct AgentKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey(<redacted>)")
    }
}

/// Why the agent refused a token. The texts name what was wrong and never
/// echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no MediaAgent token (send the one the service gave for this job as `Authorization: Bearer`)")]
    Missing,
    #[error("malformed MediaAgent token: {0}")]
    Malformed(&'static str),
    #[error("the MediaAgent token is for job {token_job}, not {job}")]
    OtherJob { token_job: String, job: String },
    #[error("the MediaAgent token allows '{allowed}', not '{wanted}'")]
    OtherOp { allowed: String, wanted: &'static str },
    #[error("the MediaAgent token expired {0} s ago (ask the service again)")]
    Expired(u64),
    #[error("the MediaAgent token's signature does not verify (not minted with this agent's key)")]
    BadSignature,
}

impl AgentKey {
    /// The key from its file (64 hex digits on the first line, mode 0600).
    pub fn read(path: &std::path::Path) -> crate::Result<AgentKey> {
        use secrecy::ExposeSecret;
        let text = crate::secret::read_secret_file(path, "reading MediaAgent token key")?;
        AgentKey::from_hex(text.expose_secret())
            .map_err(|reason| crate::Error::Config { path: path.to_owned(), reason: format!("MediaAgent token key: {reason}") })
    }

    /// The key from its hex form (64 hex digits, as in the key file).
    pub fn from_hex(hex_key: &str) -> Result<AgentKey, String> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), &mut key[..]).map_err(|_| "must hold 64 hex digits (32 bytes)".to_owned())?;
        Ok(AgentKey(key))
    }

    fn mac(&self, op: &str, job: &str, client: &[u8], expires: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        for part in [DOMAIN, op.as_bytes(), job.as_bytes(), client, expires.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        mac
    }

    /// A token allowing `client` to `op` on `job` until `expires` (Unix
    /// seconds).
    pub fn mint(&self, op: AgentOp, job: &str, client: &str, expires: u64) -> String {
        let expires = expires.to_string();
        let tag = self.mac(op.as_str(), job, client.as_bytes(), &expires).finalize().into_bytes();
        format!("{VERSION}.{}.{job}.{}.{expires}.{}", op.as_str(), hex::encode(client), hex::encode(tag))
    }

    /// Check that `token` allows `op` on `job` at `now` (Unix seconds);
    /// returns the client it was minted for.
    pub fn verify(&self, token: &str, op: AgentOp, job: &str, now: u64) -> Result<String, TokenError> {
        // Two fields from the left, three from the right; the job id is
        // what is left in the middle (whatever it holds).
        let mut left = token.splitn(3, '.');
        let (Some(version), Some(t_op), Some(rest)) = (left.next(), left.next(), left.next()) else {
            return Err(TokenError::Malformed(FIELDS));
        };
        let mut right = rest.rsplitn(4, '.');
        let (Some(tag), Some(expires), Some(client), Some(t_job)) = (right.next(), right.next(), right.next(), right.next()) else {
            return Err(TokenError::Malformed(FIELDS));
        };
        if version != VERSION {
            return Err(TokenError::Malformed("unknown version (expected v2)"));
        }
        let tag = hex::decode(tag).map_err(|_| TokenError::Malformed("the signature is not hex"))?;
        let client = hex::decode(client).map_err(|_| TokenError::Malformed("the client is not hex"))?;
        let expiry: u64 = expires.parse().map_err(|_| TokenError::Malformed("the expiry is not a number"))?;
        // The signature first: nothing else a stranger wrote is reported.
        self.mac(t_op, t_job, &client, expires).verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
        if t_job != job {
            return Err(TokenError::OtherJob { token_job: t_job.to_owned(), job: job.to_owned() });
        }
        if t_op != op.as_str() {
            return Err(TokenError::OtherOp { allowed: t_op.to_owned(), wanted: op.as_str() });
        }
        if now > expiry {
            return Err(TokenError::Expired(now - expiry));
        }
        // Minted by the service from a checked name: valid UTF-8.
        String::from_utf8(client).map_err(|_| TokenError::Malformed("the client is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "0190c6a2-3b4c-7def-8123-456789abcdef";
    const OTHER: &str = "0190c6a2-3b4c-7def-8123-456789abcde0";

    fn key(b: u8) -> AgentKey {
        AgentKey::from_hex(&hex::encode([b; 32])).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_for_its_job_and_op_until_it_expires() {
        let k = key(1);
        let t = k.mint(AgentOp::Put, JOB, "alice", 1000);
        assert!(t.starts_with(&format!("v2.put.{JOB}.{}.1000.", hex::encode("alice"))), "{t}");
        assert_eq!(k.verify(&t, AgentOp::Put, JOB, 1000), Ok("alice".to_owned()));
        assert_eq!(k.verify(&t, AgentOp::Put, JOB, 1001), Err(TokenError::Expired(1)));
        assert_eq!(k.verify(&t, AgentOp::Get, JOB, 10), Err(TokenError::OtherOp { allowed: "put".into(), wanted: "get" }));
        assert_eq!(k.verify(&t, AgentOp::Put, OTHER, 10), Err(TokenError::OtherJob { token_job: JOB.into(), job: OTHER.into() }));
    }

    #[test]
    fn a_job_name_with_dots_is_carried_whole() {
        let k = key(3);
        let t = k.mint(AgentOp::Get, "../../etc/passwd", "c.d.e", 50);
        assert_eq!(k.verify(&t, AgentOp::Get, "../../etc/passwd", 1), Ok("c.d.e".to_owned()));
        assert_eq!(k.verify(&t, AgentOp::Get, "../..", 1), Err(TokenError::OtherJob { token_job: "../../etc/passwd".into(), job: "../..".into() }));
    }

    #[test]
    fn another_key_or_any_edited_field_fails_the_signature() {
        let k = key(1);
        let t = k.mint(AgentOp::Get, JOB, "alice", 5000);
        assert_eq!(key(2).verify(&t, AgentOp::Get, JOB, 10), Err(TokenError::BadSignature));
        let edits = [
            t.replace(".get.", ".put."),
            t.replace(".5000.", ".9999."),
            t.replace(JOB, OTHER),
            t.replace(&hex::encode("alice"), &hex::encode("bob")),
        ];
        for edited in edits {
            assert_ne!(edited, t);
            assert_eq!(k.verify(&edited, AgentOp::Get, JOB, 10), Err(TokenError::BadSignature), "{edited}");
        }
        // A changed signature digit.
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify(std::str::from_utf8(&flipped).unwrap(), AgentOp::Get, JOB, 10), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_named() {
        let k = key(1);
        for (token, why) in [
            ("", FIELDS),
            ("v2.get.job.61.1", FIELDS),
            ("v2.get.job.61", FIELDS),
            ("v1.get.job.61.1.00", "unknown version (expected v2)"),
            ("v2.get.job.61.1.zz", "the signature is not hex"),
            ("v2.get.job.zz.1.00", "the client is not hex"),
            ("v2.get.job.61.soon.00", "the expiry is not a number"),
        ] {
            assert_eq!(k.verify(token, AgentOp::Get, "job", 0), Err(TokenError::Malformed(why)), "{token}");
        }
    }

    #[test]
    fn key_file_contents_must_be_64_hex_digits() {
        assert!(AgentKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(AgentKey::from_hex(&format!("{}\n", "ab".repeat(32))).is_ok());
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(AgentKey::from_hex(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{:?}", key(7)), "AgentKey(<redacted>)");
    }
}
