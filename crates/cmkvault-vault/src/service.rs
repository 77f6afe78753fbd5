//! [`VaultService`]: vaults, keys, versions and the operations on them.

use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_crypto::{
    CipherRequest, CryptoError, Curve, JwkPrivate, KeyBackend, KeyFamily, KeyHandle, KeyRef,
    KeySpec, NewKey, RootKey, Sealer, SoftwareBackend,
};
use cmkvault_store::{KeyRecord, Store, StoreError, VaultRecord, VersionRecord};
use zeroize::Zeroizing;

use crate::backup::{self, BackupDoc, BackupVersion};
use crate::cache::{KeyCache, LoadedVersion};
use crate::model::*;
use crate::rotation::{RotationPolicy, RotationPolicyInput};
use crate::{
    Clock, InternalError, KeyError, RequestError, VaultError, VaultResult, VaultStateError,
};

const DAY: i64 = 86_400;
const ROOT_CHECK_META: &str = "root-key-check";
const ROOT_CHECK_AAD: &[u8] = b"cmkvault:root-key-check:v1";
const ROOT_CHECK_VALUE: &[u8] = b"cmkvault root key check";

/// Azure's page size cap for listings.
pub(crate) const MAX_PAGE: usize = 25;

/// Settings of one vault, as the management API shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSettings {
    /// Vault name.
    pub name: String,
    /// Soft-delete retention (7..=90 days).
    pub retention_days: u32,
    /// Purge protection.
    pub purge_protection: bool,
    /// RBAC (true) or access policies (false).
    pub rbac_authorization: bool,
    /// Creation time.
    pub created: i64,
    /// Last update.
    pub updated: i64,
}

impl From<VaultRecord> for VaultSettings {
    fn from(v: VaultRecord) -> Self {
        VaultSettings {
            name: v.name,
            retention_days: v.retention_days,
            purge_protection: v.purge_protection,
            rbac_authorization: v.rbac_authorization,
            created: v.created,
            updated: v.updated,
        }
    }
}

impl VaultSettings {
    /// Azure's `recoveryLevel` for keys in this vault.
    pub fn recovery_level(&self) -> &'static str {
        match (self.retention_days >= 90, self.purge_protection) {
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
        }
    }
}

/// The vault service. Cheap to share behind an `Arc`.
pub struct VaultService {
    pub(crate) store: Arc<dyn Store>,
    /// Seals key versions (through the software backend), backup blobs and secret metadata.
    sealer: Arc<dyn Sealer>,
    /// Makes key versions and opens them from their stored [`KeyRef`].
    keys: Arc<dyn KeyBackend>,
    clock: Clock,
    pub(crate) cache: KeyCache,
    /// Principals, roles, assignments, access policies and vault settings, as one snapshot.
    pub(crate) access: crate::access::AccessCache,
    /// Serialises changes (check-then-write sequences such as "create unless soft-deleted").
    write_lock: Mutex<()>,
}

fn seal_aad(vault: &str, name: &str, version: &str) -> Vec<u8> {
    format!(
        "cmkvault:key:v1:{vault}:{}:{}",
        name.to_lowercase(),
        version.to_lowercase()
    )
    .into_bytes()
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn encode_page_token(s: &str) -> String {
    B64URL.encode(s.as_bytes())
}

fn decode_page_token(t: &str) -> VaultResult<String> {
    B64URL
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| VaultError::from(RequestError::InvalidPageToken))
}

fn page_size(max: Option<u32>) -> VaultResult<usize> {
    match max {
        None => Ok(MAX_PAGE),
        Some(n) if (1..=MAX_PAGE as u32).contains(&n) => Ok(n as usize),
        Some(n) => Err(VaultError::invalid(format!(
            "maxresults {n} is out of range: use 1 to {MAX_PAGE}."
        ))),
    }
}

impl VaultService {
    /// Opens the service over a store, checking that `root` opens this store's sealed data.
    /// A fresh store is stamped with a check value sealed under `root`. Keys are software keys
    /// sealed under `root`.
    pub fn open(store: Arc<dyn Store>, root: RootKey, clock: Clock) -> VaultResult<Self> {
        let sealer: Arc<dyn Sealer> = Arc::new(root);
        let keys = Arc::new(SoftwareBackend::new(sealer.clone()));
        Self::open_with(store, sealer, keys, clock)
    }

    /// [`VaultService::open`] with any [`Sealer`] and [`KeyBackend`] (the HSM seam).
    pub fn open_with(
        store: Arc<dyn Store>,
        sealer: Arc<dyn Sealer>,
        keys: Arc<dyn KeyBackend>,
        clock: Clock,
    ) -> VaultResult<Self> {
        let candidate = sealer.seal(ROOT_CHECK_AAD, ROOT_CHECK_VALUE)?;
        let stored = store.meta_put_if_absent(ROOT_CHECK_META, &candidate)?;
        match sealer.open(ROOT_CHECK_AAD, &stored) {
            Ok(v) if v.as_slice() == ROOT_CHECK_VALUE => {}
            _ => return Err(InternalError::WrongRootKey.into()),
        }
        Ok(VaultService {
            store,
            sealer,
            keys,
            clock,
            cache: KeyCache::default(),
            access: Default::default(),
            write_lock: Mutex::new(()),
        })
    }

    /// The service clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The sealer (the root key) that protects this store's secrets at rest.
    pub fn sealer(&self) -> &Arc<dyn Sealer> {
        &self.sealer
    }

    pub(crate) fn lock(&self) -> VaultResult<MutexGuard<'_, ()>> {
        // The lock guards no data of its own (the store's transactions do), so a panic in an
        // earlier holder leaves nothing half-done here: recover instead of failing every write.
        Ok(self
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A plain metadata value, created by `make` on first use.
    pub fn meta_get_or_create(
        &self,
        key: &str,
        make: impl FnOnce() -> Vec<u8>,
    ) -> VaultResult<Vec<u8>> {
        if let Some(v) = self.store.meta_get(key)? {
            return Ok(v);
        }
        Ok(self.store.meta_put_if_absent(key, &make())?)
    }

    /// A secret metadata value sealed under the root key, created by `make` on first use.
    pub fn sealed_meta_get_or_create(
        &self,
        key: &str,
        make: impl FnOnce() -> VaultResult<Zeroizing<Vec<u8>>>,
    ) -> VaultResult<Zeroizing<Vec<u8>>> {
        let aad = format!("cmkvault:meta:v1:{key}");
        let stored = match self.store.meta_get(key)? {
            Some(v) => v,
            None => {
                let fresh = make()?;
                let sealed = self.sealer.seal(aad.as_bytes(), &fresh)?;
                self.store.meta_put_if_absent(key, &sealed)?
            }
        };
        self.sealer
            .open(aad.as_bytes(), &stored)
            .map_err(|_| InternalError::WrongRootKey.into())
    }

    // ---------------------------------------------------------------- vaults

    /// Creates a vault.
    pub fn create_vault(
        &self,
        name: &str,
        retention_days: u32,
        purge_protection: bool,
    ) -> VaultResult<VaultSettings> {
        validate_vault_name(name)?;
        if !(7..=90).contains(&retention_days) {
            return Err(VaultError::invalid(format!(
                "softDeleteRetentionInDays {retention_days} is out of range: use 7 to 90."
            )));
        }
        let now = self.clock.now();
        let rec = VaultRecord {
            name: name.to_lowercase(),
            retention_days,
            purge_protection,
            rbac_authorization: true,
            created: now,
            updated: now,
        };
        let result = match self.store.vault_create(&rec) {
            Err(StoreError::Conflict(_)) => Err(VaultStateError::Exists(rec.name).into()),
            r => r.map(|_| rec.into()).map_err(Into::into),
        };
        self.access.invalidate();
        result
    }

    /// Creates a vault unless it exists; returns its settings.
    pub fn ensure_vault(&self, name: &str, retention_days: u32) -> VaultResult<VaultSettings> {
        match self.create_vault(name, retention_days, false) {
            Err(VaultError::Vault(VaultStateError::Exists(_))) => self.vault(name),
            r => r,
        }
    }

    /// A vault's settings.
    pub fn vault(&self, name: &str) -> VaultResult<VaultSettings> {
        self.access_snapshot()?
            .vaults
            .get(&name.to_lowercase())
            .cloned()
            .ok_or_else(|| VaultError::from(VaultStateError::NotFound(name.to_string())))
    }

    /// All vaults.
    pub fn list_vaults(&self) -> VaultResult<Vec<VaultSettings>> {
        Ok(self
            .store
            .vault_list()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Changes a vault's settings. Purge protection can be turned on, never off; retention is
    /// fixed at creation (the same value is accepted as a no-op).
    pub fn update_vault(
        &self,
        name: &str,
        purge_protection: Option<bool>,
        retention_days: Option<u32>,
    ) -> VaultResult<VaultSettings> {
        let _g = self.lock()?;
        let mut rec = self
            .store
            .vault_get(name)?
            .ok_or_else(|| VaultStateError::NotFound(name.to_string()))?;
        if let Some(days) = retention_days {
            if days != rec.retention_days {
                return Err(VaultStateError::RetentionFixed {
                    days: rec.retention_days,
                }
                .into());
            }
        }
        match purge_protection {
            Some(false) if rec.purge_protection => {
                return Err(VaultStateError::PurgeProtectionPermanent.into())
            }
            Some(true) => rec.purge_protection = true,
            _ => {}
        }
        rec.updated = self.clock.now();
        self.store.vault_update(&rec)?;
        self.access.invalidate();
        Ok(rec.into())
    }

    // ---------------------------------------------------------------- loading

    fn view(
        &self,
        settings: &VaultSettings,
        name: &str,
        version: &str,
        props: KeyProps,
    ) -> KeyView {
        KeyView {
            name: name.to_string(),
            version: version.to_string(),
            props,
            recoverable_days: settings.retention_days,
            recovery_level: settings.recovery_level(),
            deleted: None,
        }
    }

    pub(crate) fn parse_props(props: &str) -> VaultResult<KeyProps> {
        serde_json::from_str(props)
            .map_err(|e| VaultError::corrupt(format!("stored key properties: {e}")))
    }

    /// The live key row, or `KeyNotFound` (also for soft-deleted keys).
    fn live_key(&self, vault: &str, name: &str) -> VaultResult<KeyRecord> {
        match self.store.key_get(vault, name)? {
            Some(k) if k.deleted.is_none() => Ok(k),
            _ => Err(KeyError::NotFound {
                name: name.to_string(),
                version: None,
            }
            .into()),
        }
    }

    fn version_record(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> VaultResult<(KeyRecord, VersionRecord)> {
        let key = self.live_key(vault, name)?;
        let rec = match version {
            None => self.store.version_latest(vault, name)?,
            Some(v) => self.store.version_get(vault, name, v)?,
        };
        let rec = rec.ok_or_else(|| {
            VaultError::from(KeyError::NotFound {
                name: name.to_string(),
                version: version.map(str::to_string),
            })
        })?;
        Ok((key, rec))
    }

    /// Runs `open` (open a handle, or export for backup) on a version's stored key reference
    /// with the version's identity; a reference that does not open is an internal error.
    fn open_key<T>(
        &self,
        vault: &str,
        name: &str,
        rec: &VersionRecord,
        open: impl FnOnce(&dyn KeyBackend, &KeyRef, &[u8]) -> Result<T, CryptoError>,
    ) -> VaultResult<T> {
        let cannot_open = || {
            VaultError::corrupt(format!(
                "sealed key {name}/{} cannot be opened",
                rec.version
            ))
        };
        let key_ref = KeyRef::from_bytes(&rec.sealed).map_err(|_| cannot_open())?;
        let aad = seal_aad(vault, name, &rec.version);
        open(self.keys.as_ref(), &key_ref, &aad).map_err(|e| match e {
            CryptoError::Unseal => cannot_open(),
            // The blob opened, so it was sealed here: material that does not parse is corrupt
            // stored data (an internal error), not a client's bad key.
            e => VaultError::corrupt(format!(
                "sealed key {name}/{} does not parse: {e}",
                rec.version
            )),
        })
    }

    /// A usable key for a version record.
    fn unseal(
        &self,
        vault: &str,
        name: &str,
        rec: &VersionRecord,
    ) -> VaultResult<Arc<dyn KeyHandle>> {
        self.open_key(vault, name, rec, |keys, r, id| keys.open(r, id))
    }

    /// A new version id and key material for `name`, bound to that version.
    fn new_key(
        &self,
        vault: &str,
        name: &str,
        material: Material<'_>,
    ) -> VaultResult<(String, NewKey)> {
        let version = new_version_id();
        let id = seal_aad(vault, name, &version);
        let new = match material {
            Material::Generate(spec) => self.keys.generate(spec, &id)?,
            Material::Import(jwk) => self.keys.import(jwk, &id)?,
        };
        Ok((version, new))
    }

    /// A version ready for crypto, from the cache or the store.
    fn load(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> VaultResult<Arc<LoadedVersion>> {
        let version = version.filter(|v| !v.is_empty());
        if let Some(hit) = self.cache.get(vault, name, version) {
            return Ok(hit);
        }
        let generation = self.cache.generation();
        let (key, rec) = self.version_record(vault, name, version)?;
        let loaded = Arc::new(LoadedVersion {
            name: key.name.clone(),
            version: rec.version.clone(),
            props: Self::parse_props(&rec.props)?,
            key: self.unseal(vault, name, &rec)?,
        });
        self.cache
            .insert(vault, generation, loaded.clone(), version.is_none());
        Ok(loaded)
    }

    // ---------------------------------------------------------------- keys

    fn check_not_deleted(&self, vault: &str, name: &str) -> VaultResult<Option<KeyRecord>> {
        let key = self.store.key_get(vault, name)?;
        if key.as_ref().is_some_and(|k| k.deleted.is_some()) {
            return Err(KeyError::DeletedButRecoverable(name.to_string()).into());
        }
        Ok(key)
    }

    fn apply_attributes(props: &mut KeyProps, a: &AttributesInput) {
        if let Some(e) = a.enabled {
            props.enabled = e;
        }
        if a.nbf.is_some() {
            props.nbf = a.nbf;
        }
        if a.exp.is_some() {
            props.exp = a.exp;
        }
        if a.exportable.is_some() {
            props.exportable = a.exportable;
        }
    }

    fn check_window(a: &AttributesInput) -> VaultResult<()> {
        if let (Some(nbf), Some(exp)) = (a.nbf, a.exp) {
            if nbf > exp {
                return Err(VaultError::invalid(
                    "The key's nbf (not before) must not be later than its exp (expiry).",
                ));
            }
        }
        Ok(())
    }

    /// Stores `version` of `name`, made of `new` (see [`VaultService::new_key`]), under the
    /// write lock.
    #[allow(clippy::too_many_arguments)]
    fn add_version(
        &self,
        vault: &str,
        name: &str,
        kty: Kty,
        (version, new): (String, NewKey),
        key_ops: Vec<String>,
        attributes: &AttributesInput,
        tags: Option<Tags>,
        release_policy: Option<serde_json::Value>,
    ) -> VaultResult<KeyView> {
        let settings = self.vault(vault)?;
        let _g = self.lock()?;
        let existing = self.check_not_deleted(vault, name)?;
        let now = self.clock.now();
        let public = public_members(new.handle.as_ref());
        let mut props = KeyProps {
            kty,
            key_size: new.handle.key_size_bits() as u32,
            key_ops,
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
            exportable: None,
            tags,
            release_policy,
            public,
        };
        Self::apply_attributes(&mut props, attributes);
        let policy = existing
            .as_ref()
            .and_then(|k| k.rotation_policy.as_deref())
            .and_then(|p| serde_json::from_str::<RotationPolicy>(p).ok());
        if props.exp.is_none() {
            if let Some(secs) = policy.as_ref().and_then(|p| p.expiry_seconds()) {
                props.exp = Some(now.saturating_add(secs));
            }
        }
        let key = existing.unwrap_or(KeyRecord {
            vault: vault.to_string(),
            name: name.to_string(),
            deleted: None,
            rotation_policy: None,
        });
        let rec = VersionRecord {
            version: version.clone(),
            seq: 0,
            created: now,
            props: serde_json::to_string(&props)
                .map_err(|e| VaultError::unexpected(format!("key properties: {e}")))?,
            sealed: new.key_ref.to_bytes(),
        };
        self.store.version_add(&key, &rec)?;
        self.cache.invalidate(vault, name);
        Ok(self.view(&settings, &key.name, &version, props))
    }

    /// Creates a key, or a new version of an existing one.
    pub fn create_key(&self, vault: &str, name: &str, req: CreateKey) -> VaultResult<KeyView> {
        validate_key_name(name)?;
        self.vault(vault)?;
        Self::check_window(&req.attributes)?;
        let kty = Kty::parse(&req.kty).ok_or_else(|| {
            VaultError::invalid(format!(
                "The key type '{}' is not supported: use RSA, RSA-HSM, EC, EC-HSM or oct-HSM.",
                req.kty
            ))
        })?;
        validate_ops_and_tags(req.key_ops.as_deref(), req.tags.as_ref())?;
        // Fail fast on a soft-deleted name before spending time on key generation.
        self.check_not_deleted(vault, name)?;
        let spec = match kty {
            Kty::Rsa | Kty::RsaHsm => {
                let bits = req.key_size.unwrap_or(2048);
                check_rsa_size(bits as usize)?;
                if req.curve.is_some() {
                    return Err(VaultError::invalid("crv is not valid for an RSA key."));
                }
                KeySpec::Rsa {
                    bits: bits as usize,
                    public_exponent: req.public_exponent,
                }
            }
            Kty::Ec | Kty::EcHsm => {
                let crv = req.curve.as_deref().unwrap_or("P-256");
                let curve = Curve::from_jwk(crv).ok_or_else(|| {
                    VaultError::invalid(format!(
                        "The curve '{crv}' is not supported: use P-256, P-384, P-521 or P-256K."
                    ))
                })?;
                if let Some(size) = req.key_size {
                    if size as usize != curve_bits(curve) {
                        return Err(VaultError::invalid(format!(
                            "key_size {size} does not match curve {crv}."
                        )));
                    }
                }
                KeySpec::Ec(curve)
            }
            Kty::Oct | Kty::OctHsm => {
                let bits = req.key_size.unwrap_or(256);
                if !matches!(bits, 128 | 192 | 256) {
                    return Err(VaultError::invalid(format!(
                        "AES key size {bits} is not supported: use 128, 192 or 256."
                    )));
                }
                KeySpec::Oct {
                    bits: bits as usize,
                }
            }
        };
        let new = self.new_key(vault, name, Material::Generate(spec))?;
        let ops = req.key_ops.unwrap_or_else(|| kty.default_ops());
        self.add_version(
            vault,
            name,
            kty,
            new,
            ops,
            &req.attributes,
            req.tags,
            req.release_policy,
        )
    }

    /// Imports a key, or a new version of an existing one.
    pub fn import_key(&self, vault: &str, name: &str, req: ImportKey) -> VaultResult<KeyView> {
        validate_key_name(name)?;
        self.vault(vault)?;
        Self::check_window(&req.attributes)?;
        let kty = Kty::parse(&req.jwk.kty).ok_or_else(|| {
            VaultError::invalid(format!("The key type '{}' is not supported.", req.jwk.kty))
        })?;
        let kty = match req.hsm {
            Some(h) => kty.with_hsm(h),
            None => kty,
        };
        validate_ops_and_tags(req.key_ops.as_deref(), req.tags.as_ref())?;
        let new = self.new_key(vault, name, Material::Import(&req.jwk))?;
        if new.1.handle.family() == KeyFamily::Rsa {
            check_rsa_size(new.1.handle.key_size_bits())?;
        }
        let ops = req.key_ops.unwrap_or_else(|| kty.default_ops());
        self.add_version(
            vault,
            name,
            kty,
            new,
            ops,
            &req.attributes,
            req.tags,
            req.release_policy,
        )
    }

    /// A key version (`None` or empty version for the latest).
    pub fn get_key(&self, vault: &str, name: &str, version: Option<&str>) -> VaultResult<KeyView> {
        let settings = self.vault(vault)?;
        let loaded = self.load(vault, name, version)?;
        Ok(self.view(
            &settings,
            &loaded.name,
            &loaded.version,
            loaded.props.clone(),
        ))
    }

    /// Updates a version's attributes, tags, `key_ops` or release policy.
    pub fn update_key(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        req: UpdateKey,
    ) -> VaultResult<KeyView> {
        let settings = self.vault(vault)?;
        validate_ops_and_tags(req.key_ops.as_deref(), req.tags.as_ref())?;
        let _g = self.lock()?;
        let (key, rec) = self.version_record(vault, name, version.filter(|v| !v.is_empty()))?;
        let mut props = Self::parse_props(&rec.props)?;
        Self::apply_attributes(&mut props, &req.attributes);
        if let (Some(nbf), Some(exp)) = (props.nbf, props.exp) {
            if nbf > exp {
                return Err(VaultError::invalid(
                    "The key's nbf (not before) must not be later than its exp (expiry).",
                ));
            }
        }
        if let Some(ops) = req.key_ops {
            props.key_ops = ops;
        }
        if let Some(tags) = req.tags {
            props.tags = Some(tags);
        }
        if req.release_policy.is_some() {
            props.release_policy = req.release_policy;
        }
        props.updated = self.clock.now();
        let json = serde_json::to_string(&props)
            .map_err(|e| VaultError::unexpected(format!("key properties: {e}")))?;
        self.store
            .version_update_props(vault, name, &rec.version, &json)?;
        self.cache.invalidate(vault, name);
        Ok(self.view(&settings, &key.name, &rec.version, props))
    }

    /// Lists live keys (base ids, latest version's attributes).
    pub fn list_keys(
        &self,
        vault: &str,
        max: Option<u32>,
        token: Option<&str>,
    ) -> VaultResult<Page<KeyView>> {
        self.list_key_rows(vault, false, max, token)
    }

    /// Lists soft-deleted keys.
    pub fn list_deleted_keys(
        &self,
        vault: &str,
        max: Option<u32>,
        token: Option<&str>,
    ) -> VaultResult<Page<KeyView>> {
        self.list_key_rows(vault, true, max, token)
    }

    fn list_key_rows(
        &self,
        vault: &str,
        deleted: bool,
        max: Option<u32>,
        token: Option<&str>,
    ) -> VaultResult<Page<KeyView>> {
        let settings = self.vault(vault)?;
        let limit = page_size(max)?;
        let after = token.map(decode_page_token).transpose()?;
        let rows = self
            .store
            .key_list(vault, deleted, after.as_deref(), limit + 1)?;
        let more = rows.len() > limit;
        let mut items = Vec::new();
        for key in rows.into_iter().take(limit) {
            let Some(latest) = self.store.version_latest(vault, &key.name)? else {
                continue;
            };
            let mut v = self.view(
                &settings,
                &key.name,
                &latest.version,
                Self::parse_props(&latest.props)?,
            );
            v.deleted = key.deleted;
            items.push(v);
        }
        let next = if more {
            items
                .last()
                .map(|v| encode_page_token(&v.name.to_lowercase()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Lists a live key's versions in creation order.
    pub fn list_versions(
        &self,
        vault: &str,
        name: &str,
        max: Option<u32>,
        token: Option<&str>,
    ) -> VaultResult<Page<KeyView>> {
        let settings = self.vault(vault)?;
        let limit = page_size(max)?;
        let key = self.live_key(vault, name)?;
        let after: i64 = match token {
            None => 0,
            Some(t) => decode_page_token(t)?
                .parse()
                .map_err(|_| VaultError::from(RequestError::InvalidPageToken))?,
        };
        let rows = self.store.version_list(vault, name, after, limit + 1)?;
        let more = rows.len() > limit;
        let mut items = Vec::new();
        let mut last_seq = after;
        for rec in rows.into_iter().take(limit) {
            last_seq = rec.seq;
            items.push(self.view(
                &settings,
                &key.name,
                &rec.version,
                Self::parse_props(&rec.props)?,
            ));
        }
        let next = more.then(|| encode_page_token(&last_seq.to_string()));
        Ok(Page { items, next })
    }

    /// Soft-deletes a key (all versions).
    pub fn delete_key(&self, vault: &str, name: &str) -> VaultResult<KeyView> {
        let settings = self.vault(vault)?;
        let _g = self.lock()?;
        let (mut key, latest) = self.version_record(vault, name, None)?;
        let now = self.clock.now();
        key.deleted = Some((now, now + settings.retention_days as i64 * DAY));
        self.store.key_update(&key)?;
        self.cache.invalidate(vault, name);
        let mut v = self.view(
            &settings,
            &key.name,
            &latest.version,
            Self::parse_props(&latest.props)?,
        );
        v.deleted = key.deleted;
        Ok(v)
    }

    fn deleted_key(&self, vault: &str, name: &str) -> VaultResult<KeyRecord> {
        match self.store.key_get(vault, name)? {
            Some(k) if k.deleted.is_some() => Ok(k),
            _ => Err(KeyError::DeletedNotFound(name.to_string()).into()),
        }
    }

    /// A soft-deleted key (latest version).
    pub fn get_deleted_key(&self, vault: &str, name: &str) -> VaultResult<KeyView> {
        let settings = self.vault(vault)?;
        let key = self.deleted_key(vault, name)?;
        let latest = self
            .store
            .version_latest(vault, name)?
            .ok_or_else(|| KeyError::DeletedNotFound(name.to_string()))?;
        let mut v = self.view(
            &settings,
            &key.name,
            &latest.version,
            Self::parse_props(&latest.props)?,
        );
        v.deleted = key.deleted;
        Ok(v)
    }

    /// Recovers a soft-deleted key with all its versions.
    pub fn recover_key(&self, vault: &str, name: &str) -> VaultResult<KeyView> {
        self.vault(vault)?;
        {
            let _g = self.lock()?;
            let mut key = self.deleted_key(vault, name)?;
            key.deleted = None;
            self.store.key_update(&key)?;
            self.cache.invalidate(vault, name);
        }
        self.get_key(vault, name, None)
    }

    /// Purges a soft-deleted key for good (refused while the vault has purge protection).
    pub fn purge_key(&self, vault: &str, name: &str) -> VaultResult<()> {
        let settings = self.vault(vault)?;
        let _g = self.lock()?;
        self.deleted_key(vault, name)?;
        if settings.purge_protection {
            return Err(KeyError::PurgeProtected.into());
        }
        self.store.key_purge(vault, name)?;
        self.cache.invalidate(vault, name);
        Ok(())
    }

    /// Makes a new version of a key with the same type, size and operations.
    pub fn rotate_key(&self, vault: &str, name: &str) -> VaultResult<KeyView> {
        let (key, latest) = self.version_record(vault, name, None)?;
        let props = Self::parse_props(&latest.props)?;
        let spec = match props.kty {
            Kty::Rsa | Kty::RsaHsm => KeySpec::Rsa {
                bits: props.key_size as usize,
                public_exponent: None,
            },
            Kty::Ec | Kty::EcHsm => {
                let curve = props
                    .public
                    .crv
                    .as_deref()
                    .and_then(Curve::from_jwk)
                    .ok_or_else(|| VaultError::corrupt("stored EC key without curve"))?;
                KeySpec::Ec(curve)
            }
            Kty::Oct | Kty::OctHsm => KeySpec::Oct {
                bits: props.key_size as usize,
            },
        };
        let new = self.new_key(vault, &key.name, Material::Generate(spec))?;
        let attrs = AttributesInput {
            exportable: props.exportable,
            ..Default::default()
        };
        self.add_version(
            vault,
            &key.name,
            props.kty,
            new,
            props.key_ops,
            &attrs,
            props.tags,
            props.release_policy,
        )
    }

    /// The key's rotation policy, or the default one (`false` in the second field).
    pub fn get_rotation_policy(
        &self,
        vault: &str,
        name: &str,
    ) -> VaultResult<(RotationPolicy, bool)> {
        self.vault(vault)?;
        let key = self.live_key(vault, name)?;
        Ok(match key.rotation_policy.as_deref() {
            Some(p) => (
                serde_json::from_str(p).map_err(|e| {
                    VaultError::corrupt(format!("the stored rotation policy cannot be read: {e}"))
                })?,
                true,
            ),
            None => (RotationPolicy::default_policy(), false),
        })
    }

    /// Validates and stores a rotation policy.
    pub fn set_rotation_policy(
        &self,
        vault: &str,
        name: &str,
        input: RotationPolicyInput,
    ) -> VaultResult<RotationPolicy> {
        self.vault(vault)?;
        let _g = self.lock()?;
        let mut key = self.live_key(vault, name)?;
        let previous: Option<RotationPolicy> = key
            .rotation_policy
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok());
        let policy =
            RotationPolicy::from_input(input, previous.and_then(|p| p.created), self.clock.now())?;
        key.rotation_policy = Some(
            serde_json::to_string(&policy)
                .map_err(|e| VaultError::unexpected(format!("rotation policy: {e}")))?,
        );
        self.store.key_update(&key)?;
        Ok(policy)
    }

    // ---------------------------------------------------------------- backup

    /// Backs up every version of a key and its rotation policy into one sealed blob.
    pub fn backup_key(&self, vault: &str, name: &str) -> VaultResult<Vec<u8>> {
        self.vault(vault)?;
        let key = self.live_key(vault, name)?;
        let mut versions = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.store.version_list(vault, name, after, 100)?;
            if batch.is_empty() {
                break;
            }
            for rec in batch {
                after = rec.seq;
                let private = self.open_key(vault, name, &rec, |keys, r, id| {
                    keys.export_for_backup(r, id)
                })?;
                versions.push(BackupVersion {
                    version: rec.version.clone(),
                    seq: rec.seq,
                    created: rec.created,
                    props: rec.props.clone(),
                    private: BackupVersion::encode_private(&private),
                });
            }
            if versions.len() > backup::MAX_VERSIONS {
                return Err(VaultError::invalid(format!(
                    "The key has more than {} versions and cannot be backed up.",
                    backup::MAX_VERSIONS
                )));
            }
        }
        let doc = BackupDoc {
            format: 1,
            name: key.name.clone(),
            rotation_policy: key.rotation_policy.clone(),
            versions,
        };
        backup::seal(self.sealer.as_ref(), &doc)
    }

    /// Restores a backup blob into `vault` under the key's original name.
    pub fn restore_key(&self, vault: &str, blob: &[u8]) -> VaultResult<KeyView> {
        self.vault(vault)?;
        let doc = backup::open(self.sealer.as_ref(), blob)?;
        validate_key_name(&doc.name)?;
        let mut versions = Vec::with_capacity(doc.versions.len());
        for v in &doc.versions {
            let private_bytes = v.private_bytes()?;
            // The backend parses the material to prove it usable before it is stored.
            let key_ref = self
                .keys
                .import_from_backup(&private_bytes, &seal_aad(vault, &doc.name, &v.version))?;
            Self::parse_props(&v.props)?;
            versions.push(VersionRecord {
                version: v.version.to_lowercase(),
                seq: v.seq,
                created: v.created,
                props: v.props.clone(),
                sealed: key_ref.to_bytes(),
            });
        }
        let key = KeyRecord {
            vault: vault.to_string(),
            name: doc.name.clone(),
            deleted: None,
            rotation_policy: doc.rotation_policy.clone(),
        };
        {
            let _g = self.lock()?;
            if let Some(existing) = self.store.key_get(vault, &doc.name)? {
                return Err(if existing.deleted.is_some() {
                    KeyError::DeletedButRecoverable(existing.name).into()
                } else {
                    KeyError::RestoreConflict(existing.name).into()
                });
            }
            match self.store.key_restore(&key, &versions) {
                Err(StoreError::Conflict(_)) => {
                    return Err(KeyError::RestoreConflict(doc.name.clone()).into())
                }
                r => r?,
            }
            self.cache.invalidate(vault, &doc.name);
        }
        self.get_key(vault, &doc.name, None)
    }

    // ---------------------------------------------------------------- crypto

    /// Runs a crypto operation on a key version after checking `enabled`, `nbf`, `exp` and
    /// `key_ops`.
    pub fn crypto(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        op: CryptoOp,
        input: &CryptoInput,
    ) -> VaultResult<CryptoOutput> {
        self.vault(vault)?;
        let loaded = self.load(vault, name, version)?;
        let props = &loaded.props;
        let key_op = op.key_op();
        if !props.enabled {
            return Err(KeyError::Disabled(key_op).into());
        }
        let now = self.clock.now();
        if props.nbf.is_some_and(|nbf| now < nbf) {
            return Err(KeyError::NotYetValid(key_op).into());
        }
        if key_op.blocked_by_expiry() && props.exp.is_some_and(|exp| now >= exp) {
            return Err(KeyError::Expired(key_op).into());
        }
        if !props.allows(key_op) {
            return Err(KeyError::OperationNotPermitted(key_op).into());
        }
        let key = loaded.key.as_ref();
        let alg = input.alg;
        let req = CipherRequest {
            value: &input.value,
            iv: input.iv.as_deref(),
            aad: input.aad.as_deref(),
            tag: input.tag.as_deref(),
        };
        let bytes = |value: Zeroizing<Vec<u8>>| CryptoOutput::Bytes {
            version: loaded.version.clone(),
            value,
            iv: None,
            tag: None,
            aad: None,
        };
        Ok(match op {
            CryptoOp::Encrypt => {
                let out = key.encrypt(alg, &req)?;
                CryptoOutput::Bytes {
                    version: loaded.version.clone(),
                    value: Zeroizing::new(out.value),
                    iv: out.iv,
                    tag: out.tag,
                    aad: out.aad,
                }
            }
            CryptoOp::Decrypt => bytes(key.decrypt(alg, &req)?),
            CryptoOp::WrapKey => bytes(Zeroizing::new(key.wrap_key(alg, &input.value)?)),
            CryptoOp::UnwrapKey => bytes(key.unwrap_key(alg, &input.value)?),
            CryptoOp::Sign => bytes(Zeroizing::new(key.sign(alg, &input.value)?)),
            CryptoOp::Verify => {
                let digest = input
                    .digest
                    .as_deref()
                    .ok_or_else(|| VaultError::invalid("verify needs the digest in 'digest'."))?;
                CryptoOutput::Verified(key.verify(alg, digest, &input.value)?)
            }
        })
    }

    /// Random bytes from the system CSPRNG (1..=128).
    pub fn random_bytes(&self, vault: &str, count: usize) -> VaultResult<Vec<u8>> {
        self.vault(vault)?;
        if !(1..=128).contains(&count) {
            return Err(VaultError::invalid(format!(
                "count {count} is out of range: use 1 to 128."
            )));
        }
        Ok(cmkvault_crypto::random_bytes(count)?)
    }
}

/// Validates the optional `key_ops` and `tags` of a create, import or update request.
fn validate_ops_and_tags(key_ops: Option<&[String]>, tags: Option<&Tags>) -> VaultResult<()> {
    if let Some(ops) = key_ops {
        validate_key_ops(ops)?;
    }
    if let Some(t) = tags {
        validate_tags(t)?;
    }
    Ok(())
}

/// Refuses an RSA modulus size other than 2048, 3072 or 4096 bits.
fn check_rsa_size(bits: usize) -> VaultResult<()> {
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(VaultError::invalid(format!(
            "RSA key size {bits} is not supported: use 2048, 3072 or 4096."
        )));
    }
    Ok(())
}

fn curve_bits(c: Curve) -> usize {
    match c {
        Curve::P256 | Curve::P256K => 256,
        Curve::P384 => 384,
        Curve::P521 => 521,
    }
}

/// What a new key version is made of.
enum Material<'a> {
    /// Generated by the backend.
    Generate(KeySpec),
    /// Imported from private JWK members.
    Import(&'a JwkPrivate),
}

fn public_members(key: &dyn KeyHandle) -> PublicMembers {
    let jwk = key.public_jwk();
    let enc = |b: Option<Vec<u8>>| b.map(|b| B64URL.encode(b));
    PublicMembers {
        n: enc(jwk.n),
        e: enc(jwk.e),
        crv: jwk.crv.map(|c| c.jwk_name().to_string()),
        x: enc(jwk.x),
        y: enc(jwk.y),
    }
}
