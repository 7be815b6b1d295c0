//! Paged listings: a List longer than one page is answered from a snapshot of the processes it
//! matched, taken at one revision, so that every page of it shows the table as it was then
//! (Kubernetes lists with `continue` the same way). The snapshot holds shared processes, not
//! copies: 8 bytes per process listed.
//!
//! A page token names the snapshot (a random id), the revision and where the next page starts.
//! Snapshots are kept for [`LISTING_TTL`] after their last page was read, and at most
//! [`MAX_LISTINGS`] of them, at most [`MAX_LISTINGS_PER_LISTER`] for one caller (the least
//! recently read goes first: a caller's own when it is at its share, so that one caller
//! opening listings cannot push out everyone else's): a token of a snapshot no longer kept is
//! [`PageError::Expired`], and the client lists again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

use super::Filter;
use crate::spec::ProcessInfo;

/// The page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;

/// The largest page; larger requests get pages of this size.
pub const MAX_PAGE_SIZE: usize = 5_000;

/// How long a listing's snapshot is kept after its last page was read.
pub const LISTING_TTL: Duration = Duration::from_secs(5 * 60);

/// How many listings' snapshots are kept at most.
pub const MAX_LISTINGS: usize = 256;

/// How many listings' snapshots are kept at most for one caller ([`PageQuery::lister`]).
pub const MAX_LISTINGS_PER_LISTER: usize = 64;

/// What a page request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// At most this many processes; 0 means [`DEFAULT_PAGE_SIZE`].
    pub size: usize,
    /// The previous page's `next_page_token`; `None` for the first page.
    pub token: Option<String>,
    /// Who lists (a token's name): the listings one caller keeps count against its share.
    pub lister: String,
}

impl PageQuery {
    /// The page size this query gets.
    pub fn effective_size(&self) -> usize {
        match self.size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The processes of the page, ordered by name.
    pub processes: Vec<Arc<ProcessInfo>>,
    /// The token of the next page, when there is one.
    pub next_page_token: Option<String>,
    /// The table's revision the whole listing shows.
    pub revision: u64,
    /// For a first page of a listing of a group: the revision of the group's last change
    /// (see [`crate::table::ProcessTable::group_version`]).
    pub group_changed: Option<u64>,
}

/// Why a page could not be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The token is not one this server made.
    #[error(
        "page_token: is not a page token of this server; pass the `next_page_token` of the previous page, or none for the first page"
    )]
    Malformed,
    /// The listing's snapshot is no longer kept.
    #[error(
        "page_token: the listing at revision {revision} is no longer kept (a listing is kept for {} s after its last page was read, and at most {MAX_LISTINGS_PER_LISTER} listings of one caller are); list again from the first page",
        LISTING_TTL.as_secs()
    )]
    Expired {
        /// The revision the listing showed.
        revision: u64,
    },
    /// The request's filters are not the listing's.
    #[error(
        "page_token: belongs to a listing of {listed}; give the same `group` and `label_selector` as for its first page"
    )]
    OtherFilter {
        /// The listing's filters, described.
        listed: String,
    },
}

/// Where a page starts: the listing, its revision and the offset into its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageToken {
    revision: u64,
    listing: u128,
    offset: u32,
}

impl PageToken {
    const LENGTH: usize = 8 + 16 + 4;

    fn encode(self) -> String {
        let mut bytes = Vec::with_capacity(Self::LENGTH);
        bytes.extend_from_slice(&self.revision.to_be_bytes());
        bytes.extend_from_slice(&self.listing.to_be_bytes());
        bytes.extend_from_slice(&self.offset.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(token: &str) -> Result<PageToken, PageError> {
        // Bounded before decoding, so a huge token costs nothing.
        if token.len() > 64 {
            return Err(PageError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageError::Malformed)?;
        if bytes.len() != Self::LENGTH {
            return Err(PageError::Malformed);
        }
        let revision = u64::from_be_bytes(bytes[0..8].try_into().map_err(|_| PageError::Malformed)?);
        let listing = u128::from_be_bytes(bytes[8..24].try_into().map_err(|_| PageError::Malformed)?);
        let offset = u32::from_be_bytes(bytes[24..28].try_into().map_err(|_| PageError::Malformed)?);
        Ok(PageToken { revision, listing, offset })
    }
}

/// One kept listing.
struct Listing {
    lister: String,
    filter: Filter,
    revision: u64,
    processes: Arc<[Arc<ProcessInfo>]>,
    last_read: Instant,
}

/// The listings whose later pages may still be asked for.
#[derive(Default)]
pub(super) struct Listings {
    kept: Mutex<HashMap<u128, Listing>>,
}

impl Listings {
    /// The first page of `matching` (the whole listing, ordered by name, at `revision`),
    /// keeping the rest for later pages when there is more than a page.
    pub(super) fn first_page(
        &self,
        filter: &Filter,
        revision: u64,
        matching: Vec<Arc<ProcessInfo>>,
        query: &PageQuery,
    ) -> Page {
        let size = query.effective_size();
        if matching.len() <= size {
            return Page { processes: matching, next_page_token: None, revision, group_changed: None };
        }
        let processes: Arc<[Arc<ProcessInfo>]> = matching.into();
        let first = processes[..size].to_vec();
        let listing = random_id();
        let now = Instant::now();
        let mut kept = self.lock();
        kept.retain(|_, listing| now.duration_since(listing.last_read) < LISTING_TTL);
        let own = kept.values().filter(|listing| listing.lister == query.lister).count();
        let oldest = |mine: bool| {
            kept.iter()
                .filter(|(_, listing)| !mine || listing.lister == query.lister)
                .min_by_key(|(_, listing)| listing.last_read)
                .map(|(id, _)| *id)
        };
        let evicted = if own >= MAX_LISTINGS_PER_LISTER {
            oldest(true)
        } else if kept.len() >= MAX_LISTINGS {
            oldest(false)
        } else {
            None
        };
        if let Some(evicted) = evicted {
            kept.remove(&evicted);
        }
        let kept_listing = Listing {
            lister: query.lister.clone(),
            filter: filter.clone(),
            revision,
            processes,
            last_read: now,
        };
        kept.insert(listing, kept_listing);
        let offset = u32::try_from(size).unwrap_or(u32::MAX);
        Page {
            processes: first,
            next_page_token: Some(PageToken { revision, listing, offset }.encode()),
            revision,
            group_changed: None,
        }
    }

    /// A later page of a kept listing. The request's group and selector must be the listing's;
    /// the caller's reach is applied again, so a token passed to another caller shows no more
    /// than that caller may see.
    pub(super) fn later_page(&self, token: &str, filter: &Filter, size: usize) -> Result<Page, PageError> {
        let token = PageToken::decode(token)?;
        let mut kept = self.lock();
        let now = Instant::now();
        let listing = kept
            .get_mut(&token.listing)
            .filter(|listing| now.duration_since(listing.last_read) < LISTING_TTL)
            .ok_or(PageError::Expired { revision: token.revision })?;
        if listing.revision != token.revision {
            return Err(PageError::Malformed);
        }
        if listing.filter.group != filter.group || listing.filter.selector != filter.selector {
            return Err(PageError::OtherFilter { listed: listing.filter.describe() });
        }
        listing.last_read = now;
        let start = usize::try_from(token.offset).unwrap_or(usize::MAX).min(listing.processes.len());
        let end = start.saturating_add(size).min(listing.processes.len());
        let processes = listing.processes[start..end]
            .iter()
            .filter(|process| filter.groups.allows(process.group.as_deref()))
            .cloned()
            .collect();
        let revision = listing.revision;
        let next_page_token = (end < listing.processes.len()).then(|| {
            PageToken { revision, listing: token.listing, offset: u32::try_from(end).unwrap_or(u32::MAX) }
                .encode()
        });
        Ok(Page { processes, next_page_token, revision, group_changed: None })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Listing>> {
        // Every change is a single insert or remove: a panic cannot leave the map half-changed.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A listing id nobody can guess, so that a token cannot be made up for someone else's listing.
fn random_id() -> u128 {
    let mut bytes = [0u8; 16];
    // The system's random source does not fail on the systems the server runs on; a zeroed id
    // would still be correct, only guessable.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_anything_else_is_malformed() {
        let token = PageToken { revision: 7, listing: u128::MAX - 3, offset: 1000 };
        assert_eq!(PageToken::decode(&token.encode()), Ok(token));
        for bad in ["", "x", "AAAA", &"A".repeat(65), "!!!!", &URL_SAFE_NO_PAD.encode([0u8; 27])] {
            assert_eq!(PageToken::decode(bad), Err(PageError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn page_sizes_default_and_are_capped() {
        let size = |size| PageQuery { size, ..PageQuery::default() }.effective_size();
        assert_eq!((size(0), size(1), size(5_000), size(1_000_000)), (1_000, 1, 5_000, 5_000));
    }
}
