//! Talking to the servers: a call of any endpoint declared in
//! [`hushlist_core::api::endpoints`] ([`Server::call`], [`Server::signed`]), the calls the
//! client makes by name, and SMTP submission to the list server. Every failure says which
//! server and what to do. This crate does not decrypt posts, so the list server uses it to
//! call the key server too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hushlist_core::api::endpoints::{
    AppendOp, AuditKey, ConfirmJoin, CreateList, DepositKey, Empty, Endpoint, FetchKey, Genesis,
    GetServerKey, HeldPostList, Join, Method, PendingJoinRequests, ReadArchive, ReadRoster,
    RevokeKey, SettleHeld, SettleJoin, SignedEndpoint, SwitchDelivery,
};
use hushlist_core::api::{
    ArchivePage, ArchiveQuery, AuditLog, DeliveryStatus, DeliverySwitch, Deposit, DepositReceipt,
    HeldDecision, HeldPosts, JoinAsk, JoinConfirmation, JoinConfirmed, JoinDecision, JoinReceipt,
    JoinRequest, PendingJoins, RosterHead, RosterRead,
};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{Roster, SignedOp};
use hushlist_core::{Address, Cert, Fingerprint, KeyId, Pkesk, SecretIdentity, SessionKey};
use rand::rngs::OsRng;
use serde::Serialize;

/// URLs as the calls take them, for checking a server's URL before using it.
pub use reqwest::Url;

/// How long any one request to a server may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach the {server} at {url}: {detail}; check the URL and that it is running")]
    Unreachable {
        server: &'static str,
        url: String,
        detail: String,
    },
    #[error("the {server} refused: {message} (HTTP {status}, {code})")]
    Refused {
        server: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the {server} sent something unexpected: {detail}")]
    Unexpected {
        server: &'static str,
        detail: String,
    },
    #[error("the roster the {server} sent does not verify: {detail}")]
    BadRoster {
        server: &'static str,
        detail: String,
    },
    #[error("the list server at {address} refused the post: {reply}")]
    SmtpRefused { address: String, reply: String },
    #[error("cannot hand the post to the list server at {address}: {detail}")]
    SmtpFailed { address: String, detail: String },
    #[error("signing the request failed: {0}")]
    Signing(String),
    #[error("the {server} URL {url} is not usable: {detail}")]
    BadUrl {
        server: &'static str,
        url: String,
        detail: String,
    },
    #[error(
        "the {server} URL {url} is plain http:// to a host that is not this machine, so anyone on the path could answer for it; use https://, or give --insecure-http to `hushlist list use` / `list create` if you accept that"
    )]
    InsecureHttp { server: &'static str, url: String },
}

impl RemoteError {
    /// The server does not know this home's key: it answers a signature by someone never on
    /// the roster as a bad one (our own signatures are good), so that strangers cannot ask
    /// who is on a list; a request that needs a current member says `not_member`.
    pub fn is_not_on_roster(&self) -> bool {
        matches!(self, RemoteError::Refused { status: 401, code, .. } if code == "bad_signature")
            || matches!(self, RemoteError::Refused { status: 403, code, .. } if code == "not_member")
    }
}

/// A post's key as the key server released it to me.
#[derive(Debug, Clone)]
pub struct ReleasedKey {
    pub pkesk: Pkesk,
    /// The primary fingerprint of the member who deposited the key.
    pub depositor: Fingerprint,
    /// The roster head when the key was deposited.
    pub roster_seq: u64,
    /// Unix seconds when the key was deposited, by the key server's clock.
    pub deposited_at: u64,
}

/// One of the two servers, by its base URL.
#[derive(Debug, Clone)]
pub struct Server {
    name: &'static str,
    base: String,
    http: reqwest::Client,
}

impl Server {
    pub fn key_server(base: &str) -> Self {
        Self::new("key server", base)
    }

    pub fn list_server(base: &str) -> Self {
        Self::new("list server", base)
    }

    fn new(name: &'static str, base: &str) -> Self {
        Server {
            name,
            base: base.trim_end_matches('/').to_owned(),
            http: client(TIMEOUT),
        }
    }

    /// The same server, with requests that may take up to `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Server {
            http: client(timeout),
            ..self
        }
    }

    /// "key server" or "list server", for messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls endpoint `E`, which takes no signature, with `token` as a bearer token if given.
    pub async fn call<E: Endpoint>(
        &self,
        params: &E::Params,
        request: &E::Request,
        token: Option<&str>,
    ) -> Result<E::Response, RemoteError> {
        self.send::<E>(params, request, token).await
    }

    /// Signs `body` as `me` for endpoint `E` at `params` and calls it.
    pub async fn signed<E: SignedEndpoint>(
        &self,
        me: &SecretIdentity,
        params: &E::Params,
        body: &E::Request,
    ) -> Result<E::Response, RemoteError> {
        let request = sign(me, &E::purpose(params), body)?;
        self.send::<E>(params, &request, None).await
    }

    async fn send<E: Endpoint>(
        &self,
        params: &E::Params,
        body: &impl Serialize,
        token: Option<&str>,
    ) -> Result<E::Response, RemoteError> {
        let url = format!("{}{}", self.base, E::path(params));
        let mut request = match E::METHOD {
            Method::Get => self.http.get(&url).query(body),
            Method::Post => self.http.post(&url).json(body),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await;
        self.answer(url, response).await
    }

    /// Creates a list from its genesis op (the operator's admin token).
    pub async fn create_list(
        &self,
        admin_token: &str,
        genesis: &SignedOp,
    ) -> Result<RosterHead, RemoteError> {
        self.call::<CreateList>(&(), genesis, Some(admin_token))
            .await
    }

    pub async fn append_op(
        &self,
        list: &Address,
        op: &SignedOp,
    ) -> Result<RosterHead, RemoteError> {
        self.call::<AppendOp>(list, op, None).await
    }

    /// The list's roster, verified op by op from its genesis, but not yet checked against
    /// what the caller pinned: the client reads rosters through its pins only.
    pub async fn roster(&self, me: &SecretIdentity, list: &Address) -> Result<Roster, RemoteError> {
        let ops = self
            .signed::<ReadRoster>(me, list, &RosterRead { since: None })
            .await?;
        let bad = |detail: String| RemoteError::BadRoster {
            server: self.name,
            detail,
        };
        let mut ops = ops.ops.into_iter();
        let genesis = ops.next().ok_or_else(|| bad("no genesis op".into()))?;
        let mut roster = Roster::genesis(genesis).map_err(|e| bad(e.to_string()))?;
        for op in ops {
            roster.apply(op).map_err(|e| bad(e.to_string()))?;
        }
        if roster.list() != list {
            return Err(bad(format!("it is the roster of {}", roster.list())));
        }
        Ok(roster)
    }

    /// A list's genesis op, which anyone may read, verified against the owner certificate it
    /// carries: a roster holding only the first owner (not yet checked against any pin).
    pub async fn genesis(&self, list: &Address) -> Result<Roster, RemoteError> {
        let answer = self.call::<Genesis>(list, &Empty {}, None).await?;
        let roster = Roster::genesis(answer.genesis).map_err(|e| RemoteError::BadRoster {
            server: self.name,
            detail: e.to_string(),
        })?;
        if roster.list() != list {
            return Err(RemoteError::BadRoster {
                server: self.name,
                detail: format!("it is the genesis of {}", roster.list()),
            });
        }
        Ok(roster)
    }

    /// The certificate deposits are sealed to, as this server says; the client takes it
    /// through `Home::server_cert`, which checks the pin.
    pub async fn server_cert(&self) -> Result<Cert, RemoteError> {
        let key = self.call::<GetServerKey>(&(), &Empty {}, None).await?;
        Cert::from_bytes(key.cert.as_bytes()).map_err(|e| RemoteError::Unexpected {
            server: self.name,
            detail: format!("its certificate does not parse: {e}"),
        })
    }

    /// Deposits a post's session key, signed for this list and key id and sealed to the key
    /// server's own certificate.
    pub async fn deposit(
        &self,
        me: &SecretIdentity,
        list: &Address,
        key_id: &KeyId,
        session_key: &SessionKey,
        server_cert: &Cert,
    ) -> Result<DepositReceipt, RemoteError> {
        let body = Deposit::seal(
            OsRng,
            me,
            server_cert,
            list,
            key_id,
            session_key,
            unix_now(),
        )
        .map_err(|e| RemoteError::Signing(e.to_string()))?;
        self.signed::<DepositKey>(me, list, &body).await
    }

    /// Asks for a post's key, sealed to my encryption subkey, and who deposited it when.
    pub async fn fetch_key(
        &self,
        me: &SecretIdentity,
        list: &Address,
        key_id: &KeyId,
    ) -> Result<ReleasedKey, RemoteError> {
        let release = self
            .signed::<FetchKey>(me, &(list.clone(), key_id.clone()), &Empty {})
            .await?;
        let pkesk = Pkesk::from_bytes(&release.pkesk).map_err(|e| RemoteError::Unexpected {
            server: self.name,
            detail: format!("the key it released is malformed: {e}"),
        })?;
        Ok(ReleasedKey {
            pkesk,
            depositor: release.depositor,
            roster_seq: release.roster_seq,
            deposited_at: release.deposited_at,
        })
    }

    /// A page of the list server's archive (members only).
    pub async fn archive(
        &self,
        me: &SecretIdentity,
        list: &Address,
        after: i64,
        limit: u32,
    ) -> Result<ArchivePage, RemoteError> {
        self.signed::<ReadArchive>(me, list, &ArchiveQuery { after, limit })
            .await
    }

    /// Suspends or resumes delivery of the list to `address` at the list server (the member
    /// themself or an owner). Reading rights do not change.
    pub async fn switch_delivery(
        &self,
        me: &SecretIdentity,
        list: &Address,
        address: &Address,
        suspended: bool,
    ) -> Result<DeliveryStatus, RemoteError> {
        let switch = DeliverySwitch {
            address: address.clone(),
            suspended,
        };
        self.signed::<SwitchDelivery>(me, list, &switch).await
    }

    /// Asks the list server to pass a request to join `list` as `address` to its owners,
    /// with this identity's certificate and a signature proving it is held.
    pub async fn join(
        &self,
        me: &SecretIdentity,
        list: &Address,
        address: &Address,
        note: Option<String>,
    ) -> Result<JoinReceipt, RemoteError> {
        let ask = JoinAsk {
            address: address.clone(),
            note,
        };
        let body = JoinRequest {
            cert: me.cert().to_armored(),
            request: sign(me, &Join::purpose(list), &ask)?,
        };
        self.call::<Join>(list, &body, None).await
    }

    /// Confirms a request to join `list` with the token from the confirmation mailed to the
    /// address asked for.
    pub async fn confirm_join(
        &self,
        list: &Address,
        token: &str,
    ) -> Result<JoinConfirmed, RemoteError> {
        let body = JoinConfirmation {
            token: token.to_owned(),
        };
        self.call::<ConfirmJoin>(list, &body, None).await
    }

    /// The join requests waiting for `list`'s owners (owners only).
    pub async fn pending_joins(
        &self,
        me: &SecretIdentity,
        list: &Address,
    ) -> Result<PendingJoins, RemoteError> {
        self.signed::<PendingJoinRequests>(me, list, &Empty {})
            .await
    }

    /// Settles a join request (owners only); the list server tells the requester.
    pub async fn settle_join(
        &self,
        me: &SecretIdentity,
        list: &Address,
        decision: &JoinDecision,
    ) -> Result<JoinDecision, RemoteError> {
        self.signed::<SettleJoin>(me, list, decision).await
    }

    /// The posts of `list` held for an owner's approval (owners only).
    pub async fn held_posts(
        &self,
        me: &SecretIdentity,
        list: &Address,
    ) -> Result<HeldPosts, RemoteError> {
        self.signed::<HeldPostList>(me, list, &Empty {}).await
    }

    /// Releases a held post to the list or turns it away (owners only).
    pub async fn settle_held(
        &self,
        me: &SecretIdentity,
        list: &Address,
        decision: &HeldDecision,
    ) -> Result<HeldDecision, RemoteError> {
        self.signed::<SettleHeld>(me, list, decision).await
    }

    /// Destroys a post's key (its sender or an owner): nobody can open the post afterwards.
    pub async fn revoke(
        &self,
        me: &SecretIdentity,
        list: &Address,
        key_id: &KeyId,
    ) -> Result<(), RemoteError> {
        self.signed::<RevokeKey>(me, &(list.clone(), key_id.clone()), &Empty {})
            .await?;
        Ok(())
    }

    /// Who deposited, fetched, was refused or destroyed a post's key, and when.
    pub async fn audit(
        &self,
        me: &SecretIdentity,
        list: &Address,
        key_id: &KeyId,
    ) -> Result<AuditLog, RemoteError> {
        self.signed::<AuditKey>(me, &(list.clone(), key_id.clone()), &Empty {})
            .await
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        response: reqwest::Result<reqwest::Response>,
    ) -> Result<T, RemoteError> {
        let response = response.map_err(|e| RemoteError::Unreachable {
            server: self.name,
            url,
            detail: e.to_string(),
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| RemoteError::Unexpected {
                server: self.name,
                detail: e.to_string(),
            })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| RemoteError::Unexpected {
                server: self.name,
                detail: e.to_string(),
            });
        }
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(RemoteError::Refused {
            server: self.name,
            status: status.as_u16(),
            code: error["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: error["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("an HTTP client with default settings")
}

fn sign(
    me: &SecretIdentity,
    purpose: &str,
    body: &impl Serialize,
) -> Result<SignedRequest, RemoteError> {
    let body = serde_json::to_vec(body).map_err(|e| RemoteError::Signing(e.to_string()))?;
    SignedRequest::sign(OsRng, me, purpose, body, unix_now())
        .map_err(|e| RemoteError::Signing(e.to_string()))
}

/// Hands a sealed post to the list server's SMTP port (`host:port`).
pub async fn submit(
    smtp: &str,
    from: &Address,
    list: &Address,
    message: &[u8],
) -> Result<String, RemoteError> {
    let failed = |detail: String| RemoteError::SmtpFailed {
        address: smtp.to_owned(),
        detail,
    };
    let refused = |e: mail_send::Error| match e {
        mail_send::Error::UnexpectedReply(reply) => RemoteError::SmtpRefused {
            address: smtp.to_owned(),
            reply: match reply.esc {
                [0, 0, 0] => format!("{} {}", reply.code, one_line(&reply.message)),
                [class, subject, detail] => format!(
                    "{} {class}.{subject}.{detail} {}",
                    reply.code,
                    one_line(&reply.message)
                ),
            },
        },
        other => RemoteError::SmtpFailed {
            address: smtp.to_owned(),
            detail: other.to_string(),
        },
    };
    let address = tokio::net::lookup_host(smtp)
        .await
        .map_err(|e| failed(format!("cannot resolve it: {e}")))?
        .next()
        .ok_or_else(|| failed("it has no address".into()))?;
    let mut client = mail_send::SmtpClient::connect(address, TIMEOUT)
        .await
        .map_err(|e| {
            failed(format!(
                "{e}; check --smtp and that the list server is running"
            ))
        })?;
    // The message's last bytes and the final dot must not wait for a delayed ACK (Nagle).
    client
        .stream
        .set_nodelay(true)
        .map_err(|e| failed(e.to_string()))?;
    let greeting = client.read().await.map_err(refused)?;
    if greeting.code >= 300 {
        return Err(refused(mail_send::Error::UnexpectedReply(greeting)));
    }
    client.ehlo("hushlist-client").await.map_err(refused)?;
    let none = mail_send::smtp::message::Parameters::default();
    client
        .mail_from(from.as_str(), &none)
        .await
        .map_err(refused)?;
    client
        .rcpt_to(list.as_str(), &none)
        .await
        .map_err(refused)?;
    let taken = client.data(message).await.map_err(refused)?;
    // The post is accepted once DATA got its 250; a failed QUIT changes nothing.
    let _ = client.quit().await;
    Ok(one_line(&taken.message))
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}
