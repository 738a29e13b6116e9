//! Which of the home's lists a command or a message is for: the list a message names in its
//! To or Cc (`hushlist send` of a whole message, `sendmail -t`), the one list among
//! sendmail's recipients, or the home's only list when a command names none.

use hushlist_core::Address;
use hushlist_core::address::BadAddress;
use mail_parser::{Message, MessageParser};

use crate::lists::ListConfig;
use crate::{Home, HomeError};

#[derive(Debug, thiserror::Error)]
pub enum ListChoiceError {
    #[error("stdin is not a mail message")]
    NotAMessage,
    #[error(
        "the message is not addressed to a list this home knows; use `hushlist list use` first, or --list"
    )]
    NotAddressedToAList,
    #[error("{0} is not a list this home knows; hushlist only posts to lists")]
    NotAList(Address),
    #[error("name exactly one list as the recipient")]
    NotOneList,
    #[error("this home knows no list; add one with `hushlist list use`")]
    NoList,
    #[error("this home knows several lists; say which with --list")]
    SeveralLists,
    #[error(transparent)]
    BadAddress(#[from] BadAddress),
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// Every address in the message's To and Cc that parses, in order.
pub(crate) fn to_and_cc<'a>(message: &'a Message<'a>) -> impl Iterator<Item = Address> + 'a {
    [message.to(), message.cc()]
        .into_iter()
        .flatten()
        .flat_map(|field| field.iter())
        .filter_map(|a| a.address().and_then(|a| Address::parse(a).ok()))
}

/// The known list with the same mailbox as `address`.
pub(crate) fn known<'a>(lists: &'a [ListConfig], address: &Address) -> Option<&'a ListConfig> {
    lists.iter().find(|l| l.list.same_mailbox(address))
}

/// The first list in `lists` that the full message `message` names in its To or Cc.
pub fn list_addressed(lists: &[ListConfig], message: &[u8]) -> Result<ListConfig, ListChoiceError> {
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or(ListChoiceError::NotAMessage)?;
    to_and_cc(&parsed)
        .find_map(|a| known(lists, &a).cloned())
        .ok_or(ListChoiceError::NotAddressedToAList)
}

/// The list among sendmail's command-line `recipients`: every recipient must be a list in
/// `lists` (hushlist posts nowhere else), and exactly one may be given.
pub fn list_among(
    lists: &[ListConfig],
    recipients: &[String],
) -> Result<ListConfig, ListChoiceError> {
    let mut named = Vec::new();
    for recipient in recipients {
        let recipient = Address::parse(recipient)?;
        match known(lists, &recipient) {
            Some(list) => named.push(list.clone()),
            None => return Err(ListChoiceError::NotAList(recipient)),
        }
    }
    match <[ListConfig; 1]>::try_from(named) {
        Ok([list]) => Ok(list),
        Err(_) => Err(ListChoiceError::NotOneList),
    }
}

impl Home {
    /// The list named (by `--list`), or else the only list this home knows.
    pub fn one_list(&self, named: Option<&Address>) -> Result<ListConfig, ListChoiceError> {
        if let Some(list) = named {
            return Ok(self.list(list)?);
        }
        let lists = self.lists()?;
        match <[ListConfig; 1]>::try_from(lists) {
            Ok([list]) => Ok(list),
            Err(lists) if lists.is_empty() => Err(ListChoiceError::NoList),
            Err(_) => Err(ListChoiceError::SeveralLists),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(list: &str) -> ListConfig {
        ListConfig {
            list: Address::parse(list).unwrap(),
            key_server: "http://127.0.0.1:8470".into(),
            list_server: "http://127.0.0.1:8471".into(),
            smtp: "127.0.0.1:2525".into(),
            insecure_http: false,
            pins: None,
        }
    }

    fn lists() -> Vec<ListConfig> {
        vec![config("team@example.org"), config("board@example.org")]
    }

    fn recipients(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_message_goes_to_the_first_known_list_in_its_to_or_cc() {
        let message = b"From: a@example.org\r\nTo: Someone <someone@example.net>\r\nCc: Board <BOARD@Example.org>, team@example.org\r\nSubject: x\r\n\r\nbody\r\n";
        let chosen = list_addressed(&lists(), message).unwrap();
        assert_eq!(chosen.list.as_str(), "board@example.org");
        let stranger = b"From: a@example.org\r\nTo: someone@example.net\r\n\r\nbody\r\n";
        assert!(matches!(
            list_addressed(&lists(), stranger),
            Err(ListChoiceError::NotAddressedToAList)
        ));
    }

    #[test]
    fn sendmail_recipients_must_be_exactly_one_known_list() {
        let chosen = list_among(&lists(), &recipients(&["Team@example.org"])).unwrap();
        assert_eq!(chosen.list.as_str(), "team@example.org");
        assert!(matches!(
            list_among(&lists(), &recipients(&["team@example.org", "bob@example.net"])),
            Err(ListChoiceError::NotAList(a)) if a.as_str() == "bob@example.net"
        ));
        assert!(matches!(
            list_among(
                &lists(),
                &recipients(&["team@example.org", "board@example.org"])
            ),
            Err(ListChoiceError::NotOneList)
        ));
        assert!(matches!(
            list_among(&lists(), &[]),
            Err(ListChoiceError::NotOneList)
        ));
        assert!(matches!(
            list_among(&lists(), &recipients(&["not an address"])),
            Err(ListChoiceError::BadAddress(_))
        ));
    }

    #[test]
    fn without_a_name_the_home_must_know_exactly_one_list() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert!(matches!(home.one_list(None), Err(ListChoiceError::NoList)));
        home.save_list(&config("team@example.org")).unwrap();
        assert_eq!(
            home.one_list(None).unwrap().list.as_str(),
            "team@example.org"
        );
        home.save_list(&config("board@example.org")).unwrap();
        assert!(matches!(
            home.one_list(None),
            Err(ListChoiceError::SeveralLists)
        ));
        let named = Address::parse("board@example.org").unwrap();
        assert_eq!(home.one_list(Some(&named)).unwrap().list, named);
        let unknown = Address::parse("other@example.org").unwrap();
        assert!(matches!(
            home.one_list(Some(&unknown)),
            Err(ListChoiceError::Home(HomeError::UnknownList(_)))
        ));
    }
}
