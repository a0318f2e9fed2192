//! Commit ids as shown, and where the agent's git cache keeps the commit it fetched.

/// The ref the fetched commit is kept under in the agent's cache (`cache.git`): what
/// gets built is what was fetched there (source/git.rs writes it, nix builds from it).
pub const CANDIDATE_REF: &str = "refs/heads/homelab-agent/candidate";

/// The first 8 characters of a commit id, for messages.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn a_commit_is_shown_by_its_first_8_characters() {
        assert_eq!(short("0123456789abcdef"), "01234567");
        assert_eq!(short("0123"), "0123");
    }
}
