//! Key operations over HTTPS: encrypt/decrypt, wrap/unwrap and sign/verify for every
//! algorithm family, cross-checked with aws-lc-rs on the client side where the algorithm is
//! public-key; and the enabled/nbf/exp/key_ops checks.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use common::*;
use serde_json::{json, Value};

// ------------------------------------------------------------------ DER for an RSA public key

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::new();
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

/// SubjectPublicKeyInfo DER of an RSA public key.
fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let alg = der(
        0x30,
        &[
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
            ][..],
            &[0x05, 0x00][..],
        ]
        .concat(),
    );
    let rsa_key = der(0x30, &[der_uint(n), der_uint(e)].concat());
    let bits = der(0x03, &[&[0u8][..], &rsa_key].concat());
    der(0x30, &[alg, bits].concat())
}

/// PKCS#1 v1.5 encryption under the key's public half, done on the client.
fn pkcs1_encrypt(bundle: &Value, plaintext: &[u8]) -> Vec<u8> {
    let spki = rsa_spki(&unb64v(&bundle["key"]["n"]), &unb64v(&bundle["key"]["e"]));
    let key = Pkcs1PublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).expect("SPKI"))
        .expect("PKCS#1 key");
    let mut out = vec![0u8; key.ciphertext_size()];
    key.encrypt(plaintext, &mut out).expect("encrypt").to_vec()
}

fn flip(sig: &Value) -> String {
    let mut bytes = unb64v(sig);
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    b64(&bytes)
}

// ------------------------------------------------------------------ RSA

#[tokio::test]
async fn rsa_encrypt_decrypt_wrap_unwrap() {
    let ts = TestServer::start().await;
    let key = ts
        .create_key("rsa", json!({"kty": "RSA", "key_size": 2048}))
        .await;
    let v = version_of(&key);
    let kid = key["key"]["kid"].clone();
    let secret = random(32);

    for alg in ["RSA-OAEP", "RSA-OAEP-256"] {
        let ct = ok(ts
            .op(
                "rsa",
                &v,
                "encrypt",
                json!({"alg": alg, "value": b64(&secret)}),
            )
            .await);
        assert_eq!(ct["kid"], kid, "{alg}");
        let ct_bytes = unb64v(&ct["value"]);
        assert_eq!(ct_bytes.len(), 256, "{alg}");
        assert_ne!(ct_bytes, secret);
        let pt = ok(ts
            .op(
                "rsa",
                &v,
                "decrypt",
                json!({"alg": alg, "value": ct["value"]}),
            )
            .await);
        assert_eq!(unb64v(&pt["value"]), secret, "{alg} round trip");
        assert_eq!(pt["kid"], kid);

        let w = ok(ts
            .op(
                "rsa",
                &v,
                "wrapkey",
                json!({"alg": alg, "value": b64(&secret)}),
            )
            .await);
        assert_eq!(w["kid"], kid);
        let u = ok(ts
            .op(
                "rsa",
                &v,
                "unwrapkey",
                json!({"alg": alg, "value": w["value"]}),
            )
            .await);
        assert_eq!(unb64v(&u["value"]), secret, "{alg} wrap round trip");

        // A tampered ciphertext is a 400, never a 500.
        let r = ts
            .op(
                "rsa",
                &v,
                "decrypt",
                json!({"alg": alg, "value": flip(&ct["value"])}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
        let r = ts
            .op(
                "rsa",
                &v,
                "unwrapkey",
                json!({"alg": alg, "value": flip(&w["value"])}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    // OAEP with the other hash does not decrypt.
    let ct = ok(ts
        .op(
            "rsa",
            &v,
            "encrypt",
            json!({"alg": "RSA-OAEP", "value": b64(&secret)}),
        )
        .await);
    let r = ts
        .op(
            "rsa",
            &v,
            "decrypt",
            json!({"alg": "RSA-OAEP-256", "value": ct["value"]}),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    // Plaintext too long for OAEP on a 2048-bit key.
    let r = ts
        .op(
            "rsa",
            &v,
            "encrypt",
            json!({"alg": "RSA-OAEP", "value": b64(&random(250))}),
        )
        .await;
    expect_error(&r, 400, "BadParameter");

    // RSA1_5 is refused for new ciphertexts...
    for op in ["encrypt", "wrapkey"] {
        let r = ts
            .op(
                "rsa",
                &v,
                op,
                json!({"alg": "RSA1_5", "value": b64(&secret)}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    // ...but a PKCS#1 v1.5 ciphertext made elsewhere decrypts and unwraps.
    let legacy = pkcs1_encrypt(&key, &secret);
    assert_eq!(legacy.len(), 256);
    for op in ["decrypt", "unwrapkey"] {
        let pt = ok(ts
            .op(
                "rsa",
                &v,
                op,
                json!({"alg": "RSA1_5", "value": b64(&legacy)}),
            )
            .await);
        assert_eq!(unb64v(&pt["value"]), secret, "RSA1_5 {op}");
    }
    // Algorithms of other families are refused on an RSA key.
    for alg in ["A256KW", "A256GCM", "ES256", "RSA-OAEP-384", "rsa-oaep"] {
        let r = ts
            .op(
                "rsa",
                &v,
                "wrapkey",
                json!({"alg": alg, "value": b64(&secret)}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn rsa_signatures_match_aws_lc_verification() {
    let ts = TestServer::start().await;
    let key = ts
        .create_key("rsig", json!({"kty": "RSA-HSM", "key_size": 3072}))
        .await;
    let v = version_of(&key);
    let n = unb64v(&key["key"]["n"]);
    let e = unb64v(&key["key"]["e"]);
    let public = RsaPublicKeyComponents { n: &n, e: &e };
    let message = b"the model weights are encrypted under this key";

    let cases: [(&str, u32, &signature::RsaParameters); 6] = [
        ("RS256", 256, &signature::RSA_PKCS1_2048_8192_SHA256),
        ("RS384", 384, &signature::RSA_PKCS1_2048_8192_SHA384),
        ("RS512", 512, &signature::RSA_PKCS1_2048_8192_SHA512),
        ("PS256", 256, &signature::RSA_PSS_2048_8192_SHA256),
        ("PS384", 384, &signature::RSA_PSS_2048_8192_SHA384),
        ("PS512", 512, &signature::RSA_PSS_2048_8192_SHA512),
    ];
    for (alg, bits, params) in cases {
        let d = digest(bits, message);
        let s = ok(ts
            .op("rsig", &v, "sign", json!({"alg": alg, "value": b64(&d)}))
            .await);
        assert_eq!(s["kid"], key["key"]["kid"]);
        let sig = unb64v(&s["value"]);
        assert_eq!(sig.len(), 384, "{alg}");
        // The server signed the digest as pre-hashed: aws-lc verifies it over the message.
        public
            .verify(params, message, &sig)
            .unwrap_or_else(|_| panic!("{alg} signature does not verify client side"));
        let ok_v = ok(ts
            .op(
                "rsig",
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&d), "value": s["value"]}),
            )
            .await);
        assert_eq!(ok_v["value"], true, "{alg}");
        let bad = ok(ts
            .op(
                "rsig",
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&d), "value": flip(&s["value"])}),
            )
            .await);
        assert_eq!(bad["value"], false, "{alg} flipped signature");
        let other = digest(bits, b"another message");
        let bad = ok(ts
            .op(
                "rsig",
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&other), "value": s["value"]}),
            )
            .await);
        assert_eq!(bad["value"], false, "{alg} other digest");
        // A digest of the wrong length is a bad request.
        let r = ts
            .op(
                "rsig",
                &v,
                "sign",
                json!({"alg": alg, "value": b64(&d[..20])}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    // Verify without a digest, and EC/HMAC algorithms, are refused.
    let r = ts
        .op(
            "rsig",
            &v,
            "verify",
            json!({"alg": "RS256", "value": b64(&[1u8; 384])}),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    for alg in ["ES256", "HS256", "RSA-OAEP"] {
        let r = ts
            .op(
                "rsig",
                &v,
                "sign",
                json!({"alg": alg, "value": b64(&digest(256, message))}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ EC

#[tokio::test]
async fn ec_signatures_every_curve() {
    let ts = TestServer::start().await;
    let message = b"ec message";
    let cases: [(
        &str,
        &str,
        &str,
        u32,
        usize,
        &'static signature::EcdsaVerificationAlgorithm,
    ); 4] = [
        (
            "P-256",
            "EC",
            "ES256",
            256,
            64,
            &signature::ECDSA_P256_SHA256_FIXED,
        ),
        (
            "P-384",
            "EC-HSM",
            "ES384",
            384,
            96,
            &signature::ECDSA_P384_SHA384_FIXED,
        ),
        (
            "P-521",
            "EC",
            "ES512",
            512,
            132,
            &signature::ECDSA_P521_SHA512_FIXED,
        ),
        (
            "P-256K",
            "EC-HSM",
            "ES256K",
            256,
            64,
            &signature::ECDSA_P256K1_SHA256_FIXED,
        ),
    ];
    for (crv, kty, alg, bits, sig_len, verifier) in cases {
        let name = format!("ec-{}", crv.to_lowercase().replace('-', ""));
        let key = ts.create_key(&name, json!({"kty": kty, "crv": crv})).await;
        let v = version_of(&key);
        let d = digest(bits, message);
        let s = ok(ts
            .op(&name, &v, "sign", json!({"alg": alg, "value": b64(&d)}))
            .await);
        let sig = unb64v(&s["value"]);
        assert_eq!(sig.len(), sig_len, "{alg} is the fixed r||s form");
        let point = [
            &[0x04u8][..],
            &unb64v(&key["key"]["x"]),
            &unb64v(&key["key"]["y"]),
        ]
        .concat();
        UnparsedPublicKey::new(verifier, &point)
            .verify(message, &sig)
            .unwrap_or_else(|_| panic!("{alg} signature does not verify client side"));
        let r = ok(ts
            .op(
                &name,
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&d), "value": s["value"]}),
            )
            .await);
        assert_eq!(r["value"], true, "{alg}");
        let r = ok(ts
            .op(
                &name,
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&d), "value": flip(&s["value"])}),
            )
            .await);
        assert_eq!(r["value"], false, "{alg} flipped");
        // Unversioned sign.
        let s = ok(ts
            .post(
                &format!("/keys/{name}//sign"),
                json!({"alg": alg, "value": b64(&d)}),
            )
            .await);
        assert_eq!(version_of(&s), v);
        // The wrong algorithm for the curve, and a wrong digest length.
        let wrong = if alg == "ES384" { "ES256" } else { "ES384" };
        let r = ts
            .op(
                &name,
                &v,
                "sign",
                json!({"alg": wrong, "value": b64(&digest(384, message))}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
        let r = ts
            .op(
                &name,
                &v,
                "sign",
                json!({"alg": alg, "value": b64(&d[..10])}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    // EC keys cannot encrypt or wrap, even when key_ops allow it.
    ts.create_key(
        "ec-all-ops",
        json!({"kty": "EC", "key_ops": ["encrypt", "wrapKey", "sign"]}),
    )
    .await;
    for (op, alg) in [
        ("encrypt", "RSA-OAEP"),
        ("wrapkey", "A256KW"),
        ("encrypt", "ES256"),
    ] {
        let r = ts
            .post(
                &format!("/keys/ec-all-ops//{op}"),
                json!({"alg": alg, "value": b64(&random(16))}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ AES

#[tokio::test]
async fn aes_key_wrap_every_size() {
    let ts = TestServer::start().await;
    for bits in [128, 192, 256] {
        let name = format!("kw{bits}");
        let v = version_of(
            &ts.create_key(&name, json!({"kty": "oct-HSM", "key_size": bits}))
                .await,
        );
        let alg = format!("A{bits}KW");
        for cek_len in [16, 24, 32] {
            let cek = random(cek_len);
            let w = ok(ts
                .op(
                    &name,
                    &v,
                    "wrapkey",
                    json!({"alg": alg, "value": b64(&cek)}),
                )
                .await);
            let wrapped = unb64v(&w["value"]);
            assert_eq!(wrapped.len(), cek_len + 8, "{alg}");
            let u = ok(ts
                .op(
                    &name,
                    &v,
                    "unwrapkey",
                    json!({"alg": alg, "value": w["value"]}),
                )
                .await);
            assert_eq!(unb64v(&u["value"]), cek, "{alg}");
            let r = ts
                .op(
                    &name,
                    &v,
                    "unwrapkey",
                    json!({"alg": alg, "value": flip(&w["value"])}),
                )
                .await;
            expect_error(&r, 400, "BadParameter");
        }
        // Key wrap also runs through encrypt/decrypt routes where the key allows it.
        let cek = random(32);
        let w = ok(ts
            .op(
                &name,
                &v,
                "encrypt",
                json!({"alg": alg, "value": b64(&cek)}),
            )
            .await);
        let u = ok(ts
            .op(
                &name,
                &v,
                "decrypt",
                json!({"alg": alg, "value": w["value"]}),
            )
            .await);
        assert_eq!(unb64v(&u["value"]), cek);
        // The wrong key size for the algorithm, and a CEK that is not a multiple of 8 bytes.
        let other = if bits == 256 { "A128KW" } else { "A256KW" };
        let r = ts
            .op(
                &name,
                &v,
                "wrapkey",
                json!({"alg": other, "value": b64(&cek)}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
        let r = ts
            .op(
                &name,
                &v,
                "wrapkey",
                json!({"alg": alg, "value": b64(&random(20))}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
        // RSA algorithms on an AES key.
        let r = ts
            .op(
                &name,
                &v,
                "wrapkey",
                json!({"alg": "RSA-OAEP", "value": b64(&cek)}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn aes_gcm_with_iv_tag_and_aad() {
    let ts = TestServer::start().await;
    for bits in [128, 192, 256] {
        let name = format!("gcm{bits}");
        let v = version_of(
            &ts.create_key(&name, json!({"kty": "oct-HSM", "key_size": bits}))
                .await,
        );
        let alg = format!("A{bits}GCM");
        let pt = b"training shard 0042: confidential".to_vec();
        let aad = b"tenant=acme".to_vec();

        let ct = ok(ts
            .op(
                &name,
                &v,
                "encrypt",
                json!({"alg": alg, "value": b64(&pt), "aad": b64(&aad)}),
            )
            .await);
        let iv = unb64v(&ct["iv"]);
        let tag = unb64v(&ct["tag"]);
        assert_eq!(iv.len(), 12, "{alg} iv is generated by the server");
        assert_eq!(tag.len(), 16, "{alg} tag");
        assert_eq!(unb64v(&ct["value"]).len(), pt.len());
        if !ct["aad"].is_null() {
            assert_eq!(unb64v(&ct["aad"]), aad);
        }
        let back = ok(ts
            .op(
                &name,
                &v,
                "decrypt",
                json!({"alg": alg, "value": ct["value"], "iv": ct["iv"],
                                             "tag": ct["tag"], "aad": b64(&aad)}),
            )
            .await);
        assert_eq!(unb64v(&back["value"]), pt, "{alg}");

        // Two encryptions use different IVs.
        let ct2 = ok(ts
            .op(
                &name,
                &v,
                "encrypt",
                json!({"alg": alg, "value": b64(&pt), "aad": b64(&aad)}),
            )
            .await);
        assert_ne!(ct2["iv"], ct["iv"]);

        // Wrong aad, no aad, flipped tag, flipped ciphertext, missing tag, missing iv: refused.
        let base = json!({"alg": alg, "value": ct["value"], "iv": ct["iv"], "tag": ct["tag"], "aad": b64(&aad)});
        let mut bad = vec![];
        let mut b = base.clone();
        b["aad"] = json!(b64(b"tenant=evil"));
        bad.push(b);
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove("aad");
        bad.push(b);
        let mut b = base.clone();
        b["tag"] = json!(flip(&ct["tag"]));
        bad.push(b);
        let mut b = base.clone();
        b["value"] = json!(flip(&ct["value"]));
        bad.push(b);
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove("tag");
        bad.push(b);
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove("iv");
        bad.push(b);
        for body in bad {
            let r = ts.op(&name, &v, "decrypt", body.clone()).await;
            expect_error(&r, 400, "BadParameter");
        }

        // Without aad, and an empty plaintext.
        let ct = ok(ts
            .op(&name, &v, "encrypt", json!({"alg": alg, "value": ""}))
            .await);
        let back = ok(ts
            .op(
                &name,
                &v,
                "decrypt",
                json!({"alg": alg, "value": ct["value"], "iv": ct["iv"], "tag": ct["tag"]}),
            )
            .await);
        assert_eq!(unb64v(&back["value"]), Vec::<u8>::new());
    }
    // A GCM algorithm of another size than the key's.
    let v = version_of(&ok(ts.get("/keys/gcm128").await));
    let r = ts
        .op(
            "gcm128",
            &v,
            "encrypt",
            json!({"alg": "A256GCM", "value": b64(b"x")}),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn aes_cbc_with_caller_iv() {
    let ts = TestServer::start().await;
    for bits in [128, 192, 256] {
        let name = format!("cbc{bits}");
        let v = version_of(
            &ts.create_key(&name, json!({"kty": "oct-HSM", "key_size": bits}))
                .await,
        );
        let iv = random(16);

        // CBCPAD: any length; PKCS#7 padding to the next block.
        let alg = format!("A{bits}CBCPAD");
        for len in [0usize, 1, 16, 33] {
            let pt = random(len);
            let ct = ok(ts
                .op(
                    &name,
                    &v,
                    "encrypt",
                    json!({"alg": alg, "value": b64(&pt), "iv": b64(&iv)}),
                )
                .await);
            assert_eq!(
                unb64v(&ct["value"]).len(),
                (len / 16 + 1) * 16,
                "{alg} {len}"
            );
            if !ct["iv"].is_null() {
                assert_eq!(unb64v(&ct["iv"]), iv, "the caller's iv is used");
            }
            let back = ok(ts
                .op(
                    &name,
                    &v,
                    "decrypt",
                    json!({"alg": alg, "value": ct["value"], "iv": b64(&iv)}),
                )
                .await);
            assert_eq!(unb64v(&back["value"]), pt, "{alg} {len}");
        }
        // CBC without padding: whole blocks only.
        let alg_nopad = format!("A{bits}CBC");
        let pt = random(32);
        let ct = ok(ts
            .op(
                &name,
                &v,
                "encrypt",
                json!({"alg": alg_nopad, "value": b64(&pt), "iv": b64(&iv)}),
            )
            .await);
        assert_eq!(unb64v(&ct["value"]).len(), 32);
        let back = ok(ts
            .op(
                &name,
                &v,
                "decrypt",
                json!({"alg": alg_nopad, "value": ct["value"], "iv": b64(&iv)}),
            )
            .await);
        assert_eq!(unb64v(&back["value"]), pt);
        let r = ts
            .op(
                &name,
                &v,
                "encrypt",
                json!({"alg": alg_nopad, "value": b64(&random(17)), "iv": b64(&iv)}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");

        // Missing iv, short iv: refused.
        let r = ts
            .op(&name, &v, "encrypt", json!({"alg": alg, "value": b64(&pt)}))
            .await;
        expect_error(&r, 400, "BadParameter");
        let r = ts
            .op(
                &name,
                &v,
                "encrypt",
                json!({"alg": alg, "value": b64(&pt), "iv": b64(&iv[..8])}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn hmac_sign_verify() {
    let ts = TestServer::start().await;
    let v = version_of(
        &ts.create_key(
            "mac",
            json!({"kty": "oct-HSM", "key_size": 256, "key_ops": ["sign", "verify"]}),
        )
        .await,
    );
    for (alg, bits) in [("HS256", 256), ("HS384", 384), ("HS512", 512)] {
        let d = digest(bits, b"hmac input");
        let s = ok(ts
            .op("mac", &v, "sign", json!({"alg": alg, "value": b64(&d)}))
            .await);
        assert_eq!(unb64v(&s["value"]).len() * 8, bits as usize, "{alg}");
        let again = ok(ts
            .op("mac", &v, "sign", json!({"alg": alg, "value": b64(&d)}))
            .await);
        assert_eq!(again["value"], s["value"], "HMAC is deterministic");
        let r = ok(ts
            .op(
                "mac",
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&d), "value": s["value"]}),
            )
            .await);
        assert_eq!(r["value"], true, "{alg}");
        let r = ok(ts
            .op(
                "mac",
                &v,
                "verify",
                json!({"alg": alg, "digest": b64(&d), "value": flip(&s["value"])}),
            )
            .await);
        assert_eq!(r["value"], false, "{alg} flipped");
    }
    // An AES key without sign in key_ops: 403; RSA/EC algorithms on it: 400.
    let v2 = version_of(&ts.create_key("nomac", json!({"kty": "oct-HSM"})).await);
    let r = ts
        .op(
            "nomac",
            &v2,
            "sign",
            json!({"alg": "HS256", "value": b64(&digest(256, b"x"))}),
        )
        .await;
    expect_inner(&r, 403, "Forbidden", "KeyOperationForbidden");
    for alg in ["RS256", "ES256"] {
        let r = ts
            .op(
                "mac",
                &v,
                "sign",
                json!({"alg": alg, "value": b64(&digest(256, b"x"))}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ enforcement

#[tokio::test]
async fn disabled_not_yet_valid_expired_and_key_ops() {
    let ts = TestServer::start().await;
    let d = b64(&digest(256, b"enforce"));
    let secret = b64(&random(32));

    // Disabled: every operation is 403 KeyDisabled until re-enabled.
    let v = version_of(
        &ts.create_key(
            "off",
            json!({"kty": "RSA", "attributes": {"enabled": false}}),
        )
        .await,
    );
    for (op, body) in [
        ("sign", json!({"alg": "RS256", "value": d})),
        ("encrypt", json!({"alg": "RSA-OAEP", "value": secret})),
        ("wrapkey", json!({"alg": "RSA-OAEP", "value": secret})),
        (
            "decrypt",
            json!({"alg": "RSA-OAEP", "value": b64(&[0u8; 256])}),
        ),
        (
            "verify",
            json!({"alg": "RS256", "digest": d, "value": b64(&[0u8; 256])}),
        ),
    ] {
        let r = ts.op("off", &v, op, body).await;
        expect_inner(&r, 403, "Forbidden", "KeyDisabled");
    }
    let r = ts
        .post("/keys/off//sign", json!({"alg": "RS256", "value": d}))
        .await;
    expect_inner(&r, 403, "Forbidden", "KeyDisabled");
    ok(ts
        .patch("/keys/off/", json!({"attributes": {"enabled": true}}))
        .await);
    ok(ts
        .op("off", &v, "sign", json!({"alg": "RS256", "value": d}))
        .await);

    // nbf in the future: 403 until the clock passes it.
    let now = ts.now();
    let v = version_of(
        &ts.create_key(
            "later",
            json!({"kty": "EC", "attributes": {"nbf": now + 3600}}),
        )
        .await,
    );
    let r = ts
        .op("later", &v, "sign", json!({"alg": "ES256", "value": d}))
        .await;
    expect_error(&r, 403, "Forbidden");
    assert!(r.2["error"]["innererror"]["code"].is_string(), "{}", r.2);

    // exp: blocks encrypt, wrap and sign, but not decrypt, unwrap or verify.
    let now = ts.now();
    let key = ts
        .create_key(
            "expiring",
            json!({"kty": "RSA", "attributes": {"exp": now + 600}}),
        )
        .await;
    let ve = version_of(&key);
    let ct = ok(ts
        .op(
            "expiring",
            &ve,
            "encrypt",
            json!({"alg": "RSA-OAEP-256", "value": secret}),
        )
        .await);
    let w = ok(ts
        .op(
            "expiring",
            &ve,
            "wrapkey",
            json!({"alg": "RSA-OAEP", "value": secret}),
        )
        .await);
    let s = ok(ts
        .op("expiring", &ve, "sign", json!({"alg": "PS256", "value": d}))
        .await);

    ts.advance(3601);
    ok(ts
        .op("later", &v, "sign", json!({"alg": "ES256", "value": d}))
        .await);

    for (op, body) in [
        ("encrypt", json!({"alg": "RSA-OAEP-256", "value": secret})),
        ("wrapkey", json!({"alg": "RSA-OAEP", "value": secret})),
        ("sign", json!({"alg": "PS256", "value": d})),
    ] {
        let r = ts.op("expiring", &ve, op, body).await;
        expect_error(&r, 403, "Forbidden");
        assert!(
            r.2["error"]["innererror"]["code"].is_string(),
            "{op}: {}",
            r.2
        );
    }
    let pt = ok(ts
        .op(
            "expiring",
            &ve,
            "decrypt",
            json!({"alg": "RSA-OAEP-256", "value": ct["value"]}),
        )
        .await);
    assert_eq!(pt["value"], secret);
    let pt = ok(ts
        .op(
            "expiring",
            &ve,
            "unwrapkey",
            json!({"alg": "RSA-OAEP", "value": w["value"]}),
        )
        .await);
    assert_eq!(pt["value"], secret);
    let r = ok(ts
        .op(
            "expiring",
            &ve,
            "verify",
            json!({"alg": "PS256", "digest": d, "value": s["value"]}),
        )
        .await);
    assert_eq!(r["value"], true);
    // The key can still be read, and a new version is usable.
    ok(ts.get("/keys/expiring").await);
    let vn = version_of(&ok(ts.post_empty("/keys/expiring/rotate").await));
    ok(ts
        .op("expiring", &vn, "sign", json!({"alg": "PS256", "value": d}))
        .await);

    // key_ops without the operation: 403 KeyOperationForbidden; update adds it.
    let v = version_of(
        &ts.create_key(
            "signonly",
            json!({"kty": "RSA", "key_ops": ["sign", "verify"]}),
        )
        .await,
    );
    for (op, body) in [
        ("encrypt", json!({"alg": "RSA-OAEP", "value": secret})),
        (
            "decrypt",
            json!({"alg": "RSA-OAEP", "value": b64(&[0u8; 256])}),
        ),
        ("wrapkey", json!({"alg": "RSA-OAEP", "value": secret})),
        (
            "unwrapkey",
            json!({"alg": "RSA-OAEP", "value": b64(&[0u8; 256])}),
        ),
    ] {
        let r = ts.op("signonly", &v, op, body).await;
        expect_inner(&r, 403, "Forbidden", "KeyOperationForbidden");
        let m = r.2["error"]["message"].as_str().unwrap();
        assert!(m.to_lowercase().contains(&op.replace("key", "")), "{m}");
    }
    ok(ts
        .op("signonly", &v, "sign", json!({"alg": "RS256", "value": d}))
        .await);
    ok(ts
        .patch(
            &format!("/keys/signonly/{v}"),
            json!({"key_ops": ["sign", "verify", "wrapKey", "unwrapKey"]}),
        )
        .await);
    let w = ok(ts
        .op(
            "signonly",
            &v,
            "wrapkey",
            json!({"alg": "RSA-OAEP", "value": secret}),
        )
        .await);
    ok(ts
        .op(
            "signonly",
            &v,
            "unwrapkey",
            json!({"alg": "RSA-OAEP", "value": w["value"]}),
        )
        .await);
    let r = ts
        .op(
            "signonly",
            &v,
            "encrypt",
            json!({"alg": "RSA-OAEP", "value": secret}),
        )
        .await;
    expect_inner(&r, 403, "Forbidden", "KeyOperationForbidden");

    // verify-only key cannot sign.
    let v = version_of(
        &ts.create_key("verifyonly", json!({"kty": "EC", "key_ops": ["verify"]}))
            .await,
    );
    let r = ts
        .op(
            "verifyonly",
            &v,
            "sign",
            json!({"alg": "ES256", "value": d}),
        )
        .await;
    expect_inner(&r, 403, "Forbidden", "KeyOperationForbidden");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn unknown_algorithms_are_refused_at_the_wire_with_the_same_message() {
    let ts = TestServer::start().await;
    let v = version_of(&ts.create_key("kw", json!({"kty": "oct-HSM"})).await);
    for (op, alg) in [
        ("wrapkey", "NOPE"),
        ("unwrapkey", "a256kw"),
        ("encrypt", "A256KW "),
        ("sign", ""),
    ] {
        let r = ts
            .op("kw", &v, op, json!({"alg": alg, "value": b64(&[1u8; 32])}))
            .await;
        let msg = expect_error(&r, 400, "BadParameter");
        assert_eq!(
            msg,
            format!("unsupported algorithm {alg}: unknown algorithm")
        );
    }
    // A known algorithm of the wrong family keeps its own message.
    let r = ts
        .op(
            "kw",
            &v,
            "wrapkey",
            json!({"alg": "RSA-OAEP", "value": b64(&[1u8; 32])}),
        )
        .await;
    let msg = expect_error(&r, 400, "BadParameter");
    assert_eq!(
        msg,
        "unsupported algorithm RSA-OAEP: RSA-OAEP is not valid for an oct key"
    );
    ts.srv.shutdown().await;
}
