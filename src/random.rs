//! Unpredictable names for files graceful-run creates in directories others may write to
//! (the pid file's temporary, a unix socket's temporary, the notify directory): a name an
//! attacker cannot guess cannot be pre-planted as a symlink or a squatting file. Also the
//! `--max-lifetime` jitter, which only needs to differ between generations.

use nix::libc;

/// 16 hex digits from getrandom(2).
pub fn token() -> String {
    number()
        .to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 64 random bits from getrandom(2).
pub fn number() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the live buffer.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        // Never happens on Linux >= 3.17 for 8 bytes. Every caller also creates the name
        // exclusively (O_EXCL, mkdir, bind), so a guessable fallback costs a retry, not safety.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (nanos ^ u64::from(std::process::id()).rotate_left(40)).to_ne_bytes();
    }
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_distinct_hex() {
        let (a, b) = (super::token(), super::token());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
