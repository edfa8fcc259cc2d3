//! Load generation with wrk (Debian's package), pinned to its own core, and parsing of
//! what it prints.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// One wrk run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// Responses other than 2xx/3xx.
    pub non_2xx: u64,
}

/// Runs wrk against `url` with the Lua `script`, one thread on `core`.
pub fn run(
    core: usize,
    url: &str,
    script: &Path,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<Run> {
    let output = Command::new("taskset")
        .args(["-c", &core.to_string(), "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&text)
}

fn duration_us(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

pub fn parse(text: &str) -> anyhow::Result<Run> {
    let mut run = Run::default();
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["50%", value] => run.p50_us = duration_us(value).unwrap_or_default(),
            ["99%", value] => run.p99_us = duration_us(value).unwrap_or_default(),
            ["Requests/sec:", value] => run.rps = value.parse().unwrap_or_default(),
            ["Non-2xx", "or", "3xx", "responses:", value] => {
                run.non_2xx = value.parse().unwrap_or_default()
            }
            [count, "requests", "in", ..] => run.requests = count.parse().unwrap_or_default(),
            _ => {}
        }
    }
    if run.rps == 0.0 {
        bail!("wrk printed no rate:\n{text}");
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 5s test @ http://127.0.0.1:1\n  Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    2.25ms\n  123456 requests in 5.00s, 10.00MB read\n  Non-2xx or 3xx responses: 7\nRequests/sec:  24691.20\n";
        let run = parse(text).expect("parsed");
        assert_eq!(
            (run.p50_us, run.p99_us, run.requests, run.non_2xx),
            (512.0, 2250.0, 123_456, 7)
        );
        assert!((run.rps - 24_691.2).abs() < 1e-6);
    }
}
