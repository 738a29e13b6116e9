//! The list server parses every post it receives: no input may panic or hang the parser.
#![no_main]

use hushlist_core::outer::EncryptedPost;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(post) = EncryptedPost::parse(data) {
        // Splicing nothing must leave a post that parses to the same payload.
        let again = EncryptedPost::parse(&post.splice(data, &[])).expect("splice keeps a post parseable");
        assert_eq!(again.packets, post.packets);
    }
});
