//! The KMIP protocol layer (OASIS Key Management Interoperability Protocol).
//!
//! Everything here is free of I/O: [`ttlv`] turns bytes into [`ttlv::Item`]
//! trees and back, [`tags`] names tags and enumeration values, and
//! [`render`] prints trees for logs, diagnostics and tests. The transport
//! (TLS to the KMIP server) lives with the KMIP backend.

pub mod render;
pub mod tags;
pub mod ttlv;
pub mod messages;
