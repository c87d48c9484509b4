//! `sched/` (and the old `schedule` file): the token-bucket settings
//! (docs/VSERVER.md §10.7). [`crate::sched`] maps them to CFS bandwidth.

use super::{ConfigError, Reader};

/// The token-bucket settings, each `None` when not configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedConfig {
    /// Tokens added per interval.
    pub fill_rate: Option<u32>,
    /// The interval, in ticks.
    pub interval: Option<u32>,
    /// Tokens at start.
    pub tokens: Option<u32>,
    /// Tokens needed to leave the hold.
    pub tokens_min: Option<u32>,
    /// The bucket's size.
    pub tokens_max: Option<u32>,
    /// Priority bias (-20..19).
    pub prio_bias: Option<i32>,
    /// Second fill rate (idle time).
    pub fill_rate2: Option<u32>,
    /// Second interval.
    pub interval2: Option<u32>,
    /// `idle-time` given.
    pub idle_time: bool,
    /// `nogovernor` given: the static mapping only, even where it cannot
    /// express the settings.
    pub no_governor: bool,
    /// Per-CPU bucket directories (`sched/<x>/`), which mainline's single
    /// bandwidth per cgroup cannot express.
    pub per_cpu: Vec<String>,
}

impl SchedConfig {
    /// Whether anything is configured.
    pub fn is_set(&self) -> bool {
        *self != SchedConfig::default()
    }

    /// These settings, with `other`'s where these have none (what
    /// `vsched` does to a running context's settings).
    pub fn or(self, other: &SchedConfig) -> SchedConfig {
        SchedConfig {
            fill_rate: self.fill_rate.or(other.fill_rate),
            interval: self.interval.or(other.interval),
            tokens: self.tokens.or(other.tokens),
            tokens_min: self.tokens_min.or(other.tokens_min),
            tokens_max: self.tokens_max.or(other.tokens_max),
            prio_bias: self.prio_bias.or(other.prio_bias),
            fill_rate2: self.fill_rate2.or(other.fill_rate2),
            interval2: self.interval2.or(other.interval2),
            idle_time: self.idle_time || other.idle_time,
            no_governor: self.no_governor || other.no_governor,
            per_cpu: if self.per_cpu.is_empty() {
                other.per_cpu.clone()
            } else {
                self.per_cpu
            },
        }
    }
}

pub(super) fn load(r: &Reader<'_>, sub: &str) -> Result<SchedConfig, ConfigError> {
    let mut s = SchedConfig::default();
    if let Some(text) = r.text("schedule")? {
        // Lines: fill rate, interval, tokens, tokens min, tokens max,
        // priority bias (older fields after them are ignored).
        let v: Vec<&str> = text.lines().map(str::trim).collect();
        let num = |i: usize| -> Result<Option<i64>, ConfigError> {
            match v.get(i).filter(|l| !l.is_empty()) {
                None => Ok(None),
                Some(l) => l.parse::<i64>().map(Some).map_err(|_| {
                    r.invalid("schedule", format!("line {}: '{l}' is not a number", i + 1))
                }),
            }
        };
        let u = |i: usize| -> Result<Option<u32>, ConfigError> {
            num(i)?
                .map(|n| {
                    u32::try_from(n).map_err(|_| {
                        r.invalid("schedule", format!("line {}: {n} is out of range", i + 1))
                    })
                })
                .transpose()
        };
        s.fill_rate = u(0)?;
        s.interval = u(1)?;
        s.tokens = u(2)?;
        s.tokens_min = u(3)?;
        s.tokens_max = u(4)?;
        s.prio_bias = num(5)?.map(|b| b.clamp(-20, 19) as i32);
    }
    let file = |name: &str| r.number::<u32>(&format!("{sub}/{name}"));
    s.fill_rate = file("fill-rate")?.or(s.fill_rate);
    s.interval = file("interval")?.or(s.interval);
    s.tokens = file("tokens")?.or(s.tokens);
    s.tokens_min = file("tokens-min")?.or(s.tokens_min);
    s.tokens_max = file("tokens-max")?.or(s.tokens_max);
    s.prio_bias = r
        .number::<i32>(&format!("{sub}/priority-bias"))?
        .map(|b| b.clamp(-20, 19))
        .or(s.prio_bias);
    s.fill_rate2 = file("fill-rate2")?;
    s.interval2 = file("interval2")?;
    s.idle_time = r.exists(&format!("{sub}/idle-time"));
    s.no_governor = r.exists(&format!("{sub}/nogovernor"));
    if s.interval == Some(0) {
        return Err(r.invalid(&format!("{sub}/interval"), "an interval of 0 ticks"));
    }
    for entry in r.entries(sub)? {
        if r.path(&format!("{sub}/{entry}")).is_dir() {
            s.per_cpu.push(format!("{sub}/{entry}"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::super::GuestConfig;
    use super::super::tests::guest;

    #[test]
    fn files_win_over_the_old_schedule_file() {
        let (_t, confdir) = guest(
            "g",
            &[
                ("schedule", "7\n32\n500\n200\n1000\n-3\n"),
                ("sched/fill-rate", "1\n"),
                ("sched/interval", "5\n"),
                ("sched/0/cpu-id", "0\n"),
            ],
        );
        let s = GuestConfig::load(&confdir, "g").unwrap().sched;
        assert_eq!((s.fill_rate, s.interval), (Some(1), Some(5)));
        assert_eq!(
            (s.tokens_min, s.tokens_max, s.prio_bias),
            (Some(200), Some(1000), Some(-3))
        );
        assert_eq!(s.per_cpu, ["sched/0"]);
        let (_t, confdir) = guest("g", &[("sched/interval", "0")]);
        assert!(GuestConfig::load(&confdir, "g").is_err());
    }
}
