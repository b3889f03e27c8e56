//! `spec.scaleToZero` with its defaults applied.

use std::time::Duration;

use crate::api::ScaleToZero;

/// Default `idleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Smallest `idleTimeout` (the CRD enforces it too).
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `coldStartTimeout`.
pub const DEFAULT_COLD_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `maxPendingRequests`.
pub const DEFAULT_MAX_PENDING: u32 = 1000;
/// Default `drainSeconds`.
pub const DEFAULT_DRAIN_SECONDS: u32 = 20;

/// A `spec.scaleToZero` the CRD should have rejected (an old object, or the
/// CRD not installed with its validation rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A duration field does not parse.
    #[error("scaleToZero.{field}: {value:?} is not a duration such as 120s, 2m or 1h30m")]
    BadDuration {
        /// The field's JSON name.
        field: &'static str,
        /// What was written.
        value: String,
    },
    /// A field is outside its range.
    #[error("scaleToZero.{field}: {message}")]
    OutOfRange {
        /// The field's JSON name.
        field: &'static str,
        /// The limit that was broken.
        message: &'static str,
    },
}

/// Effective scale-to-zero settings of an enabled app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// No activity for this long → scale to 0.
    pub idle_timeout: Duration,
    /// Longest a request is held by the activator.
    pub cold_start_timeout: Duration,
    /// Held requests per app.
    pub max_pending: u32,
    /// preStop sleep on app pods.
    pub drain_seconds: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            cold_start_timeout: DEFAULT_COLD_START_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            drain_seconds: DEFAULT_DRAIN_SECONDS,
        }
    }
}

impl Settings {
    /// `Ok(None)` when scale to zero is off (no field, or `enabled` not true).
    pub fn from_spec(spec: Option<&ScaleToZero>) -> Result<Option<Settings>, SettingsError> {
        let Some(spec) = spec.filter(|s| s.enabled == Some(true)) else {
            return Ok(None);
        };
        let mut settings = Settings::default();
        if let Some(v) = &spec.idle_timeout {
            settings.idle_timeout = parse_field("idleTimeout", v)?;
            if settings.idle_timeout < MIN_IDLE_TIMEOUT {
                return Err(SettingsError::OutOfRange {
                    field: "idleTimeout",
                    message: "must be at least 30s",
                });
            }
        }
        if let Some(v) = &spec.cold_start_timeout {
            settings.cold_start_timeout = parse_field("coldStartTimeout", v)?;
            if settings.cold_start_timeout < Duration::from_secs(1)
                || settings.cold_start_timeout > Duration::from_secs(600)
            {
                return Err(SettingsError::OutOfRange {
                    field: "coldStartTimeout",
                    message: "must be between 1s and 10m",
                });
            }
        }
        if let Some(v) = spec.max_pending_requests {
            settings.max_pending = u32::try_from(v)
                .ok()
                .filter(|v| (1..=100_000).contains(v))
                .ok_or(SettingsError::OutOfRange {
                    field: "maxPendingRequests",
                    message: "must be 1 to 100000",
                })?;
        }
        if let Some(v) = spec.drain_seconds {
            settings.drain_seconds = u32::try_from(v)
                .ok()
                .filter(|v| (5..=300).contains(v))
                .ok_or(SettingsError::OutOfRange {
                    field: "drainSeconds",
                    message: "must be 5 to 300",
                })?;
        }
        Ok(Some(settings))
    }

    /// `terminationGracePeriodSeconds` of the app's pods: the drain plus 10 s.
    pub fn termination_grace_period_seconds(&self) -> i64 {
        i64::from(self.drain_seconds) + 10
    }
}

fn parse_field(field: &'static str, value: &str) -> Result<Duration, SettingsError> {
    parse_duration(value).ok_or_else(|| SettingsError::BadDuration {
        field,
        value: value.to_owned(),
    })
}

/// Parses the Go duration subset the CRD accepts: one or more `<number><unit>`
/// with units `ns`, `us`, `ms`, `s`, `m`, `h` and optional decimals (`1.5m`).
pub fn parse_duration(input: &str) -> Option<Duration> {
    let mut rest = input;
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty()
            || num.starts_with('.')
            || num.ends_with('.')
            || num.matches('.').count() > 1
        {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "120", "s", "2 m", "1.s", ".5s", "1d", "-1s", "1..2s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn off_unless_enabled() {
        assert_eq!(Settings::from_spec(None), Ok(None));
        assert_eq!(Settings::from_spec(Some(&ScaleToZero::default())), Ok(None));
        let off = ScaleToZero {
            enabled: Some(false),
            idle_timeout: Some("bogus".into()),
            ..Default::default()
        };
        assert_eq!(Settings::from_spec(Some(&off)), Ok(None));
    }

    #[test]
    fn defaults_and_overrides() {
        let on = ScaleToZero {
            enabled: Some(true),
            ..Default::default()
        };
        assert_eq!(
            Settings::from_spec(Some(&on)),
            Ok(Some(Settings::default()))
        );
        let custom = ScaleToZero {
            enabled: Some(true),
            idle_timeout: Some("5m".into()),
            cold_start_timeout: Some("10s".into()),
            max_pending_requests: Some(7),
            drain_seconds: Some(30),
        };
        let s = Settings::from_spec(Some(&custom)).unwrap().unwrap();
        assert_eq!(s.idle_timeout, Duration::from_secs(300));
        assert_eq!(s.cold_start_timeout, Duration::from_secs(10));
        assert_eq!(s.max_pending, 7);
        assert_eq!(s.drain_seconds, 30);
        assert_eq!(s.termination_grace_period_seconds(), 40);
    }

    #[test]
    fn rejects_what_the_crd_rejects() {
        let with = |f: fn(&mut ScaleToZero)| {
            let mut s = ScaleToZero {
                enabled: Some(true),
                ..Default::default()
            };
            f(&mut s);
            Settings::from_spec(Some(&s))
        };
        assert!(matches!(
            with(|s| s.idle_timeout = Some("29s".into())),
            Err(SettingsError::OutOfRange { .. })
        ));
        assert!(matches!(
            with(|s| s.idle_timeout = Some("soon".into())),
            Err(SettingsError::BadDuration { .. })
        ));
        assert!(with(|s| s.cold_start_timeout = Some("11m".into())).is_err());
        assert!(with(|s| s.drain_seconds = Some(4)).is_err());
        assert!(with(|s| s.drain_seconds = Some(301)).is_err());
        assert!(with(|s| s.max_pending_requests = Some(0)).is_err());
    }
}
