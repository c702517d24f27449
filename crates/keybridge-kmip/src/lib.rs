//! The KMIP protocol layer (OASIS Key Management Interoperability Protocol).
//!
//! Everything here is free of I/O: [`ttlv`] turns bytes into [`ttlv::Item`]
//! trees and back, [`tags`] names tags and enumeration values, and
//! [`render`] prints trees for logs, diagnostics and tests. The transport
//! (TLS to the KMIP server) lives with the KMIP backend in keybridge-kms.
//!
//! It stands alone: no I/O, no async runtime, no other keybridge crate, so
//! anyone may reuse it as a KMIP codec.

pub mod render;
pub mod tags;
pub mod ttlv;
pub mod messages;
