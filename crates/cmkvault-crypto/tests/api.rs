//! Round trips and error behaviour of the public API.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::sync::{Arc, OnceLock};

use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use cmkvault_crypto::*;
use common::*;

fn rsa_2048() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate_rsa(2048, None).unwrap())
}

fn rsa_3072() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate_rsa(3072, Some(65537)).unwrap())
}

fn rsa_4096() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate_rsa(4096, None).unwrap())
}

fn is_unsupported(r: Result<impl std::fmt::Debug, CryptoError>) -> bool {
    matches!(r, Err(CryptoError::UnsupportedAlgorithm { .. }))
}

fn is_invalid_input(r: Result<impl std::fmt::Debug, CryptoError>) -> bool {
    matches!(r, Err(CryptoError::InvalidInput(_)))
}

fn flip(v: &[u8], i: usize) -> Vec<u8> {
    let mut v = v.to_vec();
    let i = i % v.len();
    v[i] ^= 0x01;
    v
}

fn cbc_req<'a>(value: &'a [u8], iv: &'a [u8]) -> CipherRequest<'a> {
    CipherRequest {
        value,
        iv: Some(iv),
        ..Default::default()
    }
}

fn req(value: &[u8]) -> CipherRequest<'_> {
    CipherRequest {
        value,
        ..Default::default()
    }
}

/// A PKCS#1 v1.5 ciphertext made with aws-lc-rs directly from the key's public n and e.
fn pkcs1_encrypt(key: &PrivateKey, msg: &[u8]) -> Vec<u8> {
    let jwk = key.public_jwk();
    let pk: PublicEncryptingKey = RsaPublicKeyComponents {
        n: jwk.n.unwrap(),
        e: jwk.e.unwrap(),
    }
    .try_into()
    .unwrap();
    let enc = Pkcs1PublicEncryptingKey::new(pk).unwrap();
    let mut out = vec![0u8; enc.ciphertext_size()];
    enc.encrypt(msg, &mut out).unwrap().to_vec()
}

fn check_rsa(key: &PrivateKey, bits: usize) {
    assert_eq!(key.family(), KeyFamily::Rsa);
    assert_eq!(key.key_size_bits(), bits);
    assert_eq!(key.curve(), None);
    let jwk = key.public_jwk();
    assert_eq!(jwk.n.as_ref().unwrap().len(), bits / 8);
    assert_eq!(jwk.e.as_deref(), Some(&[1u8, 0, 1][..]));
    assert!(jwk.crv.is_none() && jwk.x.is_none());

    let msg = b"attack at dawn, 32 bytes long!!!";
    for alg in ["RSA-OAEP", "RSA-OAEP-256"] {
        let out = key.encrypt(jwa(alg), &req(msg)).unwrap();
        assert_eq!(out.value.len(), bits / 8);
        assert!(out.iv.is_none() && out.tag.is_none() && out.aad.is_none());
        assert_eq!(&*key.decrypt(jwa(alg), &req(&out.value)).unwrap(), msg);
        // Ciphertexts are randomized.
        assert_ne!(key.encrypt(jwa(alg), &req(msg)).unwrap().value, out.value);
        // Wrong OAEP hash or a flipped bit fails without detail.
        let other = if alg == "RSA-OAEP" {
            "RSA-OAEP-256"
        } else {
            "RSA-OAEP"
        };
        assert!(matches!(
            key.decrypt(jwa(other), &req(&out.value)),
            Err(CryptoError::DecryptionFailed)
        ));
        assert!(matches!(
            key.decrypt(jwa(alg), &req(&flip(&out.value, 17))),
            Err(CryptoError::DecryptionFailed)
        ));
        // Wrap / unwrap are the same operation.
        let w = key.wrap_key(jwa(alg), msg).unwrap();
        assert_eq!(&*key.unwrap_key(jwa(alg), &w).unwrap(), msg);
        assert_eq!(&*key.unwrap_key(jwa(alg), &out.value).unwrap(), msg);
        // Empty plaintext is fine; too long is InvalidInput.
        let e = key.encrypt(jwa(alg), &req(b"")).unwrap();
        assert!(key.decrypt(jwa(alg), &req(&e.value)).unwrap().is_empty());
        assert!(is_invalid_input(
            key.encrypt(jwa(alg), &req(&vec![0u8; bits / 8]))
        ));
        // Wrong ciphertext length is InvalidInput.
        assert!(is_invalid_input(
            key.decrypt(jwa(alg), &req(&out.value[1..]))
        ));
        assert!(is_invalid_input(key.decrypt(jwa(alg), &req(b""))));
        // OAEP takes no iv / aad / tag.
        let with_iv = CipherRequest {
            value: msg,
            iv: Some(&[0u8; 16]),
            ..Default::default()
        };
        assert!(is_invalid_input(key.encrypt(jwa(alg), &with_iv)));
    }

    // RSA1_5: refused for encrypt/wrap, accepted for decrypt/unwrap of legacy data.
    for r in [
        key.encrypt(jwa("RSA1_5"), &req(msg)).map(|o| o.value),
        key.wrap_key(jwa("RSA1_5"), msg),
    ] {
        match r {
            Err(CryptoError::UnsupportedAlgorithm { alg, reason }) => {
                assert_eq!(alg, "RSA1_5");
                assert_eq!(
                    reason,
                    "RSA1_5 is accepted only to decrypt or unwrap legacy data"
                );
            }
            other => panic!("expected UnsupportedAlgorithm, got {other:?}"),
        }
    }
    let legacy = pkcs1_encrypt(key, msg);
    assert_eq!(&*key.decrypt(jwa("RSA1_5"), &req(&legacy)).unwrap(), msg);
    assert_eq!(&*key.unwrap_key(jwa("RSA1_5"), &legacy).unwrap(), msg);
    assert!(matches!(
        key.decrypt(jwa("RSA-OAEP"), &req(&legacy)),
        Err(CryptoError::DecryptionFailed)
    ));

    // Signatures over pre-computed digests.
    for (alg, dlen) in [
        ("RS256", 32),
        ("RS384", 48),
        ("RS512", 64),
        ("PS256", 32),
        ("PS384", 48),
        ("PS512", 64),
    ] {
        let digest: Vec<u8> = (0..dlen as u8).collect();
        let sig = key.sign(jwa(alg), &digest).unwrap();
        assert_eq!(sig.len(), bits / 8);
        assert!(key.verify(jwa(alg), &digest, &sig).unwrap(), "{alg}");
        assert!(!key.verify(jwa(alg), &digest, &flip(&sig, 5)).unwrap());
        assert!(!key.verify(jwa(alg), &flip(&digest, 3), &sig).unwrap());
        assert!(!key.verify(jwa(alg), &digest, &sig[1..]).unwrap());
        assert!(!key.verify(jwa(alg), &digest, b"").unwrap());
        // Wrong digest length names the expected size.
        match key.sign(jwa(alg), &digest[1..]) {
            Err(CryptoError::InvalidInput(m)) => assert!(m.contains(&format!("{dlen}-byte"))),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(is_invalid_input(key.verify(jwa(alg), &[0u8; 20], &sig)));
        // A PKCS#1 v1.5 signature is not a PSS one and vice versa.
        let twin = if alg.starts_with("RS") {
            alg.replace("RS", "PS")
        } else {
            alg.replace("PS", "RS")
        };
        assert!(!key.verify(jwa(&twin), &digest, &sig).unwrap());
    }
    // PKCS#1 v1.5 signatures are deterministic.
    let d = [7u8; 32];
    assert_eq!(
        key.sign(jwa("RS256"), &d).unwrap(),
        key.sign(jwa("RS256"), &d).unwrap()
    );
    // Independent check with aws-lc-rs verification from n and e.
    let jwk = key.public_jwk();
    let pubkey = RsaPublicKeyComponents {
        n: jwk.n.clone().unwrap(),
        e: jwk.e.clone().unwrap(),
    };
    let msg = b"the message";
    let digest = sha256(msg);
    let sig = key.sign(jwa("PS256"), &digest).unwrap();
    pubkey
        .verify(&signature::RSA_PSS_2048_8192_SHA256, msg, &sig)
        .unwrap();
    let sig = key.sign(jwa("RS256"), &digest).unwrap();
    pubkey
        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, &sig)
        .unwrap();

    // Wrong family / unknown algorithms.
    for alg in ["A256KW", "A128GCM", "ES256", "HS256", "CKM_AES_KEY_WRAP"] {
        assert!(is_unsupported(
            key.encrypt(jwa(alg), &req(b"0123456789abcdef"))
        ));
        assert!(is_unsupported(key.sign(jwa(alg), &[0u8; 32])));
    }
    match key.wrap_key(jwa("A256KW"), &[0u8; 32]) {
        Err(e) => assert_eq!(
            e.to_string(),
            "unsupported algorithm A256KW: A256KW is not valid for a RSA key"
        ),
        Ok(_) => panic!("A256KW on RSA must fail"),
    }
    assert!(is_unsupported(key.sign(jwa("RSA-OAEP"), &[0u8; 32])));
    assert!(is_unsupported(key.encrypt(jwa("RS256"), &req(b"x"))));
    match "NOPE".parse::<Alg>() {
        Err(CryptoError::UnsupportedAlgorithm { reason, .. }) => {
            assert_eq!(reason, "unknown algorithm")
        }
        other => panic!("expected UnsupportedAlgorithm, got {other:?}"),
    }

    // Sealed serialization round trip keeps everything.
    let bytes = to_bytes(key);
    let back = from_bytes(&bytes).unwrap();
    assert_eq!(back.public_jwk(), key.public_jwk());
    assert_eq!(back.key_size_bits(), bits);
    assert_eq!(
        *backend()
            .export_for_backup(&backend().import_from_backup(&bytes, b"id").unwrap(), b"id")
            .unwrap(),
        *bytes
    );
    let ct = key.encrypt(jwa("RSA-OAEP-256"), &req(b"k")).unwrap().value;
    assert_eq!(
        &*back.decrypt(jwa("RSA-OAEP-256"), &req(&ct)).unwrap(),
        b"k"
    );
    let sig = back.sign(jwa("PS384"), &[1u8; 48]).unwrap();
    assert!(key.verify(jwa("PS384"), &[1u8; 48], &sig).unwrap());
}

#[test]
fn rsa_2048_all_algorithms() {
    check_rsa(rsa_2048(), 2048);
}

#[test]
fn rsa_3072_all_algorithms() {
    check_rsa(rsa_3072(), 3072);
}

#[test]
fn rsa_4096_all_algorithms() {
    check_rsa(rsa_4096(), 4096);
}

#[test]
fn rsa_generate_rejects_bad_parameters() {
    for bits in [0, 1024, 2047, 2049, 8192] {
        assert!(
            is_invalid_input(PrivateKey::generate_rsa(bits, None)),
            "{bits}"
        );
    }
    for e in [3, 17, 65539, 0, u64::MAX] {
        assert!(
            is_invalid_input(PrivateKey::generate_rsa(2048, Some(e))),
            "{e}"
        );
    }
}

#[test]
fn rsa_different_keys_do_not_cross_decrypt() {
    let a = rsa_2048();
    let b = rsa_3072();
    let ct = a.encrypt(jwa("RSA-OAEP"), &req(b"secret")).unwrap().value;
    assert!(b.decrypt(jwa("RSA-OAEP"), &req(&ct)).is_err());
    let sig = a.sign(jwa("RS256"), &[0u8; 32]).unwrap();
    assert!(!b.verify(jwa("RS256"), &[0u8; 32], &sig).unwrap());
}

#[test]
fn rsa_jwk_import_requires_crt_members() {
    let src = rsa_2048().public_jwk();
    let jwk = JwkPrivate {
        kty: "RSA".into(),
        n: src.n.clone(),
        e: src.e.clone(),
        d: Some(Zeroizing::new(vec![1u8; 256])),
        ..Default::default()
    };
    match PrivateKey::from_jwk(&jwk) {
        Err(CryptoError::InvalidKey(m)) => {
            assert!(m.contains("p, q, dp, dq and qi"), "{m}");
        }
        other => panic!("expected InvalidKey, got {other:?}"),
    }
    let jwk = JwkPrivate {
        kty: "RSA-HSM".into(),
        n: src.n,
        ..Default::default()
    };
    assert!(matches!(
        PrivateKey::from_jwk(&jwk),
        Err(CryptoError::InvalidKey(_))
    ));
    let jwk = JwkPrivate {
        kty: "DSA".into(),
        ..Default::default()
    };
    assert!(matches!(
        PrivateKey::from_jwk(&jwk),
        Err(CryptoError::InvalidKey(_))
    ));
}

const CURVES: [(Curve, &str, usize, usize); 4] = [
    (Curve::P256, "ES256", 32, 256),
    (Curve::P384, "ES384", 48, 384),
    (Curve::P521, "ES512", 64, 521),
    (Curve::P256K, "ES256K", 32, 256),
];

#[test]
fn ec_all_curves() {
    for (curve, alg, dlen, bits) in CURVES {
        let key = PrivateKey::generate_ec(curve).unwrap();
        assert_eq!(key.family(), KeyFamily::Ec);
        assert_eq!(key.curve(), Some(curve));
        assert_eq!(key.key_size_bits(), bits);
        let jwk = key.public_jwk();
        let coord = bits.div_ceil(8);
        assert_eq!(jwk.crv, Some(curve));
        assert_eq!(jwk.x.as_ref().unwrap().len(), coord);
        assert_eq!(jwk.y.as_ref().unwrap().len(), coord);
        assert!(jwk.n.is_none());
        assert_eq!(Curve::from_jwk(curve.jwk_name()), Some(curve));

        let digest = vec![0x5au8; dlen];
        let sig = key.sign(jwa(alg), &digest).unwrap();
        assert_eq!(sig.len(), 2 * coord, "{alg} must be fixed-length r||s");
        assert!(key.verify(jwa(alg), &digest, &sig).unwrap());
        assert!(!key.verify(jwa(alg), &digest, &flip(&sig, 9)).unwrap());
        assert!(!key.verify(jwa(alg), &flip(&digest, 0), &sig).unwrap());
        assert!(!key
            .verify(jwa(alg), &digest, &sig[..sig.len() - 1])
            .unwrap());
        assert!(is_invalid_input(key.sign(jwa(alg), &digest[1..])));
        assert!(is_invalid_input(key.verify(jwa(alg), &[0u8; 20], &sig)));

        // Algorithm must match the curve.
        for (_, other, olen, _) in CURVES {
            if other != alg {
                match key.sign(jwa(other), &vec![0u8; olen]) {
                    Err(CryptoError::UnsupportedAlgorithm { reason, .. }) => {
                        assert!(reason.contains(curve.jwk_name()), "{reason}")
                    }
                    r => panic!("{other} on {curve:?}: {r:?}"),
                }
            }
        }
        // EC keys cannot encrypt or wrap.
        for op in ["RSA-OAEP", "A256KW", "A128GCM", "ES256"] {
            assert!(is_unsupported(
                key.encrypt(jwa(op), &req(b"0123456789abcdef"))
            ));
            assert!(is_unsupported(
                key.decrypt(jwa(op), &req(b"0123456789abcdef"))
            ));
            assert!(is_unsupported(key.wrap_key(jwa(op), &[0u8; 16])));
            assert!(is_unsupported(key.unwrap_key(jwa(op), &[0u8; 24])));
        }
        assert!(is_unsupported(key.sign(jwa("RS256"), &[0u8; 32])));
        assert!(is_unsupported(key.sign(jwa("HS256"), &[0u8; 32])));

        // Serialization round trip.
        let back = from_bytes(&to_bytes(&key)).unwrap();
        assert_eq!(back.public_jwk(), jwk);
        assert_eq!(back.curve(), Some(curve));
        assert!(back.verify(jwa(alg), &digest, &sig).unwrap());
        let sig2 = back.sign(jwa(alg), &digest).unwrap();
        assert!(key.verify(jwa(alg), &digest, &sig2).unwrap());
    }
}

#[test]
fn ec_es256_matches_independent_verifier() {
    let key = PrivateKey::generate_ec(Curve::P256).unwrap();
    let jwk = key.public_jwk();
    let mut point = vec![4u8];
    point.extend_from_slice(jwk.x.as_ref().unwrap());
    point.extend_from_slice(jwk.y.as_ref().unwrap());
    let msg = b"header.payload";
    let sig = key.sign(jwa("ES256"), &sha256(msg)).unwrap();
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(msg, &sig)
        .unwrap();
}

#[test]
fn ec_jwk_import_errors() {
    let src = PrivateKey::generate_ec(Curve::P256).unwrap().public_jwk();
    let base = || JwkPrivate {
        kty: "EC".into(),
        crv: Some("P-256".into()),
        x: src.x.clone(),
        y: src.y.clone(),
        d: Some(Zeroizing::new(vec![0x11; 32])),
        ..Default::default()
    };
    // d does not belong to (x, y).
    assert!(matches!(
        PrivateKey::from_jwk(&base()),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.crv = Some("P-999".into());
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.crv = None;
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.d = None;
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.x = Some(vec![1u8; 33]);
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.y = Some(vec![0u8; 32]); // not on the curve
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.d = Some(Zeroizing::new(vec![0u8; 32])); // zero scalar
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    let mut j = base();
    j.d = Some(Zeroizing::new(vec![0xffu8; 32])); // >= group order
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
}

#[test]
fn oct_generate_and_sizes() {
    for bits in [128, 192, 256] {
        let k = PrivateKey::generate_oct(bits).unwrap();
        assert_eq!(k.family(), KeyFamily::Oct);
        assert_eq!(k.key_size_bits(), bits);
        assert_eq!(k.public_jwk(), PublicJwk::default());
        assert_eq!(k.curve(), None);
    }
    for bits in [0, 64, 100, 512] {
        assert!(is_invalid_input(PrivateKey::generate_oct(bits)));
    }
    for len in [0usize, 8, 15, 17, 31, 33, 64] {
        let j = JwkPrivate {
            kty: "oct".into(),
            k: Some(Zeroizing::new(vec![1u8; len])),
            ..Default::default()
        };
        assert!(matches!(
            PrivateKey::from_jwk(&j),
            Err(CryptoError::InvalidKey(_))
        ));
    }
    let j = JwkPrivate {
        kty: "oct-HSM".into(),
        ..Default::default()
    };
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
}

fn oct(bits: usize) -> PrivateKey {
    PrivateKey::generate_oct(bits).unwrap()
}

#[test]
fn oct_key_wrap_all_sizes_and_routes() {
    for bits in [128, 192, 256] {
        let key = oct(bits);
        let kw = format!("A{bits}KW");
        let cek: Vec<u8> = (0..32u8).collect();
        for alg in [kw.as_str(), "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"] {
            let w = key.wrap_key(jwa(alg), &cek).unwrap();
            assert_eq!(&*key.unwrap_key(jwa(alg), &w).unwrap(), &cek[..]);
            // Deterministic, and the encrypt/decrypt route gives the same bytes.
            let out = key.encrypt(jwa(alg), &req(&cek)).unwrap();
            assert_eq!(out.value, w);
            assert!(out.iv.is_none() && out.tag.is_none());
            assert_eq!(&*key.decrypt(jwa(alg), &req(&w)).unwrap(), &cek[..]);
            // Tampering is detected.
            for i in [0, 9, w.len() - 1] {
                assert!(matches!(
                    key.unwrap_key(jwa(alg), &flip(&w, i)),
                    Err(CryptoError::DecryptionFailed)
                ));
            }
        }
        assert_eq!(key.wrap_key(jwa(&kw), &cek).unwrap().len(), 40);
        // RFC 3394 needs multiples of 8 bytes, at least 16; RFC 5649 takes any length.
        assert!(is_invalid_input(key.wrap_key(jwa(&kw), &cek[..20])));
        assert!(is_invalid_input(key.wrap_key(jwa(&kw), &cek[..8])));
        assert!(is_invalid_input(key.unwrap_key(jwa(&kw), &[0u8; 16])));
        assert!(is_invalid_input(key.unwrap_key(jwa(&kw), &[0u8; 33])));
        for len in [1usize, 5, 8, 20, 31] {
            let w = key
                .wrap_key(jwa("CKM_AES_KEY_WRAP_PAD"), &cek[..len])
                .unwrap();
            assert_eq!(
                &*key.unwrap_key(jwa("CKM_AES_KEY_WRAP_PAD"), &w).unwrap(),
                &cek[..len]
            );
        }
        assert!(is_invalid_input(
            key.wrap_key(jwa("CKM_AES_KEY_WRAP_PAD"), b"")
        ));
        // KW does not take an iv.
        let r = CipherRequest {
            value: &cek,
            iv: Some(&[1u8; 8]),
            ..Default::default()
        };
        assert!(is_invalid_input(key.encrypt(jwa(&kw), &r)));
        // Key size must match the algorithm.
        for other in [128, 192, 256] {
            if other != bits {
                match key.wrap_key(jwa(&format!("A{other}KW")), &cek) {
                    Err(CryptoError::UnsupportedAlgorithm { reason, .. }) => {
                        assert!(reason.contains(&format!("{other}-bit")), "{reason}");
                        assert!(reason.contains(&format!("{bits}-bit")), "{reason}");
                    }
                    r => panic!("{r:?}"),
                }
            }
        }
        // Different key cannot unwrap.
        let w = key.wrap_key(jwa(&kw), &cek).unwrap();
        assert!(matches!(
            oct(bits).unwrap_key(jwa(&kw), &w),
            Err(CryptoError::DecryptionFailed)
        ));
        // RSA / EC / HMAC / GCM algorithms are not oct wrap algorithms.
        for alg in ["RSA-OAEP", "ES256"] {
            assert!(is_unsupported(key.wrap_key(jwa(alg), &cek)));
        }
        for alg in [
            format!("A{bits}GCM"),
            format!("A{bits}CBC"),
            "HS256".to_string(),
        ] {
            assert!(is_unsupported(key.wrap_key(jwa(&alg), &cek)), "{alg}");
        }
    }
}

#[test]
fn oct_gcm_all_sizes() {
    for bits in [128, 192, 256] {
        let key = oct(bits);
        let alg = format!("A{bits}GCM");
        for (pt, aad) in [
            (&b"hello gcm"[..], Some(&b"context"[..])),
            (&b""[..], None),
            (&[9u8; 100][..], Some(&b"x"[..])),
        ] {
            let out = key
                .encrypt(
                    jwa(&alg),
                    &CipherRequest {
                        value: pt,
                        aad,
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(out.value.len(), pt.len(), "ciphertext excludes the tag");
            let iv = out.iv.clone().unwrap();
            let tag = out.tag.clone().unwrap();
            assert_eq!(iv.len(), 12);
            assert_eq!(tag.len(), 16);
            assert_eq!(out.aad.as_deref(), aad);
            let good = CipherRequest {
                value: &out.value,
                iv: Some(&iv),
                aad,
                tag: Some(&tag),
            };
            assert_eq!(&*key.decrypt(jwa(&alg), &good).unwrap(), pt);

            // Any tampering fails with DecryptionFailed.
            let bad_tag = flip(&tag, 3);
            let bad_iv = flip(&iv, 0);
            let bad_ct = if out.value.is_empty() {
                vec![0u8]
            } else {
                flip(&out.value, 1)
            };
            let other_aad = b"other".to_vec();
            for r in [
                CipherRequest {
                    tag: Some(&bad_tag),
                    ..good
                },
                CipherRequest {
                    iv: Some(&bad_iv),
                    ..good
                },
                CipherRequest {
                    value: &bad_ct,
                    ..good
                },
                CipherRequest {
                    aad: Some(&other_aad),
                    ..good
                },
            ] {
                assert!(matches!(
                    key.decrypt(jwa(&alg), &r),
                    Err(CryptoError::DecryptionFailed)
                ));
            }
            if aad.is_some() {
                assert!(matches!(
                    key.decrypt(jwa(&alg), &CipherRequest { aad: None, ..good }),
                    Err(CryptoError::DecryptionFailed)
                ));
            }
            // Missing / malformed iv or tag is InvalidInput.
            assert!(is_invalid_input(
                key.decrypt(jwa(&alg), &CipherRequest { iv: None, ..good })
            ));
            assert!(is_invalid_input(
                key.decrypt(jwa(&alg), &CipherRequest { tag: None, ..good })
            ));
            assert!(is_invalid_input(key.decrypt(
                jwa(&alg),
                &CipherRequest {
                    iv: Some(&iv[..11]),
                    ..good
                }
            )));
            assert!(is_invalid_input(key.decrypt(
                jwa(&alg),
                &CipherRequest {
                    tag: Some(&tag[..12]),
                    ..good
                }
            )));
        }
        // Random IVs.
        let a = key.encrypt(jwa(&alg), &req(b"same")).unwrap();
        let b = key.encrypt(jwa(&alg), &req(b"same")).unwrap();
        assert_ne!(a.iv, b.iv);
        assert_ne!(a.value, b.value);
        // The service generates the IV.
        let r = CipherRequest {
            value: b"x",
            iv: Some(&[0u8; 12]),
            ..Default::default()
        };
        match key.encrypt(jwa(&alg), &r) {
            Err(CryptoError::InvalidInput(m)) => assert!(m.contains("generates the IV"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Size mismatch.
        for other in [128, 192, 256] {
            if other != bits {
                assert!(is_unsupported(
                    key.encrypt(jwa(&format!("A{other}GCM")), &req(b"x"))
                ));
            }
        }
    }
}

#[test]
fn oct_cbc_all_sizes() {
    for bits in [128, 192, 256] {
        let key = oct(bits);
        let iv = [0x42u8; 16];
        let cbc = format!("A{bits}CBC");
        let pad = format!("A{bits}CBCPAD");
        // Unpadded: multiples of 16 only.
        let pt = [3u8; 48];
        let out = key.encrypt(jwa(&cbc), &cbc_req(&pt, &iv)).unwrap();
        assert_eq!(out.value.len(), 48);
        assert_eq!(out.iv.as_deref(), Some(&iv[..]));
        assert!(out.tag.is_none() && out.aad.is_none());
        assert_eq!(
            &*key.decrypt(jwa(&cbc), &cbc_req(&out.value, &iv)).unwrap(),
            &pt[..]
        );
        assert!(is_invalid_input(
            key.encrypt(jwa(&cbc), &cbc_req(&pt[..47], &iv))
        ));
        assert!(is_invalid_input(key.encrypt(jwa(&cbc), &cbc_req(b"", &iv))));
        assert!(is_invalid_input(
            key.decrypt(jwa(&cbc), &cbc_req(&out.value[..40], &iv))
        ));
        // Padded: any length; ciphertext grows to the next block.
        for len in [0usize, 1, 15, 16, 17, 33] {
            let pt = vec![7u8; len];
            let out = key.encrypt(jwa(&pad), &cbc_req(&pt, &iv)).unwrap();
            assert_eq!(out.value.len(), (len / 16 + 1) * 16);
            assert_eq!(
                &*key.decrypt(jwa(&pad), &cbc_req(&out.value, &iv)).unwrap(),
                &pt[..]
            );
        }
        // Padding errors are DecryptionFailed: flipping the IV's last bit turns the 0x0b
        // padding byte of a one-block message into 0x0a, which is invalid PKCS#7.
        let out = key.encrypt(jwa(&pad), &cbc_req(b"short", &iv)).unwrap();
        let bad_iv = flip(&iv, 15);
        let r = CipherRequest {
            value: &out.value,
            iv: Some(&bad_iv),
            ..Default::default()
        };
        assert!(matches!(
            key.decrypt(jwa(&pad), &r),
            Err(CryptoError::DecryptionFailed)
        ));
        // The caller supplies the IV, exactly 16 bytes.
        for r in [
            req(&pt),
            CipherRequest {
                value: &pt,
                iv: Some(&iv[..12]),
                ..Default::default()
            },
        ] {
            assert!(is_invalid_input(key.encrypt(jwa(&cbc), &r)));
            assert!(is_invalid_input(key.decrypt(jwa(&pad), &r)));
        }
        // CBC does not take aad / tag.
        let r = CipherRequest {
            value: &pt,
            iv: Some(&iv),
            aad: Some(b"a"),
            tag: None,
        };
        assert!(is_invalid_input(key.encrypt(jwa(&cbc), &r)));
        // Different IV, different ciphertext.
        let iv2 = [0x43u8; 16];
        let out2 = key
            .encrypt(
                jwa(&cbc),
                &CipherRequest {
                    value: &pt,
                    iv: Some(&iv2),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_ne!(
            out2.value,
            key.encrypt(jwa(&cbc), &cbc_req(&pt, &iv)).unwrap().value
        );
    }
}

#[test]
fn oct_hmac() {
    for bits in [128, 192, 256] {
        let key = oct(bits);
        for (alg, len) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
            let data = b"any length of data, not a digest";
            let mac = key.sign(jwa(alg), data).unwrap();
            assert_eq!(mac.len(), len);
            assert_eq!(key.sign(jwa(alg), data).unwrap(), mac);
            assert!(key.verify(jwa(alg), data, &mac).unwrap());
            assert!(!key.verify(jwa(alg), data, &flip(&mac, 4)).unwrap());
            assert!(!key.verify(jwa(alg), b"other", &mac).unwrap());
            assert!(!key.verify(jwa(alg), data, &mac[..len - 1]).unwrap());
            assert!(!oct(bits).verify(jwa(alg), data, &mac).unwrap());
        }
        assert!(is_unsupported(key.sign(jwa("RS256"), &[0u8; 32])));
        assert!(is_unsupported(key.sign(jwa("A128GCM"), &[0u8; 32])));
        assert!(is_unsupported(key.encrypt(jwa("HS256"), &req(b"x"))));
    }
}

#[test]
fn oct_serialization_round_trip() {
    for bits in [128, 192, 256] {
        let key = oct(bits);
        let back = from_bytes(&to_bytes(&key)).unwrap();
        assert_eq!(back.key_size_bits(), bits);
        let kw = format!("A{bits}KW");
        let w = key.wrap_key(jwa(&kw), &[5u8; 16]).unwrap();
        assert_eq!(&*back.unwrap_key(jwa(&kw), &w).unwrap(), &[5u8; 16]);
        assert_eq!(
            back.sign(jwa("HS256"), b"m").unwrap(),
            key.sign(jwa("HS256"), b"m").unwrap()
        );
    }
}

#[test]
fn from_bytes_rejects_garbage_without_panicking() {
    assert!(from_bytes(&[]).is_err());
    assert!(from_bytes(&[0x09, 1, 2, 3]).is_err());
    assert!(from_bytes(&[0x01]).is_err());
    assert!(from_bytes(&[0x02]).is_err());
    assert!(from_bytes(&[0x02, 0x09, 0x30]).is_err());
    assert!(from_bytes(&[0x03, 1, 2, 3]).is_err());
    // Truncations and bit flips of real serializations.
    let ec = to_bytes(&PrivateKey::generate_ec(Curve::P384).unwrap());
    let rsa = to_bytes(rsa_2048());
    for bytes in [&ec[..], &rsa[..]] {
        for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(from_bytes(&bytes[..cut]).is_err());
        }
        for i in (0..bytes.len()).step_by(bytes.len() / 40 + 1) {
            let _ = from_bytes(&flip(bytes, i));
        }
    }
    // EC serialization with a curve byte that does not match the DER.
    let mut wrong = ec.to_vec();
    wrong[1] = 1; // P-256, but the DER holds a P-384 key
    assert!(from_bytes(&wrong).is_err());
    for n in 0..64u8 {
        let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
        let _ = from_bytes(&junk);
    }
}

#[test]
fn garbage_requests_never_panic() {
    let keys = [
        rsa_2048(),
        &PrivateKey::generate_ec(Curve::P521).unwrap(),
        &oct(128),
        &oct(192),
        &oct(256),
    ];
    // Names that are not exact JWA spellings never reach a key.
    for junk in ["", "rsa-oaep", "A256KW ", "A256kw", "NOPE"] {
        assert!(matches!(
            junk.parse::<Alg>(),
            Err(CryptoError::UnsupportedAlgorithm { .. })
        ));
    }
    let blobs: Vec<Vec<u8>> = [
        0usize, 1, 7, 8, 12, 15, 16, 17, 24, 32, 40, 64, 132, 256, 300,
    ]
    .iter()
    .map(|&n| (0..n).map(|i| (i * 31 + 7) as u8).collect())
    .collect();
    for key in keys {
        for alg in Alg::ALL {
            for v in &blobs {
                for iv in [None, Some(&v[..])] {
                    let r = CipherRequest {
                        value: v,
                        iv,
                        aad: iv,
                        tag: iv,
                    };
                    let _ = key.encrypt(alg, &r);
                    let _ = key.decrypt(alg, &r);
                }
                let _ = key.wrap_key(alg, v);
                let _ = key.unwrap_key(alg, v);
                let _ = key.sign(alg, v);
                for s in &blobs {
                    let _ = key.verify(alg, v, s);
                }
            }
        }
    }
}

#[test]
fn debug_output_hides_secrets() {
    let key = oct(256);
    let bytes = to_bytes(&key);
    let dbg = format!("{key:?}");
    assert!(dbg.contains("Oct"));
    let hex: String = bytes[1..5].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!dbg.contains(&hex));
    assert!(!dbg.contains(&format!("{:?}", &bytes[1..5])));
    let rk = RootKey::generate().unwrap();
    assert_eq!(format!("{rk:?}"), "RootKey { <redacted> }");
    let jwk = JwkPrivate {
        kty: "oct".into(),
        k: Some(Zeroizing::new(b"supersecretvalue".to_vec())),
        ..Default::default()
    };
    assert!(!format!("{jwk:?}").contains("115")); // 's'
    assert!(format!("{jwk:?}").contains("\"k\""));
    let t = TokenSigningKey::generate().unwrap();
    assert!(format!("{t:?}").starts_with("TokenSigningKey"));
}

#[test]
fn keys_are_shareable_across_threads() {
    let key = Arc::new(from_bytes(&to_bytes(rsa_2048())).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let key = Arc::clone(&key);
            std::thread::spawn(move || {
                let d = [i as u8; 32];
                for _ in 0..5 {
                    let sig = key.sign(jwa("PS256"), &d).unwrap();
                    assert!(key.verify(jwa("PS256"), &d, &sig).unwrap());
                    let ct = key.encrypt(jwa("RSA-OAEP-256"), &req(&d)).unwrap().value;
                    assert_eq!(&*key.decrypt(jwa("RSA-OAEP-256"), &req(&ct)).unwrap(), &d);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn root_key_seal_open() {
    let rk = RootKey::generate().unwrap();
    assert_eq!(rk.as_bytes().len(), 32);
    let aad = b"vault/keys/k1/version/abc";
    let sealed = rk.seal(aad, b"private key bytes").unwrap();
    assert_eq!(sealed[0], 0x01);
    assert_eq!(sealed.len(), 1 + 12 + 17 + 16);
    assert_eq!(&*rk.open(aad, &sealed).unwrap(), b"private key bytes");
    // Same key from bytes opens it.
    let rk2 = RootKey::from_bytes(rk.as_bytes()).unwrap();
    assert_eq!(&*rk2.open(aad, &sealed).unwrap(), b"private key bytes");
    // Fresh nonce each time.
    assert_ne!(rk.seal(aad, b"x").unwrap(), rk.seal(aad, b"x").unwrap());
    // Wrong key, wrong aad, every flipped byte, truncation -> Unseal.
    let other = RootKey::generate().unwrap();
    assert!(matches!(other.open(aad, &sealed), Err(CryptoError::Unseal)));
    assert!(matches!(
        rk.open(b"vault/keys/k2", &sealed),
        Err(CryptoError::Unseal)
    ));
    assert!(matches!(rk.open(b"", &sealed), Err(CryptoError::Unseal)));
    for i in 0..sealed.len() {
        assert!(
            matches!(rk.open(aad, &flip(&sealed, i)), Err(CryptoError::Unseal)),
            "{i}"
        );
    }
    for cut in 0..sealed.len() {
        assert!(matches!(
            rk.open(aad, &sealed[..cut]),
            Err(CryptoError::Unseal)
        ));
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(rk.open(aad, &longer), Err(CryptoError::Unseal)));
    assert_eq!(
        CryptoError::Unseal.to_string(),
        "sealed data could not be opened: wrong root key or tampered data"
    );
    // Empty plaintext and empty aad work.
    let s = rk.seal(b"", b"").unwrap();
    assert!(rk.open(b"", &s).unwrap().is_empty());
    // Root key must be 32 bytes.
    for n in [0, 16, 31, 33, 64] {
        assert!(matches!(
            RootKey::from_bytes(&vec![0u8; n]),
            Err(CryptoError::InvalidKey(_))
        ));
    }
    // Sealing a private key end to end.
    let key = PrivateKey::generate_ec(Curve::P256).unwrap();
    let sealed = rk.seal(b"id", &to_bytes(&key)).unwrap();
    let opened = from_bytes(&rk.open(b"id", &sealed).unwrap()).unwrap();
    assert_eq!(opened.public_jwk(), key.public_jwk());
    assert!(format!("{rk:?}").contains("redacted"));
}

#[test]
fn token_signing_key() {
    let t = TokenSigningKey::generate().unwrap();
    let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";
    let sig = t.sign(msg).unwrap();
    assert_eq!(sig.len(), 64);
    assert!(t.verify(msg, &sig));
    assert!(!t.verify(msg, &flip(&sig, 10)));
    assert!(!t.verify(b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ5In0", &sig));
    assert!(!t.verify(msg, &sig[..63]));
    assert!(!t.verify(msg, b""));
    let jwk = t.public_jwk();
    assert_eq!(jwk.crv, Some(Curve::P256));
    // PKCS#8 round trip.
    let t2 = TokenSigningKey::from_pkcs8(&t.to_pkcs8()).unwrap();
    assert_eq!(t2.public_jwk(), jwk);
    assert!(t2.verify(msg, &sig));
    assert!(t.verify(msg, &t2.sign(msg).unwrap()));
    assert!(TokenSigningKey::from_pkcs8(b"not der").is_err());
    // A P-384 PKCS#8 is refused.
    let p384 = to_bytes(&PrivateKey::generate_ec(Curve::P384).unwrap());
    assert!(TokenSigningKey::from_pkcs8(&p384[2..]).is_err());
    // Independent verification: JWT ES256 = ECDSA P-256 SHA-256, r||s.
    let mut point = vec![4u8];
    point.extend_from_slice(jwk.x.as_ref().unwrap());
    point.extend_from_slice(jwk.y.as_ref().unwrap());
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(msg, &sig)
        .unwrap();
    // Equivalent to a vault EC key signing sha256(msg).
    let as_vault = from_bytes(&[&[0x02u8, 0x01][..], &t.to_pkcs8()[..]].concat()).unwrap();
    assert!(as_vault.verify(jwa("ES256"), &sha256(msg), &sig).unwrap());
}

#[test]
fn helpers() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abC"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert_eq!(random_bytes(17).unwrap().len(), 17);
    assert_eq!(
        sha256(b""),
        [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55
        ]
    );
    assert_eq!(KeyFamily::from_kty("EC-HSM"), Some(KeyFamily::Ec));
    assert_eq!(KeyFamily::Oct.jwk_kty(), "oct");
    for c in Curve::ALL {
        assert_eq!(Curve::from_jwk(c.jwk_name()), Some(c));
    }
    assert_eq!(Curve::from_jwk("p-256"), None);
    assert_eq!(Curve::P256K.jws_alg(), "ES256K");
}
