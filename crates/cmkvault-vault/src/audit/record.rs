//! The record: what a request did ([`AuditEvent`]) and its Azure `AuditEvent` JSON, serialised
//! from typed structs with keys sorted at every level, as it is chained and stored.

use cmkvault_store::AuditRow;
use serde::Serialize;

/// The object id recorded as the caller of changes the server makes on its own (automatic
/// purge and rotation by the maintenance task). No token can carry it: it is not a principal.
pub const SYSTEM_PRINCIPAL_OID: &str = "00000000-0000-0000-0000-00000000515e";

/// What a request did, as the audit log records it (Azure `AuditEvent` fields).
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    /// Event time, Unix milliseconds.
    pub time_ms: i64,
    /// Vault name (empty for requests that reached no vault, such as token requests).
    pub vault: String,
    /// `operationName` (`KeyUnwrap`, `Authentication`, ...).
    pub operation: String,
    /// `operationVersion` (api-version).
    pub api_version: String,
    /// HTTP status.
    pub status: u16,
    /// `resultSignature` (`OK`, `Forbidden`, `Unauthorized`, ...).
    pub result_signature: String,
    /// `resultDescription`: the error code or a short reason, never a secret.
    pub result_description: String,
    /// Time spent, milliseconds.
    pub duration_ms: u64,
    /// Caller IP.
    pub caller_ip: String,
    /// Caller object id, if authenticated.
    pub oid: Option<String>,
    /// Caller application id, if authenticated.
    pub appid: Option<String>,
    /// The request URI (no query secrets exist in this API).
    pub request_uri: String,
    /// The key id the operation touched, if any.
    pub key_id: Option<String>,
    /// Correlation id (`x-ms-client-request-id` or generated).
    pub correlation_id: String,
    /// User agent.
    pub client_info: Option<String>,
    /// For RBAC denials/grants: whether an access policy matched (access-policy vaults).
    pub access_policy_match: Option<bool>,
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-11-23T13:57:30.123Z`).
pub fn rfc3339_ms(time_ms: i64) -> String {
    // Civil-from-days (Howard Hinnant), so no date crate is needed for one format.
    let secs = time_ms.div_euclid(1000);
    let ms = time_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

impl AuditEvent {
    /// The `resultType` Azure shows for a status.
    fn result_type(&self) -> &'static str {
        if self.status < 400 {
            "Success"
        } else {
            "Failure"
        }
    }

    /// The record as Azure `AuditEvent` JSON text, keys sorted at every level (the structs
    /// below declare their fields in that order), as it is chained and stored.
    pub fn to_record_json(&self, tenant: &str) -> String {
        let resource_id = if self.vault.is_empty() {
            format!("/SUBSCRIPTIONS/{tenant}/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT")
        } else {
            format!(
                "/SUBSCRIPTIONS/{tenant}/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}",
                self.vault.to_uppercase()
            )
        };
        let record = RecordJson {
            caller_ip: &self.caller_ip,
            category: "AuditEvent",
            correlation_id: &self.correlation_id,
            duration_ms: self.duration_ms,
            identity: IdentityJson {
                claim: ClaimJson {
                    appid: self.appid.as_deref(),
                    object_identifier: self.oid.as_deref(),
                    oid: self.oid.as_deref(),
                },
            },
            operation: &self.operation,
            api_version: &self.api_version,
            properties: PropertiesJson {
                client_info: self.client_info.as_deref(),
                status: self.status,
                id: self.key_id.as_deref(),
                access_policy_match: self.access_policy_match,
                request_uri: &self.request_uri,
            },
            resource_id,
            result_description: &self.result_description,
            result_signature: &self.result_signature,
            result_type: self.result_type(),
            time: rfc3339_ms(self.time_ms),
            vault: &self.vault,
        };
        // Serialising borrowed strings and numbers cannot fail.
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// The event as an unchained row (`seq`, `prev_hash` and `hash` are set by the writer).
    pub(super) fn to_row(&self, tenant: &str) -> AuditRow {
        AuditRow {
            seq: 0,
            time_ms: self.time_ms,
            kind: "event".into(),
            vault: self.vault.clone(),
            principal: self.oid.clone().unwrap_or_default().to_lowercase(),
            operation: self.operation.clone(),
            result: self.result_signature.clone(),
            record: self.to_record_json(tenant),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// An `AuditEvent` record as stored; fields in sorted key order.
#[derive(Serialize)]
struct RecordJson<'a> {
    #[serde(rename = "callerIpAddress")]
    caller_ip: &'a str,
    category: &'static str,
    #[serde(rename = "correlationId")]
    correlation_id: &'a str,
    #[serde(rename = "durationMs")]
    duration_ms: u64,
    identity: IdentityJson<'a>,
    #[serde(rename = "operationName")]
    operation: &'a str,
    #[serde(rename = "operationVersion")]
    api_version: &'a str,
    properties: PropertiesJson<'a>,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "resultDescription")]
    result_description: &'a str,
    #[serde(rename = "resultSignature")]
    result_signature: &'a str,
    #[serde(rename = "resultType")]
    result_type: &'static str,
    time: String,
    vault: &'a str,
}

#[derive(Serialize)]
struct IdentityJson<'a> {
    claim: ClaimJson<'a>,
}

#[derive(Serialize)]
struct ClaimJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    appid: Option<&'a str>,
    #[serde(
        rename = "http://schemas.microsoft.com/identity/claims/objectidentifier",
        skip_serializing_if = "Option::is_none"
    )]
    object_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oid: Option<&'a str>,
}

#[derive(Serialize)]
struct PropertiesJson<'a> {
    #[serde(rename = "clientInfo", skip_serializing_if = "Option::is_none")]
    client_info: Option<&'a str>,
    #[serde(rename = "httpStatusCode")]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(
        rename = "isAccessPolicyMatch",
        skip_serializing_if = "Option::is_none"
    )]
    access_policy_match: Option<bool>,
    #[serde(rename = "requestUri")]
    request_uri: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_442_250_123), "2026-11-23T13:57:30.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn records_are_azure_shaped_with_sorted_keys() {
        let full = AuditEvent {
            time_ms: 1_795_442_250_123,
            vault: "team-a".into(),
            operation: "KeyUnwrap".into(),
            api_version: "7.5".into(),
            status: 403,
            result_signature: "Forbidden".into(),
            result_description: "ForbiddenByRbac".into(),
            duration_ms: 3,
            caller_ip: "127.0.0.1".into(),
            oid: Some("0b5c-oid".into()),
            appid: Some("app \"quoted\"".into()),
            request_uri: "https://team-a.vault.local/keys/k/unwrapkey?api-version=7.5".into(),
            key_id: Some("https://team-a.vault.local/keys/k/v1".into()),
            correlation_id: "c-1".into(),
            client_info: Some("azsdk-python".into()),
            access_policy_match: Some(false),
        };
        let text = full.to_record_json("tid");
        let value: Value = serde_json::from_str(&text).unwrap();
        // serde_json's map sorts keys, so re-serialising gives the same text only if the
        // record's keys were sorted at every level.
        assert_eq!(value.to_string(), text);
        assert_eq!(value["resultType"], "Failure");
        assert_eq!(value["time"], "2026-11-23T13:57:30.123Z");
        assert_eq!(
            value["resourceId"],
            "/SUBSCRIPTIONS/tid/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/TEAM-A"
        );
        assert_eq!(value["identity"]["claim"]["oid"], "0b5c-oid");
        assert_eq!(value["identity"]["claim"]["appid"], "app \"quoted\"");
        assert_eq!(value["properties"]["httpStatusCode"], 403);
        assert_eq!(value["properties"]["isAccessPolicyMatch"], false);

        let bare = AuditEvent {
            operation: "Authentication".into(),
            status: 401,
            ..Default::default()
        };
        let value: Value = serde_json::from_str(&bare.to_record_json("tid")).unwrap();
        assert_eq!(value.to_string(), bare.to_record_json("tid"));
        assert_eq!(value["identity"]["claim"], json!({}));
        assert!(value["properties"].get("id").is_none());
        assert_eq!(
            value["resourceId"],
            "/SUBSCRIPTIONS/tid/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT"
        );
    }
}
