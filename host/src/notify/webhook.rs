//! Webhook delivery: the notification as JSON, POSTed with an HMAC-SHA256 signature of the
//! body in `X-Provision-Signature: sha256=HEX` and the delivery id in `X-Provision-Delivery`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::model::format_time;
use crate::store::Notification;

/// The signature of a body under a secret, as sent in `X-Provision-Signature`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs one notification, signed with `secret` (the hook's, read for this delivery).
pub(super) fn send(
    hook: &WebhookConfig,
    secret: &str,
    notification: &Notification,
    delivery: i64,
) -> Result<(), String> {
    let body = serde_json::json!({
        "delivery": delivery,
        "notification": notification.id,
        "kind": notification.kind,
        "entity_type": notification.entity_type,
        "created_at": format_time(notification.created_at),
        "subject": notification.subject,
        "body": notification.body,
        "recipients": notification.recipients,
        "orders": notification.orders,
    });
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(hook.timeout)).http_status_as_error(false).build().into();
    let response = agent
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("X-Provision-Delivery", delivery.to_string())
        .header("X-Provision-Signature", signature(secret.as_bytes(), &body))
        .send(&body[..])
        .map_err(|e| format!("POST {}: {e}", hook.url))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("POST {}: HTTP {status}", hook.url)) }
}
