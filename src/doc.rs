//! Documentation shared by `--help` and the man page (sections clap does not generate).

/// (title, body) of each extra section, in man page order.
pub const SECTIONS: &[(&str, &str)] = &[("ENVIRONMENT GIVEN TO THE COMMAND", "TODO")];

pub const AFTER_LONG_HELP: &str = "TODO";
