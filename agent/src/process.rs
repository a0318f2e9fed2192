//! The one door for external commands: an argument vector (never a shell string), logged
//! at debug in copy-pasteable form, a deadline after which the command *and every process
//! it started* is killed, stderr streamed to the debug log with its last lines kept for
//! the error message.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// How many stderr lines are kept for an error message.
const TAIL_LINES: usize = 25;
/// Grace between SIGTERM and SIGKILL when a deadline passes.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// After the command exits, how long its output pipes may stay open (held by something it
/// left running in the background) before what is left of its process group is stopped.
const READER_GRACE: Duration = Duration::from_secs(2);
/// After that stop, how long the readers may take to drain what is in the pipes.
const DRAIN: Duration = Duration::from_millis(500);
/// Captured stdout is parsed (JSON); more than this is not a sane answer.
const MAX_STDOUT: u64 = 4 << 20;
/// The longest stderr line read whole; the rest of a longer one is skipped (a single
/// huge line must not fill memory).
const MAX_LINE: usize = 64 << 10;
/// Variables systemd gives the agent alone. With `NOTIFY_SOCKET` a child could send
/// `STATUS=` or `READY=1` in the agent's name (`NotifyAccess=main` drops it, with a
/// warning in the journal; `all` would take it).
const NOT_INHERITED: &[&str] = &["NOTIFY_SOCKET"];

#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    timeout: Duration,
    capture_stdout: bool,
    /// A file given as the command's stdin (default: /dev/null).
    stdin_file: Option<std::path::PathBuf>,
    /// How many of stderr's last lines [`Finished::stderr_tail`] keeps.
    tail_lines: usize,
    /// How many bytes of stdout are kept ([`Finished::stdout_truncated`] past it).
    max_stdout: u64,
    /// stderr goes where this process's goes (its lines are not read nor kept).
    inherit_stderr: bool,
    /// SIGTERM and SIGINT are ignored by the command from its start (and, as a
    /// disposition of SIG_IGN survives fork and exec, by what it starts): a deadline
    /// then ends it with SIGKILL after [`KILL_GRACE`].
    ignore_stop_signals: bool,
    /// Each stderr line goes through it as it comes; what it returns is logged and kept
    /// in the tail instead of the line (nothing, for `None`).
    stderr_filter: Option<LineFilter>,
    /// When it turns true, the command and its whole process group are stopped as at
    /// the deadline, and the run ends with [`CmdError::Cancelled`].
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Reads a command's stderr lines as they come (nix's `--log-format internal-json`:
/// `nix::progress`) and says what text each stands for.
#[derive(Clone)]
pub struct LineFilter(pub Arc<LineFn>);

/// A line of stderr in, the text it stands for out (`None`: nothing).
pub type LineFn = dyn Fn(&str) -> Option<String> + Send + Sync;

impl std::fmt::Debug for LineFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineFilter")
    }
}

/// A command that ran to its end (whatever its exit status).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    /// stdout went past the cap ([`Cmd::max_stdout`]): `stdout` holds only its start,
    /// and the command's later writes failed (its pipe was closed).
    pub stdout_truncated: bool,
    pub stderr_tail: String,
    /// How many lines of stderr came before [`Finished::stderr_tail`] and were not kept
    /// ([`Cmd::keep_stderr_lines`]).
    pub stderr_lines_dropped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{program} not found (is it installed and on PATH?)")]
    NotFound { program: String },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} timed out after {}; it and its children were stopped{}", crate::duration::format_duration(*after), indent(stderr_tail))]
    TimedOut {
        program: String,
        after: Duration,
        stderr_tail: String,
    },
    #[error("{program} failed ({status}){}", indent(stderr_tail))]
    Failed {
        program: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    /// Stopped on request ([`Cmd::cancel_on`]), with its children.
    #[error("{program} was stopped on request; it and its children were stopped")]
    Cancelled { program: String },
}

impl CmdError {
    pub fn stderr_tail(&self) -> &str {
        match self {
            CmdError::TimedOut { stderr_tail, .. } | CmdError::Failed { stderr_tail, .. } => {
                stderr_tail
            }
            _ => "",
        }
    }
}

fn indent(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(
            ":\n{}",
            tail.trim_end()
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            timeout: Duration::from_secs(600),
            capture_stdout: false,
            stdin_file: None,
            tail_lines: TAIL_LINES,
            max_stdout: MAX_STDOUT,
            inherit_stderr: false,
            ignore_stop_signals: false,
            stderr_filter: None,
            cancel: None,
        }
    }
    /// Stops the command and its whole process group as soon as `cancel` turns true.
    pub fn cancel_on(mut self, cancel: tokio::sync::watch::Receiver<bool>) -> Cmd {
        self.cancel = Some(cancel);
        self
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_os_string());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.envs
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }
    /// Feeds the file at `path` to the command's stdin.
    pub fn stdin_file(mut self, path: impl Into<std::path::PathBuf>) -> Cmd {
        self.stdin_file = Some(path.into());
        self
    }
    pub fn capture_stdout(mut self) -> Cmd {
        self.capture_stdout = true;
        self
    }
    /// Keeps the last `n` lines of stderr instead of the usual few (for a command whose
    /// answer is printed there, such as `nix build --dry-run`).
    pub fn keep_stderr_lines(mut self, n: usize) -> Cmd {
        self.tail_lines = n.max(1);
        self
    }
    /// Keeps at most `bytes` of stdout (default 4 MiB); more sets
    /// [`Finished::stdout_truncated`].
    pub fn max_stdout(mut self, bytes: u64) -> Cmd {
        self.max_stdout = bytes;
        self
    }
    /// The command writes to this process's stderr (for a child whose log lines belong
    /// in the caller's log as they are); [`Finished::stderr_tail`] is then empty.
    pub fn inherit_stderr(mut self) -> Cmd {
        self.inherit_stderr = true;
        self
    }
    /// Each stderr line goes through `filter` as it is read (see [`LineFilter`]).
    pub fn stderr_filter(mut self, filter: LineFilter) -> Cmd {
        self.stderr_filter = Some(filter);
        self
    }
    /// The command ignores SIGTERM and SIGINT from its start (see the field).
    pub fn ignore_stop_signals(mut self) -> Cmd {
        self.ignore_stop_signals = true;
        self
    }
    pub fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The command as a shell line a person can paste (for logs only; never executed).
    pub fn display(&self) -> String {
        self.argv()
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to the end or the deadline. A non-zero exit is `Ok` here: see [`Cmd::run_ok`].
    ///
    /// Something the command started in the background (`sleep 30 &`) may hold its output
    /// pipes open after it exits: the output is then awaited for at most [`READER_GRACE`]
    /// (never past the deadline), then what is left of its process group is stopped and
    /// the output read so far is returned.
    pub async fn run(&self) -> Result<Finished, CmdError> {
        let program = self.program_name();
        let deadline = tokio::time::Instant::now() + self.timeout;
        log::debug!("running: {}", self.display());
        let mut command = tokio::process::Command::new(&self.program);
        for name in NOT_INHERITED {
            command.env_remove(name);
        }
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(match &self.stdin_file {
                Some(path) => {
                    Stdio::from(std::fs::File::open(path).map_err(|source| CmdError::Spawn {
                        program: format!("{program} (stdin {})", path.display()),
                        source,
                    })?)
                }
                None => Stdio::null(),
            })
            .stdout(if self.capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if self.inherit_stderr {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            // Its own process group, so a deadline can stop everything it started.
            .process_group(0)
            .kill_on_drop(true);
        if self.ignore_stop_signals {
            // SAFETY: signal(2) with SIG_IGN is async-signal-safe and allocates nothing.
            // Unsafe: `pre_exec` runs code between fork and exec.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(|| {
                    use nix::sys::signal::{signal, SigHandler};
                    for sig in [Signal::SIGTERM, Signal::SIGINT] {
                        signal(sig, SigHandler::SigIgn).map_err(std::io::Error::from)?;
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CmdError::NotFound {
                program: program.clone(),
            },
            _ => CmdError::Spawn {
                program: program.clone(),
                source,
            },
        })?;
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        // The pipes' names (`pipe:[inode]`), by which whoever holds them can be found.
        let pipes: Vec<String> = [
            child.stdout.as_ref().map(|s| s.as_raw_fd()),
            child.stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stderr = tokio::spawn(read_tail(
            child.stderr.take(),
            program.clone(),
            self.tail_lines,
            self.stderr_filter.clone(),
            stopped.clone(),
        ));
        let stdout = tokio::spawn(read_stdout(child.stdout.take(), self.max_stdout, stopped));
        let output = async move {
            (
                stdout.await.unwrap_or_default(),
                stderr.await.unwrap_or_default(),
            )
        };
        tokio::pin!(output);

        let cancelled = async {
            match self.cancel.clone() {
                Some(rx) => stop_signal(rx).await,
                None => std::future::pending().await,
            }
        };
        let waited = tokio::select! {
            waited = tokio::time::timeout_at(deadline, child.wait()) => Some(waited),
            () = cancelled => None,
        };
        let Some(waited) = waited else {
            if let Some(pid) = pid {
                kill_tree(pid).await;
            }
            let _ = child.wait().await;
            let _ = drain(output, &stop).await;
            return Err(CmdError::Cancelled { program });
        };
        let status = match waited {
            Ok(status) => status.map_err(|source| CmdError::Spawn {
                program: program.clone(),
                source,
            })?,
            Err(_) => {
                if let Some(pid) = pid {
                    kill_tree(pid).await;
                }
                let _ = child.wait().await;
                let (_, (stderr_tail, _)) = drain(output, &stop).await;
                return Err(CmdError::TimedOut {
                    program,
                    after: self.timeout,
                    stderr_tail,
                });
            }
        };
        let grace =
            READER_GRACE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let ((stdout, stdout_truncated), (stderr_tail, stderr_lines_dropped)) = tokio::select! {
            // Output that is there wins over a grace that is over (0 at the deadline).
            biased;
            done = &mut output => done,
            _ = tokio::time::sleep(grace) => {
                let hint = "a command that starts something in the background \
                            should redirect its output (`cmd >/dev/null 2>&1 &`)";
                log::warn!(hint = hint; "{}", crate::failure::with_hint_line(
                    format!(
                        "{program} exited, but processes it left running still held its output open \
                         after {}: stopping them",
                        crate::duration::format_duration(grace)
                    ),
                    hint
                ));
                if let Some(pid) = pid {
                    kill_leftovers(pid, &pipes).await;
                }
                drain(output, &stop).await
            }
        };
        Ok(Finished {
            status,
            stdout,
            stdout_truncated,
            stderr_tail,
            stderr_lines_dropped,
        })
    }

    /// Runs, and turns a non-zero exit into [`CmdError::Failed`].
    pub async fn run_ok(&self) -> Result<Finished, CmdError> {
        let done = self.run().await?;
        if done.status.success() {
            Ok(done)
        } else {
            Err(CmdError::Failed {
                program: self.program_name(),
                status: done.status,
                stderr_tail: done.stderr_tail,
            })
        }
    }
}

/// The readers' results once their writers are gone: at most [`DRAIN`] for what is still
/// in the pipes, then they are told to stop (a process outside the group, out of reach,
/// may hold a pipe forever) and give what they read.
async fn drain<T>(
    mut output: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
    stop: &tokio::sync::watch::Sender<bool>,
) -> T {
    if let Ok(done) = tokio::time::timeout(DRAIN, &mut output).await {
        return done;
    }
    let _ = stop.send(true);
    output.await
}

/// Until `stopped` turns true (or its sender is gone).
async fn stop_signal(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// The last `keep` lines, and how many came before them (reading ends at EOF or `stopped`).
/// Each line is at most [`MAX_LINE`] bytes as read, and goes through `filter` if any.
async fn read_tail(
    stream: Option<impl AsyncRead + Unpin>,
    program: String,
    keep: usize,
    filter: Option<LineFilter>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> (String, usize) {
    let Some(stream) = stream else {
        return (String::new(), 0);
    };
    let mut dropped = 0;
    let mut reader = BufReader::new(stream);
    let mut partial = Vec::new();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(keep.min(TAIL_LINES));
    let stop = stop_signal(stopped);
    tokio::pin!(stop);
    loop {
        // Cancel-safe: a line half read when stopped is dropped, no more.
        let line = tokio::select! {
            line = next_line(&mut reader, &mut partial, MAX_LINE) => line,
            _ = &mut stop => break,
        };
        let Ok(Some(line)) = line else { break };
        let text = match &filter {
            Some(f) => match (f.0)(&line) {
                Some(text) => text,
                None => continue,
            },
            None => line,
        };
        for line in text.lines() {
            log::debug!("{program}: {line}");
            if tail.len() == keep {
                tail.pop_front();
                dropped += 1;
            }
            // Bound each kept line too: a single huge line must not bloat status.
            tail.push_back(line.chars().take(400).collect());
        }
    }
    (tail.into_iter().collect::<Vec<_>>().join("\n"), dropped)
}

/// The next line (without its newline, invalid UTF-8 replaced), at most `cap` bytes of it:
/// the rest of a longer line is read and skipped. `partial` holds what was read of a line
/// when the future is dropped at its only await (cancel-safe). `None` at the end.
async fn next_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    partial: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Option<String>> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            if partial.is_empty() {
                return Ok(None);
            }
            let line = String::from_utf8_lossy(partial).into_owned();
            partial.clear();
            return Ok(Some(line));
        }
        let (piece, used, ends) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = cap.saturating_sub(partial.len());
        partial.extend_from_slice(&piece[..piece.len().min(room)]);
        reader.consume(used);
        if ends {
            let line = String::from_utf8_lossy(partial).into_owned();
            partial.clear();
            return Ok(Some(line));
        }
    }
}

/// At most `max` bytes, and whether there was more. Reading stops there and the pipe is
/// closed, so a runaway writer gets EPIPE instead of filling this process's memory.
/// Reading also ends at `stopped`, with what was read.
async fn read_stdout(
    stream: Option<impl AsyncRead + Unpin>,
    max: u64,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> (String, bool) {
    let Some(stream) = stream else {
        return (String::new(), false);
    };
    let mut buf = Vec::new();
    let mut stream = stream.take(max.saturating_add(1));
    let stop = stop_signal(stopped);
    tokio::pin!(stop);
    let mut chunk = [0u8; 8192];
    loop {
        // `read` is cancel-safe: stopped, no bytes are lost from `buf`.
        let n = tokio::select! {
            n = stream.read(&mut chunk) => n,
            _ = &mut stop => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let truncated = buf.len() as u64 > max;
    buf.truncate(max as usize);
    (String::from_utf8_lossy(&buf).into_owned(), truncated)
}

/// Stops a process and everything below it: SIGTERM (nix then stops its own builders),
/// a grace period, then SIGKILL for whatever is left. Descendants are found through
/// /proc because nix's builders call setsid() and leave the process group.
pub async fn kill_tree(root: Pid) {
    let mut doomed = descendants(root);
    doomed.push(root);
    let _ = killpg(root, Signal::SIGTERM);
    for pid in &doomed {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while tokio::time::Instant::now() < deadline && doomed.iter().any(|p| alive(*p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Re-read: new builders may have started during the grace period.
    doomed.extend(descendants(root));
    let _ = killpg(root, Signal::SIGKILL);
    for pid in &doomed {
        let _ = kill(*pid, Signal::SIGKILL);
    }
}

/// Stops what is left of a command after its process (the leader of group `pgid`)
/// exited and was reaped: the group's members, what they started, and any process
/// still holding one of `pipes` (`pipe:[inode]`: one that left the group with setsid
/// and lost its parent is found so). SIGTERM, a grace period while any is alive, then
/// SIGKILL.
pub async fn kill_leftovers(pgid: Pid, pipes: &[String]) {
    let doomed = || {
        let members = group_members(pgid);
        let mut all = members.clone();
        for m in members {
            all.extend(descendants(m));
        }
        for h in holders(pipes) {
            all.extend(descendants(h));
            all.push(h);
        }
        all.sort();
        all.dedup();
        all
    };
    let mut pids = doomed();
    if pids.is_empty() {
        return;
    }
    let _ = killpg(pgid, Signal::SIGTERM);
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while tokio::time::Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pids.extend(doomed());
    let _ = killpg(pgid, Signal::SIGKILL);
    for pid in pids.into_iter().filter(|p| alive(*p)) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// The live processes of process group `pgid`, from a /proc snapshot.
fn group_members(pgid: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_pgrp(&s))
                == Some(pgid.as_raw())
        })
        .map(Pid::from_raw)
        .filter(|p| alive(*p))
        .collect()
}

/// The live processes (but this one) with a file descriptor open on one of `pipes`.
fn holders(pipes: &[String]) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| pipes.iter().any(|p| l.as_os_str() == p.as_str()))
                })
            })
        })
        .map(Pid::from_raw)
        .filter(|p| alive(*p))
        .collect()
}

/// The process group from `/proc/PID/stat` ("pid (comm) state ppid pgrp ...").
fn parse_pgrp(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn alive(pid: Pid) -> bool {
    // A zombie still "exists"; read its state so reaped-but-unwaited children count as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z")
        ),
        Err(_) => false,
    }
}

/// Every process whose parent chain leads to `root`, from a /proc snapshot.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_ppid(&s))
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            found.push(Pid::from_raw(c));
            queue.push(c);
        }
    }
    found
}

/// Every process (but this one) whose environment holds exactly `entry` (`NAME=value`):
/// how an activation left running by a killed agent is found again.
pub fn tagged(entry: &str) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && alive(Pid::from_raw(pid)))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == entry.as_bytes()))
        })
        .map(Pid::from_raw)
        .collect()
}

/// The parent pid from `/proc/PID/stat` ("pid (comm) state ppid ..."; comm may hold spaces).
fn parse_ppid(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Quotes one argument for display in a POSIX shell.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:@%+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_copy_pasteable() {
        assert_eq!(shell_quote("nix"), "nix");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_quote("x#nixosConfigurations.\"pi\""),
            "'x#nixosConfigurations.\"pi\"'"
        );
    }

    #[test]
    fn ppid_parsing_survives_odd_names() {
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failure_keeps_stderr_tail() {
        let err = Cmd::new("/bin/sh")
            .args(["-c", "echo one >&2; echo two >&2; exit 3"])
            .run_ok()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("one") && text.contains("two"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn children_do_not_inherit_the_notify_socket() {
        // Only this test sets it; a STATUS= another test sends goes nowhere.
        std::env::set_var("NOTIFY_SOCKET", "/nonexistent/notify-socket-of-the-test");
        let done = Cmd::new("/bin/sh")
            .args(["-c", "echo \"${NOTIFY_SOCKET-unset} ${KEPT-unset}\""])
            .env("KEPT", "kept")
            .capture_stdout()
            .run_ok()
            .await
            .unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        assert_eq!(done.stdout.trim(), "unset kept");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdout_past_its_cap_is_cut_and_said() {
        let done = Cmd::new("/bin/sh")
            .args(["-c", "printf 12345678"])
            .capture_stdout()
            .max_stdout(8)
            .run_ok()
            .await
            .unwrap();
        assert_eq!(
            (done.stdout.as_str(), done.stdout_truncated),
            ("12345678", false)
        );
        // An endless writer: the pipe is closed at the cap, the writer ends (EPIPE).
        let done = Cmd::new("/usr/bin/yes")
            .capture_stdout()
            .max_stdout(1000)
            .timeout(Duration::from_secs(20))
            .run()
            .await
            .unwrap();
        assert!(done.stdout_truncated);
        assert_eq!(done.stdout.len(), 1000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_command_may_ignore_sigterm_and_still_ends_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "echo $$ > {}; while :; do sleep 0.05; done",
            pidfile.display()
        );
        let cmd = Cmd::new("/bin/sh")
            .args(["-c", &script])
            .ignore_stop_signals()
            .timeout(Duration::from_secs(2));
        let run = tokio::spawn(async move { cmd.run().await });
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                break Pid::from_raw(pid);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        kill(pid, Signal::SIGTERM).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(alive(pid), "SIGTERM ended it");
        let err = run.await.unwrap().unwrap_err();
        assert!(matches!(err, CmdError::TimedOut { .. }), "{err}");
        assert!(!alive(pid), "it outlived its deadline");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropped_stderr_lines_are_counted() {
        let done = Cmd::new("/bin/sh")
            .args(["-c", "seq 100 >&2"])
            .keep_stderr_lines(10)
            .run_ok()
            .await
            .unwrap();
        assert_eq!(done.stderr_lines_dropped, 90);
        assert!(done.stderr_tail.starts_with("91\n"), "{}", done.stderr_tail);
        let done = Cmd::new("/bin/sh")
            .args(["-c", "seq 10 >&2"])
            .keep_stderr_lines(10)
            .run_ok()
            .await
            .unwrap();
        assert_eq!(done.stderr_lines_dropped, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stderr_lines_are_capped_filtered_and_kept() {
        // A 1 MiB line, then two lines the filter turns into text and into nothing.
        let script = "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo >&2; echo keep >&2; echo drop >&2; printf 'no newline' >&2";
        let seen = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
        let lengths = seen.clone();
        let done = Cmd::new("/bin/sh")
            .args(["-c", script])
            .stderr_filter(LineFilter(Arc::new(move |line: &str| {
                lengths.lock().unwrap().push(line.len());
                match line {
                    "drop" => None,
                    "keep" => Some("kept\nas two".into()),
                    l => Some(l.chars().take(3).collect()),
                }
            })))
            .run_ok()
            .await
            .unwrap();
        assert_eq!(done.stderr_tail, "xxx\nkept\nas two\nno ");
        assert_eq!(*seen.lock().unwrap(), [MAX_LINE, 4, 4, 10]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_program_is_named() {
        let err = Cmd::new("/nonexistent/prog").run().await.unwrap_err();
        assert!(matches!(err, CmdError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/prog not found"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tagged_processes_are_found_by_their_environment() {
        let tag = format!("HOMELAB_AGENT_TEST_TAG={}", std::process::id());
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .env("HOMELAB_AGENT_TEST_TAG", std::process::id().to_string())
            .spawn()
            .unwrap();
        // Polled: under load the scan once came back empty right after the spawn; the
        // message says whether the child was still there.
        let mut found = tagged(&tag);
        for _ in 0..100 {
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            found = tagged(&tag);
        }
        assert_eq!(
            found,
            vec![Pid::from_raw(child.id() as i32)],
            "child state: {:?}",
            child.try_wait()
        );
        assert!(tagged(&format!("{tag}0")).is_empty(), "prefix matched");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(tagged(&tag).is_empty());
    }

    /// A health check such as `sh -c 'sleep 30 & echo ok'`: the shell exits, the `sleep`
    /// it left holds stdout and stderr open. `run` returns soon with what was printed, and
    /// the `sleep` (and one that left the group with setsid) is stopped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_process_left_behind_holding_the_output_neither_hangs_nor_survives() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            "sleep 30 & echo $! > {p}; setsid sleep 31 & echo $! >> {p}; echo ok; echo warn >&2",
            p = pids.display()
        );
        let started = std::time::Instant::now();
        let done = Cmd::new("/bin/sh")
            .args(["-c", &script])
            .capture_stdout()
            .timeout(Duration::from_secs(60))
            .run_ok()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(done.stdout, "ok\n");
        assert_eq!(done.stderr_tail, "warn");
        assert!(
            took < READER_GRACE + KILL_GRACE + Duration::from_secs(2),
            "run waited {took:?} for the process left behind"
        );
        let left: Vec<Pid> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| Pid::from_raw(l.trim().parse().unwrap()))
            .collect();
        assert_eq!(left.len(), 2);
        std::thread::sleep(Duration::from_millis(100));
        for pid in left {
            assert!(!alive(pid), "sleep {pid} survived its command");
        }
    }

    /// The grace after the exit never goes past the command's own deadline.
    #[tokio::test(flavor = "current_thread")]
    async fn the_grace_for_the_output_ends_at_the_deadline() {
        let started = std::time::Instant::now();
        let done = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 0.2; echo ok"])
            .capture_stdout()
            .timeout(Duration::from_secs(1))
            .run_ok()
            .await
            .unwrap();
        assert_eq!(done.stdout, "ok\n");
        let took = started.elapsed();
        // Deadline (1 s), the stop (SIGTERM ends sleep at once) and the drain; a full
        // grace after the exit would end at 2.2 s.
        assert!(took < Duration::from_millis(2000), "took {took:?}");
    }

    #[test]
    fn pgrp_parsing_survives_odd_names() {
        assert_eq!(parse_pgrp("42 (a) b) S 7 40 42 0"), Some(40));
        assert_eq!(parse_pgrp("garbage"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn timeout_kills_grandchildren_in_new_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The grandchild escapes the process group with setsid, as nix's builders do.
        let script = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 600' & wait",
            pidfile.display()
        );
        let err = Cmd::new("/bin/sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(500))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, CmdError::TimedOut { .. }), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !alive(Pid::from_raw(pid)),
            "grandchild {pid} survived the deadline"
        );
    }

    /// `cancel_on`: a command and what it started are stopped when asked, at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_command_is_stopped_with_its_children() {
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let marker = format!("{}", 4000 + std::process::id() % 997);
        let cmd = Cmd::new("sh")
            .args(["-c", &format!("sleep {marker} & sleep {marker}")])
            .timeout(Duration::from_secs(60))
            .cancel_on(cancelled);
        let asked = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = cancel.send(true);
            std::future::pending::<()>().await
        };
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = cmd.run() => r,
            () = asked => unreachable!(),
        };
        assert!(
            matches!(result, Err(CmdError::Cancelled { .. })),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.trim() == format!("sleep {marker}"))
            .collect();
        assert!(left.is_empty(), "left running: {left:?}");
    }
}
