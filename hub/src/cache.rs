//! Write-through caches of what every API request reads: the caller behind a token, and the
//! serialized answers of `GET /hub/api/users/{name}` and `GET /hub/api/users`.
//!
//! Every write moves the database's generation on ([`crate::db::Db::generation`]): this
//! replica's own, and on PostgreSQL every other replica's, heard through the change feed (while
//! the feed is not heard, the generation changes at every read and nothing cached is used). An
//! entry is stored with the generation read *before* the data it was built from, only if that
//! generation is still current when it is stored, and is used only while it is current: the
//! first write after it makes every entry stale. So a cached answer is always one the database
//! would give now (another replica's write: once its notification is heard, within
//! milliseconds), and a write is visible to the next read (deleted tokens, users, role, group
//! and admin changes, server state and activity alike).
//! Token expiry is checked on every hit; a token due for its `last_activity` write misses, so
//! the write happens as before.

use bytes::Bytes;
use std::collections::HashMap;
use std::hash::Hash;
use tokio::sync::{Mutex, MutexGuard};

use crate::auth::{ApiCaller, CallerKind};

/// Entries per cache before it is emptied (a bound, not an eviction policy: a hub has a few
/// callers and users per generation).
const MAX_ENTRIES: usize = 8192;
/// Bytes of cached answers before that cache is emptied: 1 MiB holds a couple of thousand
/// users' answers or about forty 100-user pages (at 16 MiB, random pages of 10,000 users filled
/// it, and the hub's RSS with it; `bench/run scale` measures both).
const MAX_BYTES: usize = 1 << 20;

/// A caller resolved from a token, with what decides whether it may be reused.
#[derive(Debug, Clone)]
pub(crate) struct CachedCaller {
    /// The caller.
    pub caller: ApiCaller,
    /// The token's expiry (µs).
    pub expires_at: Option<i64>,
    /// The token's stored `last_activity` (µs).
    pub last_activity: Option<i64>,
}

/// Who an answer was computed for: the token (its scopes are fixed), or the cookie's user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum CallerKey {
    /// Authenticated by this token.
    Token(i64),
    /// Authenticated by a login cookie of this user.
    Cookie(i64),
}

/// Which answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ResponseKey {
    /// `GET /hub/api/users/{name}`.
    User {
        /// The caller.
        caller: CallerKey,
        /// The name as requested.
        name: String,
        /// `include_stopped_servers`.
        include_stopped: bool,
    },
    /// `GET /hub/api/users`.
    Users {
        /// The caller.
        caller: CallerKey,
        /// The raw query string.
        query: String,
        /// The origin of the `next` URL, when answering with the pagination envelope.
        envelope_origin: Option<String>,
    },
}

/// One map valid for one generation.
#[derive(Debug)]
struct Generational<K, V> {
    inner: Mutex<Tagged<K, V>>,
}

#[derive(Debug)]
struct Tagged<K, V> {
    generation: u64,
    map: HashMap<K, V>,
    bytes: usize,
}

impl<K: Hash + Eq, V: Clone> Generational<K, V> {
    fn new() -> Self {
        Self {
            inner: Mutex::new(Tagged {
                generation: 0,
                map: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    async fn lock(&self) -> MutexGuard<'_, Tagged<K, V>> {
        self.inner.lock().await
    }

    async fn get<Q>(&self, current: u64, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let t = self.lock().await;
        if t.generation != current {
            return None;
        }
        t.map.get(key).cloned()
    }

    /// Store `value`, built from data read at generation `read_at`, if that is `current`.
    async fn put(&self, read_at: u64, current: u64, key: K, value: V, size: usize) {
        if read_at != current {
            return;
        }
        let mut t = self.lock().await;
        if t.generation > current {
            return;
        }
        if t.generation < current || t.map.len() >= MAX_ENTRIES || t.bytes + size > MAX_BYTES {
            t.map.clear();
            t.bytes = 0;
            t.generation = current;
        }
        t.bytes += size;
        t.map.insert(key, value);
    }
}

/// The hub's caches (see the module docs).
#[derive(Debug)]
pub(crate) struct Caches {
    callers: Generational<String, CachedCaller>,
    responses: Generational<ResponseKey, Bytes>,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            callers: Generational::new(),
            responses: Generational::new(),
        }
    }
}

impl Caches {
    /// The caller of the token whose hash is `hash`, if cached at generation `current`.
    pub(crate) async fn caller(&self, current: u64, hash: &str) -> Option<CachedCaller> {
        self.callers.get(current, hash).await
    }

    /// Cache the caller of a token, resolved from data read at `read_at`.
    pub(crate) async fn put_caller(
        &self,
        read_at: u64,
        current: u64,
        hash: String,
        c: CachedCaller,
    ) {
        self.callers.put(read_at, current, hash, c, 0).await;
    }

    /// A cached answer.
    pub(crate) async fn response(&self, current: u64, key: &ResponseKey) -> Option<Bytes> {
        self.responses.get(current, key).await
    }

    /// Cache an answer computed from data read at `read_at`.
    pub(crate) async fn put_response(
        &self,
        read_at: u64,
        current: u64,
        key: ResponseKey,
        body: Bytes,
    ) {
        let size = body.len();
        self.responses.put(read_at, current, key, body, size).await;
    }
}

impl ApiCaller {
    /// Who answers are cached for: the token, or the cookie's user.
    pub(crate) fn cache_key(&self) -> Option<CallerKey> {
        match (self.token_id, &self.kind) {
            (Some(id), _) => Some(CallerKey::Token(id)),
            (None, CallerKind::User(u)) if self.by_cookie => Some(CallerKey::Cookie(u.id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_live_for_one_generation() {
        let c: Generational<&str, u32> = Generational::new();
        c.put(3, 3, "a", 1, 1).await;
        assert_eq!(c.get(3, "a").await, Some(1));
        assert_eq!(c.get(4, "a").await, None, "a write made it stale");
        // Built from data read before the write: never stored.
        c.put(3, 4, "b", 2, 1).await;
        assert_eq!(c.get(4, "b").await, None);
        c.put(4, 4, "b", 2, 1).await;
        assert_eq!((c.get(4, "b").await, c.get(4, "a").await), (Some(2), None));
        // A slow writer with an older current generation does not roll the map back.
        c.put(3, 3, "c", 3, 1).await;
        assert_eq!((c.get(4, "b").await, c.get(3, "c").await), (Some(2), None));
    }

    #[tokio::test]
    async fn bounded_in_entries_and_bytes() {
        let c: Generational<usize, u8> = Generational::new();
        for i in 0..=MAX_ENTRIES {
            c.put(1, 1, i, 0, 1).await;
        }
        assert!(c.lock().await.map.len() <= MAX_ENTRIES);
        c.put(1, 1, usize::MAX, 0, MAX_BYTES).await;
        c.put(1, 1, 7, 0, 1).await;
        assert_eq!(c.lock().await.bytes, 1);
    }
}
