//! Service-side authentication: the operator bearer token and client
//! request signatures (see [`crate::api::auth`]) with replay refusal.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;

use crate::api::auth::{self, AuthError, HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, NONCE_HEX_LEN};
use crate::catalog::Catalog;
use crate::secret::{ExposeSecret, SecretString};

/// Nonces accepted within the clock-skew window, per client. A nonce is
/// remembered until its timestamp leaves the window, after which the
/// timestamp check alone refuses the request.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: Mutex<HashMap<(String, String), u64>>,
}

/// Refuse new nonces beyond this many live ones (memory bound under a
/// flood of valid signatures; ~100 bytes each).
const MAX_NONCES: usize = 1_000_000;

impl NonceCache {
    /// Record `nonce`; false if it was already seen (a replay).
    fn insert(&self, client: &str, nonce: &str, expires: u64, now: u64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_NONCES / 2 {
            seen.retain(|_, exp| *exp > now);
        }
        if seen.len() >= MAX_NONCES {
            return Err(AuthError::Malformed("x-keybridge-nonce (too many requests in the window)"));
        }
        match seen.entry((client.to_owned(), nonce.to_owned())) {
            std::collections::hash_map::Entry::Occupied(_) => Err(AuthError::Replay),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(expires);
                Ok(())
            }
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, AuthError> {
    headers.get(name).ok_or(AuthError::Missing(name))?.to_str().map_err(|_| AuthError::Malformed(name))
}

/// Check a signed client request; returns the client's name.
pub fn verify_client(
    catalog: &Catalog,
    nonces: &NonceCache,
    max_skew: u64,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, AuthError> {
    let client = header(headers, HEADER_CLIENT)?;
    let timestamp: u64 = header(headers, HEADER_TIMESTAMP)?.parse().map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
    let nonce = header(headers, HEADER_NONCE)?;
    if nonce.len() != NONCE_HEX_LEN || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(HEADER_NONCE));
    }
    let signature = header(headers, HEADER_SIGNATURE)?;
    let now = auth::unix_now();
    let skew = now.abs_diff(timestamp);
    if skew > max_skew {
        return Err(AuthError::Skew(skew, max_skew));
    }
    let record = catalog.client_by_name(client).map_err(|_| AuthError::UnknownClient(client.to_owned()))?;
    let public = record.auth_public.ok_or_else(|| AuthError::NoAuthKey(client.to_owned()))?;
    auth::verify(&public, &auth::canonical(method, path_and_query, client, timestamp, nonce, body), signature, client)?;
    // Only a verified request consumes its nonce, so forged requests cannot
    // fill the cache or burn a legitimate client's nonces.
    nonces.insert(client, nonce, timestamp + max_skew, now)?;
    Ok(client.to_owned())
}

/// Check `Authorization: Bearer <token>` against the operator token.
pub fn verify_operator(token: &SecretString, headers: &HeaderMap) -> Result<(), &'static str> {
    let given = crate::http::bearer(headers).map_err(|e| match e {
        crate::http::BearerError::Missing => "missing Authorization header (operator token)",
        crate::http::BearerError::Malformed => "malformed Authorization header",
        crate::http::BearerError::NotBearer => "Authorization must be 'Bearer <operator token>'",
    })?;
    if crate::crypto::ct_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
        Ok(())
    } else {
        Err("wrong operator token")
    }
}
