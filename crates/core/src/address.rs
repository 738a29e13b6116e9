//! Mail addresses as hushlist compares them: list addresses, member addresses, posters.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a mail address of the form local@domain.example")]
pub struct BadAddress(pub String);

/// A mail address in canonical form: the domain lowercased, the local part kept as written
/// (RFC 5321 leaves its case to the receiving host), surrounding space and angle brackets
/// removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address(String);

impl Address {
    pub fn parse(text: &str) -> Result<Self, BadAddress> {
        let trimmed = text.trim();
        let bare = trimmed
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(trimmed);
        if !is_valid(bare) {
            return Err(BadAddress(text.to_owned()));
        }
        let (local, domain) = bare.rsplit_once('@').expect("validated above");
        Ok(Address(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').expect("validated on creation").0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').expect("validated on creation").1
    }

    /// Whether two addresses name the same mailbox: the local part compared without case,
    /// as every common MTA delivers it.
    pub fn same_mailbox(&self, other: &Address) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl TryFrom<String> for Address {
    type Error = BadAddress;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Address::parse(&value)
    }
}

impl std::str::FromStr for Address {
    type Err = BadAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl From<Address> for String {
    fn from(value: Address) -> Self {
        value.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dot-atom local part (RFC 5322 3.4.1) at a domain of at least two labels; quoted local
/// parts and address literals are refused, since no list or member needs them.
pub(crate) fn is_valid(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let domain_ok = domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label_ok);
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_lowercases_the_domain_only() {
        let a = Address::parse(" <Alice.B@Example.ORG> ").unwrap();
        assert_eq!(a.as_str(), "Alice.B@example.org");
        assert_eq!(a.local_part(), "Alice.B");
        assert_eq!(a.domain(), "example.org");
        assert!(a.same_mailbox(&Address::parse("alice.b@example.org").unwrap()));
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "alice@localhost",
            "a..b@example.org",
            "al ice@example.org",
            "alice@-x.org",
            "\"q\"@example.org",
            "alice@exa_mple.org",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
