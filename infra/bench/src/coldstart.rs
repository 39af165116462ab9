//! Cold start of the function binaries: the time from spawning the process to its first
//! `GET /2018-06-01/runtime/invocation/next` on a loopback Lambda Runtime API — what Lambda
//! bills as init (configuration, logging, the lazy pool, the runtime client) plus the
//! process's own start (loading and relocating the binary). The baseline in the same run is
//! a process that does nothing (`/bin/true`: spawn and exit), the floor any binary pays.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::process::Command;

/// Options of `ferry-bench coldstart`.
pub struct ColdstartBench {
    /// `label=path` of each binary to measure, in the order printed.
    pub binaries: Vec<(String, PathBuf)>,
    pub runs: usize,
}

/// One binary's figures.
struct Figures {
    label: String,
    size: u64,
    samples: Vec<Duration>,
}

/// Runs the benchmark and prints a table.
#[allow(clippy::print_stdout)]
pub async fn coldstart(opts: &ColdstartBench) -> anyhow::Result<()> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut baseline = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let start = Instant::now();
        let status = Command::new("true")
            .status()
            .await
            .context("spawning `true`")?;
        if !status.success() {
            bail!("`true` failed");
        }
        baseline.push(start.elapsed());
    }
    baseline.sort();
    let mut all = Vec::new();
    for (label, path) in &opts.binaries {
        let size = std::fs::metadata(path)
            .with_context(|| format!("{label}: {}", path.display()))?
            .len();
        let mut samples = Vec::with_capacity(opts.runs);
        for run in 0..opts.runs {
            samples.push(
                first_poll(path)
                    .await
                    .with_context(|| format!("{label}, run {}", run + 1))?,
            );
        }
        samples.sort();
        all.push(Figures {
            label: label.clone(),
            size,
            samples,
        });
    }
    let base = median(&baseline);
    println!("machine   {}", crate::machine::load_line());
    println!(
        "cold start: process start to the first GET /runtime/invocation/next, {} runs each",
        opts.runs
    );
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "binary", "bytes", "min", "median", "max", "vs baseline"
    );
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "baseline: spawn `true`",
        "-",
        ms(baseline[0]),
        ms(base),
        ms(baseline[baseline.len() - 1]),
        "1.0"
    );
    for f in &all {
        let m = median(&f.samples);
        println!(
            "{:<28} {:>12} {:>10} {:>10} {:>10} {:>12}",
            f.label,
            f.size,
            ms(f.samples[0]),
            ms(m),
            ms(f.samples[f.samples.len() - 1]),
            format!("{:.1}", m.as_secs_f64() / base.as_secs_f64().max(1e-9)),
        );
    }
    Ok(())
}

/// Spawns the binary in Lambda mode against a fresh loopback listener and returns the time
/// until its first request for an invocation arrives; then kills it.
async fn first_poll(path: &PathBuf) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "eu-west-1")
        // Never connected to: the pool is lazy, as it is on Lambda until the first event.
        .env("DATABASE_URL", "postgres://bench@127.0.0.1:1/bench")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut socket, _) = listener.accept().await?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok((start.elapsed(), request))
    })
    .await;
    let _ = child.start_kill();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut stderr)).await;
    }
    let _ = child.wait().await;
    let (elapsed, request) = match result {
        Ok(r) => r?,
        Err(_) => bail!("no request within 10 s; the binary said: {}", stderr.trim()),
    };
    let line = String::from_utf8_lossy(&request);
    if !line.starts_with("GET /2018-06-01/runtime/invocation/next") {
        bail!(
            "the first request was not a poll for the next invocation: {:?}",
            line.lines().next().unwrap_or_default()
        );
    }
    Ok(elapsed)
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
