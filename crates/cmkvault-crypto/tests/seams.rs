//! The key-material seams: typed `Alg`/`KeyOp`, `KeyRef` (including rows written before it
//! existed), the software `KeyBackend` and the `Sealer`.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::sync::Arc;

use cmkvault_crypto::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Root key, identity and sealed oct key (k = 0x11 * 32) as written by the code before the
/// `KeyRef` tag existed (`RootKey::seal(aad, 0x03 || k)`, stored as is).
const LEGACY_ROOT: [u8; 32] = [0x42; 32];
const LEGACY_ID: &[u8] = b"cmkvault:key:v1:vault1:k1:0123456789abcdef0123456789abcdef";
const LEGACY_SEALED: &str = "0153ec3fa8db23a454d9d52316ea1a5a09a83ba5ebf475876817f431afcb457adbeb38742aa51f5a5f4772ffc7f04195674c79cd92b7433caf7f8092b23e";
/// A256KW of 0x22 * 16 under k, made by the same old code.
const LEGACY_WRAPPED: &str = "3ccb5006e7157cc3b7195e69b6e8408822079e79d401e1a4";

fn backend(root: &[u8]) -> SoftwareBackend {
    let sealer: Arc<dyn Sealer> = Arc::new(RootKey::from_bytes(root).unwrap());
    SoftwareBackend::new(sealer)
}

#[test]
fn every_alg_round_trips_through_its_jwa_name() {
    assert_eq!(Alg::ALL.len(), 30);
    for alg in Alg::ALL {
        let name = alg.to_string();
        assert_eq!(name, alg.as_str());
        assert_eq!(name.parse::<Alg>().unwrap(), alg);
        let json = serde_json::to_string(&alg).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Alg>(&json).unwrap(), alg);
    }
    assert_eq!(Alg::RsaOaep256.as_str(), "RSA-OAEP-256");
    assert_eq!(Alg::Rsa15.as_str(), "RSA1_5");
    assert_eq!(Alg::CkmAesKeyWrapPad.as_str(), "CKM_AES_KEY_WRAP_PAD");
    assert_eq!(Alg::Es256K.family(), KeyFamily::Ec);
    assert_eq!(Alg::A256Kw.family(), KeyFamily::Oct);
    assert_eq!(Alg::Ps512.family(), KeyFamily::Rsa);
    // Unknown names: the same error (and wording) the string API gave.
    let e = "NOPE".parse::<Alg>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported algorithm NOPE: unknown algorithm"
    );
    assert!("rsa-oaep".parse::<Alg>().is_err());
    assert!(serde_json::from_str::<Alg>("\"a256kw\"").is_err());
}

#[test]
fn key_ops_round_trip_through_their_azure_names() {
    for op in KeyOp::ALL {
        assert_eq!(op.as_str().parse::<KeyOp>().unwrap(), op);
        assert_eq!(KeyOp::parse(&op.to_string()), Some(op));
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(serde_json::from_str::<KeyOp>(&json).unwrap(), op);
    }
    assert_eq!(KeyOp::WrapKey.as_str(), "wrapKey");
    assert!("wrapkey".parse::<KeyOp>().is_err());
    assert!(KeyOp::Sign.blocked_by_expiry());
    assert!(!KeyOp::UnwrapKey.blocked_by_expiry());
}

#[test]
fn a_row_sealed_before_key_refs_still_opens() {
    let stored = hex(LEGACY_SEALED);
    let key_ref = KeyRef::from_bytes(&stored).unwrap();
    assert_eq!(key_ref, KeyRef::Sealed(stored.clone()));
    let be = backend(&LEGACY_ROOT);
    let handle = be.open(&key_ref, LEGACY_ID).unwrap();
    assert_eq!(handle.family(), KeyFamily::Oct);
    assert_eq!(handle.key_size_bits(), 256);
    assert_eq!(
        &*handle
            .unwrap_key(Alg::A256Kw, &hex(LEGACY_WRAPPED))
            .unwrap(),
        &[0x22u8; 16]
    );
    // Bound to its identity, as before.
    assert!(matches!(
        be.open(&key_ref, b"cmkvault:key:v1:vault1:k1:other"),
        Err(CryptoError::Unseal)
    ));
    // Re-stored, it gets the tag and still opens.
    let tagged = key_ref.to_bytes();
    assert_eq!(tagged[0], b'S');
    assert_eq!(&tagged[1..], &stored[..]);
    let again = KeyRef::from_bytes(&tagged).unwrap();
    assert_eq!(again, key_ref);
    assert!(be.open(&again, LEGACY_ID).is_ok());
}

#[test]
fn key_refs_refuse_unknown_tags() {
    assert!(matches!(
        KeyRef::from_bytes(&[]),
        Err(CryptoError::InvalidKey(_))
    ));
    for tag in [0x00u8, 0x02, b'H', 0xff] {
        assert!(matches!(
            KeyRef::from_bytes(&[tag, 1, 2, 3]),
            Err(CryptoError::InvalidKey(_))
        ));
    }
    let r = KeyRef::Sealed(vec![1; 40]);
    assert_eq!(format!("{r:?}"), "KeyRef::Sealed(40 bytes)");
}

#[test]
fn software_backend_generates_imports_opens_and_backs_up() {
    let be = backend(&[7u8; 32]);
    let id = b"cmkvault:key:v1:v:k:1";
    let specs = [
        KeySpec::Rsa {
            bits: 2048,
            public_exponent: None,
        },
        KeySpec::Ec(Curve::P256K),
        KeySpec::Oct { bits: 192 },
    ];
    for spec in specs {
        let new = be.generate(spec, id).unwrap();
        let stored = new.key_ref.to_bytes();
        assert_eq!(stored[0], b'S');
        let opened = be.open(&KeyRef::from_bytes(&stored).unwrap(), id).unwrap();
        assert_eq!(opened.public_jwk(), new.handle.public_jwk());
        assert_eq!(opened.key_size_bits(), new.handle.key_size_bits());
        assert!(be.open(&new.key_ref, b"another version").is_err());
        // Backup export and restore under another identity.
        let material = be.export_for_backup(&new.key_ref, id).unwrap();
        let restored = be.import_from_backup(&material, b"restored").unwrap();
        let back = be.open(&restored, b"restored").unwrap();
        assert_eq!(back.public_jwk(), new.handle.public_jwk());
        let alg = match spec {
            KeySpec::Rsa { .. } => Alg::Ps256,
            KeySpec::Ec(_) => Alg::Es256K,
            KeySpec::Oct { .. } => Alg::Hs256,
        };
        let sig = new.handle.sign(alg, &[3u8; 32]).unwrap();
        assert!(back.verify(alg, &[3u8; 32], &sig).unwrap());
    }
    assert!(be
        .generate(
            KeySpec::Rsa {
                bits: 1024,
                public_exponent: None
            },
            id
        )
        .is_err());
    assert!(be.import_from_backup(&[0x03, 1, 2], id).is_err());
    let jwk = JwkPrivate {
        kty: "oct-HSM".into(),
        k: Some(Zeroizing::new(vec![0x11; 32])),
        ..Default::default()
    };
    let new = be.import(&jwk, id).unwrap();
    assert_eq!(
        new.handle
            .wrap_key(Alg::A256Kw, &[0x22; 16])
            .unwrap()
            .as_slice(),
        &hex(LEGACY_WRAPPED)[..]
    );
    // Handles are shareable trait objects.
    fn check<T: Send + Sync + ?Sized>() {}
    check::<dyn KeyHandle>();
    check::<dyn KeyBackend>();
    check::<dyn Sealer>();
}

#[test]
fn root_key_is_a_sealer() {
    let root = RootKey::generate().unwrap();
    let sealer: &dyn Sealer = &root;
    let sealed = sealer.seal(b"aad", b"secret").unwrap();
    assert_eq!(&*root.open(b"aad", &sealed).unwrap(), b"secret");
    assert_eq!(&*sealer.open(b"aad", &sealed).unwrap(), b"secret");
    assert!(matches!(
        sealer.open(b"other", &sealed),
        Err(CryptoError::Unseal)
    ));
}
