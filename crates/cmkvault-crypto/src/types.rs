//! Plain data types shared by the API: curves, key families, JWK members, cipher requests.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm};
use zeroize::Zeroizing;

/// Elliptic curves supported for EC keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1), used with ES256.
    P256,
    /// NIST P-384 (secp384r1), used with ES384.
    P384,
    /// NIST P-521 (secp521r1), used with ES512.
    P521,
    /// secp256k1, used with ES256K.
    P256K,
}

impl Curve {
    /// All supported curves.
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::P256K];

    /// Parses a JWK `crv` name ("P-256", "P-384", "P-521", "P-256K").
    pub fn from_jwk(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            "P-256K" => Some(Curve::P256K),
            _ => None,
        }
    }

    /// The JWK `crv` name of this curve.
    pub fn jwk_name(&self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::P256K => "P-256K",
        }
    }

    /// Size of the curve in bits (521 for P-521).
    pub fn bits(&self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// The JWS signature algorithm that goes with this curve ("ES256", "ES384", "ES512", "ES256K").
    pub fn jws_alg(&self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
            Curve::P256K => "ES256K",
        }
    }

    /// Length in bytes of one coordinate (and of the private scalar, and of r and s).
    pub(crate) fn coord_len(&self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// Stable one-byte identifier used in the sealed serialization.
    pub(crate) fn id_byte(&self) -> u8 {
        match self {
            Curve::P256 => 1,
            Curve::P384 => 2,
            Curve::P521 => 3,
            Curve::P256K => 4,
        }
    }

    /// Inverse of [`Curve::id_byte`].
    pub(crate) fn from_id_byte(b: u8) -> Option<Curve> {
        match b {
            1 => Some(Curve::P256),
            2 => Some(Curve::P384),
            3 => Some(Curve::P521),
            4 => Some(Curve::P256K),
            _ => None,
        }
    }

    /// The digest the JWS algorithm for this curve uses.
    pub(crate) fn digest_alg(&self) -> &'static digest::Algorithm {
        match self {
            Curve::P256 | Curve::P256K => &digest::SHA256,
            Curve::P384 => &digest::SHA384,
            Curve::P521 => &digest::SHA512,
        }
    }

    /// aws-lc-rs fixed-length (r||s) signing algorithm for this curve.
    pub(crate) fn signing_alg(&self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
            Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
        }
    }

    /// aws-lc-rs fixed-length (r||s) verification algorithm for this curve.
    pub(crate) fn verification_alg(&self) -> &'static EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
            Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED,
        }
    }
}

/// Key family (JWK `kty` without the `-HSM` suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// RSA keys.
    Rsa,
    /// Elliptic-curve keys.
    Ec,
    /// Symmetric (AES / HMAC) keys.
    Oct,
}

impl KeyFamily {
    /// The JWK `kty` for this family ("RSA", "EC", "oct").
    pub fn jwk_kty(&self) -> &'static str {
        match self {
            KeyFamily::Rsa => "RSA",
            KeyFamily::Ec => "EC",
            KeyFamily::Oct => "oct",
        }
    }

    /// Parses a JWK `kty`, accepting the `-HSM` variants ("RSA-HSM", "EC-HSM", "oct-HSM").
    pub fn from_kty(kty: &str) -> Option<KeyFamily> {
        match kty {
            "RSA" | "RSA-HSM" => Some(KeyFamily::Rsa),
            "EC" | "EC-HSM" => Some(KeyFamily::Ec),
            "oct" | "oct-HSM" => Some(KeyFamily::Oct),
            _ => None,
        }
    }

    /// "a RSA key" / "an EC key" / "an oct key", for error messages.
    pub(crate) fn a_key(&self) -> &'static str {
        match self {
            KeyFamily::Rsa => "a RSA key",
            KeyFamily::Ec => "an EC key",
            KeyFamily::Oct => "an oct key",
        }
    }
}

/// Private JWK members as received on import (bytes already base64url-decoded by the caller).
///
/// Its `Debug` output lists only `kty`, `crv` and which members are present, never their values.
#[derive(Default)]
pub struct JwkPrivate {
    /// Key type: "RSA", "RSA-HSM", "EC", "EC-HSM", "oct" or "oct-HSM".
    pub kty: String,
    /// RSA modulus.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    pub e: Option<Vec<u8>>,
    /// RSA private exponent, or EC private scalar.
    pub d: Option<Zeroizing<Vec<u8>>>,
    /// RSA first prime factor.
    pub p: Option<Zeroizing<Vec<u8>>>,
    /// RSA second prime factor.
    pub q: Option<Zeroizing<Vec<u8>>>,
    /// RSA first factor CRT exponent.
    pub dp: Option<Zeroizing<Vec<u8>>>,
    /// RSA second factor CRT exponent.
    pub dq: Option<Zeroizing<Vec<u8>>>,
    /// RSA first CRT coefficient.
    pub qi: Option<Zeroizing<Vec<u8>>>,
    /// EC curve name ("P-256", "P-384", "P-521", "P-256K").
    pub crv: Option<String>,
    /// EC public x coordinate.
    pub x: Option<Vec<u8>>,
    /// EC public y coordinate.
    pub y: Option<Vec<u8>>,
    /// Symmetric key value.
    pub k: Option<Zeroizing<Vec<u8>>>,
}

impl core::fmt::Debug for JwkPrivate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut present: Vec<&str> = Vec::new();
        for (name, has) in [
            ("n", self.n.is_some()),
            ("e", self.e.is_some()),
            ("d", self.d.is_some()),
            ("p", self.p.is_some()),
            ("q", self.q.is_some()),
            ("dp", self.dp.is_some()),
            ("dq", self.dq.is_some()),
            ("qi", self.qi.is_some()),
            ("x", self.x.is_some()),
            ("y", self.y.is_some()),
            ("k", self.k.is_some()),
        ] {
            if has {
                present.push(name);
            }
        }
        f.debug_struct("JwkPrivate")
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field("present", &present)
            .finish_non_exhaustive()
    }
}

/// Public JWK members (raw big-endian bytes; the caller base64url-encodes). For oct all are None.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicJwk {
    /// RSA modulus, without leading zero bytes.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent, without leading zero bytes.
    pub e: Option<Vec<u8>>,
    /// EC curve.
    pub crv: Option<Curve>,
    /// EC x coordinate, full coordinate length.
    pub x: Option<Vec<u8>>,
    /// EC y coordinate, full coordinate length.
    pub y: Option<Vec<u8>>,
}

/// Input to encrypt/decrypt: value plus optional iv, aad, tag (all raw bytes).
///
/// An empty `iv`, `aad` or `tag` is treated as absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct CipherRequest<'a> {
    /// Plaintext (encrypt) or ciphertext (decrypt). For AES-GCM decrypt, without the tag.
    pub value: &'a [u8],
    /// Initialization vector: required for AES-CBC, required for AES-GCM decrypt.
    pub iv: Option<&'a [u8]>,
    /// Additional authenticated data (AES-GCM only).
    pub aad: Option<&'a [u8]>,
    /// Authentication tag (AES-GCM decrypt only).
    pub tag: Option<&'a [u8]>,
}

/// Output of encrypt: ciphertext plus iv/tag/aad echoed when the mode has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CipherOutput {
    /// Ciphertext (for AES-GCM without the tag).
    pub value: Vec<u8>,
    /// IV used (AES-GCM: generated by the service; AES-CBC: the caller's, echoed).
    pub iv: Option<Vec<u8>>,
    /// AES-GCM authentication tag (16 bytes).
    pub tag: Option<Vec<u8>>,
    /// AES-GCM additional authenticated data, echoed when given.
    pub aad: Option<Vec<u8>>,
}
