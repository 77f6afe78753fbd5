//! Bearer tokens: short-lived ES256 JWTs signed with the server's token-signing key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use cmkvault_crypto::TokenSigningKey;
use serde::{Deserialize, Serialize};

/// The audience every vault token carries (the scope is `https://vault.azure.net/.default`).
pub const VAULT_AUDIENCE: &str = "https://vault.azure.net";

/// Object id of the bootstrap administrator (the break-glass identity of `cmkvault token`).
pub const BOOTSTRAP_ADMIN_OID: &str = "00000000-0000-0000-0000-00000000ad01";

/// Allowed clock skew when checking `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 120;

/// The claims of a vault token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject (same as `oid`).
    pub sub: String,
    /// Object id of the principal.
    pub oid: String,
    /// Tenant id.
    pub tid: String,
    /// Application (client) id.
    pub appid: String,
    /// Audience.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
}

/// Why a token was refused. Deliberately coarse: the caller learns only that it failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a well-formed JWT.
    #[error("the token is malformed")]
    Malformed,
    /// Bad signature or algorithm.
    #[error("the token signature is invalid")]
    BadSignature,
    /// Expired or not yet valid.
    #[error("the token is expired or not yet valid")]
    Expired,
    /// Wrong audience or tenant.
    #[error("the token was issued for another audience or tenant")]
    WrongAudience,
    /// Issued by another authority (`iss` is not this authority's issuer).
    #[error("the token was issued by another authority")]
    WrongIssuer,
    /// Signing failed.
    #[error("the token could not be signed")]
    Signing,
}

/// Most verified tokens remembered; past this the memory is emptied.
const VERIFIED_CACHE_MAX: usize = 10_000;

/// Issues and verifies tokens for one tenant.
pub struct TokenAuthority {
    key: TokenSigningKey,
    tenant_id: String,
    issuer: String,
    /// Tokens whose signature, audience and tenant already checked out, so a client reusing its
    /// token (every SDK does, for up to an hour) costs a map lookup instead of an ECDSA verify.
    /// Expiry and `nbf` are still checked on every use.
    verified: std::sync::RwLock<std::collections::HashMap<String, Claims>>,
}

impl TokenAuthority {
    /// An authority for `tenant_id` signing with `key`.
    pub fn new(key: TokenSigningKey, tenant_id: String) -> Self {
        let issuer = format!("https://cmkvault/{tenant_id}/v2.0");
        TokenAuthority {
            key,
            tenant_id,
            issuer,
            verified: Default::default(),
        }
    }

    /// The tenant id (a GUID made at initialisation).
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The public half of the signing key (for JWKS and checkpoint verification).
    pub fn public_jwk(&self) -> cmkvault_crypto::PublicJwk {
        self.key.public_jwk()
    }

    /// A short, stable id of the signing key (`kid`): hex of SHA-256(x ‖ y), 16 characters.
    pub fn key_id(&self) -> String {
        let jwk = self.key.public_jwk();
        let mut xy = jwk.x.unwrap_or_default();
        xy.extend(jwk.y.unwrap_or_default());
        hex::encode(&cmkvault_crypto::sha256(&xy)[..8])
    }

    /// The signing key itself (the audit writer signs checkpoints with it).
    pub fn signing_key(&self) -> &TokenSigningKey {
        &self.key
    }

    /// Signs a token for a principal, valid from `now` for `ttl_secs`.
    pub fn issue(
        &self,
        oid: &str,
        appid: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: oid.to_string(),
            oid: oid.to_string(),
            tid: self.tenant_id.clone(),
            appid: appid.to_string(),
            aud: VAULT_AUDIENCE.to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
        };
        let header = B64.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let body = serde_json::to_vec(&claims).map_err(|_| TokenError::Signing)?;
        let signing_input = format!("{header}.{}", B64.encode(body));
        let sig = self
            .key
            .sign(signing_input.as_bytes())
            .map_err(|_| TokenError::Signing)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// The issuer (`iss`) of this authority's tokens; [`Self::verify`] refuses any other.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies signature, algorithm, issuer, audience, tenant, `exp` and `nbf`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let cached = self
            .verified
            .read()
            .ok()
            .and_then(|m| m.get(token).cloned());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = self.verify_uncached(token)?;
                if let Ok(mut m) = self.verified.write() {
                    if m.len() >= VERIFIED_CACHE_MAX {
                        m.clear();
                    }
                    m.insert(token.to_string(), c.clone());
                }
                c
            }
        };
        if now > claims.exp + CLOCK_SKEW_SECS || now + CLOCK_SKEW_SECS < claims.nbf {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Signature, algorithm, issuer, audience and tenant (no time checks).
    fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
            return Err(TokenError::BadSignature);
        }
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        let signing_input_len = h.len() + 1 + p.len();
        let signing_input = &token.as_bytes()[..signing_input_len];
        if !self.key.verify(signing_input, &sig) {
            return Err(TokenError::BadSignature);
        }
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud.trim_end_matches('/') != VAULT_AUDIENCE || claims.tid != self.tenant_id {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_and_refusals() {
        let a = TokenAuthority::new(TokenSigningKey::generate().unwrap(), "t1".into());
        let t = a.issue("oid1", "app", 1000, 3600).unwrap();
        let c = a.verify(&t, 1001).unwrap();
        assert_eq!((c.oid.as_str(), c.tid.as_str()), ("oid1", "t1"));
        assert_eq!(
            a.verify(&t, 1000 + 3600 + CLOCK_SKEW_SECS + 1),
            Err(TokenError::Expired)
        );
        // another key's token
        let b = TokenAuthority::new(TokenSigningKey::generate().unwrap(), "t1".into());
        assert_eq!(b.verify(&t, 1001), Err(TokenError::BadSignature));
        // tampered claims
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(
            String::from_utf8(B64.decode(parts[1]).unwrap())
                .unwrap()
                .replace("oid1", "oid2"),
        );
        parts[1] = &forged;
        assert_eq!(
            a.verify(&parts.join("."), 1001),
            Err(TokenError::BadSignature)
        );
        assert_eq!(a.verify("abc", 1), Err(TokenError::Malformed));
        // signed by the right key, but naming another issuer
        let mut claims = c.clone();
        claims.iss = "https://login.microsoftonline.com/t1/v2.0".into();
        let header = B64.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let input = format!(
            "{header}.{}",
            B64.encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = a.key.sign(input.as_bytes()).unwrap();
        let other_iss = format!("{input}.{}", B64.encode(sig));
        assert_eq!(a.verify(&other_iss, 1001), Err(TokenError::WrongIssuer));
        assert_eq!(a.issuer(), c.iss);
        assert_eq!(a.verify("a.b.c.d", 1), Err(TokenError::Malformed));
    }
}
