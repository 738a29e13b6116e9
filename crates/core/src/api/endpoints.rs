//! Every endpoint of both servers, declared once: method, path template, path parameters,
//! request and response types, which server serves it and who may call it. The servers
//! derive their routes and request checks from these declarations, the client its calls,
//! and a signed request's purpose is the endpoint's method and filled-in path, so that a
//! signature fits one endpoint of one list (and key) only.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    ArchivePage, ArchiveQuery, AuditLog, DeliveryStatus, DeliverySwitch, Deposit, DepositReceipt,
    GrantRequest, Grants, HeldDecision, HeldPosts, JoinConfirmation, JoinConfirmed, JoinDecision,
    JoinReceipt, JoinRequest, KeyRelease, ListGenesis, PendingJoins, RosterHead, RosterOps,
    RosterRead, ServerKey,
};
use crate::address::Address;
use crate::roster::SignedOp;
use crate::session::KeyId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Which server serves an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    KeyServer,
    ListServer,
    /// The roster endpoints: each server verifies every op itself.
    Both,
}

impl ServedBy {
    /// Whether an endpoint served by `self` is served by `server` (`KeyServer` or
    /// `ListServer`).
    pub fn includes(self, server: ServedBy) -> bool {
        self == ServedBy::Both || self == server
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anyone,
    /// Someone asking to join: the request is signed by the certificate its body carries.
    Applicant,
    /// Holder of the token in the path (a one-click unsubscribe link).
    PathToken,
    /// An owner, through a roster op they signed, verified against the roster.
    OwnerOp,
    /// A bearer token.
    Token(Token),
    /// A request signed by someone on the list's roster.
    Signed(Signer),
}

/// The bearer tokens the servers take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The operator's admin token.
    Admin,
    /// The operator's admin token, or a peer server's token (reading every roster).
    RosterReader,
    /// The list server's grants token at the key server.
    ListServer,
}

/// Whose signature a signed endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// Anyone ever on the roster; the server then judges what they may do (their tenure,
    /// whether they sent the post, their role).
    EverOnRoster,
    /// A current member.
    Member,
    /// A current owner.
    Owner,
}

/// One endpoint's declaration. Implemented by [`declare_endpoints!`] only.
pub trait Endpoint {
    const METHOD: Method;
    /// The path template, parameters in braces: `/v1/lists/{list}/keys/{key_id}`.
    const PATH: &'static str;
    const SERVED_BY: ServedBy;
    const CALLER: Caller;
    /// The parameters in the path.
    type Params: PathParams;
    /// What the caller sends (for a signed endpoint, the body its signature covers; for a
    /// GET, the query).
    type Request: Serialize + DeserializeOwned;
    type Response: Serialize + DeserializeOwned;

    fn path(params: &Self::Params) -> String {
        params.fill(Self::PATH)
    }

    /// What a request to this endpoint is signed for: its method and path.
    fn purpose(params: &Self::Params) -> String {
        format!("{} {}", Self::METHOD.as_str(), Self::path(params))
    }
}

/// An endpoint taking a request signed by someone on the roster of the list in its path.
pub trait SignedEndpoint: Endpoint<Params: OnList> {
    const SIGNER: Signer;
}

/// An endpoint as data, for listing them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    pub name: &'static str,
    pub method: Method,
    pub path: &'static str,
    pub served_by: ServedBy,
    pub caller: Caller,
}

/// A body or query of nothing (`{}` as JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The query of an operator's or peer server's roster read: the ops after `since`, or all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDestroyed {
    pub key_id: KeyId,
    /// Always `destroyed`.
    pub status: String,
}

/// Why path parameters do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0}")]
    BadList(String),
    #[error("{0}")]
    BadKeyId(String),
    #[error("the path has no {0}")]
    Missing(&'static str),
}

/// The parameters of a path template, by name.
pub trait PathParams: Sized {
    /// `template` with each `{name}` segment replaced by its value.
    fn fill(&self, template: &str) -> String;
    /// The parameters from the values a router matched, by name.
    fn parse(values: &HashMap<String, String>) -> Result<Self, PathError>;
}

/// Parameters naming a list, whose roster judges a signed request.
pub trait OnList: PathParams {
    fn list(&self) -> &Address;
}

/// Fills each `{name}` segment of `template` (a value is never searched for names).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    template
        .split('/')
        .map(|segment| {
            segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .and_then(|name| values.iter().find(|(n, _)| *n == name))
                .map_or(segment, |(_, value)| value)
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn value<'a>(
    values: &'a HashMap<String, String>,
    name: &'static str,
) -> Result<&'a str, PathError> {
    values
        .get(name)
        .map(String::as_str)
        .ok_or(PathError::Missing(name))
}

fn list_value(values: &HashMap<String, String>) -> Result<Address, PathError> {
    Address::parse(value(values, "list")?).map_err(|e| PathError::BadList(e.to_string()))
}

impl PathParams for () {
    fn fill(&self, template: &str) -> String {
        template.to_owned()
    }

    fn parse(_: &HashMap<String, String>) -> Result<Self, PathError> {
        Ok(())
    }
}

impl PathParams for Address {
    fn fill(&self, template: &str) -> String {
        fill(template, &[("list", self.as_str())])
    }

    fn parse(values: &HashMap<String, String>) -> Result<Self, PathError> {
        list_value(values)
    }
}

impl OnList for Address {
    fn list(&self) -> &Address {
        self
    }
}

impl PathParams for (Address, KeyId) {
    fn fill(&self, template: &str) -> String {
        fill(
            template,
            &[("list", self.0.as_str()), ("key_id", self.1.as_str())],
        )
    }

    fn parse(values: &HashMap<String, String>) -> Result<Self, PathError> {
        let list = list_value(values)?;
        let key_id = value(values, "key_id")?
            .parse()
            .map_err(|e: crate::session::SessionError| PathError::BadKeyId(e.to_string()))?;
        Ok((list, key_id))
    }
}

impl OnList for (Address, KeyId) {
    fn list(&self) -> &Address {
        &self.0
    }
}

/// The token of a one-click unsubscribe link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeToken(pub String);

impl PathParams for UnsubscribeToken {
    fn fill(&self, template: &str) -> String {
        fill(template, &[("token", &self.0)])
    }

    fn parse(values: &HashMap<String, String>) -> Result<Self, PathError> {
        Ok(UnsubscribeToken(value(values, "token")?.to_owned()))
    }
}

/// Declares each endpoint as a type implementing [`Endpoint`] (and [`SignedEndpoint`] for
/// `Signed(..)` callers), and [`ALL`] listing every one.
macro_rules! declare_endpoints {
    ($(
        $(#[$doc:meta])*
        $name:ident: $method:ident $path:literal on $server:ident,
            by $caller:ident $(($detail:ident))?,
            $params:ty, $request:ty => $response:ty;
    )*) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl Endpoint for $name {
                const METHOD: Method = Method::$method;
                const PATH: &'static str = $path;
                const SERVED_BY: ServedBy = ServedBy::$server;
                const CALLER: Caller = declare_endpoints!(@caller $caller $($detail)?);
                type Params = $params;
                type Request = $request;
                type Response = $response;
            }

            declare_endpoints!(@signed $name $caller $($detail)?);
        )*

        /// Every endpoint of both servers.
        pub const ALL: &[Declared] = &[$(
            Declared {
                name: stringify!($name),
                method: Method::$method,
                path: $path,
                served_by: ServedBy::$server,
                caller: declare_endpoints!(@caller $caller $($detail)?),
            },
        )*];
    };
    (@caller Signed $signer:ident) => { Caller::Signed(Signer::$signer) };
    (@caller Token $token:ident) => { Caller::Token(Token::$token) };
    (@caller $caller:ident) => { Caller::$caller };
    (@signed $name:ident Signed $signer:ident) => {
        impl SignedEndpoint for $name {
            const SIGNER: Signer = Signer::$signer;
        }
    };
    (@signed $name:ident $($other:ident)+) => {};
}

declare_endpoints! {
    /// Creates a list from its genesis op.
    CreateList: Post "/v1/lists" on Both, by Token(Admin), (), SignedOp => RosterHead;
    /// Appends an owner-signed op to a list's roster.
    AppendOp: Post "/v1/lists/{list}/ops" on Both, by OwnerOp, Address, SignedOp => RosterHead;
    /// The whole roster log (or the ops after `since`), for the operator or a peer server.
    ReadOps: Get "/v1/lists/{list}/ops" on Both, by Token(RosterReader), Address, Since => RosterOps;
    /// The roster log, for someone on it: a current member to the head, a former one up to
    /// their removal.
    ReadRoster: Post "/v1/lists/{list}/ops/read" on Both, by Signed(EverOnRoster),
        Address, RosterRead => RosterOps;
    /// A list's genesis op, public so that someone about to join can pin the list.
    Genesis: Get "/v1/lists/{list}/genesis" on Both, by Anyone, Address, Empty => ListGenesis;

    /// The key server's certificate, which deposits are sealed to.
    GetServerKey: Get "/v1/server-key" on KeyServer, by Anyone, (), Empty => ServerKey;
    /// A sender deposits a post's session key.
    DepositKey: Post "/v1/lists/{list}/keys" on KeyServer, by Signed(EverOnRoster),
        Address, Deposit => DepositReceipt;
    /// A member asks for a post's key, sealed to their encryption subkey.
    FetchKey: Post "/v1/lists/{list}/keys/{key_id}" on KeyServer, by Signed(EverOnRoster),
        (Address, KeyId), Empty => KeyRelease;
    /// The list server asks for one PKESK per recipient of a push-mode post.
    GrantKeys: Post "/v1/lists/{list}/keys/{key_id}/grants" on KeyServer, by Token(ListServer),
        (Address, KeyId), GrantRequest => Grants;
    /// A post's sender or an owner destroys its key.
    RevokeKey: Post "/v1/lists/{list}/keys/{key_id}/revoke" on KeyServer, by Signed(EverOnRoster),
        (Address, KeyId), Empty => KeyDestroyed;
    /// A post's sender or an owner reads its key's audit trail.
    AuditKey: Post "/v1/lists/{list}/keys/{key_id}/audit" on KeyServer, by Signed(EverOnRoster),
        (Address, KeyId), Empty => AuditLog;

    /// A page of the list's archive, for a current member.
    ReadArchive: Post "/v1/lists/{list}/archive" on ListServer, by Signed(Member),
        Address, ArchiveQuery => ArchivePage;
    /// Suspends or resumes delivery to a member (an owner, or that member).
    SwitchDelivery: Post "/v1/lists/{list}/delivery" on ListServer, by Signed(EverOnRoster),
        Address, DeliverySwitch => DeliveryStatus;
    /// Asks to join a list.
    Join: Post "/v1/lists/{list}/join" on ListServer, by Applicant, Address, JoinRequest => JoinReceipt;
    /// Confirms a join request with the token mailed to the address.
    ConfirmJoin: Post "/v1/lists/{list}/join/confirm" on ListServer, by Anyone,
        Address, JoinConfirmation => JoinConfirmed;
    /// The join requests waiting for the owners.
    PendingJoinRequests: Post "/v1/lists/{list}/join-requests" on ListServer, by Signed(Owner),
        Address, Empty => PendingJoins;
    /// An owner settles a join request.
    SettleJoin: Post "/v1/lists/{list}/join-requests/settle" on ListServer, by Signed(Owner),
        Address, JoinDecision => JoinDecision;
    /// The posts held for an owner's approval.
    HeldPostList: Post "/v1/lists/{list}/held" on ListServer, by Signed(Owner),
        Address, Empty => HeldPosts;
    /// An owner releases a held post or turns it away.
    SettleHeld: Post "/v1/lists/{list}/held/settle" on ListServer, by Signed(Owner),
        Address, HeldDecision => HeldDecision;
    /// RFC 8058 one-click unsubscribe (POST only, so that link scanners cannot unsubscribe).
    Unsubscribe: Post "/v1/unsubscribe/{token}" on ListServer, by PathToken,
        UnsubscribeToken, Empty => DeliveryStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Address {
        Address::parse("team@example.org").unwrap()
    }

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn paths_and_purposes_are_filled_from_the_template() {
        let key_id: KeyId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let params = (list(), key_id.clone());
        assert_eq!(
            FetchKey::path(&params),
            format!("/v1/lists/team@example.org/keys/{key_id}")
        );
        assert_eq!(
            RevokeKey::purpose(&params),
            format!("POST /v1/lists/team@example.org/keys/{key_id}/revoke")
        );
        assert_eq!(
            DepositKey::purpose(&list()),
            "POST /v1/lists/team@example.org/keys"
        );
        assert_eq!(GetServerKey::path(&()), "/v1/server-key");
    }

    #[test]
    fn a_value_is_never_taken_for_a_parameter() {
        // A mail address may hold braces; `{key_id}` in it stays as it is.
        let odd = Address::parse("{key_id}@example.org").unwrap();
        let key_id: KeyId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(
            AuditKey::path(&(odd, key_id.clone())),
            format!("/v1/lists/{{key_id}}@example.org/keys/{key_id}/audit")
        );
    }

    #[test]
    fn parameters_parse_back_and_bad_ones_are_told_apart() {
        let key_id: KeyId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let parsed = <(Address, KeyId)>::parse(&values(&[
            ("list", "team@example.org"),
            ("key_id", key_id.as_str()),
        ]))
        .unwrap();
        assert_eq!(parsed, (list(), key_id));
        assert!(matches!(
            <Address as PathParams>::parse(&values(&[("list", "not an address")])),
            Err(PathError::BadList(_))
        ));
        assert!(matches!(
            <(Address, KeyId)>::parse(&values(&[("list", "team@example.org"), ("key_id", "xyz")])),
            Err(PathError::BadKeyId(_))
        ));
        // The list is judged first, as the servers always did.
        assert!(matches!(
            <(Address, KeyId)>::parse(&values(&[("list", "bad"), ("key_id", "xyz")])),
            Err(PathError::BadList(_))
        ));
        assert_eq!(
            <(Address, KeyId)>::parse(&values(&[("list", "team@example.org")])),
            Err(PathError::Missing("key_id"))
        );
    }

    #[test]
    fn every_declaration_is_listed_once_with_its_own_route() {
        let mut routes: Vec<(Method, &str)> = ALL.iter().map(|d| (d.method, d.path)).collect();
        routes.sort_by_key(|(m, p)| (m.as_str(), *p));
        routes.dedup();
        assert_eq!(routes.len(), ALL.len(), "two declarations share a route");
        assert!(ALL.contains(&Declared {
            name: "SettleHeld",
            method: Method::Post,
            path: SettleHeld::PATH,
            served_by: ServedBy::ListServer,
            caller: Caller::Signed(Signer::Owner),
        }));
        assert_eq!(<SettleHeld as SignedEndpoint>::SIGNER, Signer::Owner);
    }
}
