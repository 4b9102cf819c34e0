//! What a user reads: after a run of every scenario (quick or full), the bench turns
//! `results.json` into ratios (conduit's median ÷ the best peer's, and ÷ each contender
//! an issue sets a target against), appends them to the run history
//! `benches/history.json` (the last [`HISTORY_RUNS`] runs), and writes
//!
//! - `benches/chart.svg`: one bar per scenario, conduit ÷ best peer on a log scale with a
//!   line at 1.0, grouped by area, each with the range over the runs in the history and
//!   its target where it has one;
//! - `benches/ratios.md`: the same ratios as a markdown table with their range over the
//!   runs in the history (also printed).
//!
//! `cargo bench --bench compare -- --chart` redraws both from the history (after its
//! entries were edited, say) without running anything or adding a run. The SVG is written by hand (plain
//! text, a white background so that it reads the same on light and dark pages).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{fs, io, process};

use crate::config::{CHECK_SPREAD, Mode};
use crate::json::Json;
use crate::measure::Area;
use crate::report::Role;

/// Runs kept in `benches/history.json`, and so the runs a range covers.
pub(crate) const HISTORY_RUNS: usize = 10;

/// One ratio: conduit's median in a scenario ÷ another contender's.
#[derive(Clone)]
struct Ratio {
    area: String,
    scenario: String,
    /// The contender divided by.
    against: String,
    ratio: f64,
    /// The most this ratio should be, where an issue sets a target.
    target: Option<f64>,
    /// conduit ÷ the best peer (the chart's bar); otherwise a target's ratio.
    headline: bool,
    /// The machine check around the scenario read off the run's median (see
    /// `config::line_round_trip_ns`).
    check_off: bool,
}

impl Ratio {
    /// What a range is kept for: the scenario and what conduit is divided by, where the
    /// headline's "best peer" is one thing even when another peer was fastest in
    /// another run.
    fn key(&self) -> (String, String) {
        let against = if self.headline {
            "(best peer)"
        } else {
            &self.against
        };
        (self.scenario.clone(), against.to_string())
    }

    fn to_json(&self) -> Json {
        let mut fields = vec![
            ("area".to_string(), Json::Str(self.area.clone())),
            ("scenario".to_string(), Json::Str(self.scenario.clone())),
            ("against".to_string(), Json::Str(self.against.clone())),
            ("ratio".to_string(), Json::Num(self.ratio)),
            ("headline".to_string(), Json::Bool(self.headline)),
            ("check_off".to_string(), Json::Bool(self.check_off)),
        ];
        if let Some(t) = self.target {
            fields.push(("target".to_string(), Json::Num(t)));
        }
        Json::Obj(fields)
    }

    fn from_json(j: &Json) -> Option<Ratio> {
        Some(Ratio {
            area: j.str("area")?.to_string(),
            scenario: j.str("scenario")?.to_string(),
            against: j.str("against")?.to_string(),
            ratio: j.num("ratio")?,
            target: j.num("target"),
            headline: j.flag("headline"),
            check_off: j.flag("check_off"),
        })
    }
}

/// The ratios of one `results.json`, scenario by scenario in the order of [`Area::ALL`]
/// (scenarios without a conduit row, or with nobody to compare it with, have none). The
/// headline compares with the fastest peer, or where a scenario has no peer, the fastest
/// reference (`ref: …`).
fn ratios(results: &Json) -> Vec<Ratio> {
    let rows = results.items();
    let mut checks: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.num("check_before_ns"), r.num("check_after_ns")])
        .flatten()
        .collect();
    checks.sort_by(f64::total_cmp);
    let median_check = checks.get(checks.len().saturating_sub(1) / 2).copied();

    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows {
        if let Some(s) = r.str("scenario")
            && !scenarios.contains(&s)
        {
            scenarios.push(s);
        }
    }
    let mut out = Vec::new();
    for scenario in scenarios {
        let rows: Vec<&Json> = rows
            .iter()
            .filter(|r| r.str("scenario") == Some(scenario))
            .collect();
        let role = |r: &Json| {
            let name = r.str("implementation").unwrap_or("");
            r.str("role")
                .and_then(|role| {
                    [Role::Conduit, Role::Peer, Role::Reference, Role::Limit]
                        .into_iter()
                        .find(|x| x.name() == role)
                })
                .unwrap_or(Role::of(name))
        };
        let fastest = |want: Role| {
            rows.iter()
                .filter(|r| role(r) == want && r.num("median_ns").is_some())
                .min_by(|a, b| {
                    a.num("median_ns")
                        .unwrap()
                        .total_cmp(&b.num("median_ns").unwrap())
                })
                .copied()
        };
        let Some(conduit) = fastest(Role::Conduit) else {
            continue;
        };
        let c = conduit.num("median_ns").unwrap();
        let check_off = median_check.is_some_and(|m| {
            let (b, a) = (
                conduit.num("check_before_ns").unwrap_or(m),
                conduit.num("check_after_ns").unwrap_or(m),
            );
            b.max(a) > CHECK_SPREAD * m || b.min(a) * CHECK_SPREAD < m
        });
        let ratio = |other: &Json, headline: bool| Ratio {
            area: conduit.str("area").unwrap_or("other").to_string(),
            scenario: scenario.to_string(),
            against: other.str("implementation").unwrap_or("?").to_string(),
            ratio: c / other.num("median_ns").unwrap_or(f64::NAN),
            target: other.num("target"),
            headline,
            check_off,
        };
        let best = fastest(Role::Peer).or_else(|| fastest(Role::Reference));
        if let Some(best) = best {
            out.push(ratio(best, true));
        }
        for r in rows.iter().filter(|r| r.num("target").is_some()) {
            if best.is_none_or(|b| !std::ptr::eq(b, *r)) {
                out.push(ratio(r, false));
            }
        }
    }
    let order = |r: &Ratio| Area::from_name(&r.area).map_or(usize::MAX, |a| a as usize);
    out.sort_by_key(order); // stable: scenarios keep their order within an area
    out
}

/// One run of the history.
struct Run {
    date: String,
    commit: String,
    mode: String,
    ratios: Vec<Ratio>,
}

impl Run {
    fn to_json(&self) -> Json {
        Json::Obj(vec![
            ("date".to_string(), Json::Str(self.date.clone())),
            ("commit".to_string(), Json::Str(self.commit.clone())),
            ("mode".to_string(), Json::Str(self.mode.clone())),
            (
                "ratios".to_string(),
                Json::Arr(self.ratios.iter().map(Ratio::to_json).collect()),
            ),
        ])
    }

    fn from_json(j: &Json) -> Option<Run> {
        Some(Run {
            date: j.str("date")?.to_string(),
            commit: j.str("commit").unwrap_or("?").to_string(),
            mode: j.str("mode").unwrap_or("?").to_string(),
            ratios: j
                .get("ratios")?
                .items()
                .iter()
                .filter_map(Ratio::from_json)
                .collect(),
        })
    }
}

fn benches_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches")
}

/// The history, oldest run first; empty if there is no file yet.
fn load_history(path: &Path) -> io::Result<Vec<Run>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let json = Json::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(json.items().iter().filter_map(Run::from_json).collect())
}

fn read_results(path: &Path) -> io::Result<Json> {
    let text = fs::read_to_string(path)?;
    Json::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// After a run of every scenario: adds the run to the history, then writes the chart and
/// the table (see the module docs).
pub(crate) fn record(results: &Path, mode: Mode) -> io::Result<()> {
    let ratios = ratios(&read_results(results)?);
    let path = benches_dir().join("history.json");
    let mut history = load_history(&path)?;
    history.push(Run {
        date: now_utc(),
        commit: commit(),
        mode: if mode == Mode::Full { "full" } else { "quick" }.to_string(),
        ratios,
    });
    let drop = history.len().saturating_sub(HISTORY_RUNS);
    history.drain(..drop);
    fs::write(
        &path,
        Json::Arr(history.iter().map(Run::to_json).collect()).write(),
    )?;
    eprintln!(
        "compare: run {} of the history in {}",
        history.len(),
        path.display()
    );
    publish(&history)
}

/// The smoke test's check of this module (under `cargo test --benches`, which writes no
/// file): the results go through the JSON parser, become ratios, a history entry that
/// survives a write and a parse, a table and a chart with a bar for each headline ratio.
pub(crate) fn smoke(results: &str) {
    let json = Json::parse(results).expect("results.json parses");
    let ratios = ratios(&json);
    let run = Run {
        date: now_utc(),
        commit: "smoke".to_string(),
        mode: "smoke".to_string(),
        ratios: ratios.clone(),
    };
    let text = Json::Arr(vec![run.to_json()]).write();
    let back = Json::parse(&text).expect("history parses");
    let runs: Vec<Run> = back.items().iter().filter_map(Run::from_json).collect();
    assert_eq!(runs.len(), 1, "history round trip");
    assert_eq!(runs[0].ratios.len(), ratios.len(), "history round trip");
    for (a, b) in ratios.iter().zip(&runs[0].ratios) {
        assert_eq!(a.key(), b.key(), "history round trip");
        assert!(
            (a.ratio - b.ratio).abs() <= 0.0005 * a.ratio.abs() || !a.ratio.is_finite(),
            "history round trip: {} against {}",
            a.ratio,
            b.ratio
        );
    }
    let ranges = ranges(&runs);
    let headlines = ratios.iter().filter(|r| r.headline).count();
    let md = table(&ratios, &ranges, 1, "smoke run");
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| ")).count(),
        headlines
            + 1
            + ratios.iter().filter(|r| r.target.is_some()).count()
            + usize::from(ratios.iter().any(|r| r.target.is_some())),
        "one table row per ratio"
    );
    let svg = chart(&ratios, &ranges, 1, "smoke run");
    assert_eq!(
        svg.matches("<rect x=").count(),
        headlines + 2,
        "one bar per headline ratio"
    );
    eprintln!("compare: chart and table check out ({headlines} scenarios charted)");
}

/// Redraws the chart and the table from the history (its last run, and the ranges over
/// all of it), adding nothing.
pub(crate) fn redraw() -> io::Result<()> {
    let history = load_history(&benches_dir().join("history.json"))?;
    if history.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no run in benches/history.json: run every scenario once first",
        ));
    }
    publish(&history)
}

/// Writes the chart and the table of the history's last run.
fn publish(history: &[Run]) -> io::Result<()> {
    let latest: &[Ratio] = history.last().map_or(&[], |r| &r.ratios);
    let ranges = ranges(history);
    let about = history.last().map_or_else(
        || "latest results (no history yet)".to_string(),
        |r| format!("{} run of {} (commit {})", r.mode, r.date, r.commit),
    );
    let svg = chart(latest, &ranges, history.len(), &about);
    let chart_path = benches_dir().join("chart.svg");
    fs::write(&chart_path, svg)?;
    let md = table(latest, &ranges, history.len(), &about);
    print!("\n{md}");
    let md_path = benches_dir().join("ratios.md");
    fs::write(&md_path, md)?;
    eprintln!(
        "compare: chart in {}, table in {}",
        chart_path.display(),
        md_path.display()
    );
    Ok(())
}

/// For each [`Ratio::key`]: the lowest and highest ratio over the history's runs, and in
/// how many runs it appears.
type Ranges = HashMap<(String, String), (f64, f64, usize)>;

fn ranges(history: &[Run]) -> Ranges {
    let mut out: Ranges = HashMap::new();
    for r in history.iter().flat_map(|run| &run.ratios) {
        if !r.ratio.is_finite() {
            continue;
        }
        let e = out.entry(r.key()).or_insert((r.ratio, r.ratio, 0));
        e.0 = e.0.min(r.ratio);
        e.1 = e.1.max(r.ratio);
        e.2 += 1;
    }
    out
}

fn range_of<'a>(ranges: &'a Ranges, r: &Ratio) -> Option<&'a (f64, f64, usize)> {
    ranges.get(&r.key())
}

/// The markdown: a table of the headline ratios (one row per scenario), then one of the
/// issues' targets, each with the latest value and the range over the history.
fn table(latest: &[Ratio], ranges: &Ranges, runs: usize, about: &str) -> String {
    let range = |r: &Ratio| match range_of(ranges, r) {
        Some(&(lo, hi, n)) if n > 1 => format!("{}–{}", fmt(lo), fmt(hi)),
        _ => "–".to_string(),
    };
    let warn = |r: &Ratio| if r.check_off { " ⚠" } else { "" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "conduit's median time ÷ the best other implementation's (below 1: conduit is \
         faster), from the {about}; the range covers the last {runs} run(s) kept in \
         `benches/history.json`. ⚠: the machine check read off around the scenario in the \
         latest run.\n"
    );
    out.push_str("| area | scenario | conduit ÷ best peer | latest | range |\n");
    out.push_str("|---|---|---|---:|---:|\n");
    let mut area = "";
    for r in latest.iter().filter(|r| r.headline) {
        let shown = if r.area == area { "" } else { r.area.as_str() };
        area = &r.area;
        let _ = writeln!(
            out,
            "| {shown} | {} | {} | {}{} | {} |",
            r.scenario,
            r.against,
            fmt(r.ratio),
            warn(r),
            range(r)
        );
    }
    let targets: Vec<&Ratio> = latest.iter().filter(|r| r.target.is_some()).collect();
    if !targets.is_empty() {
        out.push_str("\nThe issues' targets:\n\n");
        out.push_str("| scenario | conduit ÷ | target | latest | range |\n");
        out.push_str("|---|---|---:|---:|---:|\n");
        for r in targets {
            let t = r.target.unwrap_or(f64::NAN);
            let verdict = if r.ratio <= t { "met" } else { "missed" };
            let _ = writeln!(
                out,
                "| {} | {} | ≤ {t} | {}{} ({verdict}) | {} |",
                r.scenario,
                r.against,
                fmt(r.ratio),
                warn(r),
                range(r)
            );
        }
    }
    out
}

/// A ratio with two significant digits below 0.1 (0.0043), two decimals above.
fn fmt(r: f64) -> String {
    if r > 0.0 && r < 0.1 {
        let digits = (1.0 - r.log10().floor()) as usize;
        format!("{r:.digits$}")
    } else {
        format!("{r:.2}")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG chart of the headline ratios (see the module docs).
fn chart(latest: &[Ratio], ranges: &Ranges, runs: usize, about: &str) -> String {
    const WIDTH: f64 = 1060.0;
    const LABEL_END: f64 = 400.0;
    const X0: f64 = 410.0;
    const X1: f64 = 780.0;
    const VALUE_X: f64 = 790.0;
    const ROW: f64 = 22.0;
    const HEADER: f64 = 28.0;
    const TOP: f64 = 76.0;
    const FASTER: &str = "#2e7d32";
    const SLOWER: &str = "#d84315";

    let bars: Vec<&Ratio> = latest
        .iter()
        .filter(|r| r.headline && r.ratio.is_finite() && r.ratio > 0.0)
        .collect();
    // The scale: whole decades around every value drawn, at least 0.1 to 10.
    let mut lo: f64 = 0.1;
    let mut hi: f64 = 10.0;
    for r in &bars {
        let mut vals = vec![r.ratio];
        vals.extend(r.target);
        if let Some(&(a, b, _)) = range_of(ranges, r) {
            vals.extend([a, b]);
        }
        for v in vals.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
    let x = |r: f64| X0 + (r.log10().clamp(lo, hi) - lo) / (hi - lo) * (X1 - X0);

    let mut areas: Vec<&str> = Vec::new();
    for r in &bars {
        if !areas.contains(&r.area.as_str()) {
            areas.push(&r.area);
        }
    }
    let plot_bottom = TOP + areas.len() as f64 * HEADER + bars.len() as f64 * ROW + 8.0;
    let height = plot_bottom + 64.0;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="24" font-size="16" font-weight="bold" fill="#111111">conduit ÷ the best peer: median time per message, round trip or operation</text>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="44" fill="#444444">Left of 1: conduit is faster. Log scale. From the {}; whiskers: range over the last {runs} run(s).</text>"##,
        xml(about)
    );
    // Grid: every decade, with 2× and 5× marks between.
    let decades = lo as i32..=hi as i32;
    for d in decades.clone() {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v.log10() > hi + 1e-9 {
                continue;
            }
            let gx = x(v);
            let (stroke, w) = if m == 1.0 {
                ("#bbbbbb", 1.0)
            } else {
                ("#e4e4e4", 1.0)
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{gx:.1}" y1="{TOP:.1}" x2="{gx:.1}" y2="{plot_bottom:.1}" stroke="{stroke}" stroke-width="{w}"/>"#
            );
            if m == 1.0 || (hi - lo) <= 3.0 {
                let label = if v >= 1.0 {
                    format!("{v:.0}×")
                } else {
                    format!("{}×", trim(v))
                };
                let _ = writeln!(
                    svg,
                    r##"<text x="{gx:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#444444">{label}</text>"##,
                    TOP - 6.0
                );
            }
        }
    }
    let mut y = TOP;
    for area in &areas {
        y += HEADER;
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{:.1}" font-weight="bold" fill="#111111">{}</text>"##,
            y - 8.0,
            xml(area)
        );
        for r in bars.iter().filter(|r| r.area == *area) {
            let mid = y + ROW / 2.0;
            let (a, b) = (x(1.0), x(r.ratio));
            let color = if r.ratio <= 1.0 { FASTER } else { SLOWER };
            let _ = writeln!(
                svg,
                r##"<text x="{LABEL_END}" y="{:.1}" text-anchor="end" fill="#111111">{}</text>"##,
                mid + 4.5,
                xml(&r.scenario)
            );
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{color}"/>"#,
                a.min(b),
                mid - 7.0,
                (a - b).abs().max(1.0)
            );
            if let Some(&(lo_r, hi_r, n)) = range_of(ranges, r)
                && n > 1
            {
                let (l, h) = (x(lo_r), x(hi_r));
                let _ = writeln!(
                    svg,
                    r##"<path d="M{l:.1} {:.1}v8M{l:.1} {mid:.1}H{h:.1}M{h:.1} {:.1}v8" stroke="#111111" stroke-width="1.5" fill="none"/>"##,
                    mid - 4.0,
                    mid - 4.0
                );
            }
            if let Some(t) = r.target {
                let tx = x(t);
                let _ = writeln!(
                    svg,
                    r##"<path d="M{tx:.1} {:.1}l-5 -6h10z" fill="#1565c0"/>"##,
                    mid - 8.0
                );
            }
            let warn = if r.check_off { " ⚠" } else { "" };
            let _ = writeln!(
                svg,
                r##"<text x="{VALUE_X}" y="{:.1}" fill="#111111">{}× {}{warn}</text>"##,
                mid + 4.5,
                fmt(r.ratio),
                xml(&r.against)
            );
            y += ROW;
        }
    }
    let one = x(1.0);
    let _ = writeln!(
        svg,
        r##"<line x1="{one:.1}" y1="{:.1}" x2="{one:.1}" y2="{plot_bottom:.1}" stroke="#111111" stroke-width="2"/>"##,
        TOP - 2.0
    );
    // Legend.
    let ly = plot_bottom + 24.0;
    let _ = writeln!(
        svg,
        r##"<rect x="10" y="{:.1}" width="14" height="14" fill="{FASTER}"/><text x="30" y="{ly:.1}" fill="#111111">conduit faster</text>
<rect x="150" y="{:.1}" width="14" height="14" fill="{SLOWER}"/><text x="170" y="{ly:.1}" fill="#111111">conduit slower</text>
<path d="M300 {:.1}l-5 -6h10z" fill="#1565c0"/><text x="312" y="{ly:.1}" fill="#111111">target (issue)</text>
<text x="440" y="{ly:.1}" fill="#111111">⚠ machine check off during the scenario</text>"##,
        ly - 11.0,
        ly - 11.0,
        ly - 2.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="{:.1}" font-size="11" fill="#444444">cargo bench --bench compare  (benches/README.md explains the scenarios, peers and machine check)</text>"##,
        ly + 24.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// `v` (a power of ten times 1, 2 or 5, below 1) without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The checked-out commit, with `+` when the tree has changes; `?` without git.
fn commit() -> String {
    let git = |args: &[&str]| {
        process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "?".to_string();
    };
    // The files this module writes do not count.
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!benches/history.json",
        ":!benches/chart.svg",
        ":!benches/ratios.md",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+") } else { head }
}
