//! "did you mean …?" for a misspelt key: the closest of the names serde says it expected
//! (`unknown field `urll`, expected one of `url`, `branch`, …`), by edit distance.

/// The expected name closest to the unknown one, if it is close enough to be a typo: at
/// most 2 edits, and fewer than half the name's letters.
pub fn closest_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected ")?.1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (edits(unknown, name), name))
        .filter(|(d, _)| *d <= 2 && *d * 2 < unknown.chars().count().max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name.to_string())
}

/// Levenshtein distance (insertions, deletions, substitutions), on characters.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_name_it_meant() {
        let m = "unknown field `urll`, expected one of `url`, `branch`, `ssh_key_file`";
        assert_eq!(closest_field(m).as_deref(), Some("url"));
        let m = "unknown field `brnach`, expected one of `url`, `branch`";
        assert_eq!(closest_field(m).as_deref(), Some("branch"));
        let m = "unknown field `timout`, expected `mode` or `timeout`";
        assert_eq!(closest_field(m).as_deref(), Some("timeout"));
    }

    #[test]
    fn something_else_gets_no_guess() {
        let m = "unknown field `mirror`, expected one of `url`, `branch`";
        assert_eq!(closest_field(m), None);
        assert_eq!(closest_field("invalid type: integer"), None);
        // Two letters: two edits would turn it into anything.
        let m = "unknown field `ab`, expected one of `url`, `branch`";
        assert_eq!(closest_field(m), None);
    }

    #[test]
    fn distance() {
        assert_eq!(edits("kitten", "sitting"), 3);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("same", "same"), 0);
    }
}
