//! `[reboot]`: when a deployment that changed the kernel, initrd or kernel modules may
//! reboot the machine (README "Reboots"). Additive: without the table nothing reboots
//! (`policy = "never"`), exactly as before.
//!
//! ```toml
//! [reboot]
//! policy = "when-required"     # never (default) | when-required
//! delay = "0s"                 # after the generation became the boot default
//! max_wait = "7d"              # past this, the window no longer holds a reboot back
//! fleetlock_url = "http://lock.lan:8080"   # take a FleetLock slot before rebooting
//! group = "default"            # FleetLock group
//! id = "…"                     # FleetLock id (default: /etc/machine-id)
//! bootloader = "uboot"         # none (default) | uboot: the one-shot trial (docs/reboots.md)
//! trial_deadline = "15m"       # a trial boot not verified by then is rebooted back
//! [reboot.uboot]               # only with bootloader = "uboot"; every key optional
//! fw_env_config = "/etc/fw_env.config"
//! fw_printenv = "fw_printenv"  # from PATH, or an absolute path
//! fw_setenv = "fw_setenv"
//! boot_dir = "/boot"           # holds extlinux/extlinux.conf
//! panic_seconds = 10           # panic=N on the trial's kernel command line
//! [reboot.window]
//! days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
//! start = "01:00"              # nixpkgs' rebootWindow.lower
//! end = "05:00"                # rebootWindow.upper; an end before the start spans midnight
//! timezone = "Europe/Berlin"   # default: the machine's own (/etc/localtime; none: UTC)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::bounds::{self, DurationKey};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReboot {
    pub(super) policy: Option<RebootPolicy>,
    pub(super) delay: Option<String>,
    pub(super) max_wait: Option<String>,
    pub(super) fleetlock_url: Option<String>,
    pub(super) group: Option<String>,
    pub(super) id: Option<String>,
    pub(super) window: Option<RawWindow>,
    pub(super) bootloader: Option<Bootloader>,
    pub(super) trial_deadline: Option<String>,
    pub(super) uboot: Option<RawUBoot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUBoot {
    pub(super) fw_env_config: Option<String>,
    pub(super) fw_printenv: Option<String>,
    pub(super) fw_setenv: Option<String>,
    pub(super) boot_dir: Option<String>,
    pub(super) panic_seconds: Option<u32>,
}

/// The bootloader's one-shot trial mechanism (`[reboot] bootloader`; docs/reboots.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// No trial mechanism: a deployment that needs a reboot stays live and pending, never
    /// the boot default unverified.
    None,
    /// U-Boot + extlinux with the environment in `uboot.env` (the Pi image).
    Uboot,
    /// A model for the project's own tests, never a machine's bootloader: a flag file and
    /// a trial file in `[reboot.uboot] boot_dir` that the test harnesses' model bootloader
    /// reads (`doors/trial_model.rs`).
    TestModel,
}

impl Bootloader {
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::None => "none",
            Bootloader::Uboot => "uboot",
            Bootloader::TestModel => "test-model",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWindow {
    pub(super) days: Option<Vec<String>>,
    pub(super) start: Option<String>,
    pub(super) end: Option<String>,
    pub(super) timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    /// Never reboot: `status` says a reboot is required, a person decides.
    Never,
    /// Reboot when the boot default's kernel, initrd or modules differ from the booted
    /// ones, inside the window, holding the FleetLock slot if one is configured.
    WhenRequired,
}

impl RebootPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RebootPolicy::Never => "never",
            RebootPolicy::WhenRequired => "when-required",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RebootSettings {
    pub policy: RebootPolicy,
    /// Wait at least this long after the generation became the boot default.
    pub delay: Duration,
    /// A reboot that waited this long for its window no longer waits for it (never for
    /// the FleetLock slot). `None`: waits for the window for ever.
    pub max_wait: Option<Duration>,
    pub window: Option<Window>,
    pub fleetlock: Option<FleetLockSettings>,
    pub bootloader: Bootloader,
    /// A trial boot not verified this long after its early start (sysinit) is rebooted back.
    pub trial_deadline: Duration,
    /// `[reboot.uboot]`, with its defaults (used when `bootloader = "uboot"`).
    pub uboot: UBootSettings,
}

impl Default for RebootSettings {
    fn default() -> Self {
        RebootSettings {
            policy: RebootPolicy::Never,
            delay: Duration::ZERO,
            max_wait: None,
            window: None,
            fleetlock: None,
            bootloader: Bootloader::None,
            trial_deadline: Duration::from_secs(15 * 60),
            uboot: uboot_defaults(),
        }
    }
}

/// The defaults of `[reboot.uboot]` (what the NixOS module provisions).
pub fn uboot_defaults() -> UBootSettings {
    UBootSettings {
        fw_env_config: "/etc/fw_env.config".into(),
        fw_printenv: "fw_printenv".into(),
        fw_setenv: "fw_setenv".into(),
        boot_dir: "/boot".into(),
        panic_seconds: 10,
    }
}

/// Days on which a window opens, and its times in a time zone.
#[derive(Debug, Clone)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub start: Time,
    pub end: Time,
    /// As written (`"local"` when not set), for messages and status.
    pub timezone_name: String,
    pub timezone: TimeZone,
}

/// `daily 02:00-05:00 Europe/Berlin`, `sat,sun 23:00-04:30 UTC`.
impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = if self.days.len() == 7 {
            "daily".to_string()
        } else {
            self.days
                .iter()
                .map(|d| day_name(*d))
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "{days} {}-{} {}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M"),
            self.timezone_name
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockSettings {
    /// The base URL; `/v1/pre-reboot` and `/v1/steady-state` are relative to it.
    pub url: String,
    pub group: String,
    /// `None`: this machine's `/etc/machine-id`, read when needed.
    pub id: Option<String>,
}

/// `[reboot] delay`.
pub const DELAY: DurationKey = DurationKey {
    default: "0s",
    min: Duration::ZERO,
    max: Duration::from_secs(30 * 24 * 3600),
};
/// `[reboot] max_wait` (optional: without it there is no maximum; `default` is unused).
pub const MAX_WAIT: DurationKey = DurationKey {
    default: "365d",
    min: Duration::from_secs(60),
    max: Duration::from_secs(365 * 24 * 3600),
};

/// `[reboot] trial_deadline`: long enough for a slow first boot and the health checks'
/// own timeout, short enough that a hung trial is back within the hour.
pub const TRIAL_DEADLINE: DurationKey = DurationKey {
    default: "15m",
    min: Duration::from_secs(60),
    max: Duration::from_secs(24 * 3600),
};

/// A key path and what is wrong with it.
pub(super) type KeyProblem = super::validate::KeyError;

fn problem(key: &str, message: impl Into<String>) -> KeyProblem {
    super::validate::err(key, message)
}

fn duration(key: &str, text: &str, spec: &DurationKey) -> Result<Duration, KeyProblem> {
    bounds::parse_duration(spec, text).map_err(|m| problem(key, m))
}

pub(super) fn validate(raw: RawReboot) -> Result<RebootSettings, KeyProblem> {
    let delay = duration(
        "reboot.delay",
        raw.delay.as_deref().unwrap_or(DELAY.default),
        &DELAY,
    )?;
    let max_wait = raw
        .max_wait
        .as_deref()
        .map(|t| duration("reboot.max_wait", t, &MAX_WAIT))
        .transpose()?;
    let window = raw.window.map(window).transpose()?;
    let fleetlock = match raw.fleetlock_url {
        Some(url) => Some(FleetLockSettings {
            url: fleetlock_url(&url)?,
            group: group(raw.group.as_deref().unwrap_or("default"))?,
            id: raw.id.map(|id| lock_id(&id)).transpose()?,
        }),
        None => {
            for (key, set) in [
                ("reboot.group", raw.group.is_some()),
                ("reboot.id", raw.id.is_some()),
            ] {
                if set {
                    return Err(problem(
                        key,
                        "only used with reboot.fleetlock_url: set the FleetLock server's URL too",
                    ));
                }
            }
            None
        }
    };
    let bootloader = raw.bootloader.unwrap_or(Bootloader::None);
    let trial_deadline = duration(
        "reboot.trial_deadline",
        raw.trial_deadline
            .as_deref()
            .unwrap_or(TRIAL_DEADLINE.default),
        &TRIAL_DEADLINE,
    )?;
    if raw.uboot.is_some() && bootloader == Bootloader::None {
        return Err(problem(
            "reboot.uboot",
            "only used with reboot.bootloader = \"uboot\": set that too, or leave the table out",
        ));
    }
    Ok(RebootSettings {
        policy: raw.policy.unwrap_or(RebootPolicy::Never),
        delay,
        max_wait,
        window,
        fleetlock,
        bootloader,
        trial_deadline,
        uboot: uboot(raw.uboot.unwrap_or_default())?,
    })
}

fn uboot(raw: RawUBoot) -> Result<UBootSettings, KeyProblem> {
    let path = |key: &str, value: Option<String>, default: &str, program: bool| {
        let text = value.unwrap_or_else(|| default.to_string());
        let key = format!("reboot.uboot.{key}");
        if text.is_empty() || text.chars().any(|c| c.is_control()) {
            return Err(problem(
                &key,
                format!("{text:?}: an empty path or one with control characters"),
            ));
        }
        // A program may be a bare name looked up in PATH; a file or directory is absolute.
        if !(text.starts_with('/') || program && !text.contains('/')) {
            let want = if program {
                "a program name found in PATH, or an absolute path"
            } else {
                "an absolute path"
            };
            return Err(problem(&key, format!("{text:?}: expected {want}")));
        }
        Ok(std::path::PathBuf::from(text))
    };
    let panic_seconds = raw.panic_seconds.unwrap_or(10);
    if !(1..=600).contains(&panic_seconds) {
        return Err(problem(
            "reboot.uboot.panic_seconds",
            format!("{panic_seconds}: between 1 and 600 (seconds before a panicking trial kernel resets the board)"),
        ));
    }
    Ok(UBootSettings {
        fw_env_config: path(
            "fw_env_config",
            raw.fw_env_config,
            "/etc/fw_env.config",
            false,
        )?,
        fw_printenv: path("fw_printenv", raw.fw_printenv, "fw_printenv", true)?,
        fw_setenv: path("fw_setenv", raw.fw_setenv, "fw_setenv", true)?,
        boot_dir: path("boot_dir", raw.boot_dir, "/boot", false)?,
        panic_seconds,
    })
}

/// One line for `config check`: the policy, the window, the lock.
pub fn summary(s: &RebootSettings) -> String {
    let mut line = s.policy.as_str().to_string();
    if s.policy == RebootPolicy::Never {
        return line;
    }
    if let Some(w) = &s.window {
        line.push_str(&format!(", window {w}"));
    }
    if let Some(f) = &s.fleetlock {
        line.push_str(&format!(", FleetLock {} group {}", f.url, f.group));
    }
    line.push_str(&format!(
        ", bootloader {} (trial deadline {})",
        s.bootloader.as_str(),
        crate::duration::format_duration(s.trial_deadline)
    ));
    line
}

fn fleetlock_url(url: &str) -> Result<String, KeyProblem> {
    let key = "reboot.fleetlock_url";
    let parsed =
        reqwest::Url::parse(url).map_err(|e| problem(key, format!("{url:?} is not a URL: {e}")))?;
    if !["http", "https"].contains(&parsed.scheme()) {
        return Err(problem(
            key,
            format!("{url:?}: a FleetLock server is reached over http:// or https://"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(problem(
            key,
            "credentials in the URL would be logged and shown by status: FleetLock takes none",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(problem(
            key,
            format!(
                "{url:?}: a base URL takes no ?query or #fragment (the protocol appends /v1/...)"
            ),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The protocol's group label: `^[a-zA-Z0-9.-]+$`.
fn group(text: &str) -> Result<String, KeyProblem> {
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !ok {
        return Err(problem(
            "reboot.group",
            format!(
                "{}: a FleetLock group is letters, digits, '.' and '-' (non-empty)",
                crate::text::quote(text)
            ),
        ));
    }
    Ok(text.to_string())
}

fn lock_id(text: &str) -> Result<String, KeyProblem> {
    let ok = !text.is_empty() && text.len() <= 128 && text.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(problem(
            "reboot.id",
            format!(
                "{}: a FleetLock id is 1 to 128 printable ASCII characters without spaces",
                crate::text::quote(text)
            ),
        ));
    }
    Ok(text.to_string())
}

fn window(raw: RawWindow) -> Result<Window, KeyProblem> {
    let days = match raw.days {
        None => ALL_DAYS.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(problem(
                "reboot.window.days",
                "empty: the window would never open (leave it out for every day)",
            ))
        }
        Some(list) => list
            .iter()
            .map(|d| weekday(d))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let start = time_of_day("reboot.window.start", raw.start.as_deref())?;
    let end = time_of_day("reboot.window.end", raw.end.as_deref())?;
    if start == end {
        return Err(problem(
            "reboot.window.end",
            "the same as start: the window would be empty",
        ));
    }
    let timezone_name = raw.timezone.unwrap_or_else(|| "local".into());
    let timezone = match timezone_name.as_str() {
        // NixOS without `time.timeZone` has no /etc/localtime: UTC, as for every program.
        "local" => TimeZone::try_system().unwrap_or(TimeZone::UTC),
        "UTC" | "utc" => TimeZone::UTC,
        name => TimeZone::get(name).map_err(|e| {
            problem(
                "reboot.window.timezone",
                format!("unknown time zone {name:?}: {e}"),
            )
            .with_hint("an IANA name such as \"Europe/Berlin\", or \"UTC\", or \"local\"")
        })?,
    };
    Ok(Window {
        days,
        start,
        end,
        timezone_name,
        timezone,
    })
}

/// A weekday as the `days` key spells it ("mon" ... "sun").
fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// Every day of the week, Monday first (a window without `days`).
pub const ALL_DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

fn weekday(text: &str) -> Result<Weekday, KeyProblem> {
    let lower = text.trim().to_ascii_lowercase();
    let day = match lower.get(..3.min(lower.len())) {
        Some("mon") => Weekday::Monday,
        Some("tue") => Weekday::Tuesday,
        Some("wed") => Weekday::Wednesday,
        Some("thu") => Weekday::Thursday,
        Some("fri") => Weekday::Friday,
        Some("sat") => Weekday::Saturday,
        Some("sun") => Weekday::Sunday,
        _ => None.ok_or_else(|| bad_day(text))?,
    };
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    if lower.len() > 3 && !full.contains(&lower.as_str()) {
        return Err(bad_day(text));
    }
    Ok(day)
}

fn bad_day(text: &str) -> KeyProblem {
    problem(
        "reboot.window.days",
        format!(
            "{} is not a day: use mon, tue, wed, thu, fri, sat, sun",
            crate::text::quote(text)
        ),
    )
}

fn time_of_day(key: &str, text: Option<&str>) -> Result<Time, KeyProblem> {
    let text = text.ok_or_else(|| problem(key, "missing: a time of day such as \"01:30\""))?;
    let parts: Vec<&str> = text.split(':').collect();
    let parsed = match parts.as_slice() {
        [h, m] if h.len() <= 2 && m.len() == 2 => h
            .parse::<i8>()
            .ok()
            .zip(m.parse::<i8>().ok())
            .and_then(|(h, m)| Time::new(h, m, 0, 0).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| {
        problem(
            key,
            format!(
                "{} is not a time of day: use HH:MM, 00:00 to 23:59",
                crate::text::quote(text)
            ),
        )
    })
}

/// Where U-Boot's trial lives (`[reboot.uboot]`; the NixOS module fills it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UBootSettings {
    /// libubootenv's configuration naming the environment (on a Pi: `uboot.env` on the
    /// firmware partition).
    pub fw_env_config: PathBuf,
    /// `fw_printenv` and `fw_setenv` (libubootenv-tool).
    pub fw_printenv: PathBuf,
    pub fw_setenv: PathBuf,
    /// The directory holding `extlinux/extlinux.conf` (NixOS: `/boot`): the trial entry is
    /// written beside it.
    pub boot_dir: PathBuf,
    /// `panic=N` on the trial's kernel command line: a panic resets the board after N s.
    pub panic_seconds: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawReboot {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_change_nothing() {
        let s = validate(RawReboot::default()).unwrap();
        assert_eq!(s.policy, RebootPolicy::Never);
        assert!(s.window.is_none() && s.fleetlock.is_none() && s.max_wait.is_none());
        assert_eq!(s.delay, Duration::ZERO);
    }

    #[test]
    fn a_full_table_parses() {
        let s = validate(raw(
            "policy = \"when-required\"\ndelay = \"10m\"\nmax_wait = \"2d\"\nfleetlock_url = \"http://127.0.0.1:9/base/\"\ngroup = \"pis\"\n\
             [window]\ndays = [\"sat\", \"Sunday\"]\nstart = \"23:00\"\nend = \"4:30\"\ntimezone = \"UTC\"\n",
        ))
        .unwrap();
        assert_eq!(s.policy, RebootPolicy::WhenRequired);
        assert_eq!(s.max_wait, Some(Duration::from_secs(2 * 86400)));
        let w = s.window.clone().unwrap();
        assert_eq!(w.days, [Weekday::Saturday, Weekday::Sunday]);
        assert_eq!(
            (w.start, w.end),
            (Time::constant(23, 0, 0, 0), Time::constant(4, 30, 0, 0))
        );
        let f = s.fleetlock.clone().unwrap();
        assert_eq!(f.url, "http://127.0.0.1:9/base");
        assert_eq!((f.group.as_str(), f.id.clone()), ("pis", None));
        assert_eq!(
            summary(&s),
            "when-required, window sat,sun 23:00-04:30 UTC, FleetLock http://127.0.0.1:9/base group pis, bootloader none (trial deadline 15m)"
        );
    }

    #[test]
    fn bad_values_name_their_key_and_say_why() {
        let cases: &[(&str, &str, &str)] = &[
            ("delay = \"soon\"", "reboot.delay", "invalid duration"),
            ("max_wait = \"1s\"", "reboot.max_wait", "too short"),
            (
                "fleetlock_url = \"ftp://x\"",
                "reboot.fleetlock_url",
                "http:// or https://",
            ),
            (
                "fleetlock_url = \"http://u:p@x\"",
                "reboot.fleetlock_url",
                "credentials",
            ),
            (
                "fleetlock_url = \"nope\"",
                "reboot.fleetlock_url",
                "not a URL",
            ),
            (
                "fleetlock_url = \"http://x\"\ngroup = \"a b\"",
                "reboot.group",
                "letters, digits",
            ),
            (
                "fleetlock_url = \"http://x\"\nid = \"\"",
                "reboot.id",
                "printable",
            ),
            (
                "group = \"pis\"",
                "reboot.group",
                "only used with reboot.fleetlock_url",
            ),
            ("[window]\nstart = \"1:00\"", "reboot.window.end", "missing"),
            (
                "[window]\nstart = \"25:00\"\nend = \"1:00\"",
                "reboot.window.start",
                "HH:MM",
            ),
            (
                "[window]\nstart = \"1:00\"\nend = \"01:00\"",
                "reboot.window.end",
                "empty",
            ),
            (
                "[window]\ndays = []\nstart = \"1:00\"\nend = \"2:00\"",
                "reboot.window.days",
                "never open",
            ),
            (
                "[window]\ndays = [\"someday\"]\nstart = \"1:00\"\nend = \"2:00\"",
                "reboot.window.days",
                "not a day",
            ),
            (
                "[window]\ndays = [\"monk\"]\nstart = \"1:00\"\nend = \"2:00\"",
                "reboot.window.days",
                "not a day",
            ),
            (
                "[window]\nstart = \"1:00\"\nend = \"2:00\"\ntimezone = \"Mars/Olympus\"",
                "reboot.window.timezone",
                "unknown time zone",
            ),
        ];
        for (text, key, words) in cases {
            let KeyProblem {
                key: k, message: m, ..
            } = validate(raw(text)).expect_err(text);
            assert_eq!(&k, key, "{text}: {m}");
            assert!(m.contains(words), "{text}: {m}");
        }
        assert!(toml::from_str::<RawReboot>("policy = \"always\"").is_err());
    }

    #[test]
    fn the_trial_keys_default_and_parse() {
        let s = validate(RawReboot::default()).unwrap();
        assert_eq!(s.bootloader, Bootloader::None);
        assert_eq!(s.trial_deadline, Duration::from_secs(900));
        assert_eq!(s.uboot, uboot_defaults());
        let s = validate(raw(
            "bootloader = \"uboot\"\ntrial_deadline = \"20m\"\n[uboot]\nfw_env_config = \"/run/fw_env.config\"\nfw_setenv = \"/opt/bin/fw_setenv\"\nboot_dir = \"/mnt/boot\"\npanic_seconds = 5\n",
        ))
        .unwrap();
        assert_eq!(s.bootloader, Bootloader::Uboot);
        assert_eq!(s.trial_deadline, Duration::from_secs(1200));
        assert_eq!(
            s.uboot,
            UBootSettings {
                fw_env_config: "/run/fw_env.config".into(),
                fw_printenv: "fw_printenv".into(),
                fw_setenv: "/opt/bin/fw_setenv".into(),
                boot_dir: "/mnt/boot".into(),
                panic_seconds: 5,
            }
        );
    }

    #[test]
    fn bad_trial_keys_name_their_key_and_say_why() {
        let cases: &[(&str, &str, &str)] = &[
            ("bootloader = \"grub\"", "", "unknown variant"),
            (
                "trial_deadline = \"10s\"",
                "reboot.trial_deadline",
                "too short",
            ),
            (
                "trial_deadline = \"3d\"",
                "reboot.trial_deadline",
                "too long",
            ),
            (
                "[uboot]\npanic_seconds = 5",
                "reboot.uboot",
                "bootloader = \"uboot\"",
            ),
            (
                "bootloader = \"uboot\"\n[uboot]\npanic_seconds = 0",
                "reboot.uboot.panic_seconds",
                "between 1 and 600",
            ),
            (
                "bootloader = \"uboot\"\n[uboot]\nboot_dir = \"boot\"",
                "reboot.uboot.boot_dir",
                "an absolute path",
            ),
            (
                "bootloader = \"uboot\"\n[uboot]\nfw_setenv = \"bin/fw_setenv\"",
                "reboot.uboot.fw_setenv",
                "found in PATH",
            ),
        ];
        for (text, key, says) in cases {
            match toml::from_str::<RawReboot>(text) {
                Err(e) => {
                    assert!(key.is_empty(), "{text}: {e}");
                    assert!(e.to_string().contains(says), "{text}: {e}");
                }
                Ok(r) => {
                    let KeyProblem {
                        key: k, message: m, ..
                    } = validate(r).unwrap_err();
                    assert_eq!(&k, key, "{text}: {m}");
                    assert!(m.contains(says), "{text}: {m}");
                }
            }
        }
        let e = toml::from_str::<RawReboot>("bootloader = \"uboot\"\n[uboot]\nfw_env = \"x\"")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `fw_env`"), "{e}");
    }

    /// User words for the weekday enum (issue 22): each day as `days` spells it, read back
    /// as the same day, never its Debug name.
    #[test]
    fn every_day_is_shown_as_the_days_key_spells_it() {
        let names: Vec<&str> = ALL_DAYS.iter().map(|d| day_name(*d)).collect();
        assert_eq!(names, ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
        for d in ALL_DAYS {
            assert_eq!(weekday(day_name(d)).ok(), Some(d));
        }
    }
}
