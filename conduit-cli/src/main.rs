//! `conduit`: list, inspect, watch, clean and use conduit's shared-memory objects from a
//! shell, the way `ipcs` and `ipcrm` serve SysV IPC.
//!
//! Every command reads segments through `conduit::shm::inspect`, which never attaches
//! and never writes; only `send`, `recv`, `create`, `raise` and `wait` attach, as
//! ordinary peers, and only `rm` and `clean` remove names. Exit status: 0 on success, 1
//! when an object is not found or an operation fails (one line on stderr says why), 2
//! for a usage error.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use conduit::mailbox::Select;
use conduit::shm::{self, Inspection, ObjectKind};

mod render;

#[derive(Parser, Debug)]
#[command(
    name = "conduit",
    version,
    about = "List, inspect, watch, clean and use conduit's shared-memory channels",
    long_about = "List, inspect, watch, clean and use conduit's shared-memory channels.\n\n\
        Objects live in /dev/shm as conduit.<name>, one file each. Commands that only \
        look (ls, stat, watch) never attach to an object and never write to it.\n\n\
        Exit status: 0 success, 1 not found or failed, 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every conduit object: kind, capacity, queue, payload, peers, creator, age.
    Ls {
        /// Print JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one object in detail: header fields, positions, waiters, each peer slot.
    ///
    /// The segment is validated as `open` would; a corrupt one is reported field by
    /// field, and the exit status is 1.
    Stat {
        /// The object's name (without the `conduit.` prefix).
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove objects by name, like `ipcrm`. Processes that have them open keep working.
    Rm {
        /// The names to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove stale objects: every peer proven dead and older than a grace period.
    ///
    /// Never removes an object with a live peer, one of another layout version, or one
    /// changed within the grace period.
    Clean {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Leave objects changed within this many seconds alone.
        #[arg(long, default_value_t = 5)]
        grace: u64,
    },
    /// Create a byte channel, or with --mailbox a byte mailbox (a no-op if it exists
    /// with the same settings).
    Create {
        /// The name.
        name: String,
        /// Slots in the ring (rounded up to a power of two).
        #[arg(long, default_value_t = shm::DEFAULT_CAPACITY)]
        capacity: usize,
        /// The longest message, in bytes.
        #[arg(long, default_value_t = shm::DEFAULT_MAX_MESSAGE)]
        max_message: usize,
        /// Fail if the name exists.
        #[arg(long)]
        new: bool,
        /// Create a byte mailbox (tagged messages, selective receive) instead.
        #[arg(long)]
        mailbox: bool,
        /// A byte mailbox's bound on the bytes queued, its messages' lengths summed
        /// (like SysV's `msg_qbytes`; default: capacity × max message).
        #[arg(long, requires = "mailbox")]
        max_bytes: Option<usize>,
    },
    /// Send messages to a byte channel or byte mailbox: the arguments, or else standard
    /// input.
    ///
    /// Standard input is sent one message per line (without the newline), or as one
    /// message with --raw.
    Send {
        /// The byte channel's (or byte mailbox's) name.
        name: String,
        /// Messages to send, one per argument; standard input if none.
        messages: Vec<String>,
        /// Send standard input as one message, byte for byte.
        #[arg(long)]
        raw: bool,
        /// Give up on a message that has found no room after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Create the channel if it does not exist.
        #[arg(long)]
        create: bool,
        /// The tag of every message (byte mailboxes only; default 0).
        #[arg(long, value_name = "N")]
        tag: Option<u64>,
    },
    /// Receive messages from a byte channel or byte mailbox and print them, one per
    /// line.
    Recv {
        /// The byte channel's (or byte mailbox's) name.
        name: String,
        /// How many messages to receive (default 1; with --follow, no limit).
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// Keep receiving until the senders are gone (or --count is reached).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Give up after waiting this many seconds for a message (exit status 1 if
        /// nothing at all was received).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Write messages byte for byte, without a newline after each.
        #[arg(long)]
        raw: bool,
        /// Which messages to take (byte mailboxes only): `any` (the oldest, the
        /// default), `tag:N` (the oldest tagged N), `atmost:N` (the oldest of the lowest
        /// tag <= N), `except:N` (the oldest not tagged N).
        #[arg(long, value_name = "SELECTION", value_parser = parse_select)]
        select: Option<Select>,
        /// Same as --select tag:N.
        #[arg(long, value_name = "N", conflicts_with = "select")]
        tag: Option<u64>,
    },
    /// Raise a signal on a signal target (`conduit::shm::signal`).
    ///
    /// Numbers 1-31 coalesce (a delivery counts the raises), 32-64 queue with a payload.
    /// Exit status 1 if the target is gone or the signal's queue is full.
    Raise {
        /// The signal target's name.
        name: String,
        /// The signal number, 1 to 64.
        #[arg(value_parser = clap::value_parser!(u8).range(1..=64))]
        signal: u8,
        /// The payload of a queued signal (32-64).
        #[arg(long, default_value_t = 0)]
        payload: u64,
    },
    /// Own a signal target and print its deliveries, one per line:
    /// `<signal> count=<n> [payload=<p>] pid=<pid> raiser=<id>`.
    ///
    /// Takes the target over if its owner died; fails if its owner is alive. Exit
    /// status 1 if nothing at all was delivered before --timeout.
    Wait {
        /// The signal target's name.
        name: String,
        /// How many deliveries to wait for.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u64,
        /// Give up after waiting this many seconds for a delivery.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Create the target if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// A live view of objects: queue depth, message rates, peers (refreshes until
    /// interrupted).
    Watch {
        /// Only this object.
        name: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (for scripts and tests).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A failure: the message for stderr and the exit status.
struct Failure(String, u8);

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure(e.to_string(), 1)
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            // An empty message: the command already said what failed.
            if !msg.is_empty() {
                let _ = writeln!(io::stderr(), "conduit: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Ls { json } => ls(json),
        Command::Stat { name, json } => stat(&name, json),
        Command::Rm { names } => rm(&names),
        Command::Clean { dry_run, grace } => clean(dry_run, Duration::from_secs(grace)),
        Command::Create {
            name,
            capacity,
            max_message,
            new,
            mailbox,
            max_bytes,
        } => create(&name, capacity, max_message, new, mailbox, max_bytes),
        Command::Send {
            name,
            messages,
            raw,
            timeout,
            create,
            tag,
        } => send(&name, messages, raw, seconds(timeout)?, create, tag),
        Command::Recv {
            name,
            count,
            follow,
            timeout,
            raw,
            select,
            tag,
        } => recv(
            &name,
            count,
            follow,
            seconds(timeout)?,
            raw,
            select.or(tag.map(Select::Tag)),
        ),
        Command::Raise {
            name,
            signal,
            payload,
        } => raise(&name, signal, payload),
        Command::Wait {
            name,
            count,
            timeout,
            create,
        } => wait(&name, count, seconds(timeout)?, create),
        Command::Watch {
            name,
            interval,
            iterations,
        } => watch(
            name.as_deref(),
            seconds(Some(interval))?.unwrap(),
            iterations,
        ),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "conduit", &mut io::stdout());
            Ok(())
        }
    }
}

fn seconds(s: Option<f64>) -> Result<Option<Duration>, Failure> {
    s.map(|s| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| Failure(format!("invalid duration: {s} seconds"), 2))
    })
    .transpose()
}

/// Names an object in an error about it: `not found` and the like.
fn about(name: &str, e: io::Error) -> Failure {
    let what = match e.kind() {
        io::ErrorKind::NotFound => "no such object".to_string(),
        _ => e.to_string(),
    };
    Failure(format!("{name}: {what}"), 1)
}

/// Every object that can be inspected (objects that vanish meanwhile are skipped).
fn inspect_all() -> io::Result<Vec<Inspection>> {
    Ok(shm::list()?
        .iter()
        .filter_map(|name| shm::inspect(name).ok())
        .collect())
}

fn ls(json: bool) -> Outcome {
    let all = inspect_all()?;
    let mut out = io::stdout().lock();
    if json {
        let list: Vec<_> = all.iter().map(render::json).collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
    } else {
        out.write_all(render::table(&all, None).as_bytes())?;
    }
    Ok(())
}

fn stat(name: &str, json: bool) -> Outcome {
    let info = shm::inspect(name).map_err(|e| about(name, e))?;
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{:#}", render::json(&info))?;
    } else {
        out.write_all(render::detail(&info).as_bytes())?;
    }
    if info.is_valid() {
        Ok(())
    } else {
        Err(Failure(
            format!("{name}: {} problem(s) found", info.problems.len()),
            1,
        ))
    }
}

fn rm(names: &[String]) -> Outcome {
    let mut failed = None;
    for name in names {
        if let Err(e) = shm::unlink(name) {
            let Failure(msg, code) = about(name, e);
            let _ = writeln!(io::stderr(), "conduit: {msg}");
            failed = Some(code);
        }
    }
    match failed {
        None => Ok(()),
        Some(code) => Err(Failure(String::new(), code)),
    }
}

fn clean(dry_run: bool, grace: Duration) -> Outcome {
    let mut out = io::stdout().lock();
    if dry_run {
        for name in shm::find_stale(grace)? {
            writeln!(out, "would remove {name}")?;
        }
    } else {
        // Each removal holds its proof (every peer lock) across the unlink.
        for name in shm::remove_stale_with_grace(grace)? {
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(())
}

fn byte_options(capacity: usize, max_message: usize) -> shm::Options {
    shm::Options::new()
        .capacity(capacity)
        .max_message(max_message)
}

fn create(
    name: &str,
    capacity: usize,
    max_message: usize,
    new: bool,
    mailbox: bool,
    max_bytes: Option<usize>,
) -> Outcome {
    let mut options = byte_options(capacity, max_message);
    if let Some(n) = max_bytes {
        options = options.max_bytes(n);
    }
    let options = if new {
        options.create_new(true)
    } else {
        options.create(true)
    };
    if mailbox {
        shm::ByteMailbox::with(name, &options).map_err(|e| about(name, e))?;
        return Ok(());
    }
    // A receiver handle: creating attaches one side, and a receiver that leaves again
    // makes no sender see a disconnection it would not see anyway.
    shm::ByteReceiver::with(name, &options).map_err(|e| about(name, e))?;
    Ok(())
}

/// `any`, `tag:N`, `atmost:N` or `except:N`.
fn parse_select(s: &str) -> Result<Select, String> {
    if s == "any" {
        return Ok(Select::Any);
    }
    let (kind, n) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected any, tag:N, atmost:N or except:N"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{n:?} is not a tag (a u64)"))?;
    match kind {
        "tag" => Ok(Select::Tag(n)),
        "atmost" => Ok(Select::TagAtMost(n)),
        "except" => Ok(Select::TagExcept(n)),
        _ => Err(format!("{kind:?}: expected any, tag, atmost or except")),
    }
}

/// Whether `name` is a byte mailbox (anything else, a missing name included, is left to
/// the byte channel's open to report).
fn is_mailbox(name: &str) -> bool {
    shm::inspect(name).is_ok_and(|i| i.kind == Some(ObjectKind::ByteMailbox))
}

/// A usage error for a mailbox option given for a channel.
fn mailbox_only(name: &str, option: &str) -> Failure {
    Failure(
        format!("{name}: {option} applies to byte mailboxes only"),
        2,
    )
}

/// One send, with the timeout of the command.
type SendOne = Box<dyn Fn(&[u8]) -> io::Result<()>>;

fn send(
    name: &str,
    messages: Vec<String>,
    raw: bool,
    timeout: Option<Duration>,
    create: bool,
    tag: Option<u64>,
) -> Outcome {
    let options = if create {
        shm::Options::new().create(true)
    } else {
        shm::Options::new()
    };
    let send_one: SendOne = if is_mailbox(name) {
        let mb = shm::ByteMailbox::with(name, &options).map_err(|e| about(name, e))?;
        let tag = tag.unwrap_or(0);
        Box::new(move |msg| match timeout {
            Some(t) => mb.send_tagged_timeout(tag, msg, t),
            None => mb.send_tagged(tag, msg),
        })
    } else {
        if tag.is_some() {
            return Err(mailbox_only(name, "--tag"));
        }
        let tx = shm::ByteSender::with(name, &options).map_err(|e| about(name, e))?;
        Box::new(move |msg| match timeout {
            Some(t) => tx.send_timeout(msg, t),
            None => tx.send(msg),
        })
    };
    let send_one = |msg: &[u8]| -> Outcome { send_one(msg).map_err(|e| about(name, e)) };
    if !messages.is_empty() {
        for msg in &messages {
            send_one(msg.as_bytes())?;
        }
    } else if raw {
        let mut buf = Vec::new();
        io::stdin().lock().read_to_end(&mut buf)?;
        send_one(&buf)?;
    } else {
        for line in io::stdin().lock().split(b'\n') {
            send_one(&line?)?;
        }
    }
    Ok(())
}

/// A receive with an optional timeout: `Disconnected` once the senders are gone (a
/// channel) or the mailbox is closed and nothing matches.
type RecvOne = Box<dyn Fn(Option<Duration>) -> Result<Vec<u8>, conduit::RecvTimeoutError>>;

fn recv(
    name: &str,
    count: Option<u64>,
    follow: bool,
    timeout: Option<Duration>,
    raw: bool,
    select: Option<Select>,
) -> Outcome {
    use conduit::RecvTimeoutError;
    let recv_one: RecvOne = if is_mailbox(name) {
        let mb = shm::ByteMailbox::open(name).map_err(|e| about(name, e))?;
        let select = select.unwrap_or(Select::Any);
        Box::new(move |t| {
            match t {
                Some(t) => mb.recv_select_timeout(select.clone(), t),
                None => mb
                    .recv_select(select.clone())
                    .map_err(|_| RecvTimeoutError::Disconnected),
            }
            .map(|env| env.into_body())
        })
    } else {
        if select.is_some() {
            return Err(mailbox_only(name, "--select/--tag"));
        }
        let rx = shm::ByteReceiver::open(name).map_err(|e| about(name, e))?;
        Box::new(move |t| match t {
            Some(t) => rx.recv_timeout(t),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        })
    };
    let limit = count.unwrap_or(if follow { u64::MAX } else { 1 });
    let mut out = io::stdout().lock();
    let mut received = 0u64;
    while received < limit {
        let msg = match recv_one(timeout) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) if received > 0 => break,
            // Following ends when the senders are gone (the mailbox is closed).
            Err(RecvTimeoutError::Disconnected) if follow => break,
            Err(RecvTimeoutError::Disconnected) if timeout.is_none() => {
                return Err(Failure(format!("{name}: {}", conduit::RecvError), 1));
            }
            Err(e) => return Err(Failure(format!("{name}: {e}"), 1)),
        };
        out.write_all(&msg)?;
        if !raw {
            out.write_all(b"\n")?;
        }
        out.flush()?;
        received += 1;
    }
    Ok(())
}

fn raise(name: &str, signal: u8, payload: u64) -> Outcome {
    let sig = conduit::signal::Signal::new(signal)
        .ok_or_else(|| Failure(format!("invalid signal number {signal}"), 2))?;
    let raiser = shm::signal::Raiser::open(name).map_err(|e| about(name, e))?;
    raiser
        .raise_with(sig, payload)
        .map_err(|e| Failure(format!("{name}: {e}"), 1))
}

fn wait(name: &str, count: u64, timeout: Option<Duration>, create: bool) -> Outcome {
    let options = if create {
        shm::Options::new().create(true)
    } else {
        shm::Options::new()
    };
    let target = shm::signal::Target::with(name, &options).map_err(|e| about(name, e))?;
    let mut out = io::stdout().lock();
    for received in 0..count {
        let info = match timeout {
            Some(t) => match target.wait_timeout(t) {
                Some(info) => info,
                None if received > 0 => break,
                None => return Err(Failure(format!("{name}: no signal within the timeout"), 1)),
            },
            None => target.wait(),
        };
        write!(out, "{} count={}", info.signal().number(), info.count())?;
        if let Some(p) = info.payload() {
            write!(out, " payload={p}")?;
        }
        writeln!(out, " pid={} raiser={}", info.pid(), info.raiser_id())?;
        out.flush()?;
    }
    Ok(())
}

fn watch(name: Option<&str>, interval: Duration, iterations: Option<u64>) -> Outcome {
    let tty = io::stdout().is_terminal();
    let mut previous: Option<(Instant, Vec<Inspection>)> = None;
    let mut round = 0u64;
    loop {
        let now = Instant::now();
        let all = match name {
            Some(name) => vec![shm::inspect(name).map_err(|e| about(name, e))?],
            None => inspect_all()?,
        };
        let rates = previous
            .as_ref()
            .map(|(then, before)| render::rates(before, &all, now.duration_since(*then)));
        let mut out = io::stdout().lock();
        if tty {
            // Home and clear, then the table: a refreshing view.
            out.write_all(b"\x1b[H\x1b[2J")?;
        }
        writeln!(
            out,
            "conduit watch: {} object(s), every {:.1}s",
            all.len(),
            interval.as_secs_f64()
        )?;
        out.write_all(render::table(&all, rates.as_deref()).as_bytes())?;
        out.flush()?;
        drop(out);
        round += 1;
        if iterations.is_some_and(|n| round >= n) {
            return Ok(());
        }
        previous = Some((now, all));
        std::thread::sleep(interval);
    }
}
