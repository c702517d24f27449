//! Service-side authentication: the operator bearer token and client
//! request signatures (see [`keybridge_proto::api::auth`]) with replay refusal.

use axum::http::HeaderMap;

use keybridge_proto::api::auth::{self, AuthError, HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, NONCE_HEX_LEN};
use keybridge_catalog::Catalog;
use keybridge_proto::secret::{ExposeSecret, SecretString};

/// Why a client request was refused: its credentials, or the catalog that
/// records nonces failed (a server error, not the client's).
#[derive(Debug)]
pub(super) enum Refusal {
    Auth(AuthError),
    Catalog(crate::Error),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::Auth(e)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, AuthError> {
    headers.get(name).ok_or(AuthError::Missing(name))?.to_str().map_err(|_| AuthError::Malformed(name))
}

/// What the headers of a signed request claim, checked as far as they can
/// be without the body: well formed, timestamp inside the skew window, the
/// client known. Only then is the body read ([`Claim::verify`]), so an
/// unauthenticated caller cannot make the service read a large body.
#[derive(Debug)]
pub(super) struct Claim {
    client: String,
    timestamp: u64,
    nonce: String,
    signature: String,
    public: [u8; 32],
    max_skew: u64,
}

/// Check the headers of a signed client request (see [`Claim`]).
pub(super) async fn claim(catalog: &dyn Catalog, max_skew: u64, headers: &HeaderMap) -> Result<Claim, Refusal> {
    let client = header(headers, HEADER_CLIENT)?;
    let timestamp: u64 = header(headers, HEADER_TIMESTAMP)?.parse().map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
    let nonce = header(headers, HEADER_NONCE)?;
    if nonce.len() != NONCE_HEX_LEN || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(HEADER_NONCE).into());
    }
    let signature = header(headers, HEADER_SIGNATURE)?;
    let now = auth::unix_now();
    let skew = now.abs_diff(timestamp);
    if skew > max_skew {
        return Err(AuthError::Skew(skew, max_skew).into());
    }
    let record = catalog.client_by_name(client).await.map_err(|_| AuthError::UnknownClient(client.to_owned()))?;
    let public = record.auth_public.ok_or_else(|| AuthError::NoAuthKey(client.to_owned()))?;
    Ok(Claim { client: client.to_owned(), timestamp, nonce: nonce.to_owned(), signature: signature.to_owned(), public, max_skew })
}

impl Claim {
    /// Verify the signature over the whole request and consume its nonce;
    /// returns the client's name. The nonce is recorded in the catalog
    /// until the request's timestamp has left the accepted window by
    /// another `max_skew` (after which the timestamp check alone refuses
    /// it, also at another service process whose clock is up to `max_skew`
    /// behind this one's), so a replay is refused by every service process
    /// on the catalog, also after a restart.
    pub(super) async fn verify(self, catalog: &dyn Catalog, method: &str, path_and_query: &str, body: &[u8]) -> Result<String, Refusal> {
        let Claim { client, timestamp, nonce, signature, public, max_skew } = self;
        auth::verify(&public, &auth::canonical(method, path_and_query, &client, timestamp, &nonce, body), &signature, &client)?;
        // Only a verified request consumes its nonce, so forged requests
        // cannot fill the table or burn a legitimate client's nonces.
        match catalog.consume_nonce(&client, &nonce, nonce_kept_until(timestamp, max_skew)).await {
            Ok(true) => Ok(client),
            Ok(false) => Err(AuthError::Replay.into()),
            Err(e) => Err(Refusal::Catalog(e)),
        }
    }
}

/// Until when a nonce stays in the catalog: the end of its request's window
/// plus the skew again (see [`Claim::verify`]).
fn nonce_kept_until(timestamp: u64, max_skew: u64) -> u64 {
    timestamp.saturating_add(max_skew.saturating_mul(2))
}

/// Check `Authorization: Bearer <token>` against the operator token.
pub(super) fn verify_operator(token: &SecretString, headers: &HeaderMap) -> Result<(), &'static str> {
    let given = keybridge_net::http::bearer(headers).map_err(|e| match e {
        keybridge_net::http::BearerError::Missing => "missing Authorization header (operator token)",
        keybridge_net::http::BearerError::Malformed => "malformed Authorization header",
        keybridge_net::http::BearerError::NotBearer => "Authorization must be 'Bearer <operator token>'",
    })?;
    if bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.expose_secret().as_bytes())) {
        Ok(())
    } else {
        Err("wrong operator token")
    }
}

#[cfg(test)]
mod tests {
    /// A request is accepted while |now - timestamp| <= skew; its nonce must
    /// outlive that window by a second skew, so an instance whose clock runs
    /// up to `skew` behind still finds it.
    #[test]
    fn nonces_outlive_the_window_by_the_skew() {
        let (t, skew) = (1_000_000, 300);
        let last_accepted_here = t + skew;
        let last_accepted_by_a_slower_clock = last_accepted_here + skew;
        assert!(super::nonce_kept_until(t, skew) >= last_accepted_by_a_slower_clock);
        assert_eq!(super::nonce_kept_until(u64::MAX, skew), u64::MAX);
    }
}
