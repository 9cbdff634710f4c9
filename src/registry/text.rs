//! Text taken from what registries and credential helpers answer, cut down before it goes into an error
//! message. Both [`super::error`] and [`super::helper`] use it, so neither imports the other for it.

/// The most characters of a foreign answer kept in an error message.
const MAX_CHARS: usize = 200;

/// The first line of `s`, at most 200 characters: enough to say what went wrong, never a whole HTML page.
pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn first_line_keeps_one_line_of_at_most_200_characters() {
        assert_eq!(first_line("denied\n<html>"), "denied");
        assert_eq!(first_line(""), "");
        assert_eq!(first_line(&"x".repeat(300)).len(), 200);
    }
}
