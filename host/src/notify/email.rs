//! E-mail delivery through the configured SMTP relay (lettre).

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{SmtpTransport, Transport};

use crate::config::{SmtpConfig, SmtpTls};
use crate::store::Notification;

/// A connection setup to the relay, built once per delivery pass.
pub(super) struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    host: String,
}

impl Mailer {
    /// `password` is the relay's, read for this pass (none when it wants no login).
    pub fn new(config: &SmtpConfig, password: Option<String>) -> Result<Mailer, String> {
        let builder = match config.tls {
            SmtpTls::None => SmtpTransport::builder_dangerous(&config.host),
            SmtpTls::Starttls => SmtpTransport::starttls_relay(&config.host).map_err(|e| format!("SMTP relay: {e}"))?,
            SmtpTls::Tls => SmtpTransport::relay(&config.host).map_err(|e| format!("SMTP relay: {e}"))?,
        };
        let mut builder = builder.port(config.port).timeout(Some(config.timeout));
        if let (Some((user, _)), Some(password)) = (&config.credentials, password) {
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from = config.from.parse::<Mailbox>().map_err(|e| format!("From address `{}`: {e}", config.from))?;
        Ok(Mailer { transport: builder.build(), from, host: config.host.clone() })
    }

    /// Sends one notification to every recipient with an address. The Message-ID is derived
    /// from the delivery id, so a resent message can be recognised.
    pub fn send(&self, notification: &Notification, delivery: i64) -> Result<(), String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(notification.subject.clone())
            .message_id(Some(format!("<provision-delivery-{delivery}@{}>", self.host)))
            .header(ContentType::TEXT_PLAIN);
        let mut any = false;
        for recipient in &notification.recipients {
            let Some(email) = &recipient.email else { continue };
            match email.parse() {
                Ok(address) => {
                    builder = builder.to(Mailbox::new(Some(recipient.display_name.clone()), address));
                    any = true;
                }
                Err(e) => tracing::warn!(login = %recipient.login, "skipping an invalid e-mail address: {e}"),
            }
        }
        if !any {
            return Err("no recipient has a valid e-mail address".into());
        }
        let message = builder.body(notification.body.clone()).map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport.send(&message).map(|_| ()).map_err(|e| format!("SMTP: {e}"))
    }
}
