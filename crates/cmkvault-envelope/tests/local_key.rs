//! The local key file KEK (oct → A256KW, RSA → RSA-OAEP-256), rewrap, and the documented
//! `.cmk` example.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::io::Cursor;

use cmkvault_crypto::Alg;
use cmkvault_envelope::format::{Protocol, REGION_DATA_LEN_V2_0};
use cmkvault_envelope::{
    open, open_container, rewrap, seal, seal_container_with, Envelope, KeyEncryptionKey, KeySource,
    LocalKey, OpenOptions, SealingKey,
};

// RFC 7515 appendix A.2's RSA key.
const N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";

fn rsa_jwk() -> String {
    format!(
        r#"{{"kty":"RSA","kid":"local:rsa1","n":"{N}","e":"AQAB","d":"{D}","p":"{P}","q":"{Q}","dp":"{DP}","dq":"{DQ}","qi":"{QI}"}}"#
    )
}

#[tokio::test]
async fn jwk_files_load_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let oct_path = dir.path().join("kek.jwk");
    // 32 bytes 00..1f, base64url.
    std::fs::write(
        &oct_path,
        r#"{"kty":"oct","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}"#,
    )
    .unwrap();
    let oct = LocalKey::load(&oct_path).unwrap();
    assert_eq!(oct.kid(), "local:kek.jwk");
    assert_eq!(oct.wrap_alg(), Alg::A256Kw);

    let rsa_path = dir.path().join("rsa.jwk");
    std::fs::write(&rsa_path, rsa_jwk()).unwrap();
    let rsa = LocalKey::load(&rsa_path).unwrap();
    assert_eq!(rsa.kid(), "local:rsa1");
    assert_eq!(rsa.wrap_alg(), Alg::RsaOaep256);

    for k in [&oct, &rsa] {
        let mut body = Vec::new();
        let meta = seal(k, "obj", Cursor::new(b"payload"), &mut body)
            .await
            .unwrap();
        let env = Envelope::parse(&meta, &OpenOptions::default()).unwrap();
        assert_eq!(env.alg(), k.wrap_alg());
        let mut out = Vec::new();
        open(
            KeySource::Key(k),
            &meta,
            "obj",
            Cursor::new(&body),
            &mut out,
            &OpenOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(out, b"payload");
    }

    std::fs::write(
        dir.path().join("bad.jwk"),
        r#"{"kty":"oct","k":"AAECAwQFBgcICQoLDA0ODw"}"#,
    )
    .unwrap();
    let e = LocalKey::load(&dir.path().join("bad.jwk")).unwrap_err();
    assert!(e.to_string().contains("cannot wrap data keys"), "{e}");
    let e = LocalKey::load(&dir.path().join("missing.jwk")).unwrap_err();
    assert!(e.to_string().contains("cannot read the key file"), "{e}");
}

#[tokio::test]
async fn rewrap_moves_the_dek_and_keeps_the_body() {
    let oct = LocalKey::from_oct("local:old", &[3u8; 32]).unwrap();
    let rsa = LocalKey::from_jwk_json(&rsa_jwk(), "unused").unwrap();
    let data = vec![0xabu8; 5000];
    let mut body = Vec::new();
    let meta = seal(&oct, "ds/file", Cursor::new(&data), &mut body)
        .await
        .unwrap();
    let opts = OpenOptions::default();
    let new_meta = rewrap(KeySource::Key(&oct), &rsa, &meta, "ds/file", &opts)
        .await
        .unwrap();
    assert!(new_meta.encryption_data.contains("local:rsa1"));
    let mut out = Vec::new();
    open(
        KeySource::Key(&rsa),
        &new_meta,
        "ds/file",
        Cursor::new(&body),
        &mut out,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(out, data);
    // The old key no longer matches the envelope.
    let e = open(
        KeySource::Key(&oct),
        &new_meta,
        "ds/file",
        Cursor::new(&body),
        Vec::new(),
        &opts,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("wrong key"), "{e}");
    // Rewrap checks the name too.
    let e = rewrap(KeySource::Key(&oct), &rsa, &meta, "ds/other", &opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sealed under the name"), "{e}");
}

/// The example of docs/envelope-format.md: "hello, envelope" sealed as `hello.txt` with the
/// reference KEK and CEK (pinned DEK: documentation only). Its integrity MAC and body are fixed
/// (the header also carries the library version, so the whole file is not pinned).
const DOC_EXAMPLE_MAC: &str = "ggK12rqfpjbCR4Jtve2Qr7tTc4t7Mo0JPaq4WD10DS4=";
const DOC_EXAMPLE_BODY: &str =
    "0000000000000000000000008b4b8d35fb73443ca62f812e09cf6a217015c1fdc34ab83126bb0ebaab2092";

#[tokio::test]
async fn documented_container_example() {
    let kek = LocalKey::from_oct("local:kek1", &(0u8..32).collect::<Vec<_>>()).unwrap();
    let mut cek = [0u8; 32];
    for (i, b) in cek.iter_mut().enumerate() {
        *b = 0x20 + i as u8;
    }
    let key = SealingKey::__with_pinned_dek_for_tests(
        &kek,
        "hello.txt",
        cek,
        Protocol::V2_0,
        REGION_DATA_LEN_V2_0,
    )
    .await
    .unwrap();
    let mut file = Cursor::new(Vec::new());
    seal_container_with(key, Cursor::new(b"hello, envelope"), &mut file).unwrap();
    let bytes = file.into_inner();
    if let Some(path) = std::env::var_os("CMK_WRITE_EXAMPLE") {
        std::fs::write(path, &bytes).unwrap();
    }
    assert_eq!(&bytes[..8], b"CMKENV1\n");
    assert!(hex::encode(&bytes).ends_with(DOC_EXAMPLE_BODY));
    let meta = cmkvault_envelope::read_container(Cursor::new(&bytes)).unwrap();
    let rec =
        cmkvault_envelope::IntegrityRecord::from_json(meta.integrity.as_deref().unwrap()).unwrap();
    assert_eq!(rec.mac, DOC_EXAMPLE_MAC);
    let mut out = Vec::new();
    open_container(
        KeySource::Key(&kek),
        "hello.txt",
        Cursor::new(&bytes),
        &mut out,
        &OpenOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(out, b"hello, envelope");
}
