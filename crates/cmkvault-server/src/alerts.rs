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
/// Most bytes of names held by the counters (principal, vault and key text together).
const MAX_COUNTER_BYTES: usize = 1024 * 1024;
/// Longest principal, vault or key text kept in a counter; longer text is cut.
const MAX_FIELD: usize = 128;
/// Principals tracked for the threshold at most; beyond it, those quiet for a window go.
const MAX_PRINCIPALS: usize = 10_000;
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
    /// Bytes of text held by `counters`' keys.
    counter_bytes: usize,
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
            principal = ?d.principal, appid = ?d.appid, vault = ?d.vault,
            key = ?d.key.as_deref().unwrap_or("-"), action = ?d.action,
            "access denied"
        );
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        // Key names come from the caller: past MAX_COUNTERS distinct entries or
        // MAX_COUNTER_BYTES of text, new ones (and over-long ones) are counted under
        // "(other keys)", so a denied caller cannot grow this map without bound.
        let key = d.key.as_deref().unwrap_or_default();
        let mut slot = (
            cut(&d.principal).to_string(),
            cut(&d.vault).to_string(),
            if key.len() > MAX_FIELD {
                OTHER_KEYS.to_string()
            } else {
                key.to_string()
            },
        );
        let size = |s: &(String, String, String)| s.0.len() + s.1.len() + s.2.len();
        if !st.counters.contains_key(&slot)
            && (st.counters.len() >= MAX_COUNTERS
                || st.counter_bytes + size(&slot) > MAX_COUNTER_BYTES)
        {
            slot.2 = OTHER_KEYS.to_string();
        }
        if !st.counters.contains_key(&slot) {
            st.counter_bytes += size(&slot);
        }
        *st.counters.entry(slot).or_default() += 1;
        let now = Instant::now();
        let window = self.opts.window;
        if st.recent.len() >= MAX_PRINCIPALS && !st.recent.contains_key(cut(&d.principal)) {
            st.recent
                .retain(|_, r| r.back().is_some_and(|t| now.duration_since(*t) <= window));
            st.last_fired.retain(|_, t| now.duration_since(*t) < window);
        }
        let threshold = self.opts.threshold as usize;
        let recent = st.recent.entry(cut(&d.principal).to_string()).or_default();
        recent.push_back(now);
        // Only "more than the threshold" matters: older entries beyond that are dropped.
        while recent.len() > threshold.saturating_add(1)
            || recent
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
            .get(cut(&d.principal))
            .is_some_and(|t| now.duration_since(*t) < window)
        {
            return;
        }
        st.last_fired.insert(cut(&d.principal).to_string(), now);
        drop(st);
        tracing::warn!(principal = ?d.principal, count, window_secs = window.as_secs(), "denied-access threshold exceeded");
        if let Some(tx) = &self.sender {
            let event = cloud_event(&d, count, window);
            if tx.try_send(event).is_err() {
                tracing::warn!("alert queue full or closed: alert dropped");
            }
        }
    }

    /// How many counters are kept and how many bytes of names they hold (both bounded).
    pub fn footprint(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|st| (st.counters.len(), st.counter_bytes))
            .unwrap_or_default()
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

/// `text` cut to at most [`MAX_FIELD`] bytes (at a character boundary).
fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_FIELD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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

    #[test]
    fn counters_are_bounded_in_bytes() {
        let alerts = DenialAlerts::start(AlertOptions {
            threshold: 3,
            ..Default::default()
        });
        // Over-long names are never stored as such.
        for i in 0..200 {
            alerts.record(denial(&format!("{i}{}", "x".repeat(60_000))));
        }
        let (entries, bytes) = alerts.footprint();
        assert_eq!(entries, 1, "{:?}", alerts.counters());
        assert!(bytes < 1024, "{bytes}");
        // Many distinct names of the longest kept size stay within the byte cap.
        for i in 0..MAX_COUNTERS {
            alerts.record(denial(&format!("{i:0>120}")));
        }
        let (entries, bytes) = alerts.footprint();
        assert!(entries <= MAX_COUNTERS + 1);
        assert!(bytes <= MAX_COUNTER_BYTES, "{bytes}");
        let st = alerts.state.lock().unwrap();
        assert!(st.recent["p"].len() <= 4, "the threshold window is bounded");
    }
}
