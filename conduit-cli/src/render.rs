//! Text and JSON renderings of inspections.

use std::fmt::Write as _;
use std::time::Duration;

use conduit::shm::{Inspection, Liveness, ObjectKind, PeerInfo};
use serde_json::{Value, json};

/// Messages per second sent and received, per object (by name).
pub struct Rate {
    name: String,
    sent: f64,
    received: f64,
}

/// How many messages a ring position stands for since the ring was created: laps times
/// capacity plus the index (the position encoding of `conduit`'s ring), or `None` for a
/// capacity that is not a power of two or too large for that encoding.
fn messages_at(pos: u64, capacity: u64) -> Option<u64> {
    if capacity == 0 || !capacity.is_power_of_two() {
        return None;
    }
    let mark_bit = capacity.checked_add(1)?.checked_next_power_of_two()?;
    let one_lap = mark_bit * 2;
    let pos = pos & !mark_bit;
    Some((pos / one_lap) * capacity + (pos & (mark_bit - 1)))
}

/// The rates between two snapshots taken `dt` apart.
pub fn rates(before: &[Inspection], after: &[Inspection], dt: Duration) -> Vec<Rate> {
    let secs = dt.as_secs_f64().max(1e-9);
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.name == a.name)?;
            let delta = |x: u64, y: u64| {
                let x = messages_at(x, b.capacity)?;
                let y = messages_at(y, a.capacity)?;
                Some(y.saturating_sub(x) as f64 / secs)
            };
            Some(Rate {
                name: a.name.clone(),
                sent: delta(b.tail, a.tail)?,
                received: delta(b.head, a.head)?,
            })
        })
        .collect()
}

fn age(info: &Inspection) -> String {
    let Some(age) = info.age else {
        return "?".into();
    };
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The kind, with " (spsc)" for a channel in the single-producer single-consumer mode
/// (`shm::Options::spsc`).
fn kind(info: &Inspection) -> String {
    match info.kind {
        Some(k) if info.spsc => format!("{k} (spsc)"),
        Some(k) => k.to_string(),
        None => "?".into(),
    }
}

fn pids<'a>(peers: impl Iterator<Item = &'a PeerInfo>) -> String {
    let list: Vec<String> = peers.map(|p| p.pid.to_string()).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// A table of objects, one line each; with rates (from `watch`), two more columns.
pub fn table(all: &[Inspection], rates: Option<&[Rate]>) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "NAME", "KIND", "CAP", "QUEUED", "PAYLOAD", "LIVE", "DEAD", "PIDS", "CREATOR", "AGE",
            "STATUS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    if rates.is_some() {
        rows[0].extend(["SENT/s".to_string(), "RECV/s".to_string()]);
    }
    for info in all {
        let valid = info.is_valid();
        let status = if valid {
            "ok".to_string()
        } else if info.version != 0 && info.version != Inspection::SUPPORTED_VERSION {
            format!("version {}", info.version)
        } else {
            "corrupt".to_string()
        };
        let mut row = vec![
            info.name.clone(),
            kind(info),
            info.capacity.to_string(),
            info.queued.to_string(),
            if valid { info.payload() } else { "-".into() },
            info.live_peers().count().to_string(),
            info.dead_peers().count().to_string(),
            pids(info.live_peers()),
            info.creator_pid.to_string(),
            age(info),
            status,
        ];
        if let Some(rates) = rates {
            match rates.iter().find(|r| r.name == info.name) {
                Some(r) => row.extend([format!("{:.0}", r.sent), format!("{:.0}", r.received)]),
                None => row.extend(["-".to_string(), "-".to_string()]),
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn liveness(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::Dead => "dead",
        Liveness::Unknown => "unknown",
    }
}

fn roles(p: &PeerInfo) -> &'static str {
    match (p.sender, p.receiver) {
        (true, true) => "sender+receiver",
        (true, false) => "sender",
        (false, true) => "receiver",
        (false, false) => "-",
    }
}

/// One object in detail, for `stat`.
pub fn detail(info: &Inspection) -> String {
    let mut out = String::new();
    let mut field = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<14} {v}");
    };
    field("name", info.name.clone());
    field("kind", kind(info));
    field(
        "version",
        format!(
            "{} (this build reads {})",
            info.version,
            Inspection::SUPPORTED_VERSION
        ),
    );
    field(
        "file",
        format!(
            "{} bytes, mode {:o}, uid {}",
            info.file_size, info.mode, info.uid
        ),
    );
    field("age", age(info));
    field("creator pid", info.creator_pid.to_string());
    field("capacity", info.capacity.to_string());
    field("slot size", info.slot_size.to_string());
    field(
        "payload",
        format!(
            "size {}, align {}, type hash {:#018x}, max message {}",
            info.type_size, info.type_align, info.type_hash, info.max_message
        ),
    );
    if matches!(
        info.kind,
        Some(ObjectKind::Mailbox | ObjectKind::ByteMailbox)
    ) {
        // A mailbox counts in its index; its ring positions are unused.
        field("queued", info.queued.to_string());
    } else {
        field(
            "positions",
            format!(
                "head {:#x}, tail {:#x}, queued {}",
                info.head, info.tail, info.queued
            ),
        );
    }
    if info.kind == Some(ObjectKind::ByteMailbox) {
        field(
            "bytes",
            format!("{} queued, at most {}", info.queued_bytes, info.max_bytes),
        );
    }
    field(
        "waiters",
        format!(
            "receive side {} blocked, {} async; send side {} blocked, {} async",
            info.recv_waiters.0, info.recv_waiters.1, info.send_waiters.0, info.send_waiters.1
        ),
    );
    let _ = writeln!(out, "peers          {}", info.peers.len());
    for p in &info.peers {
        let _ = writeln!(
            out,
            "  slot {:<3} pid {:<8} {:<16} state {:<5} process {:<7} generation {} intents {}",
            p.slot,
            p.pid,
            roles(p),
            p.state,
            liveness(p.liveness),
            p.generation,
            p.intents
        );
    }
    if info.problems.is_empty() {
        let _ = writeln!(out, "problems       none");
    } else {
        let _ = writeln!(out, "problems       {}", info.problems.len());
        for problem in &info.problems {
            let _ = writeln!(out, "  {problem}");
        }
    }
    out
}

/// An object as JSON (the same fields as `stat`).
pub fn json(info: &Inspection) -> Value {
    let peers: Vec<Value> = info
        .peers
        .iter()
        .map(|p| {
            json!({
                "slot": p.slot,
                "pid": p.pid,
                "sender": p.sender,
                "receiver": p.receiver,
                "state": p.state,
                "process": liveness(p.liveness),
                "generation": p.generation,
                "intents": p.intents,
            })
        })
        .collect();
    json!({
        "name": info.name,
        "kind": info.kind.map(|k| k.as_str()),
        "spsc": info.spsc,
        "asymmetric_fences": info.asymmetric_fences,
        "version": info.version,
        "valid": info.is_valid(),
        "problems": info.problems,
        "file_size": info.file_size,
        "mode": info.mode,
        "uid": info.uid,
        "age_secs": info.age.map(|a| a.as_secs_f64()),
        "creator_pid": info.creator_pid,
        "capacity": info.capacity,
        "slot_size": info.slot_size,
        "type_size": info.type_size,
        "type_align": info.type_align,
        "type_hash": format!("{:#018x}", info.type_hash),
        "max_message": info.max_message,
        "head": info.head,
        "tail": info.tail,
        "queued": info.queued,
        "max_bytes": info.max_bytes,
        "queued_bytes": info.queued_bytes,
        "waiters": {
            "recv_blocked": info.recv_waiters.0,
            "recv_async": info.recv_waiters.1,
            "send_blocked": info.send_waiters.0,
            "send_async": info.send_waiters.1,
        },
        "live_peers": info.live_peers().count(),
        "dead_peers": info.dead_peers().count(),
        "peers": peers,
    })
}
