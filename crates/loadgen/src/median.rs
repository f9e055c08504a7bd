//! `loadgen median`: the median of fields across the JSON lines of repeated runs, for
//! `scripts/bench.sh` (no jq or Python needed).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct MedianArgs {
    /// File of JSON summary lines, one per run (other lines are skipped).
    file: PathBuf,
    /// Dotted path of a numeric field, e.g. `latency_ms.p99`; repeat for several.
    #[arg(long = "field", required = true)]
    fields: Vec<String>,
}

/// The medians, space-separated in the order of `--field`.
pub fn run(args: &MedianArgs) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let runs: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("a JSON line of {} does not parse", args.file.display()))?;
    if runs.is_empty() {
        bail!("no JSON lines in {}", args.file.display());
    }
    let mut medians = Vec::with_capacity(args.fields.len());
    for field in &args.fields {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|run| {
                field
                    .split('.')
                    .try_fold(run, |value, key| value.get(key))
                    .and_then(serde_json::Value::as_f64)
            })
            .collect();
        if values.is_empty() {
            bail!("no run has a number at {field}");
        }
        values.sort_by(f64::total_cmp);
        medians.push(format!("{}", median(&values)));
    }
    Ok(medians.join(" "))
}

/// Median of sorted values: the middle one, or the mean of the two middle ones.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 5.0, 9.0]), 5.0);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
    }
}
