//! A request's query string, strictly: every parameter known to the route, none twice, every
//! value checked. A problem names its parameter (answered 400).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use ferry_shared::queries::Grain;

/// Longest range a request may read.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Most buckets one time series may return.
pub const MAX_BUCKETS: i64 = 2_016;
/// Largest page of a list.
pub const MAX_LIMIT: i64 = 100;
/// Deepest page of a ranked list.
pub const MAX_OFFSET: i64 = 10_000;
/// Longest text value (a type, page, currency or user id).
const MAX_TEXT: usize = 256;

/// A parameter the request got wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    pub parameter: String,
    pub problem: String,
}

fn bad(parameter: &str, problem: impl Into<String>) -> BadParam {
    BadParam {
        parameter: parameter.to_owned(),
        problem: problem.into(),
    }
}

/// The parsed query string of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// A validated `[from, to)` and the grain its series are read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Params {
    /// Parses `raw`, refusing parameters the route does not know and repeated ones.
    pub fn parse(raw: &str, known: &[&str]) -> Result<Params, BadParam> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            if !known.contains(&k.as_ref()) {
                let k: String = k.chars().take(64).collect();
                let problem = if known.is_empty() {
                    "this route takes no parameters".to_owned()
                } else {
                    format!("unknown parameter; this route takes {}", known.join(", "))
                };
                return Err(bad(&k, problem));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(bad(&k, "given more than once"));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A time: RFC 3339 (`2026-11-20T08:00:00Z`) or a date (`2026-11-20`, midnight UTC).
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, BadParam> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let parsed = DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                // `%Y` would take any signed year: only four digits, as in RFC 3339.
                let date = v.get(..10).filter(|d| d.len() == v.len())?;
                NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .ok()?
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc())
            });
        match parsed {
            // Years 1 to 9999: what PostgreSQL stores and date arithmetic cannot overflow.
            Some(t) if (1..=9999).contains(&t.year()) => Ok(Some(t)),
            Some(_) => Err(bad(name, "the year must be from 0001 to 9999")),
            None => Err(bad(
                name,
                "not a time: use RFC 3339 (2026-11-20T08:00:00Z) or a date (2026-11-20)",
            )),
        }
    }

    /// `from` and `to`: by default the 24 hours up to now; `to` after `from`, at most
    /// [`MAX_RANGE_DAYS`] apart.
    pub fn range(&self, now: DateTime<Utc>) -> Result<Range, BadParam> {
        let to = self.time("to")?.unwrap_or(now);
        let from = match self.time("from")? {
            Some(from) => from,
            None => to
                .checked_sub_signed(Duration::hours(24))
                .ok_or_else(|| bad("to", "too early to have a default from"))?,
        };
        if to <= from {
            return Err(bad("to", "must be after from"));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(bad(
                "from",
                format!("the range is longer than {MAX_RANGE_DAYS} days"),
            ));
        }
        Ok(Range { from, to })
    }

    /// `grain` (`5m`, `1h` or `1d`), or the finest that keeps a series of `range` short: 5m up
    /// to 2 days, 1h up to 31 days, else 1d. A given grain must not make more than
    /// [`MAX_BUCKETS`] buckets.
    pub fn grain(&self, range: Range) -> Result<Grain, BadParam> {
        let span = (range.to - range.from).num_seconds();
        let grain = match self.get("grain") {
            Some("5m") => Grain::FiveMinutes,
            Some("1h") => Grain::Hour,
            Some("1d") => Grain::Day,
            Some(_) => return Err(bad("grain", "one of 5m, 1h, 1d")),
            None if span <= 2 * 86_400 => Grain::FiveMinutes,
            None if span <= 31 * 86_400 => Grain::Hour,
            None => Grain::Day,
        };
        // As `time_series` returns them: from `from` aligned down to the grain up to `to`.
        let g = grain.seconds();
        let (a, b) = (range.from.timestamp(), range.to.timestamp());
        let buckets = (b + g - 1).div_euclid(g) - a.div_euclid(g);
        if buckets > MAX_BUCKETS {
            return Err(bad(
                "grain",
                format!(
                    "{} over this range is {buckets} buckets, more than {MAX_BUCKETS}: choose a \
                     coarser grain or a shorter range",
                    grain_name(grain)
                ),
            ));
        }
        Ok(grain)
    }

    /// An integer in `1..=max`, `default` when absent.
    pub fn number(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, BadParam> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(bad(name, format!("an integer from {min} to {max}"))),
            },
        }
    }

    /// `limit` (1 to [`MAX_LIMIT`], default `default`).
    pub fn limit(&self, default: i64) -> Result<i64, BadParam> {
        self.number("limit", default, 1, MAX_LIMIT)
    }

    /// `offset` (0 to [`MAX_OFFSET`], default 0).
    pub fn offset(&self) -> Result<i64, BadParam> {
        self.number("offset", 0, 0, MAX_OFFSET)
    }

    /// A short text value, if given.
    pub fn text(&self, name: &str) -> Result<Option<&str>, BadParam> {
        match self.get(name) {
            Some(v) if v.is_empty() || v.len() > MAX_TEXT => {
                Err(bad(name, format!("must be 1 to {MAX_TEXT} bytes")))
            }
            Some(v) if v.chars().any(char::is_control) => {
                Err(bad(name, "must not hold control characters"))
            }
            other => Ok(other),
        }
    }
}

/// How a grain is written in requests and answers.
pub fn grain_name(grain: Grain) -> &'static str {
    match grain {
        Grain::FiveMinutes => "5m",
        Grain::Hour => "1h",
        Grain::Day => "1d",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = Params::parse("from=2026-11-01&colour=red", &["from", "to"]).unwrap_err();
        assert_eq!(e.parameter, "colour");
        let e = Params::parse("to=2026-11-01&to=2026-11-02", &["from", "to"]).unwrap_err();
        assert_eq!(
            (e.parameter.as_str(), e.problem.as_str()),
            ("to", "given more than once")
        );
        assert!(Params::parse("", &[]).is_ok());
    }

    #[test]
    fn ranges_default_to_a_day_and_are_bounded() {
        let now = t("2026-11-20T12:00:00Z");
        let r = Params::parse("", &["from", "to"])
            .unwrap()
            .range(now)
            .unwrap();
        assert_eq!((r.from, r.to), (t("2026-11-19T12:00:00Z"), now));
        let p = Params::parse("from=2026-11-20&to=2026-11-19", &["from", "to"]).unwrap();
        assert_eq!(p.range(now).unwrap_err().parameter, "to");
        let p = Params::parse("from=2024-01-01", &["from", "to"]).unwrap();
        assert_eq!(p.range(now).unwrap_err().parameter, "from");
        let p = Params::parse("from=yesterday", &["from"]).unwrap();
        assert_eq!(p.range(now).unwrap_err().parameter, "from");
        for extreme in [
            "-262143-01-01",
            "-5000-01-01",
            "0000-01-01",
            "+10000-01-01",
            "20261-01-01",
        ] {
            let p = Params::parse(&format!("to={extreme}"), &["from", "to"]).unwrap();
            assert_eq!(p.range(now).unwrap_err().parameter, "to", "{extreme}");
        }
        let p = Params::parse("from=2026-11-20T08:00:00%2B01:00", &["from"]).unwrap();
        assert_eq!(p.range(now).unwrap().from, t("2026-11-20T07:00:00Z"));
    }

    #[test]
    fn grain_follows_the_range_unless_given_and_never_makes_too_many_buckets() {
        let range = |a: &str, b: &str| Range {
            from: t(a),
            to: t(b),
        };
        let none = Params::default();
        let day = range("2026-11-19T00:00:00Z", "2026-11-20T00:00:00Z");
        let month = range("2026-10-20T00:00:00Z", "2026-11-20T00:00:00Z");
        let quarter = range("2026-08-20T00:00:00Z", "2026-11-20T00:00:00Z");
        assert_eq!(none.grain(day).unwrap(), Grain::FiveMinutes);
        assert_eq!(none.grain(month).unwrap(), Grain::Hour);
        assert_eq!(none.grain(quarter).unwrap(), Grain::Day);
        let five = Params::parse("grain=5m", &["grain"]).unwrap();
        assert_eq!(five.grain(day).unwrap(), Grain::FiveMinutes);
        assert_eq!(five.grain(month).unwrap_err().parameter, "grain");
        // Exactly 2,016 five-minute buckets (7 aligned days) is the most a series may have.
        let week = range("2026-11-13T00:00:00Z", "2026-11-20T00:00:00Z");
        assert_eq!(five.grain(week).unwrap(), Grain::FiveMinutes);
        let longer = range("2026-11-13T00:00:00Z", "2026-11-20T00:00:01Z");
        assert_eq!(five.grain(longer).unwrap_err().parameter, "grain");
        let odd = Params::parse("grain=2h", &["grain"]).unwrap();
        assert_eq!(odd.grain(day).unwrap_err().parameter, "grain");
    }

    #[test]
    fn numbers_and_texts_are_bounded() {
        let p = Params::parse("limit=0&offset=-1&type=", &["limit", "offset", "type"]).unwrap();
        assert_eq!(p.limit(10).unwrap_err().parameter, "limit");
        assert_eq!(p.offset().unwrap_err().parameter, "offset");
        assert_eq!(p.text("type").unwrap_err().parameter, "type");
        let p = Params::parse("type=a%00b", &["type"]).unwrap();
        assert_eq!(p.text("type").unwrap_err().parameter, "type");
        let p = Params::parse("limit=100", &["limit"]).unwrap();
        assert_eq!(p.limit(10).unwrap(), 100);
        assert_eq!(Params::default().limit(10).unwrap(), 10);
    }
}
