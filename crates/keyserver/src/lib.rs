//! The key server (the patent's key-managing server). It holds each post's session key,
//! sealed to its own OpenPGP key on deposit and kept encrypted under a master key at rest, and
//! releases it only as a PKESK to a member the signed roster allows. It never receives a
//! message body, and the code that decrypts one (`hushlist-envelope`) is not in its
//! dependency graph.

pub mod daemon;
pub mod http;
pub mod master;
pub mod metrics;
pub mod options;
pub mod release;
pub mod service;

pub use http::router;
pub use hushlist_http::ApiError;
pub use release::{ReleaseError, release};
pub use service::{KeyServer, ServiceConfig};
