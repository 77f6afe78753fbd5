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

/// A parsed JWA algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
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

/// The operation being asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
    Sign,
    Verify,
}

impl Op {
    /// Name as in the Key Vault REST API.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::Wrap => "wrapKey",
            Op::Unwrap => "unwrapKey",
            Op::Sign => "sign",
            Op::Verify => "verify",
        }
    }
}

impl Alg {
    /// Parses a JWA name (exact case).
    pub(crate) fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RSA-OAEP" => Alg::RsaOaep,
            "RSA-OAEP-256" => Alg::RsaOaep256,
            "RSA1_5" => Alg::Rsa15,
            "RS256" => Alg::RsaPkcs1(Hash::Sha256),
            "RS384" => Alg::RsaPkcs1(Hash::Sha384),
            "RS512" => Alg::RsaPkcs1(Hash::Sha512),
            "PS256" => Alg::RsaPss(Hash::Sha256),
            "PS384" => Alg::RsaPss(Hash::Sha384),
            "PS512" => Alg::RsaPss(Hash::Sha512),
            "ES256" => Alg::Ecdsa(Curve::P256),
            "ES384" => Alg::Ecdsa(Curve::P384),
            "ES512" => Alg::Ecdsa(Curve::P521),
            "ES256K" => Alg::Ecdsa(Curve::P256K),
            "A128KW" => Alg::AesKw(Some(16)),
            "A192KW" => Alg::AesKw(Some(24)),
            "A256KW" => Alg::AesKw(Some(32)),
            "CKM_AES_KEY_WRAP" => Alg::AesKw(None),
            "CKM_AES_KEY_WRAP_PAD" => Alg::AesKwp,
            "A128GCM" => Alg::AesGcm(16),
            "A192GCM" => Alg::AesGcm(24),
            "A256GCM" => Alg::AesGcm(32),
            "A128CBC" => Alg::AesCbc(16),
            "A192CBC" => Alg::AesCbc(24),
            "A256CBC" => Alg::AesCbc(32),
            "A128CBCPAD" => Alg::AesCbcPad(16),
            "A192CBCPAD" => Alg::AesCbcPad(24),
            "A256CBCPAD" => Alg::AesCbcPad(32),
            "HS256" => Alg::Hmac(Hash::Sha256),
            "HS384" => Alg::Hmac(Hash::Sha384),
            "HS512" => Alg::Hmac(Hash::Sha512),
            _ => return None,
        })
    }

    /// The key family this algorithm needs.
    pub(crate) fn family(self) -> KeyFamily {
        match self {
            Alg::RsaOaep | Alg::RsaOaep256 | Alg::Rsa15 | Alg::RsaPkcs1(_) | Alg::RsaPss(_) => {
                KeyFamily::Rsa
            }
            Alg::Ecdsa(_) => KeyFamily::Ec,
            Alg::AesKw(_)
            | Alg::AesKwp
            | Alg::AesGcm(_)
            | Alg::AesCbc(_)
            | Alg::AesCbcPad(_)
            | Alg::Hmac(_) => KeyFamily::Oct,
        }
    }

    /// Checks that `op` is allowed with this algorithm; the error explains why not.
    pub(crate) fn check_op(self, name: &str, op: Op) -> Result<(), CryptoError> {
        let is_sig = matches!(
            self,
            Alg::RsaPkcs1(_) | Alg::RsaPss(_) | Alg::Ecdsa(_) | Alg::Hmac(_)
        );
        match op {
            Op::Sign | Op::Verify if is_sig => Ok(()),
            Op::Sign | Op::Verify => Err(CryptoError::unsupported(
                name,
                format!(
                    "{name} is an encryption algorithm; it is not valid for {}",
                    op.name()
                ),
            )),
            _ if is_sig => Err(CryptoError::unsupported(
                name,
                format!(
                    "{name} is a signature algorithm; it is not valid for {}",
                    op.name()
                ),
            )),
            Op::Encrypt | Op::Wrap if self == Alg::Rsa15 => Err(CryptoError::unsupported(
                name,
                "RSA1_5 is accepted only to decrypt or unwrap legacy data",
            )),
            Op::Wrap | Op::Unwrap
                if matches!(self, Alg::AesGcm(_) | Alg::AesCbc(_) | Alg::AesCbcPad(_)) =>
            {
                Err(CryptoError::unsupported(
                    name,
                    format!(
                        "{name} is not valid for {}; use encrypt/decrypt, or a key-wrap algorithm",
                        op.name()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Parses `name` and checks it against the key family and operation.
pub(crate) fn resolve(name: &str, family: KeyFamily, op: Op) -> Result<Alg, CryptoError> {
    let alg =
        Alg::parse(name).ok_or_else(|| CryptoError::unsupported(name, "unknown algorithm"))?;
    if alg.family() != family {
        return Err(CryptoError::unsupported(
            name,
            format!("{name} is not valid for {}", family.a_key()),
        ));
    }
    alg.check_op(name, op)?;
    Ok(alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_alg_and_family() {
        let e = resolve("A256KW", KeyFamily::Rsa, Op::Wrap).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported algorithm A256KW: A256KW is not valid for a RSA key"
        );
        let e = resolve("FOO", KeyFamily::Rsa, Op::Wrap).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported algorithm FOO: unknown algorithm"
        );
        let e = resolve("RSA1_5", KeyFamily::Rsa, Op::Encrypt).unwrap_err();
        assert!(e.to_string().contains("accepted only to decrypt or unwrap"));
        assert!(resolve("RSA1_5", KeyFamily::Rsa, Op::Unwrap).is_ok());
        assert!(resolve("rsa-oaep", KeyFamily::Rsa, Op::Encrypt).is_err());
        assert!(resolve("A128GCM", KeyFamily::Oct, Op::Wrap).is_err());
        assert!(resolve("ES256", KeyFamily::Ec, Op::Encrypt).is_err());
        assert!(resolve("RSA-OAEP", KeyFamily::Rsa, Op::Sign).is_err());
    }
}
