//! One module per group of subcommands; each function is one subcommand's glue: it takes
//! the parsed arguments, calls the client library and prints what came of it.

pub mod archive;
pub mod delivery;
pub mod identity;
pub mod joins;
pub mod keys;
pub mod lists;
pub mod moderation;
pub mod posts;
