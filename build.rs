//! Embeds the migrations (sqlx reads them at compile time) and the commit the binary was built
//! from, for `lanes --version` and `lanes_build_info`: `LANES_COMMIT` when set (a container
//! build, whose context has no `.git`), else `git rev-parse`, else `unknown`.

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=LANES_COMMIT");
    // The checkout's HEAD and the branches it may point at; in a worktree `.git` is a file
    // and they live in the directories git names.
    let own = git(&["rev-parse", "--git-dir"]);
    let common = git(&["rev-parse", "--git-common-dir"]);
    let watched = [
        (&own, "HEAD"),
        (&common, "refs/heads"),
        (&common, "packed-refs"),
    ];
    for (dir, file) in watched {
        let Some(path) = dir.as_deref().map(|d| Path::new(d).join(file)) else {
            continue;
        };
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let commit = std::env::var("LANES_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LANES_COMMIT={}", commit.trim());
}

fn git_commit() -> Option<String> {
    git(&["rev-parse", "--short=12", "HEAD"])
}

/// What a git command prints, trimmed; None outside a checkout.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
}
