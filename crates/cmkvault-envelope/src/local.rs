//! A local key file as KEK, for offline use and tests: a private JWK (oct 256-bit → A256KW,
//! RSA private key → RSA-OAEP-256), operated through cmkvault-crypto.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use cmkvault_crypto::{Alg, JwkPrivate, KeyFamily, KeyHandle, PrivateKey};
use zeroize::Zeroizing;

use crate::api::KeyResolver;
use crate::kek::{BoxFuture, KeyEncryptionKey};
use crate::EnvelopeError;

/// A KEK held in a local JWK file.
#[derive(Debug, Clone)]
pub struct LocalKey {
    kid: String,
    alg: Alg,
    key: Arc<PrivateKey>,
}

/// The JWK members as read (zeroized on drop).
#[derive(serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct JwkFile {
    kty: String,
    kid: Option<String>,
    k: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
}

fn b64(field: &str, v: &str) -> Result<Vec<u8>, EnvelopeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| EnvelopeError::Metadata(format!("JWK member {field} is not base64url")))
}

fn b64z(field: &str, v: &Option<String>) -> Result<Option<Zeroizing<Vec<u8>>>, EnvelopeError> {
    v.as_ref()
        .map(|s| b64(field, s).map(Zeroizing::new))
        .transpose()
}

impl LocalKey {
    /// Loads a private JWK file. The kid is the JWK's `kid`, else `local:<file name>`.
    pub fn load(path: &Path) -> Result<LocalKey, EnvelopeError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| EnvelopeError::Key {
                    kid: path.display().to_string(),
                    reason: format!("cannot read the key file: {e}"),
                })?,
            );
        let default_kid = format!(
            "local:{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Self::from_jwk_json(&text, &default_kid)
    }

    /// Parses a private JWK; `default_kid` is used when it has no `kid`.
    pub fn from_jwk_json(json: &str, default_kid: &str) -> Result<LocalKey, EnvelopeError> {
        let f: JwkFile = serde_json::from_str(json).map_err(|e| EnvelopeError::Key {
            kid: default_kid.to_owned(),
            reason: format!("the key file is not a JWK: {e}"),
        })?;
        let kid = f.kid.clone().unwrap_or_else(|| default_kid.to_owned());
        let jwk = JwkPrivate {
            kty: f.kty.clone(),
            n: f.n.as_deref().map(|v| b64("n", v)).transpose()?,
            e: f.e.as_deref().map(|v| b64("e", v)).transpose()?,
            d: b64z("d", &f.d)?,
            p: b64z("p", &f.p)?,
            q: b64z("q", &f.q)?,
            dp: b64z("dp", &f.dp)?,
            dq: b64z("dq", &f.dq)?,
            qi: b64z("qi", &f.qi)?,
            k: b64z("k", &f.k)?,
            ..Default::default()
        };
        let key = PrivateKey::from_jwk(&jwk).map_err(|e| EnvelopeError::Key {
            kid: kid.clone(),
            reason: format!("the key file is not a usable key: {e}"),
        })?;
        Self::from_private_key(kid, key)
    }

    /// A 256-bit AES key (A256KW) with the given kid.
    pub fn from_oct(kid: &str, key: &[u8]) -> Result<LocalKey, EnvelopeError> {
        let jwk = JwkPrivate {
            kty: "oct".into(),
            k: Some(Zeroizing::new(key.to_vec())),
            ..Default::default()
        };
        let key = PrivateKey::from_jwk(&jwk).map_err(|e| EnvelopeError::Key {
            kid: kid.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_private_key(kid.to_owned(), key)
    }

    /// Wraps an existing software key: oct 256 → A256KW, RSA → RSA-OAEP-256.
    pub fn from_private_key(kid: String, key: PrivateKey) -> Result<LocalKey, EnvelopeError> {
        let alg = match (key.family(), key.key_size_bits()) {
            (KeyFamily::Oct, 256) => Alg::A256Kw,
            (KeyFamily::Rsa, _) => Alg::RsaOaep256,
            (family, bits) => {
                return Err(EnvelopeError::Key {
                    kid,
                    reason: format!(
                        "a {bits}-bit {family:?} key cannot wrap data keys; use a 256-bit oct \
                         key or an RSA key"
                    ),
                })
            }
        };
        Ok(LocalKey {
            kid,
            alg,
            key: Arc::new(key),
        })
    }
}

impl KeyEncryptionKey for LocalKey {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn wrap_alg(&self) -> Alg {
        self.alg
    }

    fn wrap<'a>(&'a self, plaintext: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, EnvelopeError>> {
        Box::pin(async move {
            self.key
                .wrap_key(self.alg, plaintext)
                .map_err(|e| EnvelopeError::Key {
                    kid: self.kid.clone(),
                    reason: format!("wrap failed: {e}"),
                })
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        alg: Alg,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, EnvelopeError>> {
        Box::pin(async move {
            self.key
                .unwrap_key(alg, wrapped)
                .map_err(|e| EnvelopeError::Key {
                    kid: self.kid.clone(),
                    reason: format!("unwrap failed (wrong key or tampered wrapped key): {e}"),
                })
        })
    }
}

impl KeyResolver for LocalKey {
    fn resolve<'a>(
        &'a self,
        kid: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn KeyEncryptionKey>, EnvelopeError>> {
        Box::pin(async move {
            if kid == self.kid {
                Ok(Arc::new(self.clone()) as Arc<dyn KeyEncryptionKey>)
            } else {
                Err(EnvelopeError::Key {
                    kid: kid.to_owned(),
                    reason: format!("only the local key {} is available", self.kid),
                })
            }
        })
    }
}
