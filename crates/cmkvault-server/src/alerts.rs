//! Denied-access alerts: a counter per (principal, vault, key), a WARN line per denial, and a
//! CloudEvents webhook fired when one principal's denials exceed a threshold within a window.
//!
//! The webhook runs on its own task behind a bounded queue: a slow or dead receiver never
//! slows requests; when the queue is full, alerts are dropped with a WARN line. Each alert is
//! retried with exponential backoff.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Most distinct (principal, vault, key) counters kept.
const MAX_COUNTERS: usize = 10_000;
/// The key name under which denials beyond [`MAX_COUNTERS`] are counted.
const OTHER_KEYS: &str = "(other keys)";

/// Alert settings.
#[derive(Clone, Debug)]
pub struct AlertOptions {
    /// Where to POST CloudEvents (none: counters and log lines only).
    pub webhook: Option<String>,
    /// Denials within `window` that fire an alert (fires when the count exceeds it).
    pub threshold: u32,
    /// The sliding window.
    pub window: Duration,
    /// Attempts per alert before giving up.
    pub max_attempts: u32,
    /// First retry delay (doubles each time, at most 30 s).
    pub first_backoff: Duration,
    /// Alerts waiting to be sent at most.
    pub queue: usize,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            webhook: None,
            threshold: 5,
            window: Duration::from_secs(60),
            max_attempts: 6,
            first_backoff: Duration::from_millis(500),
            queue: 1024,
        }
    }
}

/// One denial, as reported by the request pipeline.
#[derive(Clone, Debug)]
pub struct Denial {
    /// Caller object id.
    pub principal: String,
    /// Caller application id.
    pub appid: String,
    /// Vault.
    pub vault: String,
    /// Key, if the operation addressed one.
    pub key: Option<String>,
    /// The refused dataAction or permission.
    pub action: String,
}

#[derive(Default)]
struct State {
    counters: HashMap<(String, String, String), u64>,
    recent: HashMap<String, VecDeque<Instant>>,
    last_fired: HashMap<String, Instant>,
}

/// The alerting component.
pub struct DenialAlerts {
    opts: AlertOptions,
    state: Mutex<State>,
    sender: Option<mpsc::Sender<Value>>,
}

impl DenialAlerts {
    /// Starts the alerter (and its webhook task when a webhook is configured).
    pub fn start(opts: AlertOptions) -> Self {
        let sender = opts.webhook.clone().map(|url| {
            let (tx, rx) = mpsc::channel(opts.queue.max(1));
            tokio::spawn(deliver(url, rx, opts.clone()));
            tx
        });
        DenialAlerts {
            opts,
            state: Mutex::new(State::default()),
            sender,
        }
    }

    /// Counts a denial, logs it, and fires the webhook when the threshold is exceeded.
    pub fn record(&self, d: Denial) {
        tracing::warn!(
            principal = %d.principal, appid = %d.appid, vault = %d.vault,
            key = d.key.as_deref().unwrap_or("-"), action = %d.action,
            "access denied"
        );
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        // Key names come from the caller: past MAX_COUNTERS distinct entries, new ones are
        // counted under "(other keys)" so a denied caller cannot grow this map without bound.
        let mut slot = (
            d.principal.clone(),
            d.vault.clone(),
            d.key.clone().unwrap_or_default(),
        );
        if st.counters.len() >= MAX_COUNTERS && !st.counters.contains_key(&slot) {
            slot.2 = OTHER_KEYS.to_string();
        }
        *st.counters.entry(slot).or_default() += 1;
        let now = Instant::now();
        let window = self.opts.window;
        let recent = st.recent.entry(d.principal.clone()).or_default();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        let count = recent.len();
        if count <= self.opts.threshold as usize {
            return;
        }
        // One alert per principal per window.
        if st
            .last_fired
            .get(&d.principal)
            .is_some_and(|t| now.duration_since(*t) < window)
        {
            return;
        }
        st.last_fired.insert(d.principal.clone(), now);
        drop(st);
        tracing::warn!(principal = %d.principal, count, window_secs = window.as_secs(), "denied-access threshold exceeded");
        if let Some(tx) = &self.sender {
            let event = cloud_event(&d, count, window);
            if tx.try_send(event).is_err() {
                tracing::warn!("alert queue full or closed: alert dropped");
            }
        }
    }

    /// Denial counts per (principal, vault, key), highest first.
    pub fn counters(&self) -> Vec<(String, String, String, u64)> {
        let Ok(st) = self.state.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = st
            .counters
            .iter()
            .map(|((p, vault, k), n)| (p.clone(), vault.clone(), k.clone(), *n))
            .collect();
        v.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
        v
    }
}

fn cloud_event(d: &Denial, count: usize, window: Duration) -> Value {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|x| x.as_millis() as i64)
        .unwrap_or(0);
    json!({
        "specversion": "1.0",
        "type": "io.cmkvault.access.denied.threshold",
        "source": format!("/cmkvault/vaults/{}", d.vault),
        "id": uuid::Uuid::new_v4().to_string(),
        "time": cmkvault_vault::audit::rfc3339_ms(now_ms),
        "subject": d.principal,
        "datacontenttype": "application/json",
        "data": {
            "principal": d.principal,
            "appid": d.appid,
            "vault": d.vault,
            "key": d.key,
            "lastAction": d.action,
            "denials": count,
            "windowSeconds": window.as_secs(),
        }
    })
}

async fn deliver(url: String, mut rx: mpsc::Receiver<Value>, opts: AlertOptions) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("alert webhook disabled: cannot build HTTP client: {e}");
            return;
        }
    };
    // At least one attempt; the last one never waits a backoff before the next alert.
    let attempts = opts.max_attempts.max(1);
    while let Some(event) = rx.recv().await {
        let mut delay = opts.first_backoff;
        for attempt in 1..=attempts {
            let sent = client
                .post(&url)
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .json(&event)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => tracing::warn!(
                    attempt,
                    status = r.status().as_u16(),
                    "alert webhook refused the event"
                ),
                Err(e) => tracing::warn!(attempt, "alert webhook unreachable: {e}"),
            }
            if attempt == attempts {
                tracing::error!("alert dropped after {attempt} attempts");
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(key: &str) -> Denial {
        Denial {
            principal: "p".into(),
            appid: "a".into(),
            vault: "v".into(),
            key: Some(key.into()),
            action: "keys/read".into(),
        }
    }

    #[test]
    fn counters_are_bounded() {
        let alerts = DenialAlerts::start(AlertOptions {
            threshold: u32::MAX,
            ..Default::default()
        });
        for i in 0..MAX_COUNTERS + 50 {
            alerts.record(denial(&format!("k{i}")));
        }
        alerts.record(denial("k1"));
        let c = alerts.counters();
        assert_eq!(c.len(), MAX_COUNTERS + 1);
        let other = c.iter().find(|e| e.2 == OTHER_KEYS).unwrap();
        assert_eq!(other.3, 50);
        assert_eq!(c.iter().find(|e| e.2 == "k1").unwrap().3, 2);
    }
}
