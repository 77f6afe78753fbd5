//! Known-answer tests from RFC 7515 (JWS) Appendix A and RFC 7520 (JOSE cookbook) section 5.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmkvault_crypto::*;
use common::*;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s)
        .expect("test vector is valid base64url")
}

fn z(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    Some(Zeroizing::new(b64(s)))
}

#[allow(clippy::too_many_arguments)]
fn rsa_jwk(
    n: &str,
    e: &str,
    d: &str,
    p: &str,
    q: &str,
    dp: &str,
    dq: &str,
    qi: &str,
) -> JwkPrivate {
    JwkPrivate {
        kty: "RSA".into(),
        n: Some(b64(n)),
        e: Some(b64(e)),
        d: z(d),
        p: z(p),
        q: z(q),
        dp: z(dp),
        dq: z(dq),
        qi: z(qi),
        ..Default::default()
    }
}

fn ec_jwk(crv: &str, x: &str, y: &str, d: &str) -> JwkPrivate {
    JwkPrivate {
        kty: "EC".into(),
        crv: Some(crv.into()),
        x: Some(b64(x)),
        y: Some(b64(y)),
        d: z(d),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 7515 Appendix A.2: RS256 (2048-bit key, deterministic signature).

const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
const A2_INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

fn a2_jwk() -> JwkPrivate {
    rsa_jwk(A2_N, "AQAB", A2_D, A2_P, A2_Q, A2_DP, A2_DQ, A2_QI)
}

#[test]
fn rfc7515_a2_rs256_import_and_sign() {
    let key = PrivateKey::from_jwk(&a2_jwk()).unwrap();
    assert_eq!(key.family(), KeyFamily::Rsa);
    assert_eq!(key.key_size_bits(), 2048);
    let jwk = key.public_jwk();
    assert_eq!(jwk.n, Some(b64(A2_N)));
    assert_eq!(jwk.e, Some(vec![1, 0, 1]));

    let digest = sha256(A2_INPUT.as_bytes());
    assert_eq!(key.sign(jwa("RS256"), &digest).unwrap(), b64(A2_SIG));
    assert!(key.verify(jwa("RS256"), &digest, &b64(A2_SIG)).unwrap());
    assert!(!key.verify(jwa("PS256"), &digest, &b64(A2_SIG)).unwrap());

    // Survives sealing.
    let back = from_bytes(&to_bytes(&key)).unwrap();
    assert_eq!(back.public_jwk(), jwk);
    assert_eq!(back.sign(jwa("RS256"), &digest).unwrap(), b64(A2_SIG));
}

#[test]
fn rsa_import_rejects_inconsistent_or_partial_keys() {
    // p and q swapped with dp/dq left alone: RSA_check_key must refuse.
    let mut j = a2_jwk();
    std::mem::swap(&mut j.p, &mut j.q);
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    // A corrupted private exponent.
    let mut j = a2_jwk();
    if let Some(d) = j.d.as_mut() {
        d[10] ^= 1;
    }
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    // A different modulus.
    let mut j = a2_jwk();
    if let Some(n) = j.n.as_mut() {
        n[200] ^= 1;
    }
    assert!(matches!(
        PrivateKey::from_jwk(&j),
        Err(CryptoError::InvalidKey(_))
    ));
    // n, e, d only.
    let mut j = a2_jwk();
    j.p = None;
    j.dp = None;
    match PrivateKey::from_jwk(&j) {
        Err(CryptoError::InvalidKey(m)) => assert!(m.contains("only as n, e and d"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Leading zero bytes on n and e (non-canonical but seen in the wild) are accepted.
    let mut j = a2_jwk();
    j.n = Some([&[0u8][..], &b64(A2_N)].concat());
    j.e = Some(vec![0, 1, 0, 1]);
    let key = PrivateKey::from_jwk(&j).unwrap();
    assert_eq!(key.public_jwk().n, Some(b64(A2_N)));
    assert_eq!(key.public_jwk().e, Some(vec![1, 0, 1]));
}

// ---------------------------------------------------------------------------------------------
// RFC 7515 Appendix A.3 (ES256) and A.4 (ES512): verify the published signatures.

const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_INPUT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A3_SIG: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

const A4_X: &str =
    "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk";
const A4_Y: &str =
    "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2";
const A4_D: &str =
    "AY5pb7A0UFiB3RELSD64fTLOSV_jazdF7fLYyuTw8lOfRhWg6Y6rUrPAxerEzgdRhajnu0ferB0d53vM9mE15j2C";
const A4_INPUT: &str = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA";
const A4_SIG: &str = "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";

fn sha512(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, data)
        .as_ref()
        .to_vec()
}

#[test]
fn rfc7515_a3_es256() {
    let key = PrivateKey::from_jwk(&ec_jwk("P-256", A3_X, A3_Y, A3_D)).unwrap();
    assert_eq!(key.curve(), Some(Curve::P256));
    let jwk = key.public_jwk();
    assert_eq!(jwk.x, Some(b64(A3_X)));
    assert_eq!(jwk.y, Some(b64(A3_Y)));
    let digest = sha256(A3_INPUT.as_bytes());
    assert!(key.verify(jwa("ES256"), &digest, &b64(A3_SIG)).unwrap());
    let mine = key.sign(jwa("ES256"), &digest).unwrap();
    assert!(key.verify(jwa("ES256"), &digest, &mine).unwrap());
    // The same key as a token signer (PKCS#8 from the sealed form) verifies the JWS directly.
    let bytes = to_bytes(&key);
    let token = TokenSigningKey::from_pkcs8(&bytes[2..]).unwrap();
    assert!(token.verify(A3_INPUT.as_bytes(), &b64(A3_SIG)));
    assert_eq!(token.public_jwk(), jwk);
}

#[test]
fn rfc7515_a4_es512() {
    let key = PrivateKey::from_jwk(&ec_jwk("P-521", A4_X, A4_Y, A4_D)).unwrap();
    assert_eq!(key.curve(), Some(Curve::P521));
    assert_eq!(key.key_size_bits(), 521);
    let jwk = key.public_jwk();
    assert_eq!(jwk.x, Some(b64(A4_X)));
    assert_eq!(jwk.y, Some(b64(A4_Y)));
    let digest = sha512(A4_INPUT.as_bytes());
    let sig = b64(A4_SIG);
    assert_eq!(sig.len(), 132);
    assert!(key.verify(jwa("ES512"), &digest, &sig).unwrap());
    let mut bad = sig.clone();
    bad[70] ^= 4;
    assert!(!key.verify(jwa("ES512"), &digest, &bad).unwrap());
}

// ---------------------------------------------------------------------------------------------
// RFC 7520 section 5.4 (P-384) and 5.5 (P-256) keys: import checks.

const C54_X: &str = "YU4rRUzdmVqmRtWOs2OpDE_T5fsNIodcG8G5FWPrTPMyxpzsSOGaQLpe2FpxBmu2";
const C54_Y: &str = "A8-yxCHxkfBz3hKZfI1jUYMjUhsEveZ9THuwFjH2sCNdtksRJU7D5-SkgaFL1ETP";
const C54_D: &str = "iTx2pk7wW-GqJkHcEkFQb2EFyYcO7RugmaW3mRrQVAOUiPommT0IdnYK2xDlZh-j";
const C55_X: &str = "Ze2loSV3wrroKUN_4zhwGhCqo3Xhu1td4QjeQ5wIVR0";
const C55_Y: &str = "HlLtdXARY_f55A3fnzQbPcm6hgr34Mp8p-nuzQCE0Zw";
const C55_D: &str = "r_kHyZ-a06rmxM3yESK84r1otSg-aQcVStkRhA-iCM8";

#[test]
fn rfc7520_ec_imports() {
    let k384 = PrivateKey::from_jwk(&ec_jwk("P-384", C54_X, C54_Y, C54_D)).unwrap();
    assert_eq!(k384.curve(), Some(Curve::P384));
    assert_eq!(k384.public_jwk().x, Some(b64(C54_X)));
    let d = [3u8; 48];
    let sig = k384.sign(jwa("ES384"), &d).unwrap();
    assert_eq!(sig.len(), 96);
    assert!(k384.verify(jwa("ES384"), &d, &sig).unwrap());

    let mut j = ec_jwk("P-256", C55_X, C55_Y, C55_D);
    j.kty = "EC-HSM".into();
    let k256 = PrivateKey::from_jwk(&j).unwrap();
    assert_eq!(k256.public_jwk().y, Some(b64(C55_Y)));

    // d from another key: refused.
    for bad in [
        ec_jwk("P-256", A3_X, A3_Y, C55_D),
        ec_jwk("P-256", C55_X, C55_Y, A3_D),
        ec_jwk("P-384", C54_X, C54_Y, &C54_D.replace('i', "j")),
    ] {
        match PrivateKey::from_jwk(&bad) {
            Err(CryptoError::InvalidKey(m)) => assert!(m.contains("does not match"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // Coordinates of the wrong curve / size.
    assert!(matches!(
        PrivateKey::from_jwk(&ec_jwk("P-256", C54_X, C54_Y, C54_D)),
        Err(CryptoError::InvalidKey(_))
    ));
    assert!(matches!(
        PrivateKey::from_jwk(&ec_jwk("P-384", A3_X, A3_Y, A3_D)),
        Err(CryptoError::InvalidKey(_))
    ));
    // The P-256 point is not on secp256k1.
    assert!(matches!(
        PrivateKey::from_jwk(&ec_jwk("P-256K", A3_X, A3_Y, A3_D)),
        Err(CryptoError::InvalidKey(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// RFC 7520 section 5.2: RSA-OAEP (4096-bit key) key encryption, then A256GCM content.

const S52_N: &str = "wbdxI55VaanZXPY29Lg5hdmv2XhvqAhoxUkanfzf2-5zVUxa6prHRrI4pP1AhoqJRlZfYtWWd5mmHRG2pAHIlh0ySJ9wi0BioZBl1XP2e-C-FyXJGcTy0HdKQWlrfhTm42EW7Vv04r4gfao6uxjLGwfpGrZLarohiWCPnkNrg71S2CuNZSQBIPGjXfkmIy2tl_VWgGnL22GplyXj5YlBLdxXp3XeStsqo571utNfoUTU8E4qdzJ3U1DItoVkPGsMwlmmnJiwA7sXRItBCivR4M5qnZtdw-7v4WuR4779ubDuJ5nalMv2S66-RPcnFAzWSKxtBDnFJJDGIUe7Tzizjg1nms0Xq_yPub_UOlWn0ec85FCft1hACpWG8schrOBeNqHBODFskYpUc2LC5JA2TaPF2dA67dg1TTsC_FupfQ2kNGcE1LgprxKHcVWYQb86B-HozjHZcqtauBzFNV5tbTuB-TpkcvJfNcFLlH3b8mb-H_ox35FjqBSAjLKyoeqfKTpVjvXhd09knwgJf6VKq6UC418_TOljMVfFTWXUxlnfhOOnzW6HSSzD1c9WrCuVzsUMv54szidQ9wf1cYWf3g5qFDxDQKis99gcDaiCAwM3yEBIzuNeeCa5dartHDb1xEB_HcHSeYbghbMjGfasvKn0aZRsnTyC0xhWBlsolZE";
const S52_D: &str = "n7fzJc3_WG59VEOBTkayzuSMM780OJQuZjN_KbH8lOZG25ZoA7T4Bxcc0xQn5oZE5uSCIwg91oCt0JvxPcpmqzaJZg1nirjcWZ-oBtVk7gCAWq-B3qhfF3izlbkosrzjHajIcY33HBhsy4_WerrXg4MDNE4HYojy68TcxT2LYQRxUOCf5TtJXvM8olexlSGtVnQnDRutxEUCwiewfmmrfveEogLx9EA-KMgAjTiISXxqIXQhWUQX1G7v_mV_Hr2YuImYcNcHkRvp9E7ook0876DhkO8v4UOZLwA1OlUX98mkoqwc58A_Y2lBYbVx1_s5lpPsEqbbH-nqIjh1fL0gdNfihLxnclWtW7pCztLnImZAyeCWAG7ZIfv-Rn9fLIv9jZ6r7r-MSH9sqbuziHN2grGjD_jfRluMHa0l84fFKl6bcqN1JWxPVhzNZo01yDF-1LiQnqUYSepPf6X3a2SOdkqBRiquE6EvLuSYIDpJq3jDIsgoL8Mo1LoomgiJxUwL_GWEOGu28gplyzm-9Q0U0nyhEf1uhSR8aJAQWAiFImWH5W_IQT9I7-yrindr_2fWQ_i1UgMsGzA7aOGzZfPljRy6z-tY_KuBG00-28S_aWvjyUc-Alp8AUyKjBZ-7CWH32fGWK48j1t-zomrwjL_mnhsPbGs0c9WsWgRzI-K8gE";
const S52_P: &str = "7_2v3OQZzlPFcHyYfLABQ3XP85Es4hCdwCkbDeltaUXgVy9l9etKghvM4hRkOvbb01kYVuLFmxIkCDtpi-zLCYAdXKrAK3PtSbtzld_XZ9nlsYa_QZWpXB_IrtFjVfdKUdMz94pHUhFGFj7nr6NNxfpiHSHWFE1zD_AC3mY46J961Y2LRnreVwAGNw53p07Db8yD_92pDa97vqcZOdgtybH9q6uma-RFNhO1AoiJhYZj69hjmMRXx-x56HO9cnXNbmzNSCFCKnQmn4GQLmRj9sfbZRqL94bbtE4_e0Zrpo8RNo8vxRLqQNwIy85fc6BRgBJomt8QdQvIgPgWCv5HoQ";
const S52_Q: &str = "zqOHk1P6WN_rHuM7ZF1cXH0x6RuOHq67WuHiSknqQeefGBA9PWs6ZyKQCO-O6mKXtcgE8_Q_hA2kMRcKOcvHil1hqMCNSXlflM7WPRPZu2qCDcqssd_uMbP-DqYthH_EzwL9KnYoH7JQFxxmcv5An8oXUtTwk4knKjkIYGRuUwfQTus0w1NfjFAyxOOiAQ37ussIcE6C6ZSsM3n41UlbJ7TCqewzVJaPJN5cxjySPZPD3Vp01a9YgAD6a3IIaKJdIxJS1ImnfPevSJQBE79-EXe2kSwVgOzvt-gsmM29QQ8veHy4uAqca5dZzMs7hkkHtw1z0jHV90epQJJlXXnH8Q";
const S52_DP: &str = "19oDkBh1AXelMIxQFm2zZTqUhAzCIr4xNIGEPNoDt1jK83_FJA-xnx5kA7-1erdHdms_Ef67HsONNv5A60JaR7w8LHnDiBGnjdaUmmuO8XAxQJ_ia5mxjxNjS6E2yD44USo2JmHvzeeNczq25elqbTPLhUpGo1IZuG72FZQ5gTjXoTXC2-xtCDEUZfaUNh4IeAipfLugbpe0JAFlFfrTDAMUFpC3iXjxqzbEanflwPvj6V9iDSgjj8SozSM0dLtxvu0LIeIQAeEgT_yXcrKGmpKdSO08kLBx8VUjkbv_3Pn20Gyu2YEuwpFlM_H1NikuxJNKFGmnAq9LcnwwT0jvoQ";
const S52_DQ: &str = "S6p59KrlmzGzaQYQM3o0XfHCGvfqHLYjCO557HYQf72O9kLMCfd_1VBEqeD-1jjwELKDjck8kOBl5UvohK1oDfSP1DleAy-cnmL29DqWmhgwM1ip0CCNmkmsmDSlqkUXDi6sAaZuntyukyflI-qSQ3C_BafPyFaKrt1fgdyEwYa08pESKwwWisy7KnmoUvaJ3SaHmohFS78TJ25cfc10wZ9hQNOrIChZlkiOdFCtxDqdmCqNacnhgE3bZQjGp3n83ODSz9zwJcSUvODlXBPc2AycH6Ci5yjbxt4Ppox_5pjm6xnQkiPgj01GpsUssMmBN7iHVsrE7N2iznBNCeOUIQ";
const S52_QI: &str = "FZhClBMywVVjnuUud-05qd5CYU0dK79akAgy9oX6RX6I3IIIPckCciRrokxglZn-omAY5CnCe4KdrnjFOT5YUZE7G_Pg44XgCXaarLQf4hl80oPEf6-jJ5Iy6wPRx7G2e8qLxnh9cOdf-kRqgOS3F48Ucvw3ma5V6KGMwQqWFeV31XtZ8l5cVI-I3NzBS7qltpUVgz2Ju021eyc7IlqgzR98qKONl27DuEES0aK0WE97jnsyO27Yp88Wa2RiBrEocM89QZI1seJiGDizHRUP4UZxw9zsXww46wy0P6f9grnYp7t8LkyDDk8eoI4KX6SNMNVcyVS9IWjlq8EzqZEKIA";
const S52_ENCRYPTED_KEY: &str = "rT99rwrBTbTI7IJM8fU3Eli7226HEB7IchCxNuh7lCiud48LxeolRdtFF4nzQibeYOl5S_PJsAXZwSXtDePz9hk-BbtsTBqC2UsPOdwjC9NhNupNNu9uHIVftDyucvI6hvALeZ6OGnhNV4v1zx2k7O1D89mAzfw-_kT3tkuorpDU-CpBENfIHX1Q58-Aad3FzMuo3Fn9buEP2yXakLXYa15BUXQsupM4A1GD4_H4Bd7V3u9h8Gkg8BpxKdUV9ScfJQTcYm6eJEBz3aSwIaK4T3-dwWpuBOhROQXBosJzS1asnuHtVMt2pKIIfux5BC6huIvmY7kzV7W7aIUrpYm_3H4zYvyMeq5pGqFmW2k8zpO878TRlZx7pZfPYDSXZyS0CfKKkMozT_qiCwZTSz4duYnt8hS4Z9sGthXn9uDqd6wycMagnQfOTs_lycTWmY-aqWVDKhjYNRf03NiwRtb5BE-tOdFwCASQj3uuAgPGrO2AWBe38UjQb0lvXn1SpyvYZ3WFc7WOJYaTa7A8DRn6MC6T-xDmMuxC0G7S2rscw5lQQU06MvZTlFOt0UvfuKBa03cxA_nIBIhLMjY2kOTxQMmpDPTr6Cbo8aKaOnx6ASE5Jx9paBpnNmOOKH35j_QlrQhDWUN6A2Gg8iFayJ69xDEdHAVCGRzN3woEI2ozDRs";
const S52_CEK: &str = "mYMfsggkTAm0TbvtlFh2hyoXnbEzJQjMxmgLN3d8xXA";
const S52_PROTECTED: &str = "eyJhbGciOiJSU0EtT0FFUCIsImtpZCI6InNhbXdpc2UuZ2FtZ2VlQGhvYmJpdG9uLmV4YW1wbGUiLCJlbmMiOiJBMjU2R0NNIn0";
const S52_IV: &str = "-nBoKLH0YkLZPSI9";
const S52_CIPHERTEXT: &str = "o4k2cnGN8rSSw3IDo1YuySkqeS_t2m1GXklSgqBdpACm6UJuJowOHC5ytjqYgRL-I-soPlwqMUf4UgRWWeaOGNw6vGW-xyM01lTYxrXfVzIIaRdhYtEMRBvBWbEwP7ua1DRfvaOjgZv6Ifa3brcAM64d8p5lhhNcizPersuhw5f-pGYzseva-TUaL8iWnctc-sSwy7SQmRkfhDjwbz0fz6kFovEgj64X1I5s7E6GLp5fnbYGLa1QUiML7Cc2GxgvI7zqWo0YIEc7aCflLG1-8BboVWFdZKLK9vNoycrYHumwzKluLWEbSVmaPpOslY2n525DxDfWaVFUfKQxMF56vn4B9QMpWAbnypNimbM8zVOw";
const S52_TAG: &str = "UCGiqJxhBI3IFVdPalHHvA";

/// The plaintext shared by the RFC 7520 section 5 examples.
const FRODO: &str = "You can trust us to stick with you through thick and thin\u{2013}to the bitter end. And you can trust us to keep any secret of yours\u{2013}closer than you keep it yourself. But you cannot trust us to let you face trouble alone, and go off without a word. We are your friends, Frodo.";

#[test]
fn rfc7520_5_2_rsa_oaep_4096_and_a256gcm() {
    let rsa = PrivateKey::from_jwk(&rsa_jwk(
        S52_N, "AQAB", S52_D, S52_P, S52_Q, S52_DP, S52_DQ, S52_QI,
    ))
    .unwrap();
    assert_eq!(rsa.key_size_bits(), 4096);
    let ek = b64(S52_ENCRYPTED_KEY);
    let cek = rsa.unwrap_key(jwa("RSA-OAEP"), &ek).unwrap();
    assert_eq!(*cek, b64(S52_CEK));
    let cek2 = rsa
        .decrypt(
            jwa("RSA-OAEP"),
            &CipherRequest {
                value: &ek,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(cek2, cek);
    // OAEP-256 must not accept an OAEP (SHA-1) ciphertext.
    assert!(matches!(
        rsa.unwrap_key(jwa("RSA-OAEP-256"), &ek),
        Err(CryptoError::DecryptionFailed)
    ));

    // Content: A256GCM under the CEK, AAD = ASCII of the protected header.
    let aes = PrivateKey::from_jwk(&JwkPrivate {
        kty: "oct".into(),
        k: Some(cek),
        ..Default::default()
    })
    .unwrap();
    let (ct, iv, tag) = (b64(S52_CIPHERTEXT), b64(S52_IV), b64(S52_TAG));
    let r = CipherRequest {
        value: &ct,
        iv: Some(&iv),
        aad: Some(S52_PROTECTED.as_bytes()),
        tag: Some(&tag),
    };
    assert_eq!(&*aes.decrypt(jwa("A256GCM"), &r).unwrap(), FRODO.as_bytes());
    let r = CipherRequest {
        aad: Some(&S52_PROTECTED.as_bytes()[1..]),
        ..r
    };
    assert!(matches!(
        aes.decrypt(jwa("A256GCM"), &r),
        Err(CryptoError::DecryptionFailed)
    ));

    // Every algorithm on the imported 4096-bit key.
    for (alg, n) in [("RS512", 64), ("PS256", 32), ("PS512", 64)] {
        let d = vec![9u8; n];
        let sig = rsa.sign(jwa(alg), &d).unwrap();
        assert_eq!(sig.len(), 512);
        assert!(rsa.verify(jwa(alg), &d, &sig).unwrap());
    }
    let out = rsa
        .encrypt(
            jwa("RSA-OAEP-256"),
            &CipherRequest {
                value: b"k",
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        &*rsa.unwrap_key(jwa("RSA-OAEP-256"), &out.value).unwrap(),
        b"k"
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 7520 section 5.6 (A128GCM direct) and 5.8 (A128KW).

#[test]
fn rfc7520_5_6_a128gcm() {
    let key = PrivateKey::from_jwk(&JwkPrivate {
        kty: "oct".into(),
        k: z("XctOhJAkA-pD9Lh7ZgW_2A"),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(key.key_size_bits(), 128);
    let protected = "eyJhbGciOiJkaXIiLCJraWQiOiI3N2M3ZTJiOC02ZTEzLTQ1Y2YtODY3Mi02MTdiNWI0NTI0M2EiLCJlbmMiOiJBMTI4R0NNIn0";
    let ct = b64("JW_i_f52hww_ELQPGaYyeAB6HYGcR559l9TYnSovc23XJoBcW29rHP8yZOZG7YhLpT1bjFuvZPjQS-m0IFtVcXkZXdH_lr_FrdYt9HRUYkshtrMmIUAyGmUnd9zMDB2n0cRDIHAzFVeJUDxkUwVAE7_YGRPdcqMyiBoCO-FBdE-Nceb4h3-FtBP-c_BIwCPTjb9o0SbdcdREEMJMyZBH8ySWMVi1gPD9yxi-aQpGbSv_F9N4IZAxscj5g-NJsUPbjk29-s7LJAGb15wEBtXphVCgyy53CoIKLHHeJHXex45Uz9aKZSRSInZI-wjsY0yu3cT4_aQ3i1o-tiE-F8Ios61EKgyIQ4CWao8PFMj8TTnp");
    let iv = b64("refa467QzzKx6QAB");
    let tag = b64("vbb32Xvllea2OtmHAdccRQ");
    let r = CipherRequest {
        value: &ct,
        iv: Some(&iv),
        aad: Some(protected.as_bytes()),
        tag: Some(&tag),
    };
    assert_eq!(&*key.decrypt(jwa("A128GCM"), &r).unwrap(), FRODO.as_bytes());
    assert!(matches!(
        key.decrypt(jwa("A256GCM"), &r),
        Err(CryptoError::UnsupportedAlgorithm { .. })
    ));
}

#[test]
fn rfc7520_5_8_a128kw() {
    let key = PrivateKey::from_jwk(&JwkPrivate {
        kty: "oct".into(),
        k: z("GZy6sIZ6wl9NJOKB-jnmVQ"),
        ..Default::default()
    })
    .unwrap();
    let cek = b64("aY5_Ghmk9KxWPBLu_glx1w");
    let wrapped = b64("CBI6oDw8MydIx1IBntf_lQcw2MmJKIQx");
    assert_eq!(key.wrap_key(jwa("A128KW"), &cek).unwrap(), wrapped);
    assert_eq!(
        key.wrap_key(jwa("CKM_AES_KEY_WRAP"), &cek).unwrap(),
        wrapped
    );
    assert_eq!(*key.unwrap_key(jwa("A128KW"), &wrapped).unwrap(), cek);
}

// ---------------------------------------------------------------------------------------------
// NIST SP 800-38A F.2.1 (CBC-AES128) and McGrew–Viega GCM test case 2 (AES-128, zero key).

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn nist_cbc_and_gcm() {
    let key = PrivateKey::from_jwk(&JwkPrivate {
        kty: "oct".into(),
        k: Some(Zeroizing::new(hex("2b7e151628aed2a6abf7158809cf4f3c"))),
        ..Default::default()
    })
    .unwrap();
    let iv = hex("000102030405060708090a0b0c0d0e0f");
    let pt = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
    let ct = hex("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2");
    let out = key
        .encrypt(
            jwa("A128CBC"),
            &CipherRequest {
                value: &pt,
                iv: Some(&iv),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.value, ct);
    let back = key
        .decrypt(
            jwa("A128CBC"),
            &CipherRequest {
                value: &ct,
                iv: Some(&iv),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(*back, pt);
    // CBCPAD of the same two blocks: same prefix, plus one full padding block.
    let padded = key
        .encrypt(
            jwa("A128CBCPAD"),
            &CipherRequest {
                value: &pt,
                iv: Some(&iv),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(&padded.value[..32], &ct[..]);
    assert_eq!(padded.value.len(), 48);

    let zero = PrivateKey::from_jwk(&JwkPrivate {
        kty: "oct".into(),
        k: Some(Zeroizing::new(vec![0u8; 16])),
        ..Default::default()
    })
    .unwrap();
    let ct = hex("0388dace60b6a392f328c2b971b2fe78");
    let tag = hex("ab6e47d42cec13bdf53a67b21257bddf");
    let r = CipherRequest {
        value: &ct,
        iv: Some(&[0u8; 12]),
        aad: None,
        tag: Some(&tag),
    };
    assert_eq!(*zero.decrypt(jwa("A128GCM"), &r).unwrap(), vec![0u8; 16]);
}
