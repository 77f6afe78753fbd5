//! The envelope of one object: its metadata entries, their validated form, the DEK.

use zeroize::Zeroizing;

use crate::format::{
    check_unwrapped, metadata_lookup, wrap_payload, EncryptionData, Protocol,
    ValidatedEncryptionData, DEK_LEN, ENCRYPTION_DATA_NAME, INTEGRITY_NAME, REGION_DATA_LEN_V2_0,
};
use crate::integrity::{IntegrityRecord, MacContext};
use crate::kek::KeyEncryptionKey;
use crate::EnvelopeError;
use cmkvault_crypto::Alg;

/// The metadata of one encrypted object: the `encryptiondata` JSON (exactly as stored) and
/// cmkvault's integrity record (absent on objects written by other writers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeMetadata {
    /// The `encryptiondata` metadata value (Azure CSE v2 JSON).
    pub encryption_data: String,
    /// The `cmkvaultintegrity` metadata value, if any.
    pub integrity: Option<String>,
}

impl EnvelopeMetadata {
    /// The blob metadata entries to store: `encryptiondata` and, if present, `cmkvaultintegrity`.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut v = vec![(
            ENCRYPTION_DATA_NAME.to_owned(),
            self.encryption_data.clone(),
        )];
        if let Some(i) = &self.integrity {
            v.push((INTEGRITY_NAME.to_owned(), i.clone()));
        }
        v
    }

    /// Picks the two entries out of a blob's metadata (names matched case-insensitively);
    /// errors when `encryptiondata` is missing (never treat an unencrypted object as plaintext).
    pub fn from_pairs<'a, I, K, V>(entries: I) -> Result<EnvelopeMetadata, EnvelopeError>
    where
        I: IntoIterator<Item = &'a (K, V)> + Clone,
        K: AsRef<str> + 'a,
        V: AsRef<str> + 'a,
    {
        let encryption_data = metadata_lookup(entries.clone(), ENCRYPTION_DATA_NAME)
            .ok_or_else(|| {
                EnvelopeError::Metadata(
                    "the object has no encryptiondata metadata (not encrypted?)".into(),
                )
            })?
            .to_owned();
        let integrity = metadata_lookup(entries, INTEGRITY_NAME).map(str::to_owned);
        Ok(EnvelopeMetadata {
            encryption_data,
            integrity,
        })
    }
}

/// How strictly to open an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Accept RSA1_5-wrapped keys (legacy data only; `--allow-legacy`).
    pub allow_legacy: bool,
    /// Require the integrity record (default). Set to `false` only for objects known to come
    /// from another writer (an Azure SDK): then truncation at a region boundary and name swaps
    /// are not detectable, exactly as with those SDKs.
    pub require_integrity: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            allow_legacy: false,
            require_integrity: true,
        }
    }
}

/// A parsed and validated envelope (no key access needed): what `inspect` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The parsed `encryptiondata` JSON.
    pub encryption_data: EncryptionData,
    /// Its validated fields.
    pub validated: ValidatedEncryptionData,
    /// The parsed integrity record, if present (not yet verified: that needs the DEK).
    pub integrity: Option<IntegrityRecord>,
}

impl Envelope {
    /// Parses and validates metadata as a reader must (see [`EncryptionData::validate`]).
    pub fn parse(meta: &EnvelopeMetadata, opts: &OpenOptions) -> Result<Envelope, EnvelopeError> {
        let encryption_data = EncryptionData::from_json(&meta.encryption_data)?;
        let validated = encryption_data.validate(opts.allow_legacy)?;
        let integrity = match &meta.integrity {
            Some(s) => Some(IntegrityRecord::from_json(s)?),
            None if opts.require_integrity => {
                return Err(EnvelopeError::Integrity(
                    "the object has no cmkvaultintegrity record (body may be truncated or the \
                     object renamed undetectably); if it was written by an Azure SDK, open it \
                     as a foreign object"
                        .into(),
                ))
            }
            None => None,
        };
        Ok(Envelope {
            encryption_data,
            validated,
            integrity,
        })
    }

    /// The KEK id the DEK is wrapped under.
    pub fn kid(&self) -> &str {
        &self.validated.kid
    }

    /// The wrap algorithm.
    pub fn alg(&self) -> Alg {
        self.validated.alg
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.validated.protocol
    }

    /// Plaintext bytes per region.
    pub fn data_length(&self) -> u64 {
        self.validated.data_length
    }

    pub(crate) fn mac_context(&self) -> MacContext<'_> {
        MacContext {
            protocol: self.validated.protocol,
            data_length: self.validated.data_length,
            wrapped: &self.validated.wrapped,
        }
    }

    /// Unwraps the DEK with `kek` (whose kid must equal the envelope's `KeyId` exactly, as the
    /// SDKs require) and checks the protocol prefix. One KEK call.
    pub async fn unwrap_dek(&self, kek: &dyn KeyEncryptionKey) -> Result<DataKey, EnvelopeError> {
        if kek.kid() != self.kid() {
            return Err(EnvelopeError::Key {
                kid: self.kid().to_owned(),
                reason: format!(
                    "the object is wrapped under this key, not under {} (wrong key)",
                    kek.kid()
                ),
            });
        }
        let unwrapped = kek.unwrap(&self.validated.wrapped, self.alg()).await?;
        let dek = check_unwrapped(self.protocol(), &unwrapped)?;
        Ok(DataKey(dek))
    }

    /// Verifies the integrity record (if any) for `object_name` with the DEK; errors if it is
    /// absent and `opts.require_integrity`.
    pub fn verify_integrity(
        &self,
        dek: &DataKey,
        object_name: &str,
        opts: &OpenOptions,
    ) -> Result<Option<&IntegrityRecord>, EnvelopeError> {
        match &self.integrity {
            Some(rec) => {
                rec.verify(&dek.0, object_name, &self.mac_context())?;
                Ok(Some(rec))
            }
            None if opts.require_integrity => Err(EnvelopeError::Integrity(
                "the object has no cmkvaultintegrity record".into(),
            )),
            None => Ok(None),
        }
    }
}

/// A data-encryption key (AES-256), zeroized on drop. `Debug` never shows it.
pub struct DataKey(pub(crate) Zeroizing<[u8; DEK_LEN]>);

impl core::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random DEK.
    pub fn generate() -> Result<DataKey, EnvelopeError> {
        let mut k = Zeroizing::new([0u8; DEK_LEN]);
        aws_lc_rs::rand::fill(&mut k[..])
            .map_err(|_| EnvelopeError::Crypto("random DEK generation failed".into()))?;
        Ok(DataKey(k))
    }
}

/// Everything an [`crate::EncryptWriter`] needs: a fresh DEK already wrapped by the KEK, the
/// layout and the object name the integrity record binds.
pub struct SealingKey {
    pub(crate) dek: DataKey,
    pub(crate) protocol: Protocol,
    pub(crate) data_length: u64,
    pub(crate) kid: String,
    pub(crate) alg: Alg,
    pub(crate) wrapped: Vec<u8>,
    pub(crate) object_name: String,
}

impl core::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("protocol", &self.protocol)
            .field("object_name", &self.object_name)
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// A fresh DEK wrapped by `kek` (one KEK call) for protocol 2.0, 4 MiB regions, bound to
    /// `object_name`.
    pub async fn new(
        kek: &dyn KeyEncryptionKey,
        object_name: &str,
    ) -> Result<SealingKey, EnvelopeError> {
        Self::build(
            kek,
            object_name,
            DataKey::generate()?,
            Protocol::V2_0,
            REGION_DATA_LEN_V2_0,
        )
        .await
    }

    /// Test-vector constructor: a caller-chosen DEK, protocol and region size. Reusing a DEK
    /// breaks AES-GCM; this exists only to reproduce the reference's byte-exact vectors.
    #[doc(hidden)]
    pub async fn __with_pinned_dek_for_tests(
        kek: &dyn KeyEncryptionKey,
        object_name: &str,
        dek: [u8; DEK_LEN],
        protocol: Protocol,
        data_length: u64,
    ) -> Result<SealingKey, EnvelopeError> {
        Self::build(
            kek,
            object_name,
            DataKey(Zeroizing::new(dek)),
            protocol,
            data_length,
        )
        .await
    }

    /// An existing DEK wrapped anew (rewrap), any valid layout.
    pub(crate) async fn rewrapped(
        kek: &dyn KeyEncryptionKey,
        object_name: &str,
        dek: DataKey,
        protocol: Protocol,
        data_length: u64,
    ) -> Result<SealingKey, EnvelopeError> {
        Self::build(kek, object_name, dek, protocol, data_length).await
    }

    async fn build(
        kek: &dyn KeyEncryptionKey,
        object_name: &str,
        dek: DataKey,
        protocol: Protocol,
        data_length: u64,
    ) -> Result<SealingKey, EnvelopeError> {
        if !(crate::format::MIN_DATA_LEN..=crate::format::MAX_DATA_LEN).contains(&data_length)
            || (protocol == Protocol::V2_0 && data_length != REGION_DATA_LEN_V2_0)
        {
            return Err(EnvelopeError::Metadata(format!(
                "DataLength {data_length} is not valid for protocol {protocol}"
            )));
        }
        let payload = wrap_payload(protocol, &dek.0);
        let wrapped = kek.wrap(&payload[..]).await?;
        Ok(SealingKey {
            dek,
            protocol,
            data_length,
            kid: kek.kid().to_owned(),
            alg: kek.wrap_alg(),
            wrapped,
            object_name: object_name.to_owned(),
        })
    }

    /// The metadata for an object of `plaintext_length` bytes sealed with this key (known in
    /// advance when a store needs the metadata before the body, e.g. a multipart blob upload;
    /// compare with what [`crate::EncryptWriter::finalize`] returns).
    pub fn metadata(&self, plaintext_length: u64) -> Result<EnvelopeMetadata, EnvelopeError> {
        let ed = EncryptionData::new(
            &self.kid,
            &self.wrapped,
            self.alg,
            self.protocol,
            self.data_length,
        );
        let rec = IntegrityRecord::compute(
            &self.dek.0,
            plaintext_length,
            &self.object_name,
            &MacContext {
                protocol: self.protocol,
                data_length: self.data_length,
                wrapped: &self.wrapped,
            },
        )?;
        Ok(EnvelopeMetadata {
            encryption_data: ed.to_json()?,
            integrity: Some(rec.to_json()?),
        })
    }
}
