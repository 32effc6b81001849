//! Text that graceful-run echoes from elsewhere (a flag's value, a command's path, a STATUS=
//! from the command), made safe to print on one line.

/// `text` with control characters (newlines, escape sequences) written as Rust escapes
/// (`\n`, `\u{1b}`), so that a value echoed in an error stays on its line and cannot drive
/// the terminal. Everything else, non-ASCII letters included, is kept as it is.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}
