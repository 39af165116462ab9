//! How busy the machine is: the load average printed next to every figure, so that a noisy run
//! shows, and the CPU time a measured phase used on the whole machine (every process: the
//! handler, PostgreSQL's backends, the receivers), so that two sides of a ratio can be
//! compared by work as well as by wall time. Linux `/proc`; elsewhere both read as unknown.

use std::time::Instant;

/// `/proc/loadavg`: 1, 5 and 15 minutes.
pub fn load_average() -> Option<(f64, f64, f64)> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// "load average 1.21 0.93 0.49 (2 cores)", or "load average unknown".
pub fn load_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    match load_average() {
        Some((a, b, c)) => format!("load average {a:.2} {b:.2} {c:.2} ({cores} cores)"),
        None => "load average unknown".to_owned(),
    }
}

/// Busy CPU time of the whole machine so far, in clock ticks (`/proc/stat`).
fn busy_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle))
}

/// A measured phase: wall time and the machine's CPU time over it.
pub struct Phase {
    started: Instant,
    busy: Option<u64>,
}

/// What a [`Phase`] took.
#[derive(Debug, Clone, Copy)]
pub struct Took {
    pub secs: f64,
    /// Core-seconds of CPU the whole machine was busy.
    pub cpu_secs: Option<f64>,
}

impl Phase {
    pub fn start() -> Phase {
        Phase {
            started: Instant::now(),
            busy: busy_ticks(),
        }
    }

    pub fn stop(&self) -> Took {
        let secs = self.started.elapsed().as_secs_f64();
        // USER_HZ is 100 on every Linux this runs on.
        let cpu_secs = match (self.busy, busy_ticks()) {
            (Some(b0), Some(b1)) => Some(b1.saturating_sub(b0) as f64 / 100.0),
            _ => None,
        };
        Took { secs, cpu_secs }
    }
}

impl Took {
    /// "machine CPU 5.1 core-s (1.9 cores busy)", or nothing when unknown.
    pub fn cpu_note(&self) -> String {
        match self.cpu_secs {
            Some(c) if self.secs > 0.0 => {
                format!(
                    "machine CPU {c:.1} core-s ({:.1} cores busy)",
                    c / self.secs
                )
            }
            _ => String::new(),
        }
    }
}
