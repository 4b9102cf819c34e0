//! The `conduit` binary, run for real against real segments.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use conduit::shm;

/// Held by every test: `clean --grace 0` removes any stale object on the system, so a
/// test that drops its last handle before it unlinks or inspects the name must not
/// overlap another test's clean.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh object name for one test.
fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unlinks a name when the test ends, however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = shm::unlink(&self.0);
    }
}

fn conduit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conduit"))
}

/// Runs the binary to completion, killing it if it runs past a watchdog.
fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

fn run_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = conduit()
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn conduit");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    wait_with_watchdog(child, args)
}

fn wait_with_watchdog(mut child: Child, what: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watchdog: `conduit {}` ran for over 30 s", what.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `cond` until it holds, failing the test after a watchdog timeout.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: never saw {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The line `conduit ls` prints for `name` (the command must succeed).
fn ls_line(name: &str) -> String {
    let o = run(&["ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} not listed: {}", stdout(&o)))
        .to_string()
}

/// The entry `conduit ls --json` gives for `name` (the command must succeed).
fn ls_json_entry(name: &str) -> serde_json::Value {
    let o = run(&["ls", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = json_of(&o);
    all.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {all}"))
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Overwrites `bytes` at `offset` of the segment file, as a hostile peer would.
fn scribble(name: &str, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/conduit.{name}"))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn ls_and_stat_show_a_live_channel() {
    let _serial = serial();
    let name = unique("live");
    let _cleanup = Cleanup(name.clone());
    let tx = shm::Sender::<u64>::create(&name, 8).unwrap();
    tx.send(1).unwrap();
    tx.send(2).unwrap();

    let me = ls_json_entry(&name);
    assert_eq!(me["kind"], "channel");
    assert_eq!(me["capacity"], 8);
    assert_eq!(me["queued"], 2);
    assert_eq!(me["live_peers"], 1);
    assert_eq!(me["valid"], true);
    assert_eq!(me["peers"][0]["pid"], std::process::id());
    assert_eq!(me["peers"][0]["sender"], true);
    assert_eq!(me["creator_pid"], std::process::id());

    let line = ls_line(&name);
    assert!(line.contains("channel") && line.ends_with("ok"), "{line}");

    let o = run(&["stat", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("queued 2"), "{text}");
    assert!(
        text.contains(&format!("pid {:<8} sender", std::process::id())),
        "{text}"
    );
    assert!(text.contains("process alive"), "{text}");
    assert!(text.contains("problems       none"), "{text}");
}

#[test]
fn send_and_recv_round_trip_through_a_shell_pipe() {
    let _serial = serial();
    let name = unique("pipe");
    let _cleanup = Cleanup(name.clone());
    let exe = env!("CARGO_BIN_EXE_conduit");
    let script = format!(
        "printf 'first\\nsecond line\\n' | {exe} send {name} --create && \
         {exe} send {name} third && {exe} recv {name} -n 3"
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_with_watchdog(child, &["(shell pipeline)"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "first\nsecond line\nthird\n");

    // Raw: one message, byte for byte.
    let o = run_with_stdin(&["send", &name, "--raw"], Some(b"a\nb\0c"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["recv", &name, "--raw"]);
    assert_eq!(o.stdout, b"a\nb\0c");

    // Nothing queued: a timed receive gives up with status 1.
    let o = run(&["recv", &name, "--timeout", "0.05"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).starts_with("conduit: "), "{}", stderr(&o));
}

#[test]
fn a_peer_killed_with_sigkill_is_shown_dead_and_clean_respects_the_living() {
    let _serial = serial();
    let name = unique("dead");
    let _cleanup = Cleanup(name.clone());
    let holder = shm::ByteSender::create(&name, 4).unwrap();
    // A receiver in another process: `conduit recv --follow` attaches and waits.
    let mut child = conduit()
        .args(["recv", &name, "--follow"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    eventually("the receiver attach", || {
        shm::inspect(&name)
            .unwrap()
            .live_peers()
            .any(|p| p.pid == pid && p.receiver)
    });
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));

    // Nobody has waited since, so nobody reaped it: the slot still says LIVE, and the
    // probe proves its process dead.
    let o = run(&["stat", &name, "--json"]);
    let v = json_of(&o);
    let peer = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert_eq!(peer["process"], "dead", "{v}");
    assert_eq!(v["dead_peers"], 1);
    assert_eq!(v["live_peers"], 1, "the test's own sender: {v}");

    // A live sender remains: clean leaves the object alone, with no grace period.
    let o = run(&["clean", "--grace", "0", "--dry-run"]);
    assert!(o.status.success());
    assert!(!stdout(&o).contains(&name), "{}", stdout(&o));
    let o = run(&["clean", "--grace", "0"]);
    assert!(o.status.success());
    assert!(shm::list().unwrap().contains(&name));

    // Once every peer is gone, it is stale: a dry run names it and removes nothing,
    // then clean removes it.
    drop(holder);
    let o = run(&["clean", "--grace", "0", "--dry-run"]);
    assert!(
        stdout(&o).contains(&format!("would remove {name}")),
        "{}",
        stdout(&o)
    );
    assert!(shm::list().unwrap().contains(&name));
    let o = run(&["clean", "--grace", "0"]);
    assert!(
        stdout(&o).contains(&format!("removed {name}")),
        "{}",
        stdout(&o)
    );
    assert!(!shm::list().unwrap().contains(&name));
}

#[test]
fn a_corrupt_header_is_reported_field_by_field() {
    let _serial = serial();
    let name = unique("corrupt");
    let _cleanup = Cleanup(name.clone());
    let tx = shm::Sender::<u32>::create(&name, 4).unwrap();
    // capacity (offset 16) and slot size (offset 24) overwritten.
    scribble(&name, 16, &3u64.to_ne_bytes());
    scribble(&name, 24, &7u64.to_ne_bytes());
    let o = run(&["stat", &name]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("layout is invalid"), "{text}");
    assert!(stderr(&o).contains("problem(s) found"), "{}", stderr(&o));
    let line = ls_line(&name);
    assert!(line.ends_with("corrupt"), "{line}");
    // Its live peer keeps it from being cleaned.
    let o = run(&["clean", "--grace", "0", "--dry-run"]);
    assert!(!stdout(&o).contains(&name), "{}", stdout(&o));
    drop(tx);
}

#[test]
fn another_layout_version_is_reported_and_never_cleaned() {
    let _serial = serial();
    let name = unique("version");
    let _cleanup = Cleanup(name.clone());
    drop(shm::Sender::<u32>::create(&name, 4).unwrap());
    let version = shm::Inspection::SUPPORTED_VERSION;
    scribble(&name, 8, &(version + 1).to_ne_bytes());
    let o = run(&["stat", &name, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json_of(&o);
    assert_eq!(v["version"], version + 1);
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .contains("not inspected further"),
        "{v}"
    );
    let line = ls_line(&name);
    assert!(
        line.ends_with(&format!("version {}", version + 1)),
        "{line}"
    );
    // No peer, old enough with grace 0: still never stale.
    let o = run(&["clean", "--grace", "0"]);
    assert!(!stdout(&o).contains(&name), "{}", stdout(&o));
    assert!(shm::list().unwrap().contains(&name));
}

#[test]
fn rm_removes_and_reports_missing_names() {
    let _serial = serial();
    let name = unique("rm");
    let _cleanup = Cleanup(name.clone());
    drop(shm::ByteSender::create(&name, 2).unwrap());
    let missing = unique("missing");
    let o = run(&["rm", &name, &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("conduit: {missing}: no such object")),
        "{}",
        stderr(&o)
    );
    assert!(!shm::list().unwrap().contains(&name));
    let o = run(&["stat", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_with_2_and_help_exists_for_every_command() {
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["stat"]).status.code(), Some(2));
    assert_eq!(
        run(&["recv", "x", "--timeout", "-1"]).status.code(),
        Some(2)
    );
    for cmd in [
        "ls",
        "stat",
        "rm",
        "clean",
        "create",
        "send",
        "recv",
        "watch",
        "completions",
    ] {
        let o = run(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help");
        assert!(
            stdout(&o).contains("Usage: conduit"),
            "{cmd}: {}",
            stdout(&o)
        );
    }
    let o = run(&["stat", "bad/name"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad/name"), "{}", stderr(&o));
}

#[test]
fn watch_renders_a_table_with_rates() {
    let _serial = serial();
    let name = unique("watch");
    let _cleanup = Cleanup(name.clone());
    let tx = shm::ByteSender::create(&name, 16).unwrap();
    tx.send(b"x").unwrap();
    let o = run(&["watch", &name, "--iterations", "2", "--interval", "0.01"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // Not a terminal: no escape codes, two renderings, the second with rates.
    assert!(!text.contains('\x1b'), "{text:?}");
    assert_eq!(
        text.matches("conduit watch: 1 object(s)").count(),
        2,
        "{text}"
    );
    assert!(text.contains("SENT/s"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&name) && l.contains("bytes")),
        "{text}"
    );
}

#[test]
fn completions_are_generated() {
    let _serial = serial();
    let o = run(&["completions", "bash"]);
    assert!(o.status.success());
    let mut script = String::new();
    o.stdout.as_slice().read_to_string(&mut script).unwrap();
    assert!(
        script.contains("conduit") && script.contains("watch"),
        "{script}"
    );
}

#[test]
fn mailboxes_take_tags_and_selections() {
    let _serial = serial();
    let name = unique("mailbox");
    let _cleanup = Cleanup(name.clone());
    let o = run(&["create", &name, "--mailbox", "--capacity", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (tag, msg) in [("5", "low"), ("2", "high"), ("9", "noise"), ("2", "high2")] {
        let o = run(&["send", &name, "--tag", tag, msg]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(ls_line(&name).contains("bytemailbox"), "{}", ls_line(&name));
    // `stat` shows a byte mailbox's bytes (3 + 4 + 5 + 5), and the default bound
    // (capacity × max message).
    let o = run(&["stat", &name]);
    assert!(
        stdout(&o).contains("queued         4\nbytes          17 queued, at most 32768"),
        "{}",
        stdout(&o)
    );
    // Priority order: the lowest tag <= 5 first, in order within a tag.
    let o = run(&["recv", &name, "--select", "atmost:5", "-n", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "high\nhigh2\nlow\n");
    // Nothing tagged 1: a timed receive gives up.
    let o = run(&["recv", &name, "--tag", "1", "--timeout", "0.05"]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["recv", &name, "--select", "except:1"]);
    assert_eq!(stdout(&o), "noise\n");
    // A byte bound set at creation is kept, shown, and enforced.
    let bounded = unique("mailbox-bytes");
    let _bounded_cleanup = Cleanup(bounded.clone());
    let o = run(&["create", &bounded, "--mailbox", "--max-bytes", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run(&["send", &bounded, "0123456789"]).status.success());
    let o = run(&["send", &bounded, "x", "--timeout", "0.05"]);
    assert!(!o.status.success(), "a send over the byte bound succeeded");
    let o = run(&["stat", &bounded, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["max_bytes"].as_u64(), v["queued_bytes"].as_u64()),
        (Some(10), Some(10))
    );
    // --max-bytes is for mailboxes only.
    assert_eq!(
        run(&["create", &unique("chan-bytes"), "--max-bytes", "10"])
            .status
            .code(),
        Some(2)
    );
    // Mailbox options on a channel, and bad selections, are usage errors.
    let chan = unique("not-mailbox");
    let _chan_cleanup = Cleanup(chan.clone());
    drop(shm::ByteSender::create(&chan, 2).unwrap());
    assert_eq!(
        run(&["send", &chan, "--tag", "1", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["recv", &chan, "--select", "tag:1"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["recv", &name, "--select", "tag:x"]).status.code(),
        Some(2)
    );
}

#[test]
fn raise_and_wait_on_a_signal_target() {
    let _serial = serial();
    let name = unique("signal");
    let _cleanup = Cleanup(name.clone());
    // Created (and then given up) by a library owner: what is raised meanwhile stays
    // pending for the next owner, `conduit wait`.
    let target = shm::signal::Target::create(&name).unwrap();
    for args in [
        &["raise", &name, "10"][..],
        &["raise", &name, "10"],
        &["raise", &name, "40", "--payload", "7"],
    ] {
        let o = run(args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(ls_line(&name).contains("signal"), "{}", ls_line(&name));
    drop(target);
    let o = run(&["wait", &name, "-n", "2", "--timeout", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("10 count=2 pid="), "{out}");
    assert!(lines[1].starts_with("40 count=1 payload=7 pid="), "{out}");
    // The waiting owner is gone now: raises fail, like `kill` with ESRCH.
    let o = run(&["raise", &name, "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("gone"), "{}", stderr(&o));
    // Nothing pending: a timed wait gives up with status 1.
    let o = run(&["wait", &name, "--timeout", "0.05"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // Usage errors and missing names.
    assert_eq!(run(&["raise", &name, "0"]).status.code(), Some(2));
    assert_eq!(run(&["raise", &name, "65"]).status.code(), Some(2));
    let o = run(&["raise", &unique("missing"), "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such object"), "{}", stderr(&o));
}

/// `ls` and `stat` show a channel's single-producer mode (`shm::Options::spsc`), and
/// `--json` reports it, and its fences (`shm::Options::asymmetric_fences`), as fields of
/// their own.
#[test]
fn ls_and_stat_show_the_spsc_mode() {
    let _serial = serial();
    let name = unique("spsc");
    let _cleanup = Cleanup(name.clone());
    let opts = shm::Options::new()
        .capacity(4)
        .create_new(true)
        .spsc(true)
        .asymmetric_fences(false);
    let _tx = shm::Sender::<u64>::with(&name, &opts).unwrap();

    let me = ls_json_entry(&name);
    assert_eq!(me["kind"], "channel");
    assert_eq!(me["spsc"], true);
    assert_eq!(me["asymmetric_fences"], false);
    assert_eq!(me["valid"], true);

    let line = ls_line(&name);
    assert!(line.contains("channel (spsc)"), "{line}");
    let o = run(&["stat", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("channel (spsc)"), "{}", stdout(&o));
}
