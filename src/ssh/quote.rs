//! Quoting for POSIX shells. A remote command is one string that the login shell on the host
//! parses again, so every value put into it (paths, unit names, user input) goes through
//! [`shell_quote`].

use std::borrow::Cow;

/// Quotes `word` so a POSIX shell reads it back as exactly one word with exactly these bytes.
///
/// Words made only of characters no shell treats specially stay bare, so commands remain
/// readable in logs and error messages; anything else is wrapped in single quotes, inside which
/// nothing is special except the single quote itself, written as `'\''`.
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let is_safe = |byte: u8| byte.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&byte);
    if !word.is_empty() && word.bytes().all(is_safe) {
        return Cow::Borrowed(word);
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for ch in word.chars() {
        if ch == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(ch);
        }
    }
    quoted.push('\'');
    Cow::Owned(quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` reads back from a quoted word, by the POSIX rules for single quotes and
    /// backslashes outside quotes, so the tests check meaning rather than spelling.
    fn unquote(quoted: &str) -> String {
        let mut word = String::new();
        let mut chars = quoted.chars();
        while let Some(ch) = chars.next() {
            match ch {
                '\'' => word.extend(chars.by_ref().take_while(|&c| c != '\'')),
                '\\' => word.extend(chars.next()),
                other => word.push(other),
            }
        }
        word
    }

    #[test]
    fn safe_words_stay_bare() {
        for word in ["dm-master", "/home/tidb/deploy/dm-worker-8262", "a=b", "v8.5.1", "x:y,z@h%"] {
            assert_eq!(shell_quote(word), word);
            assert!(matches!(shell_quote(word), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn nasty_words_are_single_quoted_and_read_back_exactly() {
        let nasty = [
            "",
            " ",
            "two words",
            "it's",
            "''",
            "$(rm -rf /)",
            "`id`",
            "$HOME",
            "a\nb",
            "tab\there",
            "back\\slash",
            "semi;colon|pipe&amp>redirect<in",
            "glob*?[x]",
            "~user",
            "#comment",
            "!bang",
            "ünïcödé 名前",
        ];
        for word in nasty {
            let quoted = shell_quote(word);
            assert!(quoted.starts_with('\''), "{word:?} -> {quoted}");
            assert_eq!(unquote(&quoted), word, "{word:?} -> {quoted}");
        }
    }

    #[test]
    fn an_embedded_quote_closes_escapes_and_reopens() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
