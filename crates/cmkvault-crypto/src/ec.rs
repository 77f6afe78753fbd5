//! EC keys: ECDSA with fixed-length (JWS r||s) signatures over pre-computed digests.

use crate::error::CryptoError;
use crate::types::{Curve, JwkPrivate, PublicJwk};
use aws_lc_rs::digest::Digest;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ParsedPublicKey};
use zeroize::Zeroizing;

/// A parsed EC private key with its verification key prepared once.
pub(crate) struct EcKey {
    curve: Curve,
    pair: EcdsaKeyPair,
    verifier: ParsedPublicKey,
    public: PublicJwk,
}

impl EcKey {
    /// Generates a key; returns it with its PKCS#8 v1 DER.
    pub(crate) fn generate(curve: Curve) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let pair = EcdsaKeyPair::generate(curve.signing_alg())?;
        let der = Zeroizing::new(pair.to_pkcs8v1()?.as_ref().to_vec());
        Ok((Self::from_pair(curve, pair)?, der))
    }

    /// Parses PKCS#8 DER for `curve` (the sealed form).
    pub(crate) fn from_pkcs8(curve: Curve, der: &[u8]) -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::from_pkcs8(curve.signing_alg(), der)
            .map_err(|e| CryptoError::key(format!("stored EC key rejected: {e}")))?;
        Self::from_pair(curve, pair)
    }

    /// Imports from JWK members, checking that d matches (x, y); returns the key and its DER.
    pub(crate) fn from_jwk(jwk: &JwkPrivate) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let crv = jwk
            .crv
            .as_deref()
            .ok_or_else(|| CryptoError::key("EC key import needs the member crv"))?;
        let curve = Curve::from_jwk(crv).ok_or_else(|| {
            CryptoError::key(format!(
                "unsupported curve {crv:?}; expected P-256, P-384, P-521 or P-256K"
            ))
        })?;
        let (Some(x), Some(y), Some(d)) = (&jwk.x, &jwk.y, &jwk.d) else {
            return Err(CryptoError::key(
                "EC key import needs the members x, y and d",
            ));
        };
        let len = curve.coord_len();
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        append_padded(&mut point, "x", x, len, curve)?;
        append_padded(&mut point, "y", y, len, curve)?;
        if d.is_empty() || d.len() > len {
            return Err(CryptoError::key(format!(
                "EC d for {} must be at most {len} bytes; got {} bytes",
                curve.jwk_name(),
                d.len()
            )));
        }
        let pair = EcdsaKeyPair::from_private_key_and_public_key(curve.signing_alg(), d, &point)
            .map_err(|e| {
                CryptoError::key(format!(
                    "EC key rejected: d does not match the public point (x, y), or a member is \
                     not valid for {} ({e})",
                    curve.jwk_name()
                ))
            })?;
        let der = Zeroizing::new(pair.to_pkcs8v1()?.as_ref().to_vec());
        Ok((Self::from_pair(curve, pair)?, der))
    }

    fn from_pair(curve: Curve, pair: EcdsaKeyPair) -> Result<Self, CryptoError> {
        let point = pair.public_key().as_ref();
        let len = curve.coord_len();
        if point.len() != 1 + 2 * len || point.first() != Some(&0x04) {
            return Err(CryptoError::Crypto);
        }
        let x = point.get(1..1 + len).ok_or(CryptoError::Crypto)?.to_vec();
        let y = point.get(1 + len..).ok_or(CryptoError::Crypto)?.to_vec();
        let verifier = ParsedPublicKey::new(curve.verification_alg(), point)
            .map_err(|_| CryptoError::Crypto)?;
        Ok(EcKey {
            curve,
            pair,
            verifier,
            public: PublicJwk {
                crv: Some(curve),
                x: Some(x),
                y: Some(y),
                ..PublicJwk::default()
            },
        })
    }

    /// The key's curve.
    pub(crate) fn curve(&self) -> Curve {
        self.curve
    }

    /// Public crv, x, y.
    pub(crate) fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// Checks that `required` (the curve the algorithm needs) is this key's curve.
    pub(crate) fn check_curve(&self, name: &str, required: Curve) -> Result<(), CryptoError> {
        if required != self.curve {
            return Err(CryptoError::unsupported(
                name,
                format!(
                    "{name} needs a {} key; this key is {} (use {})",
                    required.jwk_name(),
                    self.curve.jwk_name(),
                    self.curve.jws_alg()
                ),
            ));
        }
        Ok(())
    }

    /// Signs a pre-computed digest; returns r||s.
    pub(crate) fn sign(&self, name: &str, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let digest = self.import(name, digest)?;
        Ok(self.pair.sign_digest(&digest)?.as_ref().to_vec())
    }

    /// Verifies r||s over a pre-computed digest; `Ok(false)` for a wrong signature.
    pub(crate) fn verify(
        &self,
        name: &str,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<bool, CryptoError> {
        let digest = self.import(name, digest)?;
        Ok(self.verifier.verify_digest_sig(&digest, sig).is_ok())
    }

    fn import(&self, name: &str, digest: &[u8]) -> Result<Digest, CryptoError> {
        let alg = self.curve.digest_alg();
        if digest.len() != alg.output_len() {
            return Err(CryptoError::input(format!(
                "{name} needs a {}-byte digest; got {} bytes",
                alg.output_len(),
                digest.len()
            )));
        }
        Digest::import_less_safe(digest, alg).map_err(|_| CryptoError::Crypto)
    }
}

/// Appends a coordinate left-padded with zeros to `len` bytes.
fn append_padded(
    out: &mut Vec<u8>,
    what: &str,
    v: &[u8],
    len: usize,
    curve: Curve,
) -> Result<(), CryptoError> {
    if v.is_empty() || v.len() > len {
        return Err(CryptoError::key(format!(
            "EC {what} for {} must be {len} bytes; got {} bytes",
            curve.jwk_name(),
            v.len()
        )));
    }
    out.resize(out.len() + (len - v.len()), 0);
    out.extend_from_slice(v);
    Ok(())
}
