//! `STATUS=` for `systemctl status homelab-agent`, when started by systemd. The only
//! place sd-notify is called.

pub fn status(text: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
    }
}
