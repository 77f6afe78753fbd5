//! JWA algorithm names and which operations / key families they are valid for.

use crate::error::CryptoError;
use crate::types::{Curve, KeyFamily};
use aws_lc_rs::digest;

/// Hash function of a signature or MAC algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Output length in bytes.
    pub(crate) fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// aws-lc-rs digest algorithm.
    pub(crate) fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    /// Index 0..3, for per-hash caches.
    pub(crate) fn index(self) -> usize {
        match self {
            Hash::Sha256 => 0,
            Hash::Sha384 => 1,
            Hash::Sha512 => 2,
        }
    }
}

/// A JWA algorithm the vault supports, as named in the Key Vault REST API.
///
/// Parsed once where a request enters (`"RSA-OAEP-256".parse::<Alg>()`); `Display`, [`Alg::as_str`]
/// and serde use the JWA spelling, exact case. An unknown name gives
/// [`CryptoError::UnsupportedAlgorithm`] with the reason "unknown algorithm".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// `RSA-OAEP`: RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// `RSA-OAEP-256`: RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// `RSA1_5`: RSAES-PKCS1-v1_5 (decrypt and unwrapKey of legacy data only).
    Rsa15,
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// `RS384`: RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// `RS512`: RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// `PS256`: RSASSA-PSS with SHA-256.
    Ps256,
    /// `PS384`: RSASSA-PSS with SHA-384.
    Ps384,
    /// `PS512`: RSASSA-PSS with SHA-512.
    Ps512,
    /// `ES256`: ECDSA on P-256 with SHA-256.
    Es256,
    /// `ES384`: ECDSA on P-384 with SHA-384.
    Es384,
    /// `ES512`: ECDSA on P-521 with SHA-512.
    Es512,
    /// `ES256K`: ECDSA on secp256k1 with SHA-256.
    Es256K,
    /// `A128KW`: AES key wrap (RFC 3394) with a 128-bit key.
    A128Kw,
    /// `A192KW`: AES key wrap with a 192-bit key.
    A192Kw,
    /// `A256KW`: AES key wrap with a 256-bit key.
    A256Kw,
    /// `CKM_AES_KEY_WRAP`: AES key wrap (RFC 3394), any AES key size.
    CkmAesKeyWrap,
    /// `CKM_AES_KEY_WRAP_PAD`: AES key wrap with padding (RFC 5649), any AES key size.
    CkmAesKeyWrapPad,
    /// `A128GCM`: AES-GCM with a 128-bit key.
    A128Gcm,
    /// `A192GCM`: AES-GCM with a 192-bit key.
    A192Gcm,
    /// `A256GCM`: AES-GCM with a 256-bit key.
    A256Gcm,
    /// `A128CBC`: AES-CBC without padding, 128-bit key.
    A128Cbc,
    /// `A192CBC`: AES-CBC without padding, 192-bit key.
    A192Cbc,
    /// `A256CBC`: AES-CBC without padding, 256-bit key.
    A256Cbc,
    /// `A128CBCPAD`: AES-CBC with PKCS#7 padding, 128-bit key.
    A128CbcPad,
    /// `A192CBCPAD`: AES-CBC with PKCS#7 padding, 192-bit key.
    A192CbcPad,
    /// `A256CBCPAD`: AES-CBC with PKCS#7 padding, 256-bit key.
    A256CbcPad,
    /// `HS256`: HMAC-SHA-256.
    Hs256,
    /// `HS384`: HMAC-SHA-384.
    Hs384,
    /// `HS512`: HMAC-SHA-512.
    Hs512,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 30] = [
        Alg::RsaOaep,
        Alg::RsaOaep256,
        Alg::Rsa15,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::Es512,
        Alg::Es256K,
        Alg::A128Kw,
        Alg::A192Kw,
        Alg::A256Kw,
        Alg::CkmAesKeyWrap,
        Alg::CkmAesKeyWrapPad,
        Alg::A128Gcm,
        Alg::A192Gcm,
        Alg::A256Gcm,
        Alg::A128Cbc,
        Alg::A192Cbc,
        Alg::A256Cbc,
        Alg::A128CbcPad,
        Alg::A192CbcPad,
        Alg::A256CbcPad,
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
    ];

    /// The JWA name (`"RSA-OAEP-256"`, `"A256KW"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RsaOaep => "RSA-OAEP",
            Alg::RsaOaep256 => "RSA-OAEP-256",
            Alg::Rsa15 => "RSA1_5",
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
            Alg::Es256K => "ES256K",
            Alg::A128Kw => "A128KW",
            Alg::A192Kw => "A192KW",
            Alg::A256Kw => "A256KW",
            Alg::CkmAesKeyWrap => "CKM_AES_KEY_WRAP",
            Alg::CkmAesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            Alg::A128Gcm => "A128GCM",
            Alg::A192Gcm => "A192GCM",
            Alg::A256Gcm => "A256GCM",
            Alg::A128Cbc => "A128CBC",
            Alg::A192Cbc => "A192CBC",
            Alg::A256Cbc => "A256CBC",
            Alg::A128CbcPad => "A128CBCPAD",
            Alg::A192CbcPad => "A192CBCPAD",
            Alg::A256CbcPad => "A256CBCPAD",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }

    /// The key family this algorithm needs.
    pub fn family(self) -> KeyFamily {
        self.kind().family()
    }

    /// The structured form the dispatch works on.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Alg::RsaOaep => Kind::RsaOaep,
            Alg::RsaOaep256 => Kind::RsaOaep256,
            Alg::Rsa15 => Kind::Rsa15,
            Alg::Rs256 => Kind::RsaPkcs1(Hash::Sha256),
            Alg::Rs384 => Kind::RsaPkcs1(Hash::Sha384),
            Alg::Rs512 => Kind::RsaPkcs1(Hash::Sha512),
            Alg::Ps256 => Kind::RsaPss(Hash::Sha256),
            Alg::Ps384 => Kind::RsaPss(Hash::Sha384),
            Alg::Ps512 => Kind::RsaPss(Hash::Sha512),
            Alg::Es256 => Kind::Ecdsa(Curve::P256),
            Alg::Es384 => Kind::Ecdsa(Curve::P384),
            Alg::Es512 => Kind::Ecdsa(Curve::P521),
            Alg::Es256K => Kind::Ecdsa(Curve::P256K),
            Alg::A128Kw => Kind::AesKw(Some(16)),
            Alg::A192Kw => Kind::AesKw(Some(24)),
            Alg::A256Kw => Kind::AesKw(Some(32)),
            Alg::CkmAesKeyWrap => Kind::AesKw(None),
            Alg::CkmAesKeyWrapPad => Kind::AesKwp,
            Alg::A128Gcm => Kind::AesGcm(16),
            Alg::A192Gcm => Kind::AesGcm(24),
            Alg::A256Gcm => Kind::AesGcm(32),
            Alg::A128Cbc => Kind::AesCbc(16),
            Alg::A192Cbc => Kind::AesCbc(24),
            Alg::A256Cbc => Kind::AesCbc(32),
            Alg::A128CbcPad => Kind::AesCbcPad(16),
            Alg::A192CbcPad => Kind::AesCbcPad(24),
            Alg::A256CbcPad => Kind::AesCbcPad(32),
            Alg::Hs256 => Kind::Hmac(Hash::Sha256),
            Alg::Hs384 => Kind::Hmac(Hash::Sha384),
            Alg::Hs512 => Kind::Hmac(Hash::Sha512),
        }
    }
}

impl core::str::FromStr for Alg {
    type Err = CryptoError;

    /// Parses a JWA name (exact case).
    fn from_str(name: &str) -> Result<Alg, CryptoError> {
        // A match, not a scan of `ALL`: this runs once per crypto request.
        Ok(match name {
            "RSA-OAEP" => Alg::RsaOaep,
            "RSA-OAEP-256" => Alg::RsaOaep256,
            "RSA1_5" => Alg::Rsa15,
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            "ES256K" => Alg::Es256K,
            "A128KW" => Alg::A128Kw,
            "A192KW" => Alg::A192Kw,
            "A256KW" => Alg::A256Kw,
            "CKM_AES_KEY_WRAP" => Alg::CkmAesKeyWrap,
            "CKM_AES_KEY_WRAP_PAD" => Alg::CkmAesKeyWrapPad,
            "A128GCM" => Alg::A128Gcm,
            "A192GCM" => Alg::A192Gcm,
            "A256GCM" => Alg::A256Gcm,
            "A128CBC" => Alg::A128Cbc,
            "A192CBC" => Alg::A192Cbc,
            "A256CBC" => Alg::A256Cbc,
            "A128CBCPAD" => Alg::A128CbcPad,
            "A192CBCPAD" => Alg::A192CbcPad,
            "A256CBCPAD" => Alg::A256CbcPad,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return Err(CryptoError::unsupported(name, "unknown algorithm")),
        })
    }
}

impl core::fmt::Display for Alg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Alg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Alg, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A key operation, as named in a key's `key_ops` and in the Key Vault REST API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyOp {
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
    /// `sign`
    Sign,
    /// `verify`
    Verify,
    /// `wrapKey`
    WrapKey,
    /// `unwrapKey`
    UnwrapKey,
    /// `import`
    Import,
    /// `export`
    Export,
}

impl KeyOp {
    /// Every operation, in wire order.
    pub const ALL: [KeyOp; 8] = [
        KeyOp::Encrypt,
        KeyOp::Decrypt,
        KeyOp::Sign,
        KeyOp::Verify,
        KeyOp::WrapKey,
        KeyOp::UnwrapKey,
        KeyOp::Import,
        KeyOp::Export,
    ];

    /// The wire name (`wrapKey`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
            KeyOp::Sign => "sign",
            KeyOp::Verify => "verify",
            KeyOp::WrapKey => "wrapKey",
            KeyOp::UnwrapKey => "unwrapKey",
            KeyOp::Import => "import",
            KeyOp::Export => "export",
        }
    }

    /// Parses a wire name (exact case, as Azure does).
    pub fn parse(s: &str) -> Option<KeyOp> {
        KeyOp::ALL.into_iter().find(|op| op.as_str() == s)
    }

    /// Operations that the key's expiry (`exp`) blocks: those that make new protected data.
    pub fn blocked_by_expiry(self) -> bool {
        matches!(self, KeyOp::Encrypt | KeyOp::WrapKey | KeyOp::Sign)
    }
}

impl core::str::FromStr for KeyOp {
    type Err = CryptoError;

    /// Parses a wire name (exact case).
    fn from_str(s: &str) -> Result<KeyOp, CryptoError> {
        KeyOp::parse(s).ok_or_else(|| CryptoError::input(format!("unknown key operation {s:?}")))
    }
}

impl core::fmt::Display for KeyOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for KeyOp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for KeyOp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyOp, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The structured form of an [`Alg`]: what the dispatch needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// RSA-OAEP (SHA-1, MGF1-SHA-1).
    RsaOaep,
    /// RSA-OAEP-256 (SHA-256, MGF1-SHA-256).
    RsaOaep256,
    /// RSA PKCS#1 v1.5 encryption (decrypt/unwrap only).
    Rsa15,
    /// RS256/RS384/RS512.
    RsaPkcs1(Hash),
    /// PS256/PS384/PS512.
    RsaPss(Hash),
    /// ES256/ES384/ES512/ES256K; the curve the algorithm requires.
    Ecdsa(Curve),
    /// A128KW/A192KW/A256KW (key bytes) or CKM_AES_KEY_WRAP (None: any AES key size).
    AesKw(Option<usize>),
    /// CKM_AES_KEY_WRAP_PAD (RFC 5649), any AES key size.
    AesKwp,
    /// A128GCM/A192GCM/A256GCM (key bytes).
    AesGcm(usize),
    /// A128CBC/A192CBC/A256CBC, no padding (key bytes).
    AesCbc(usize),
    /// A128CBCPAD/A192CBCPAD/A256CBCPAD, PKCS#7 padding (key bytes).
    AesCbcPad(usize),
    /// HS256/HS384/HS512.
    Hmac(Hash),
}

impl Kind {
    /// The key family this algorithm needs.
    pub(crate) fn family(self) -> KeyFamily {
        match self {
            Kind::RsaOaep
            | Kind::RsaOaep256
            | Kind::Rsa15
            | Kind::RsaPkcs1(_)
            | Kind::RsaPss(_) => KeyFamily::Rsa,
            Kind::Ecdsa(_) => KeyFamily::Ec,
            Kind::AesKw(_)
            | Kind::AesKwp
            | Kind::AesGcm(_)
            | Kind::AesCbc(_)
            | Kind::AesCbcPad(_)
            | Kind::Hmac(_) => KeyFamily::Oct,
        }
    }

    /// Checks that `op` is allowed with this algorithm; the error explains why not.
    pub(crate) fn check_op(self, name: &str, op: KeyOp) -> Result<(), CryptoError> {
        let is_sig = matches!(
            self,
            Kind::RsaPkcs1(_) | Kind::RsaPss(_) | Kind::Ecdsa(_) | Kind::Hmac(_)
        );
        match op {
            KeyOp::Import | KeyOp::Export => Err(CryptoError::unsupported(
                name,
                format!("{} is not a cryptographic operation", op.as_str()),
            )),
            KeyOp::Sign | KeyOp::Verify if is_sig => Ok(()),
            KeyOp::Sign | KeyOp::Verify => Err(CryptoError::unsupported(
                name,
                format!(
                    "{name} is an encryption algorithm; it is not valid for {}",
                    op.as_str()
                ),
            )),
            _ if is_sig => Err(CryptoError::unsupported(
                name,
                format!(
                    "{name} is a signature algorithm; it is not valid for {}",
                    op.as_str()
                ),
            )),
            KeyOp::Encrypt | KeyOp::WrapKey if self == Kind::Rsa15 => {
                Err(CryptoError::unsupported(
                    name,
                    "RSA1_5 is accepted only to decrypt or unwrap legacy data",
                ))
            }
            KeyOp::WrapKey | KeyOp::UnwrapKey
                if matches!(self, Kind::AesGcm(_) | Kind::AesCbc(_) | Kind::AesCbcPad(_)) =>
            {
                Err(CryptoError::unsupported(
                    name,
                    format!(
                        "{name} is not valid for {}; use encrypt/decrypt, or a key-wrap algorithm",
                        op.as_str()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Checks `alg` against the key family and operation; returns its structured form.
pub(crate) fn resolve(alg: Alg, family: KeyFamily, op: KeyOp) -> Result<Kind, CryptoError> {
    let name = alg.as_str();
    let kind = alg.kind();
    if kind.family() != family {
        return Err(CryptoError::unsupported(
            name,
            format!("{name} is not valid for {}", family.a_key()),
        ));
    }
    kind.check_op(name, op)?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_alg_and_family() {
        let r = |name: &str, family, op| name.parse::<Alg>().and_then(|a| resolve(a, family, op));
        let e = r("A256KW", KeyFamily::Rsa, KeyOp::WrapKey).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported algorithm A256KW: A256KW is not valid for a RSA key"
        );
        let e = r("FOO", KeyFamily::Rsa, KeyOp::WrapKey).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported algorithm FOO: unknown algorithm"
        );
        let e = r("RSA1_5", KeyFamily::Rsa, KeyOp::Encrypt).unwrap_err();
        assert!(e.to_string().contains("accepted only to decrypt or unwrap"));
        assert!(r("RSA1_5", KeyFamily::Rsa, KeyOp::UnwrapKey).is_ok());
        assert!(r("rsa-oaep", KeyFamily::Rsa, KeyOp::Encrypt).is_err());
        assert!(r("A128GCM", KeyFamily::Oct, KeyOp::WrapKey).is_err());
        assert!(r("ES256", KeyFamily::Ec, KeyOp::Encrypt).is_err());
        assert!(r("RSA-OAEP", KeyFamily::Rsa, KeyOp::Sign).is_err());
    }
}
