//! Byte-exact vectors, round trips and the attack table of the envelope format.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::io::Cursor;

use cmkvault_envelope::format::{
    EncryptionData, Protocol, ENCRYPTION_DATA_NAME, INTEGRITY_NAME, REGION_DATA_LEN_V2_0,
};
use cmkvault_envelope::{
    open, open_container, read_container, seal, seal_container, seal_with, EnvelopeError,
    EnvelopeMetadata, IntegrityRecord, KeySource, LocalKey, OpenOptions, SealingKey,
};

const KID: &str = "local:kek1";
const V20_WRAPPED: &str = "278180fc17361a0a6a4020663f4cc9ee670968f025024c5cd5c581d5b82d34f8e50d439dba026dfbfea46ea1297b36cc";
const V20_BODY: &str =
    "0000000000000000000000008b4b8d35fb73443ca62f812e09cf6a217015c1fdc34ab83126bb0ebaab2092";
const V21_WRAPPED: &str = "70cc0b7c51f358494afe39375029f7f37743b070bf503a583fd99a8d9bac548f8c928d638ec23b798e543a4cc68b53a5";
const V21_BODY: &str = concat!(
    "000000000000000000000000e32fe35a905a625ec050ee496ab2016fb195e30b69e9e0a1f99269ba2ad2f720",
    "0000000000000000000000011bfa7aac6dcf59b158df8f3acd575a3c83316316917bd52c06e5a6c16c20b521",
    "000000000000000000000002187164d2c1e622912e4bf5d21c0828d1a5a371ddd8113fcb"
);

fn kek() -> LocalKey {
    let k: Vec<u8> = (0u8..32).collect();
    LocalKey::from_oct(KID, &k).unwrap()
}

fn cek() -> [u8; 32] {
    let mut c = [0u8; 32];
    for (i, b) in c.iter_mut().enumerate() {
        *b = 0x20 + i as u8;
    }
    c
}

fn python_json(wrapped_hex: &str, protocol: &str, data_length: u64) -> String {
    use base64::Engine as _;
    let wrapped = hex::decode(wrapped_hex).unwrap();
    format!(
        "{{\"WrappedContentKey\": {{\"KeyId\": \"{KID}\", \"EncryptedKey\": \"{}\", \"Algorithm\": \"A256KW\"}}, \
         \"EncryptionAgent\": {{\"Protocol\": \"{protocol}\", \"EncryptionAlgorithm\": \"AES_GCM_256\"}}, \
         \"EncryptedRegionInfo\": {{\"DataLength\": {data_length}, \"NonceLength\": 12}}, \
         \"KeyWrappingMetadata\": {{\"EncryptionLibrary\": \"Python 12.31.1\"}}, \"EncryptionMode\": \"FullBlob\"}}",
        base64::engine::general_purpose::STANDARD.encode(wrapped)
    )
}

fn foreign() -> OpenOptions {
    OpenOptions {
        require_integrity: false,
        ..OpenOptions::default()
    }
}

async fn open_bytes(
    meta: &EnvelopeMetadata,
    name: &str,
    body: &[u8],
    opts: &OpenOptions,
) -> Result<Vec<u8>, EnvelopeError> {
    open_with(&kek(), meta, name, body, opts).await
}

/// [`open_bytes`] under the key `k` instead of [`kek`].
async fn open_with(
    k: &LocalKey,
    meta: &EnvelopeMetadata,
    name: &str,
    body: &[u8],
    opts: &OpenOptions,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    open(
        KeySource::Key(k),
        meta,
        name,
        Cursor::new(body),
        &mut out,
        opts,
    )
    .await?;
    Ok(out)
}

async fn seal_bytes(name: &str, data: &[u8]) -> (EnvelopeMetadata, Vec<u8>) {
    let mut body = Vec::new();
    let meta = seal(&kek(), name, Cursor::new(data), &mut body)
        .await
        .unwrap();
    (meta, body)
}

/// A small-region (v2.1, 16 B) object with a pinned DEK: cheap multi-region attacks.
async fn seal_small(name: &str, data: &[u8], dek: [u8; 32]) -> (EnvelopeMetadata, Vec<u8>) {
    let key = SealingKey::__with_pinned_dek_for_tests(&kek(), name, dek, Protocol::V2_1, 16)
        .await
        .unwrap();
    let (meta, body) = seal_with(key, Cursor::new(data), Vec::new()).unwrap();
    (meta, body)
}

fn err_text(r: Result<Vec<u8>, EnvelopeError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {} bytes", v.len()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn reference_vector_v2_0_decrypts() {
    let meta = EnvelopeMetadata {
        encryption_data: python_json(V20_WRAPPED, "2.0", 4194304),
        integrity: None,
    };
    let out = open_bytes(&meta, "x", &hex::decode(V20_BODY).unwrap(), &foreign())
        .await
        .unwrap();
    assert_eq!(out, b"hello, envelope");
}

#[tokio::test]
async fn reference_vector_v2_1_decrypts() {
    let meta = EnvelopeMetadata {
        encryption_data: python_json(V21_WRAPPED, "2.1", 16),
        integrity: None,
    };
    let out = open_bytes(&meta, "x", &hex::decode(V21_BODY).unwrap(), &foreign())
        .await
        .unwrap();
    assert_eq!(out, (0u8..0x28).collect::<Vec<_>>());
}

#[tokio::test]
async fn encryptor_reproduces_reference_vectors() {
    let key = SealingKey::__with_pinned_dek_for_tests(
        &kek(),
        "hello.txt",
        cek(),
        Protocol::V2_0,
        REGION_DATA_LEN_V2_0,
    )
    .await
    .unwrap();
    let (meta, body) = seal_with(key, Cursor::new(b"hello, envelope"), Vec::new()).unwrap();
    assert_eq!(hex::encode(&body), V20_BODY);
    let ed = EncryptionData::from_json(&meta.encryption_data).unwrap();
    let v = ed.validate(false).unwrap();
    assert_eq!(hex::encode(&v.wrapped), V20_WRAPPED);
    // Python's key order.
    let j = &meta.encryption_data;
    let pos: Vec<usize> = [
        "WrappedContentKey",
        "EncryptionAgent",
        "EncryptedRegionInfo",
        "KeyWrappingMetadata",
        "EncryptionMode",
    ]
    .iter()
    .map(|k| j.find(k).unwrap())
    .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{j}");
    assert!(j.contains("\"DataLength\":4194304,\"NonceLength\":12"));

    let (_, body21) = seal_small("v21", &(0u8..0x28).collect::<Vec<_>>(), cek()).await;
    assert_eq!(hex::encode(&body21), V21_BODY);
}

#[tokio::test]
async fn round_trips_at_region_edges() {
    const M: usize = 4 * 1024 * 1024;
    for size in [0usize, 1, 15, M, M + 1, 2 * M + 5] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let (meta, body) = seal_bytes("obj", &data).await;
        let regions = size.div_ceil(M);
        assert_eq!(body.len(), size + regions * 28, "size {size}");
        let out = open_bytes(&meta, "obj", &body, &OpenOptions::default())
            .await
            .unwrap();
        assert!(out == data, "round trip of {size} bytes");
        let rec = IntegrityRecord::from_json(meta.integrity.as_deref().unwrap()).unwrap();
        assert_eq!(rec.plaintext_length, size as u64);
        assert_eq!(rec.region_count, regions as u64);
    }
}

#[tokio::test]
async fn multi_region_round_trip_small_regions() {
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let (meta, body) = seal_small("many", &data, [9u8; 32]).await;
    assert_eq!(body.len(), 1000 + 63 * 28);
    let out = open_bytes(&meta, "many", &body, &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(out, data);
}

#[tokio::test]
async fn metadata_pairs_and_case_insensitive_lookup() {
    let (meta, _) = seal_bytes("n", b"abc").await;
    let pairs = meta.to_pairs();
    assert_eq!(pairs[0].0, ENCRYPTION_DATA_NAME);
    assert_eq!(pairs[1].0, INTEGRITY_NAME);
    let shouted: Vec<(String, String)> = vec![
        ("Other".into(), "x".into()),
        ("EncryptionData".into(), meta.encryption_data.clone()),
        ("CMKVAULTINTEGRITY".into(), meta.integrity.clone().unwrap()),
    ];
    assert_eq!(EnvelopeMetadata::from_pairs(&shouted).unwrap(), meta);
    let none: Vec<(String, String)> = vec![("a".into(), "b".into())];
    let e = EnvelopeMetadata::from_pairs(&none).unwrap_err();
    assert!(e.to_string().contains("no encryptiondata"), "{e}");
}

#[tokio::test]
async fn container_round_trip_and_header() {
    let data = b"a small file".to_vec();
    let mut file = Cursor::new(Vec::new());
    let meta = seal_container(&kek(), "small.bin", Cursor::new(&data), &mut file)
        .await
        .unwrap();
    let bytes = file.into_inner();
    assert_eq!(&bytes[..8], b"CMKENV1\n");
    let mut r = Cursor::new(&bytes);
    assert_eq!(read_container(&mut r).unwrap(), meta);
    let k = kek();
    let mut out = Vec::new();
    open_container(
        KeySource::Resolver(&k),
        "small.bin",
        Cursor::new(&bytes),
        &mut out,
        &OpenOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(out, data);
    let e = read_container(Cursor::new(b"NOTACMK\n\0\x01\0\0\0\0")).unwrap_err();
    assert!(e.to_string().contains("bad magic"), "{e}");
}

// ----- attack table (reference §3.5) -----

fn region(body: &[u8], i: usize) -> &[u8] {
    &body[i * 44..((i + 1) * 44).min(body.len())]
}

#[tokio::test]
async fn attack_bit_flip() {
    let (meta, mut body) = seal_small("o", &[1u8; 64], [1; 32]).await;
    body[20] ^= 1;
    let e = err_text(open_bytes(&meta, "o", &body, &OpenOptions::default()).await);
    assert!(e.contains("region 0 does not authenticate"), "{e}");
}

#[tokio::test]
async fn attack_region_swap_duplicate_and_drop() {
    let (meta, body) = seal_small("o", &[2u8; 64], [2; 32]).await; // 4 regions of 44 B
    let swapped = [
        region(&body, 1),
        region(&body, 0),
        region(&body, 2),
        region(&body, 3),
    ]
    .concat();
    let dup = [
        region(&body, 0),
        region(&body, 0),
        region(&body, 2),
        region(&body, 3),
    ]
    .concat();
    let dropped = [region(&body, 0), region(&body, 2), region(&body, 3)].concat();
    for (what, b) in [
        ("swap", swapped),
        ("duplicate", dup),
        ("drop middle", dropped),
    ] {
        let e = err_text(open_bytes(&meta, "o", &b, &OpenOptions::default()).await);
        assert!(e.contains("nonce that does not belong"), "{what}: {e}");
        // Even without the integrity record the position check catches it.
        let e = err_text(open_bytes(&meta, "o", &b, &foreign()).await);
        assert!(
            e.contains("nonce that does not belong"),
            "{what} (foreign): {e}"
        );
    }
}

#[tokio::test]
async fn attack_truncation_at_boundary_and_empty_body() {
    let (meta, body) = seal_small("o", &[3u8; 64], [3; 32]).await;
    let e = err_text(open_bytes(&meta, "o", &body[..3 * 44], &OpenOptions::default()).await);
    assert!(e.contains("truncated"), "{e}");
    let e = err_text(open_bytes(&meta, "o", &[], &OpenOptions::default()).await);
    assert!(e.contains("truncated"), "{e}");
    // Appended region (from the same object) is refused too.
    let longer = [&body[..], region(&body, 3)].concat();
    assert!(open_bytes(&meta, "o", &longer, &OpenOptions::default())
        .await
        .is_err());
    // Without the integrity record (an Azure-written object) the gap is the SDKs' gap.
    let no_rec = EnvelopeMetadata {
        integrity: None,
        ..meta.clone()
    };
    let e = err_text(open_bytes(&no_rec, "o", &body[..44], &OpenOptions::default()).await);
    assert!(e.contains("no cmkvaultintegrity record"), "{e}");
    assert_eq!(
        open_bytes(&no_rec, "o", &body[..44], &foreign())
            .await
            .unwrap()
            .len(),
        16
    );
}

#[tokio::test]
async fn attack_splice_from_another_object() {
    let (meta, body) = seal_small("o", &[4u8; 64], [4; 32]).await;
    let (_, other) = seal_small("o", &[4u8; 64], [5; 32]).await;
    let spliced = [
        region(&body, 0),
        region(&other, 1),
        region(&body, 2),
        region(&body, 3),
    ]
    .concat();
    let e = err_text(open_bytes(&meta, "o", &spliced, &OpenOptions::default()).await);
    assert!(e.contains("region 1 does not authenticate"), "{e}");
}

#[tokio::test]
async fn attack_name_swap() {
    let (meta, body) = seal_bytes("train/shard-0001.bin", b"shard one").await;
    let e = err_text(
        open_bytes(
            &meta,
            "train/shard-0002.bin",
            &body,
            &OpenOptions::default(),
        )
        .await,
    );
    assert!(
        e.contains("sealed under the name \"train/shard-0001.bin\"")
            && e.contains("\"train/shard-0002.bin\""),
        "{e}"
    );
    // Editing the recorded name does not help: the MAC covers the name read under.
    let mut rec = IntegrityRecord::from_json(meta.integrity.as_deref().unwrap()).unwrap();
    rec.object_name = "train/shard-0002.bin".into();
    let forged = EnvelopeMetadata {
        integrity: Some(rec.to_json().unwrap()),
        ..meta.clone()
    };
    let e = err_text(
        open_bytes(
            &forged,
            "train/shard-0002.bin",
            &body,
            &OpenOptions::default(),
        )
        .await,
    );
    assert!(e.contains("does not verify"), "{e}");
    // Lengths edited in the record fail as well.
    let mut rec = IntegrityRecord::from_json(meta.integrity.as_deref().unwrap()).unwrap();
    rec.plaintext_length = 0;
    rec.region_count = 0;
    let forged = EnvelopeMetadata {
        integrity: Some(rec.to_json().unwrap()),
        ..meta
    };
    let e = err_text(
        open_bytes(
            &forged,
            "train/shard-0001.bin",
            &[],
            &OpenOptions::default(),
        )
        .await,
    );
    assert!(e.contains("does not verify"), "{e}");
}

#[tokio::test]
async fn attack_protocol_relabel() {
    let (meta, body) = seal_small("o", &[5u8; 40], [6; 32]).await;
    let relabelled = EnvelopeMetadata {
        encryption_data: meta
            .encryption_data
            .replace("\"Protocol\":\"2.1\"", "\"Protocol\":\"2.0\""),
        ..meta
    };
    assert_ne!(relabelled.encryption_data, "");
    let e = err_text(open_bytes(&relabelled, "o", &body, &OpenOptions::default()).await);
    assert!(e.contains("protocol prefix"), "{e}");
    // And 1.0 is refused outright.
    let v1 = EnvelopeMetadata {
        encryption_data: relabelled.encryption_data.replace("\"2.0\"", "\"1.0\""),
        integrity: None,
    };
    let e = err_text(open_bytes(&v1, "o", &body, &foreign()).await);
    assert!(e.contains("protocol 1.0"), "{e}");
}

#[tokio::test]
async fn attack_data_length_edits() {
    let (meta, body) = seal_small("o", &[6u8; 64], [7; 32]).await;
    let edit = |to: &str| EnvelopeMetadata {
        encryption_data: meta.encryption_data.replace("\"DataLength\":16", to),
        integrity: meta.integrity.clone(),
    };
    let e = err_text(
        open_bytes(
            &edit("\"DataLength\":32"),
            "o",
            &body,
            &OpenOptions::default(),
        )
        .await,
    );
    assert!(
        e.contains("does not verify") || e.contains("authenticate"),
        "{e}"
    );
    // Without the record (an Azure-written object) the region layout shifts: tags and nonce
    // positions no longer line up.
    let no_rec = EnvelopeMetadata {
        integrity: None,
        ..edit("\"DataLength\":32")
    };
    let e = err_text(open_bytes(&no_rec, "o", &body, &foreign()).await);
    assert!(e.contains("region 0 does not authenticate"), "{e}");
    for absurd in [
        "\"DataLength\":8",
        "\"DataLength\":1073741825",
        "\"DataLength\":18446744073709551615",
    ] {
        let e = err_text(open_bytes(&edit(absurd), "o", &body, &foreign()).await);
        assert!(e.contains("outside 16 B"), "{absurd}: {e}");
    }
    let e = err_text(open_bytes(&edit("\"DataLength\":\"16\""), "o", &body, &foreign()).await);
    assert!(e.contains("not valid JSON"), "{e}");
    let nl = EnvelopeMetadata {
        encryption_data: meta
            .encryption_data
            .replace("\"NonceLength\":12", "\"NonceLength\":16"),
        integrity: None,
    };
    let e = err_text(open_bytes(&nl, "o", &body, &foreign()).await);
    assert!(e.contains("NonceLength 16"), "{e}");
}

#[tokio::test]
async fn attack_wrap_alg_relabel() {
    let (meta, body) = seal_bytes("o", b"data").await;
    for (to, msg) in [
        ("RSA1_5", "RSA1_5 is refused"),
        ("A128KW", "not allowed"),
        ("dir", "unknown key-wrap algorithm"),
    ] {
        let m = EnvelopeMetadata {
            encryption_data: meta.encryption_data.replace(
                "\"Algorithm\":\"A256KW\"",
                &format!("\"Algorithm\":\"{to}\""),
            ),
            ..meta.clone()
        };
        let e = err_text(open_bytes(&m, "o", &body, &OpenOptions::default()).await);
        assert!(e.contains(msg), "{to}: {e}");
    }
    // With allow_legacy, RSA1_5 passes the allowlist and the key itself refuses.
    let m = EnvelopeMetadata {
        encryption_data: meta
            .encryption_data
            .replace("\"Algorithm\":\"A256KW\"", "\"Algorithm\":\"RSA1_5\""),
        ..meta
    };
    let opts = OpenOptions {
        allow_legacy: true,
        ..OpenOptions::default()
    };
    let e = err_text(open_bytes(&m, "o", &body, &opts).await);
    assert!(e.contains("key local:kek1"), "{e}");
}

#[tokio::test]
async fn attack_random_and_mixed_nonces() {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let dek = [8u8; 32];
    let (meta, _) = seal_small("o", &[7u8; 32], dek).await;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &dek).unwrap());
    let build = |nonces: &[[u8; 12]]| -> Vec<u8> {
        let mut body = Vec::new();
        for n in nonces {
            let mut data = vec![7u8; 16];
            key.seal_in_place_append_tag(Nonce::assume_unique_for_key(*n), Aad::empty(), &mut data)
                .unwrap();
            body.extend_from_slice(n);
            body.extend_from_slice(&data);
        }
        body
    };
    use cmkvault_envelope::format::{dotnet_nonce, java_nonce, python_nonce};
    // Each scheme alone is accepted (interop with Java and .NET writers).
    for scheme in [python_nonce, java_nonce, dotnet_nonce] {
        let b = build(&[scheme(0), scheme(1)]);
        assert_eq!(
            open_bytes(&meta, "o", &b, &OpenOptions::default())
                .await
                .unwrap(),
            vec![7u8; 32]
        );
    }
    let random = build(&[[0x5a; 12], python_nonce(1)]);
    let e = err_text(open_bytes(&meta, "o", &random, &OpenOptions::default()).await);
    assert!(e.contains("region 0 has a nonce"), "{e}");
    // Python region 0 (all zero, also Java's) then .NET region 1: no single scheme holds.
    let mixed = build(&[python_nonce(0), dotnet_nonce(1)]);
    let e = err_text(open_bytes(&meta, "o", &mixed, &OpenOptions::default()).await);
    assert!(e.contains("region 1 has a nonce"), "{e}");
}

#[tokio::test]
async fn wrong_key_and_kid_mismatch_name_the_key() {
    let (meta, body) = seal_bytes("o", b"data").await;
    let other = LocalKey::from_oct("local:other", &[1u8; 32]).unwrap();
    let e = err_text(open_with(&other, &meta, "o", &body, &OpenOptions::default()).await);
    assert!(
        e.contains("key local:kek1") && e.contains("wrong key"),
        "{e}"
    );
    let same_kid = LocalKey::from_oct(KID, &[1u8; 32]).unwrap();
    let e = err_text(open_with(&same_kid, &meta, "o", &body, &OpenOptions::default()).await);
    assert!(e.contains("unwrap failed"), "{e}");
}

#[tokio::test]
async fn encrypt_writer_with_odd_write_sizes() {
    use std::io::Write as _;
    let data: Vec<u8> = (0..777u32).map(|i| (i * 13) as u8).collect();
    let (_, expected_body) = seal_small("odd", &data, [11; 32]).await;
    let key = SealingKey::__with_pinned_dek_for_tests(&kek(), "odd", [11; 32], Protocol::V2_1, 16)
        .await
        .unwrap();
    let mut w = cmkvault_envelope::EncryptWriter::new(key, Vec::new()).unwrap();
    let mut rest = &data[..];
    let mut step = 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        w.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
        step = step % 37 + 5;
    }
    assert_eq!(w.plaintext_len(), 777);
    let (meta, body) = w.finalize().unwrap();
    assert_eq!(body, expected_body);
    // Read back one byte at a time.
    let env = cmkvault_envelope::Envelope::parse(&meta, &OpenOptions::default()).unwrap();
    let dek = env.unwrap_dek(&kek()).await.unwrap();
    let mut r = cmkvault_envelope::DecryptReader::new(
        Cursor::new(&body),
        &env,
        &dek,
        "odd",
        &OpenOptions::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        use std::io::Read as _;
        match r.read(&mut b).unwrap() {
            0 => break,
            _ => out.push(b[0]),
        }
    }
    assert_eq!(out, data);
}

/// Several batches of 1 MiB regions: batches are sealed and opened on worker threads while the
/// caller reads the next one and writes the previous one. `write` and `read_from` give the same
/// body; a region tampered in a later batch fails naming that region, after exactly the batches
/// before it were handed out (never its own batch, never less); swaps and truncation across
/// batches are caught.
#[tokio::test]
async fn multi_batch_streams_keep_region_order() {
    use std::io::{Read as _, Write as _};
    const D: usize = 1 << 20;
    let data: Vec<u8> = (0..16 * D + 1000).map(|i| (i * 31 + 7) as u8).collect();
    let k = kek();
    let key =
        || SealingKey::__with_pinned_dek_for_tests(&k, "big", [12; 32], Protocol::V2_1, D as u64);
    let (meta, body) = seal_with(key().await.unwrap(), Cursor::new(&data), Vec::new()).unwrap();
    assert_eq!(body.len(), data.len() + 17 * 28);
    let mut w = cmkvault_envelope::EncryptWriter::new(key().await.unwrap(), Vec::new()).unwrap();
    for chunk in data.chunks(333_333) {
        w.write_all(chunk).unwrap();
    }
    let (meta2, body2) = w.finalize().unwrap();
    assert_eq!(meta2, meta);
    assert!(body2 == body, "write() and read_from() bodies differ");
    let out = open_bytes(&meta, "big", &body, &OpenOptions::default())
        .await
        .unwrap();
    assert!(out == data, "round trip");

    // Region 15 tampered: read 64 KiB at a time until the error.
    let slot = D + 28;
    let mut bad = body.clone();
    bad[15 * slot + 100] ^= 1;
    let env = cmkvault_envelope::Envelope::parse(&meta, &OpenOptions::default()).unwrap();
    let dek = env.unwrap_dek(&kek()).await.unwrap();
    let mut r = cmkvault_envelope::DecryptReader::new(
        Cursor::new(&bad),
        &env,
        &dek,
        "big",
        &OpenOptions::default(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let e = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("tampered body read to its end"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.to_string(),
        }
    };
    assert!(e.contains("region 15 does not authenticate"), "{e}");
    // The batch rule: one region per core, at most 8.
    let batch = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    assert_eq!(
        got.len(),
        15 / batch * batch * D,
        "plaintext before the error"
    );
    assert!(got[..] == data[..got.len()]);
    // Later reads keep failing.
    assert!(r.read(&mut buf).is_err());

    // Regions 9 and 10 swapped; the body cut after 12 regions.
    let swapped = [
        &body[..9 * slot],
        &body[10 * slot..11 * slot],
        &body[9 * slot..10 * slot],
        &body[11 * slot..],
    ]
    .concat();
    let e = err_text(open_bytes(&meta, "big", &swapped, &OpenOptions::default()).await);
    assert!(e.contains("nonce that does not belong"), "{e}");
    let e = err_text(open_bytes(&meta, "big", &body[..12 * slot], &OpenOptions::default()).await);
    assert!(e.contains("truncated"), "{e}");
}
