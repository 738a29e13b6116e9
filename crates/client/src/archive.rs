//! Reading a list's archive on its list server: what `hushlist archive` lists, opens and
//! downloads. The server answers a page at a time; [`ArchivePages`] is the one loop over
//! them, so listing, finding one post and downloading all of them page alike.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use hushlist_core::api::ArchivedPost;
use hushlist_core::{Address, SecretIdentity};

use crate::Home;
use crate::lists::ListConfig;
use crate::posts::{self, PostError};
use crate::remote::{RemoteError, Server};

/// How many posts one archive request asks for.
const PAGE_SIZE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("no post {id} in the archive of {list}")]
    NoSuchPost { list: Address, id: i64 },
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// A list's archive as `me` may read it, page by page in id order.
pub struct ArchivePages<'a> {
    me: &'a SecretIdentity,
    list: Address,
    server: Server,
    /// Where the next page starts; None once the last page was read.
    after: Option<i64>,
}

impl<'a> ArchivePages<'a> {
    /// From the list's first post on.
    pub fn new(me: &'a SecretIdentity, config: &ListConfig) -> Result<Self, RemoteError> {
        Ok(ArchivePages {
            me,
            list: config.list.clone(),
            server: config.list_server()?,
            after: Some(0),
        })
    }

    /// The next page (it may hold fewer posts than asked, even none, while more follow), or
    /// None after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ArchivedPost>>, RemoteError> {
        let Some(after) = self.after else {
            return Ok(None);
        };
        let page = self
            .server
            .archive(self.me, &self.list, after, PAGE_SIZE)
            .await?;
        self.after = page.next_after;
        Ok(Some(page.posts))
    }
}

/// The archived post with this `id`, as posted (still encrypted).
pub async fn find_post(
    me: &SecretIdentity,
    config: &ListConfig,
    id: i64,
) -> Result<ArchivedPost, ArchiveError> {
    let mut pages = ArchivePages::new(me, config)?;
    while let Some(page) = pages.next_page().await? {
        if let Some(post) = page.into_iter().find(|p| p.id == id) {
            return Ok(post);
        }
    }
    Err(ArchiveError::NoSuchPost {
        list: config.list.clone(),
        id,
    })
}

/// What [`download`] is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadStep {
    /// The post's file is there from an earlier download; it is left as it is.
    Kept(i64),
    /// The post is being opened.
    Opening(i64),
}

/// A post [`download`] could not open, and why.
#[derive(Debug)]
pub struct Unreadable {
    pub id: i64,
    pub error: PostError,
}

/// What [`download`] did.
#[derive(Debug, Default)]
pub struct Downloaded {
    pub saved: usize,
    pub kept: usize,
    pub unreadable: Vec<Unreadable>,
}

/// Opens every post of the list's archive that `me` may read (through
/// [`posts::show_post`], as `hushlist open` does) and writes each to `dir/ID.eml`. Files
/// already there are kept, so an interrupted download resumes; a post that cannot be opened
/// (its key destroyed, not readable by this member) is recorded and the rest still
/// downloaded. Opened posts are plaintext: `dir` is made 0700 and every file 0600, each
/// written under a temporary name and renamed, so a file present is a whole post.
pub async fn download(
    me: &SecretIdentity,
    home: &Home,
    config: &ListConfig,
    dir: &Path,
    mut progress: impl FnMut(DownloadStep),
) -> Result<Downloaded, ArchiveError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ArchiveError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    let mut done = Downloaded::default();
    let mut pages = ArchivePages::new(me, config)?;
    while let Some(page) = pages.next_page().await? {
        for post in page {
            let file = dir.join(format!("{}.eml", post.id));
            if file.exists() {
                progress(DownloadStep::Kept(post.id));
                done.kept += 1;
                continue;
            }
            progress(DownloadStep::Opening(post.id));
            match posts::show_post(me, home, std::slice::from_ref(config), &post.message).await {
                Ok(shown) => {
                    let partial = dir.join(format!(".{}.eml.part", post.id));
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&partial)
                        .and_then(|mut out| out.write_all(&shown.message))
                        .and_then(|()| fs::rename(&partial, &file))
                        .map_err(|source| ArchiveError::Write { path: file, source })?;
                    done.saved += 1;
                }
                Err(error) => done.unreadable.push(Unreadable { id: post.id, error }),
            }
        }
    }
    Ok(done)
}
