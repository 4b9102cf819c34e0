//! Results: one markdown table per scenario, and `results.json`.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::{env, fs};

use crate::config::Check;
use crate::json::quote;
use crate::measure::{Show, Stat};
use crate::transport::PIPE;

// ---------------------------------------------------------------------------------------
// Results: markdown tables and JSON
// ---------------------------------------------------------------------------------------

pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) area: &'static str,
    /// The machine check before and after the scenario, ns per round trip.
    pub(crate) check: Check,
    pub(crate) implementation: &'static str,
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) ratio: Option<f64>,
    pub(crate) vs_pipe: Option<f64>,
    /// Where this row is a target's measure: conduit's median ÷ this row's should be at
    /// most this.
    pub(crate) target: Option<f64>,
}

/// What a row is, by its name: conduit itself, another implementation (a peer), a
/// reference conduit is measured against without competing with it (`ref: …`: another
/// conduit configuration, a bare protocol, a plain atomic), or a physical limit
/// (`spin: …`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Conduit,
    Peer,
    Reference,
    Limit,
}

impl Role {
    pub(crate) fn of(name: &str) -> Role {
        if is_conduit(name) {
            Role::Conduit
        } else if name.starts_with("ref:") {
            Role::Reference
        } else if name.starts_with("spin:") {
            Role::Limit
        } else {
            Role::Peer
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Conduit => "conduit",
            Role::Peer => "peer",
            Role::Reference => "reference",
            Role::Limit => "limit",
        }
    }
}

pub(crate) fn is_conduit(name: &str) -> bool {
    name.starts_with("conduit")
}

/// The fastest non-conduit entry among those `keep` accepts.
pub(crate) fn best_of(stats: &[Stat], keep: impl Fn(&str) -> bool) -> Option<&Stat> {
    stats
        .iter()
        .filter(|s| !is_conduit(s.name) && keep(s.name))
        .min_by(|a, b| a.median.total_cmp(&b.median))
}

pub(crate) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}"))
}

/// Prints the table for one scenario and returns its JSON rows. For `ipc` scenarios the
/// table also compares with the pipe and with the spinning shared-memory limit.
pub(crate) fn report(
    scenario: &str,
    title: &str,
    show: &Show,
    check: Check,
    mut stats: Vec<Stat>,
) -> Vec<Row> {
    let (unit, ipc) = (show.unit, show.ipc_columns);
    stats.sort_by(|a, b| a.median.total_cmp(&b.median));
    let best = best_of(&stats, |_| true).map(|s| (s.name, s.median));
    let pipe = best_of(&stats, |n| n == PIPE).map(|s| s.median);
    let spin = best_of(&stats, |n| n.starts_with("spin")).map(|s| s.median);
    let conduit = stats.iter().find(|s| is_conduit(s.name));

    let mut out = format!("\n### {title}\n\n");
    if ipc {
        let _ = writeln!(
            out,
            "| implementation | median {unit} | min {unit} | ÷ pipe | ÷ spin limit |"
        );
        out.push_str("|---|---:|---:|---:|---:|\n");
    } else {
        let _ = writeln!(
            out,
            "| implementation | median {unit} | min {unit} | ÷ best peer |"
        );
        out.push_str("|---|---:|---:|---:|\n");
    }
    let mut rows = Vec::new();
    for s in &stats {
        let ratio = best.map(|(_, b)| s.median / b);
        let vs_pipe = pipe.map(|p| s.median / p);
        let name = if is_conduit(s.name) {
            format!("**{}**", s.name)
        } else {
            s.name.to_string()
        };
        let _ = write!(out, "| {name} | {:.1} | {:.1} |", s.median, s.min);
        if ipc {
            let vs_spin = spin.map(|p| s.median / p);
            let _ = writeln!(out, " {} | {} |", fmt_ratio(vs_pipe), fmt_ratio(vs_spin));
        } else {
            let _ = writeln!(out, " {} |", fmt_ratio(ratio));
        }
        rows.push(Row {
            scenario: scenario.to_string(),
            area: show.area.name(),
            check,
            implementation: s.name,
            median: s.median,
            min: s.min,
            ratio,
            vs_pipe: if ipc { vs_pipe } else { None },
            target: show
                .targets
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|&(_, most)| most),
        });
    }
    match (conduit, ipc) {
        (Some(c), false) => {
            if let Some((peer, b)) = best {
                let _ = writeln!(
                    out,
                    "| **{} ÷ best peer ({peer})** | | | **{:.2}** |",
                    c.name,
                    c.median / b
                );
            }
        }
        (Some(c), true) => {
            let _ = writeln!(
                out,
                "| **{} ÷ pipe, ÷ spin limit** | | | **{}** | **{}** |",
                c.name,
                fmt_ratio(pipe.map(|p| c.median / p)),
                fmt_ratio(spin.map(|p| c.median / p))
            );
        }
        (None, _) => {}
    }
    if let Some(c) = conduit {
        for &(name, most) in show.targets {
            let Some(other) = stats.iter().find(|s| s.name == name) else {
                continue;
            };
            let r = c.median / other.median;
            let verdict = if r <= most { "met" } else { "missed" };
            let pad = if ipc { " |" } else { "" };
            let _ = writeln!(
                out,
                "| **{} ÷ {name}** (target ≤ {most}: {verdict}) | | |{pad} **{r:.2}** |",
                c.name
            );
        }
    }
    print!("{out}");
    let _ = io::stdout().flush();
    rows
}

pub(crate) fn json_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".to_string(),
    }
}

/// `target/conduit-bench/results.json`, under `$CARGO_TARGET_DIR` if that is set.
pub(crate) fn results_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(|t| manifest.join(t))
        .unwrap_or_else(|| manifest.join("target"));
    target.join("conduit-bench").join("results.json")
}

/// Writes [`results_json`] to [`results_path`].
pub(crate) fn write_json(rows: &[Row]) -> io::Result<PathBuf> {
    let path = results_path();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&path, results_json(rows))?;
    Ok(path)
}

/// The rows as `results.json`'s text: an array of flat objects, one per line.
pub(crate) fn results_json(rows: &[Row]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "  {{\"scenario\": {}, \"area\": {}, \"implementation\": {}, \"role\": {}, \"median_ns\": {}, \"min_ns\": {}, \"ratio\": {}",
            quote(&r.scenario),
            quote(r.area),
            quote(r.implementation),
            quote(Role::of(r.implementation).name()),
            json_num(Some(r.median)),
            json_num(Some(r.min)),
            json_num(r.ratio)
        );
        if let Some(t) = r.target {
            let _ = write!(out, ", \"target\": {}", json_num(Some(t)));
        }
        if let Some(p) = r.vs_pipe {
            let _ = write!(out, ", \"ratio_vs_pipe\": {}", json_num(Some(p)));
        }
        let _ = write!(
            out,
            ", \"check_before_ns\": {}, \"check_after_ns\": {}",
            json_num(Some(r.check.before)),
            json_num(Some(r.check.after))
        );
        out.push_str(if i + 1 == rows.len() { "}\n" } else { "},\n" });
    }
    out.push_str("]\n");
    out
}
