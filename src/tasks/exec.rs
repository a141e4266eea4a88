//! `exec {"program": P, "args": [...]}`: runs an allow-listed program. Lines of the form
//! `::progress N message` on its stdout report progress; the rest of its output is the result.
//!
//! A run's whole process tree shares its worker's fate: the program leads a process group of
//! its own, and a watchdog forked beside it holds the read end of a pipe whose only writer is
//! the worker. When the worker lets go of the run (it ended, was cancelled, or the worker
//! process died, even by SIGKILL), the pipe closes and the watchdog kills the group. While
//! the worker is stopped (SIGSTOP), the watchdog stops the group too, and continues it when
//! the worker runs again; a worker stopped past `Ctx::stop_grace` loses the run (the group is
//! killed): its lanes may already run elsewhere, and its task must not hold their resources
//! or run beside its successor. No child of a task outlives the run that started it.

use super::{Ctx, TaskResult};
use serde_json::{json, Value};
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Most stdout kept as the result (bytes); the rest is read and dropped.
pub const MAX_STDOUT: usize = 1 << 20;
/// Most stderr kept for the error (bytes).
pub const MAX_STDERR: usize = 64 << 10;

pub async fn exec(ctx: Ctx, args: Value, allow: Arc<Vec<String>>) -> TaskResult {
    let program = args
        .get("program")
        .and_then(Value::as_str)
        .ok_or("`exec` needs {\"program\": ..., \"args\": [...]}")?;
    if !allow.iter().any(|p| p == program) {
        return Err(format!("program `{program}` is not in LANES_EXEC_ALLOW").into());
    }
    let argv: Vec<String> = match args.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("`args` must be strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`args` must be a list of strings".into()),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // What a program needs to be idempotent, or to check before it acts again: which job
    // and which attempt this is.
    cmd.env("LANES_JOB_ID", ctx.job_id().to_string())
        .env("LANES_ATTEMPT", ctx.attempt().to_string());
    // A program a submitter chose never sees the worker's credentials.
    for name in crate::config::SECRET_VARIABLES {
        cmd.env_remove(name).env_remove(format!("{name}_FILE"));
    }
    // The write end is dropped when this future ends (or the process dies): the watchdog then
    // kills the group. The read end is the children's only.
    let (_tree, watch) = contain(&mut cmd, ctx.stop_grace())?;
    let mut child = cmd.spawn()?;
    drop(watch);
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut stderr = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move { read_capped(&mut stderr, MAX_STDERR).await });
    let mut output = String::new();
    let mut truncated = false;
    loop {
        tokio::select! {
            line = next_line(&mut stdout, MAX_STDOUT) => match line? {
                Some(line) => match parse_progress(&line) {
                    Some((pct, msg)) => ctx.progress(pct, msg),
                    None if output.len() + line.len() < MAX_STDOUT => {
                        output.push_str(&line);
                        output.push('\n');
                    }
                    None => truncated = true,
                },
                None => break,
            },
            _ = ctx.cancelled().cancelled() => {
                child.kill().await?;
                return Err("canceled".into());
            }
        }
    }
    let status = child.wait().await?;
    let stderr = err_task.await.unwrap_or_default();
    if status.success() && truncated {
        Ok(json!({ "exit_code": 0, "stdout": output, "stdout_truncated_at": MAX_STDOUT }))
    } else if status.success() {
        Ok(json!({ "exit_code": 0, "stdout": output }))
    } else {
        Err(format!("`{program}` exited with {status}: {}", stderr.trim()).into())
    }
}

/// The next line of `r` (lossy UTF-8, without its newline), at most `cap` bytes of it: a
/// program that never writes a newline cannot make the worker buffer without end.
async fn next_line(r: &mut (impl AsyncBufRead + Unpin), cap: usize) -> io::Result<Option<String>> {
    let (mut line, mut read_any) = (Vec::new(), false);
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read_any.then(|| String::from_utf8_lossy(&line).into_owned()));
        }
        read_any = true;
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = end.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if end.is_some() {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// Reads `r` to its end, keeping at most `cap` bytes (the program never blocks on a full pipe).
async fn read_capped(r: &mut (impl AsyncRead + Unpin), cap: usize) -> String {
    let (mut kept, mut buf) = (Vec::new(), [0u8; 8192]);
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Makes `cmd` start in a process group of its own with a watchdog beside it; returns the
/// pipe's write end, whose closing ends the group, and its read end, to drop once spawned.
fn contain(
    cmd: &mut tokio::process::Command,
    stop_grace: std::time::Duration,
) -> io::Result<(OwnedFd, OwnedFd)> {
    let grace_ticks = (stop_grace.as_millis() / TICK_MS as u128).max(1) as u32;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both slots on success; each fd is owned exactly once below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let watch = read.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are made (setpgid, prctl,
    // fork, dup2, close, read, kill, _exit), and no memory is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The program itself also dies with the thread that started it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            let (worker, group) = (libc::getppid(), libc::getpid());
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => watchdog(watch, worker, group, grace_ticks),
                _ => Ok(()),
            }
        });
    }
    Ok((write, read))
}

/// The watchdog: until the worker's end of the pipe closes, mirrors the worker's stops and
/// continues onto the group; then kills the group. Only async-signal-safe calls, no memory
/// allocated (it is a fork of a multi-threaded process that never execs).
unsafe fn watchdog(
    watch: libc::c_int,
    worker: libc::pid_t,
    group: libc::pid_t,
    grace_ticks: u32,
) -> ! {
    // Out of the group it signals; and keep nothing of the worker's open: its pipes (the
    // program's stdout among them) would otherwise stay open, and so would other runs' pipes.
    libc::setpgid(0, 0);
    libc::dup2(watch, 0);
    if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
        for fd in 1..4096 {
            libc::close(fd);
        }
    }
    let mut stat_path = [0u8; 32];
    proc_stat_path(worker, &mut stat_path);
    let (mut frozen, mut frozen_ticks) = (false, 0u32);
    loop {
        let mut fd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = libc::poll(&mut fd, 1, TICK_MS);
        if ready > 0 {
            let mut byte = 0u8;
            let n = libc::read(0, (&mut byte as *mut u8).cast(), 1);
            if n <= 0 && !(n < 0 && *libc::__errno_location() == libc::EINTR) {
                break;
            }
        } else if ready < 0 && *libc::__errno_location() != libc::EINTR {
            break;
        }
        let stopped = is_stopped(&stat_path);
        if stopped != frozen {
            let signal = if stopped {
                libc::SIGSTOP
            } else {
                libc::SIGCONT
            };
            libc::kill(-group, signal);
            frozen = stopped;
            frozen_ticks = 0;
        }
        if frozen {
            frozen_ticks += 1;
            if frozen_ticks > grace_ticks {
                break; // stopped too long: the run is lost
            }
        }
    }
    libc::kill(-group, libc::SIGKILL);
    libc::_exit(0)
}

/// How often the watchdog looks at the worker (milliseconds).
const TICK_MS: libc::c_int = 100;

/// Writes `/proc/<pid>/stat` and a NUL into `buf`, without allocating.
fn proc_stat_path(pid: libc::pid_t, buf: &mut [u8; 32]) {
    let mut digits = [0u8; 12];
    let (mut n, mut len) = (pid.unsigned_abs(), 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 0;
    for &b in b"/proc/" {
        buf[at] = b;
        at += 1;
    }
    for i in (0..len).rev() {
        buf[at] = digits[i];
        at += 1;
    }
    for &b in b"/stat\0" {
        buf[at] = b;
        at += 1;
    }
}

/// Whether the process of `stat_path` is stopped (state `T` or `t`); false if it is gone.
unsafe fn is_stopped(stat_path: &[u8; 32]) -> bool {
    let fd = libc::open(stat_path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 512];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    if n <= 0 {
        return false;
    }
    let text = &buf[..n as usize];
    // The state follows the command name, which is in parentheses and may contain anything.
    match text.iter().rposition(|&b| b == b')') {
        Some(i) if i + 2 < text.len() => matches!(text[i + 2], b'T' | b't'),
        _ => false,
    }
}

pub fn parse_progress(line: &str) -> Option<(f32, Option<&str>)> {
    let rest = line.strip_prefix("::progress ")?;
    let (num, msg) = match rest.split_once(' ') {
        Some((n, m)) => (n, Some(m)),
        None => (rest, None),
    };
    Some((num.parse().ok()?, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    #[test]
    fn parses_progress_lines() {
        assert_eq!(
            parse_progress("::progress 40 halfway"),
            Some((40.0, Some("halfway")))
        );
        assert_eq!(parse_progress("::progress 5"), Some((5.0, None)));
        assert_eq!(parse_progress("hello"), None);
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[tokio::test]
    async fn output_is_capped_and_the_program_still_runs_to_its_end() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let ctx = Ctx::new(Uuid::nil(), 1, tx, CancellationToken::new());
        let allow = Arc::new(vec!["sh".to_owned()]);
        // 3 MiB on stdout in lines, 3 MiB more without a newline, 1 MiB on stderr.
        let script = "head -c 3145728 /dev/zero | tr '\\0' 'x' | fold -w 1000; \
                      head -c 3145728 /dev/zero | tr '\\0' 'y'; \
                      head -c 1048576 /dev/zero >&2";
        let out = exec(ctx, json!({"program": "sh", "args": ["-c", script]}), allow)
            .await
            .unwrap();
        let stdout = out["stdout"].as_str().unwrap();
        assert!(stdout.len() < MAX_STDOUT && stdout.len() > MAX_STDOUT - 2000);
        assert_eq!(out["stdout_truncated_at"], json!(MAX_STDOUT));
    }

    #[tokio::test]
    async fn a_program_knows_its_job_and_attempt() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let job = Uuid::new_v4();
        let ctx = Ctx::new(job, 3, tx, CancellationToken::new());
        let allow = Arc::new(vec!["sh".to_owned()]);
        let script = "echo \"$LANES_JOB_ID $LANES_ATTEMPT\"";
        let out = exec(ctx, json!({"program": "sh", "args": ["-c", script]}), allow)
            .await
            .unwrap();
        assert_eq!(out["stdout"], json!(format!("{job} 3\n")));
    }

    #[tokio::test]
    async fn a_cancelled_run_takes_its_whole_process_tree_with_it() {
        let dir = std::env::temp_dir().join(format!("lanes-exec-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let (tx, _rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let ctx = Ctx::new(Uuid::nil(), 1, tx, cancel.clone());
        let allow = Arc::new(vec!["sh".to_owned()]);
        let run = tokio::spawn(exec(
            ctx,
            json!({"program": "sh", "args": ["-c", script]}),
            allow,
        ));
        let mut grandchild = None;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            grandchild = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if grandchild.is_some() {
                break;
            }
        }
        let grandchild = grandchild.expect("the script started its child");
        assert!(alive(grandchild));
        cancel.cancel();
        assert!(run.await.unwrap().is_err());
        let mut gone = false;
        for _ in 0..100 {
            // A killed child stays a zombie until reaped; it is gone from the group either way.
            let stat =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if !alive(grandchild) || stat.split(' ').nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(gone, "the task's child outlived the run");
        let _ = std::fs::remove_dir_all(dir);
    }
}
