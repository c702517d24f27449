//! The network plumbing of keybridge's HTTPS endpoints: TLS configurations
//! ([`tls`]) for the service, the MediaAgent, the backup client and the KMIP
//! client, and, with the `server` feature, the HTTP server loop with its
//! error answers (`http`; the backup client leaves it out and links no
//! server).
//!
//! It knows the wire only through `keybridge-proto`; it must not depend on
//! the catalog, a KMS or the flows.

#[cfg(feature = "server")]
pub mod http;
pub mod cert;
pub mod direct;
pub mod tls;

/// Bulk file data through the page cache is read and written in pieces of
/// this size: the backup client's file reads and the restore's buffered
/// file writes (direct transfers use [`direct::DIRECT_PIECE`]). Large enough that system calls are few (tar's own copy
/// loops move 8 KiB per call); small enough to stay under a cliff measured
/// on Linux 6.18/ext4 in some memory states, where 1 MiB and 2 MiB write()
/// calls cost 3-5 times the kernel CPU of 256 KiB calls for the same data
/// (1 GiB: 1.0-2.7 s of system time against 0.33-0.7 s; in other states
/// both took 0.3-0.4 s; see docs/design.md, "Performance notes").
pub const FILE_IO_BUF: usize = 256 * 1024;

/// Bytes read from the socket at once under TLS (the backup client).
pub const TLS_READ_BUFFER: usize = 256 * 1024;

/// Bytes a server connection reads from its socket at once, and the most
/// HTTP/1 buffers for a request body: small, because a MediaAgent serves
/// many uploads at once and copies each frame into its write batch at once
/// (64 concurrent uploads held 150 MiB with 256 KiB and hyper's 400 KiB).
pub const SERVER_READ_BUFFER: usize = 64 * 1024;
