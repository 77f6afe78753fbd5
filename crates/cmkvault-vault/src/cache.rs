//! A bounded cache of unsealed, parsed key versions, so a hot key is unsealed and parsed once.
//!
//! Entries are per key (vault, lower-case name) and dropped on any change to that key. A
//! generation counter stops a reader that loaded from the store before a change from
//! re-inserting what it read after the change invalidated it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cmkvault_crypto::KeyHandle;

use crate::model::KeyProps;

/// Most keys kept; past this the cache is emptied (parsed keys are zeroized as they drop).
const MAX_KEYS: usize = 4096;

/// One live key version, ready for crypto.
pub(crate) struct LoadedVersion {
    pub name: String,
    pub version: String,
    pub props: KeyProps,
    /// The key (software today; any [`KeyHandle`] backend can fill it).
    pub key: Arc<dyn KeyHandle>,
}

#[derive(Default)]
struct KeyEntry {
    latest: Option<Arc<LoadedVersion>>,
    versions: HashMap<String, Arc<LoadedVersion>>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    keys: HashMap<(String, String), KeyEntry>,
}

/// The cache.
#[derive(Default)]
pub(crate) struct KeyCache {
    inner: RwLock<Inner>,
}

fn slot(vault: &str, name: &str) -> (String, String) {
    (vault.to_string(), name.to_lowercase())
}

impl KeyCache {
    /// The current generation; pass it back to `insert`.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.read().map(|i| i.generation).unwrap_or(u64::MAX)
    }

    /// A cached version (`None` for the latest).
    pub(crate) fn get(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Option<Arc<LoadedVersion>> {
        let inner = self.inner.read().ok()?;
        let entry = inner.keys.get(&slot(vault, name))?;
        match version {
            None => entry.latest.clone(),
            Some(v) => entry.versions.get(&v.to_lowercase()).cloned(),
        }
    }

    /// Caches a version loaded at `generation`; ignored if the key changed since.
    pub(crate) fn insert(
        &self,
        vault: &str,
        generation: u64,
        loaded: Arc<LoadedVersion>,
        is_latest: bool,
    ) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.generation != generation {
            return;
        }
        if inner.keys.len() >= MAX_KEYS {
            inner.keys.clear();
        }
        let entry = inner.keys.entry(slot(vault, &loaded.name)).or_default();
        if is_latest {
            entry.latest = Some(loaded.clone());
        }
        entry.versions.insert(loaded.version.clone(), loaded);
    }

    /// Drops everything cached for a key; call after every change to it.
    pub(crate) fn invalidate(&self, vault: &str, name: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner.generation += 1;
            inner.keys.remove(&slot(vault, name));
        }
    }
}
