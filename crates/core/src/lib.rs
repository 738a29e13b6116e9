//! The pure core of hushlist: formats and rules shared by the key server, the list server
//! and the client. Nothing here does I/O or reads the clock; callers pass time and randomness
//! in. Nothing here decrypts a post either: that lives in `hushlist-envelope`, which the
//! servers do not depend on. The one message opened here is a sealed deposit, encrypted to
//! the key server's own key (`deposit`).

pub mod address;
pub mod api;
pub mod audit;
pub mod bounce;
pub mod deposit;
pub mod identity;
pub mod listmail;
pub mod outer;
pub mod post_proof;
pub mod request;
pub mod roster;
pub mod session;
pub mod signed;

pub use address::Address;
pub use identity::{Cert, CertKey, Fingerprint, IdentityError, SecretIdentity, ShortKeyId};
pub use session::{KeyId, Pkesk, SessionKey};
