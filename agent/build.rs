//! Tells the tests where libgit2-sys's headers are, so source/tls_stream.rs can check
//! its mirror of `git_stream` against the header libgit2 was built from.
//!
//! libgit2-sys (`links = "git2"`) reports its root as `DEP_GIT2_ROOT`: the build
//! directory whose `include/` holds the vendored headers, or a system libgit2's include
//! directory. Nothing is compiled here.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_GIT2_ROOT");
    let Some(root) = std::env::var_os("DEP_GIT2_ROOT") else {
        return;
    };
    let root = std::path::PathBuf::from(root);
    let include = [root.join("include"), root.clone()]
        .into_iter()
        .find(|dir| dir.join("git2/sys/stream.h").is_file())
        .unwrap_or(root);
    println!(
        "cargo:rustc-env=HOMELAB_LIBGIT2_INCLUDE={}",
        include.display()
    );
}
